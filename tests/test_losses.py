"""losses.py: hand-computed token / pixel losses, batching, gradients, bad input, and a cross-check
against a loop written the way the authors' ``get_grounding_loss_by_layer`` is written."""

import math

import pytest
import torch
import torch.nn.functional as F

from tokencompose.losses import (
    grounding_losses,
    pixel_loss,
    resize_masks,
    token_loss,
    total_loss,
)


# --------------------------------------------------------------------------------------------------
# helpers: build attention maps by hand
# --------------------------------------------------------------------------------------------------
def layer(pixels, tokens=5, heads=1, batch=1, fill=0.0):
    """A map [batch, heads, pixels, tokens] filled with ``fill``."""
    return torch.full((batch, heads, pixels, tokens), fill)


def quarter_mask():
    """4 x 4 mask, top-left 2 x 2 quadrant."""
    mask = torch.zeros(1, 4, 4)
    mask[0, :2, :2] = 1
    return mask


INSIDE = [0, 1, 4, 5]  # flat pixels of the top-left quadrant of a 4 x 4 map


# --------------------------------------------------------------------------------------------------
# token loss
# --------------------------------------------------------------------------------------------------
def test_token_loss_is_zero_when_the_attention_is_inside_the_mask():
    maps = layer(16)
    maps[0, 0, INSIDE, 2] = torch.tensor([0.1, 0.4, 0.2, 0.3])
    maps[0, 0, :, 0] = 1.0  # other tokens do not matter
    loss = token_loss([maps], [quarter_mask()], [[[2]]])
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_token_loss_of_uniform_attention_on_a_quarter_mask():
    maps = layer(16, fill=1 / 5)  # every pixel attends uniformly to the 5 tokens
    loss = token_loss([maps], [quarter_mask()], [[[3]]])
    assert loss.item() == pytest.approx((1 - 1 / 4) ** 2)  # 0.5625


def test_token_loss_sums_over_the_layers_of_a_group():
    maps = layer(16, fill=1 / 5)
    loss = token_loss([maps, maps.clone()], [quarter_mask()], [[[3]]])
    assert loss.item() == pytest.approx(2 * 0.5625)


def test_token_loss_averages_over_the_tokens_of_a_noun_and_over_nouns():
    maps = layer(16, fill=1 / 5)
    maps[0, 0, :, 1] = 0.0
    maps[0, 0, INSIDE, 1] = 0.25  # token 1 all inside: term 0; token 2 uniform: term 0.5625
    one_noun = token_loss([maps], [quarter_mask()], [[[1, 2]]])
    assert one_noun.item() == pytest.approx((0.0 + 0.5625) / 2)
    # a second noun (token 1 alone, term 0) halves it again
    two_nouns = token_loss([maps], [torch.cat([quarter_mask(), quarter_mask()])], [[[1, 2], [1]]])
    assert two_nouns.item() == pytest.approx((0.28125 + 0.0) / 2)


def test_token_loss_averages_heads_before_the_square():
    maps = layer(16, heads=2)
    maps[0, 0, INSIDE, 2] = 0.25  # head 0: all attention inside, share 1
    maps[0, 1, [15], 2] = 1.0  # head 1: all outside, share 0
    loss = token_loss([maps], [quarter_mask()], [[[2]]])
    # (1 - mean(1, 0))^2 = 0.25; the mean of the squares would be 0.5
    assert loss.item() == pytest.approx(0.25)


def test_token_loss_with_a_non_square_size():
    maps = layer(2 * 8, fill=0.2)  # H = 2, W = 8
    mask = torch.zeros(1, 4, 16)
    mask[0, :, :8] = 1  # left half
    assert token_loss([maps], [mask], [[[0]]], size=(2, 8)).item() == pytest.approx(0.25)


# --------------------------------------------------------------------------------------------------
# pixel loss
# --------------------------------------------------------------------------------------------------
def test_pixel_loss_on_a_2x2_map_by_hand():
    maps = layer(4, tokens=4)
    maps[0, 0, :, 1] = torch.tensor([0.5, 0.25, 0.8, 0.1])
    mask = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])  # pixels 0 and 2 belong to the object
    expected = -(math.log(0.5) + math.log(1 - 0.25) + math.log(0.8) + math.log(1 - 0.1)) / 4
    assert pixel_loss([maps], [mask], [[[1]]]).item() == pytest.approx(expected, rel=1e-6)


def test_pixel_loss_averages_layers_and_heads_and_sums_a_nouns_tokens():
    first = layer(4, tokens=4, heads=2)
    first[0, 0, :, 1] = torch.tensor([0.2, 0.2, 0.2, 0.2])
    first[0, 1, :, 1] = torch.tensor([0.4, 0.0, 0.4, 0.0])  # head mean: [0.3, 0.1, 0.3, 0.1]
    first[0, :, :, 2] = 0.1  # token 2 adds 0.1 -> [0.4, 0.2, 0.4, 0.2]
    second = layer(4, tokens=4, heads=2)
    second[0, :, :, 1] = torch.tensor([0.5, 0.1, 0.5, 0.1])
    second[0, :, :, 2] = 0.1  # -> [0.6, 0.2, 0.6, 0.2]
    mask = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    # layer mean: [0.5, 0.2, 0.5, 0.2]; BCE = -(2 ln 0.5 + 2 ln 0.8) / 4
    expected = -(math.log(0.5) + math.log(0.8)) / 2
    loss = pixel_loss([first, second], [mask], [[[1, 2]]])
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_pixel_loss_clamps_the_log_at_minus_100_like_bceloss():
    maps = layer(4, tokens=2)
    maps[0, 0, :, 1] = torch.tensor([0.0, 0.5, 0.5, 0.5])  # zero attention on an object pixel
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    expected = (100 + 3 * math.log(2)) / 4
    assert pixel_loss([maps], [mask], [[[1]]]).item() == pytest.approx(expected, rel=1e-6)


def test_pixel_loss_is_computed_in_float32_under_autocast():
    maps = torch.softmax(torch.randn(1, 2, 16, 6, generator=torch.Generator().manual_seed(0)), -1)
    reference = pixel_loss([maps], [quarter_mask()], [[[1]]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = pixel_loss([maps], [quarter_mask()], [[[1]]])
    assert under_autocast.dtype == torch.float32
    assert under_autocast.item() == pytest.approx(reference.item(), rel=1e-6)


# --------------------------------------------------------------------------------------------------
# mask resizing
# --------------------------------------------------------------------------------------------------
def test_resize_masks_64_to_8_is_bilinear_then_positive():
    # bilinear 64 -> 8 (align_corners=False, no anti-aliasing): output pixel j reads input pixels 8j+3 and
    # 8j+4 (weights 1/2, 1/2), so an output pixel is on iff one of its 2 x 2 centre pixels is on.
    mask = torch.zeros(4, 64, 64)
    mask[0, :20, :20] = 1  # centres 3/4, 11/12, 19 are covered -> rows/cols 0..2
    mask[1, 4, 4] = 1  # one centre pixel of output (0, 0)
    mask[2, 0, 0] = 1  # a corner pixel between centres: vanishes
    mask[3, 5:11, 5:11] = 1  # a 6 x 6 block between centres: vanishes too
    expected = torch.zeros(4, 8, 8, dtype=torch.bool)
    expected[0, :3, :3] = True
    expected[1, 0, 0] = True
    assert torch.equal(resize_masks(mask, (8, 8)), expected)
    assert torch.equal(resize_masks(mask.bool(), (8, 8)), expected)
    assert torch.equal(resize_masks(list(mask), (8, 8)), expected)


def test_losses_use_the_resized_mask():
    mask = torch.zeros(1, 64, 64)
    mask[0, :20, :20] = 1  # 3 x 3 of the 8 x 8 map (see above)
    maps = layer(64, fill=1 / 5)
    assert token_loss([maps], [mask], [[[0]]]).item() == pytest.approx((1 - 9 / 64) ** 2)
    expected_pixel = -(9 * math.log(1 / 5) + 55 * math.log(4 / 5)) / 64
    assert pixel_loss([maps], [mask], [[[0]]]).item() == pytest.approx(expected_pixel, rel=1e-6)


# --------------------------------------------------------------------------------------------------
# batches and gradients
# --------------------------------------------------------------------------------------------------
def random_maps(batch, heads=2, pixels=16, tokens=10, layers=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.softmax(torch.randn(batch, heads, pixels, tokens, generator=generator), -1)
        for _ in range(layers)
    ]


def random_masks(count, side=8, seed=0):
    return torch.rand(count, side, side, generator=torch.Generator().manual_seed(seed)) > 0.5


@pytest.mark.parametrize("loss_fn", [token_loss, pixel_loss])
def test_a_batch_is_the_mean_of_its_samples(loss_fn):
    maps = random_maps(batch=2)
    masks = [random_masks(1, seed=1), random_masks(2, seed=2)]
    positions = [[[3]], [[1, 2], [7]]]
    batched = loss_fn(maps, masks, positions)
    first = loss_fn([m[:1] for m in maps], masks[:1], positions[:1])
    second = loss_fn([m[1:] for m in maps], masks[1:], positions[1:])
    assert batched.item() == pytest.approx((first.item() + second.item()) / 2, rel=1e-6)
    assert first.item() != pytest.approx(second.item())  # the mean is not trivially one of them
    # a sample without nouns is left out of the mean
    without = loss_fn(maps, [masks[0], torch.zeros(0, 8, 8)], [positions[0], []])
    assert without.item() == pytest.approx(first.item(), rel=1e-6)


@pytest.mark.parametrize("loss_fn", [token_loss, pixel_loss])
def test_a_batchs_gradient_is_the_mean_of_its_samples_gradients(loss_fn):
    # the batch is split by sample once (unbind) for speed: each sample's gradient must land in its own rows
    maps = random_maps(batch=3)
    masks = [random_masks(1, seed=1), random_masks(2, seed=2), random_masks(1, seed=4)]
    positions = [[[3]], [[1, 2], [7]], [[5]]]
    batched = [m.clone().requires_grad_() for m in maps]
    loss_fn(batched, masks, positions).backward()
    for b in range(3):
        alone = [m[b:b + 1].clone().requires_grad_() for m in maps]
        loss_fn(alone, masks[b:b + 1], positions[b:b + 1]).backward()
        for layer_batched, layer_alone in zip(batched, alone, strict=True):
            assert layer_alone.grad.abs().sum() > 0
            torch.testing.assert_close(layer_batched.grad[b:b + 1], layer_alone.grad / 3, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("loss_fn", [token_loss, pixel_loss])
def test_a_batch_without_nouns_gives_an_attached_zero(loss_fn):
    maps = [m.requires_grad_() for m in random_maps(batch=2)]
    loss = loss_fn(maps, [torch.zeros(0, 8, 8), []], [[], []])
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(maps[0].grad, torch.zeros_like(maps[0]))


def test_gradients_flow_to_the_noun_tokens_only():
    maps = [m.requires_grad_() for m in random_maps(batch=1)]
    losses = grounding_losses({"up_4": maps}, [random_masks(2, seed=3)], [[[2], [5, 6]]], groups=("up_4",))
    (losses["token"] + losses["pixel"]).backward()
    for layer_map in maps:
        grad = layer_map.grad
        assert torch.isfinite(grad).all()
        for token in (2, 5, 6):
            assert grad[..., token].abs().sum() > 0
        others = [t for t in range(10) if t not in (2, 5, 6)]
        assert torch.equal(grad[..., others], torch.zeros_like(grad[..., others]))


def test_half_precision_maps_give_a_float32_loss():
    maps = random_maps(batch=1)
    masks, positions = [random_masks(1)], [[[4]]]
    full = token_loss(maps, masks, positions)
    half = token_loss([m.half() for m in maps], masks, positions)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=1e-2)


# --------------------------------------------------------------------------------------------------
# groups and the total
# --------------------------------------------------------------------------------------------------
def test_grounding_losses_per_group_and_sums():
    recorded = {"mid_2": random_maps(1, pixels=4, layers=1), "up_4": random_maps(1, pixels=16, seed=1)}
    masks, positions = [random_masks(1)], [[[1]]]
    losses = grounding_losses(recorded, masks, positions, groups=("mid_2", "up_4"))
    assert set(losses) == {"token/mid_2", "pixel/mid_2", "token/up_4", "pixel/up_4", "token", "pixel"}
    assert losses["token/up_4"].item() == pytest.approx(token_loss(recorded["up_4"], masks, positions).item())
    assert losses["pixel/mid_2"].item() == pytest.approx(
        pixel_loss(recorded["mid_2"], masks, positions).item()
    )
    for kind in ("token", "pixel"):
        expected = losses[f"{kind}/mid_2"].item() + losses[f"{kind}/up_4"].item()
        assert losses[kind].item() == pytest.approx(expected)


def test_total_loss_weights():
    grounding = {"token": torch.tensor(2.0), "pixel": torch.tensor(4.0)}
    assert total_loss(torch.tensor(1.0), grounding).item() == pytest.approx(1 + 2e-3 + 2e-4)
    assert total_loss(torch.tensor(1.0), grounding, 0.5, 0.25).item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="'pixel'"):
        total_loss(torch.tensor(1.0), {"token": torch.tensor(1.0)})


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------
def test_mask_count_must_match_noun_count():
    maps = random_maps(batch=2)
    with pytest.raises(ValueError, match=r"sample 1: 2 masks but 1 nouns"):
        token_loss(maps, [random_masks(1), random_masks(2)], [[[1]], [[2]]])
    with pytest.raises(ValueError, match=r"sample 0: 0 masks but 1 nouns"):
        pixel_loss(maps, [torch.zeros(0, 8, 8), random_masks(1)], [[[1]], [[2]]])


def test_empty_token_positions_are_rejected():
    with pytest.raises(ValueError, match=r"sample 0, noun 1: empty token position list"):
        token_loss(random_maps(1), [random_masks(2)], [[[1], []]])


@pytest.mark.parametrize("position", [10, -1, 2.0, True])
def test_token_positions_must_be_in_range(position):
    with pytest.raises(ValueError, match=r"sample 0, noun 0: token position .* out of range.*\[0, 10\)"):
        pixel_loss(random_maps(1), [random_masks(1)], [[[position]]])


def test_numpy_and_tensor_positions_are_accepted():
    import numpy as np

    maps, masks = random_maps(1), [random_masks(1)]
    expected = token_loss(maps, masks, [[[3]]]).item()
    assert token_loss(maps, masks, [[[np.int64(3)]]]).item() == pytest.approx(expected)
    assert token_loss(maps, masks, [[[torch.tensor(3)]]]).item() == pytest.approx(expected)


def test_maps_of_the_wrong_rank_or_shape_are_rejected():
    with pytest.raises(ValueError, match=r"maps\[0\] must be a 4-D tensor"):
        token_loss([torch.rand(2, 16, 10)], [random_masks(1)], [[[1]]])
    with pytest.raises(ValueError, match=r"maps\[0\] is \(1, 2, 16, 10\), maps\[1\] is \(1, 2, 4, 10\)"):
        token_loss([torch.rand(1, 2, 16, 10), torch.rand(1, 2, 4, 10)], [random_masks(1)], [[[1]]])
    with pytest.raises(ValueError, match="non-empty list"):
        pixel_loss([], [random_masks(1)], [[[1]]])


def test_map_size_must_be_square_or_given():
    with pytest.raises(ValueError, match=r"H\*W = 12 is not a perfect square; pass size=\(H, W\)"):
        token_loss([torch.rand(1, 1, 12, 10)], [random_masks(1)], [[[1]]])
    with pytest.raises(ValueError, match=r"size=\(2, 5\) gives H\*W = 10, but the maps have 12 pixels"):
        token_loss([torch.rand(1, 1, 12, 10)], [random_masks(1)], [[[1]]], size=(2, 5))


def test_batch_size_must_match():
    with pytest.raises(ValueError, match=r"maps hold 2 samples, masks 1 and positions 1"):
        token_loss(random_maps(2), [random_masks(1)], [[[1]]])


def test_masks_of_the_wrong_rank_are_rejected():
    with pytest.raises(ValueError, match=r"sample 0: masks must be \[N, H0, W0\]"):
        token_loss(random_maps(1), [torch.ones(1, 1, 8, 8)], [[[1]]])


def test_a_missing_group_lists_the_recorded_ones():
    with pytest.raises(ValueError, match=r"\['up_64'\] not in .*recorded: \['mid_8', 'up_16'\]"):
        grounding_losses({"up_16": [], "mid_8": []}, [random_masks(1)], [[[1]]], groups=("mid_8", "up_64"))


# --------------------------------------------------------------------------------------------------
# cross-check: a loop written like the authors' per-layer code, batch of one
# --------------------------------------------------------------------------------------------------
def authors_style_group_loss(layer_maps, masks, word_token_positions, res):
    """Token and pixel loss of one group, written the way ``get_grounding_loss_by_layer`` is: maps
    reshaped to [heads, res, res, tokens], masks resized then thresholded, explicit loops."""
    gt_masks = []
    for mask in masks:
        resized = F.interpolate(
            mask[None, None].float(), size=(res, res), mode="bilinear", align_corners=False
        )
        gt_masks.append((resized[0] > 0.0).float())  # [1, res, res]

    token = 0.0
    for attn_map in layer_maps:
        attn_map = attn_map.reshape(-1, res, res, attn_map.shape[-1])  # [heads, res, res, T]
        heads = attn_map.shape[0]
        for word, positions in enumerate(word_token_positions):
            word_loss = 0.0
            for position in positions:
                head_shares = []
                for head in range(heads):
                    token_map = attn_map[head, :, :, position]
                    head_shares.append((token_map * gt_masks[word][0]).sum() / token_map.sum())
                word_loss = word_loss + (1.0 - sum(head_shares) / heads) ** 2
            token = token + word_loss / len(positions)
    token = token / len(word_token_positions)

    per_layer = [m.reshape(-1, res, res, m.shape[-1]).mean(0) for m in layer_maps]
    average = sum(per_layer) / len(per_layer)  # [res, res, T]
    pixel = 0.0
    for word, positions in enumerate(word_token_positions):
        probability = sum(average[..., position] for position in positions)
        target = gt_masks[word][0]
        log_p = torch.log(probability).clamp(min=-100)
        log_not_p = torch.log(1 - probability).clamp(min=-100)
        pixel = pixel + (-(target * log_p + (1 - target) * log_not_p)).mean()
    pixel = pixel / len(word_token_positions)
    return token, pixel


def test_matches_a_loop_written_like_the_authors_code():
    generator = torch.Generator().manual_seed(7)
    recorded = {
        "mid_4": [torch.softmax(3 * torch.randn(1, 3, 16, 77, generator=generator), -1)],
        "up_8": [torch.softmax(3 * torch.randn(1, 3, 64, 77, generator=generator), -1) for _ in range(3)],
    }
    masks = torch.zeros(3, 32, 32)
    masks[0, 2:20, 4:30] = 1
    masks[1, 16:, :12] = 1
    masks[2] = torch.rand(32, 32, generator=generator) > 0.7
    positions = [[5], [8, 9], [12, 13, 14]]

    for group, res in (("mid_4", 4), ("up_8", 8)):
        maps = [m.clone().requires_grad_() for m in recorded[group]]
        ours = grounding_losses({group: maps}, [masks], [positions], groups=(group,))
        ours_grad = torch.autograd.grad(ours["token"] + ours["pixel"], maps)

        theirs_maps = [m.clone().requires_grad_() for m in recorded[group]]
        token, pixel = authors_style_group_loss(theirs_maps, masks, positions, res)
        theirs_grad = torch.autograd.grad(token + pixel, theirs_maps)

        assert ours[f"token/{group}"].item() == pytest.approx(token.item(), rel=1e-5)
        assert ours[f"pixel/{group}"].item() == pytest.approx(pixel.item(), rel=1e-5)
        assert token.item() > 0.01 and pixel.item() > 0.01  # not a vacuous comparison
        for mine, reference in zip(ours_grad, theirs_grad, strict=True):
            torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-7)


def test_non_finite_maps_give_nan_losses_not_an_exception():
    """A diverged run's attention maps (NaN) must reach the loop's divergence guard as a NaN loss;
    F.binary_cross_entropy alone raises on them."""
    from tokencompose.losses import pixel_loss

    maps = {"up_4": [torch.full((1, 2, 16, 77), float("nan"))]}
    masks = [torch.ones(1, 4, 4, dtype=torch.bool)]
    assert torch.isnan(pixel_loss(maps["up_4"], masks, [[[5]]]))
