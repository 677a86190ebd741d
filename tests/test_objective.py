"""objective.py: one forward pass of Eq. (5) (L_LDM's target by hand, SD 1.4's shapes end to end)."""

import math

import numpy as np
import pytest
import torch

from tokencompose.config import get_config
from tokencompose.models import build_toy_model
from tokencompose.objective import compute_losses


def test_v_prediction_target_by_hand():
    """SD 2.1's target v = sqrt(abar_t) noise - sqrt(1 - abar_t) x_0, checked on the toy model."""
    from diffusers import DDPMScheduler

    from tokencompose.attention import attach_recorder
    from tokencompose.data import collate, encode_example
    from tokencompose.models import TOY_SCHEDULER

    components = build_toy_model(sample_size=16, seed=4)
    components.scheduler = DDPMScheduler(**{**TOY_SCHEDULER, "prediction_type": "v_prediction"})
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[2:8, 2:8] = 255
    mask = np.zeros((16, 16), dtype=bool)
    mask[2:8, 2:8] = True
    batch = collate([encode_example(image, "a photo of a square.", ["square"], [mask], components.tokenizer, 16,
                                    (0.0, 1.0))])
    config = get_config("toy", resolution=16, prediction_type="v_prediction", groups=("mid_4", "up_8"))
    predictions = []
    components.unet.register_forward_hook(lambda module, args, output: predictions.append(output.sample.detach()))
    recorder = attach_recorder(components.unet, groups=("mid", "up"))
    losses = compute_losses(components, recorder, batch, config, torch.Generator().manual_seed(11))

    generator = torch.Generator().manual_seed(11)  # the documented draws: noise, then the timestep
    noise = torch.randn(1, 3, 16, 16, generator=generator)
    t = int(torch.randint(0, 1000, (1,), generator=generator))
    abar = float(components.scheduler.alphas_cumprod[t])
    x0 = batch["pixel_values"]
    velocity = math.sqrt(abar) * noise - math.sqrt(1 - abar) * x0
    expected = ((predictions[0] - velocity) ** 2).mean()
    assert float(losses["ldm"].detach()) == pytest.approx(float(expected), rel=1e-5)
    assert set(losses) >= {"token/mid_4", "token/up_8", "pixel/mid_4", "pixel/up_8"}


def test_sd14_architecture_one_step_on_cpu(tokenizer, sd14_unet):
    """SD 1.4's UNet (random weights, shared with test_attention), a small CLIP text encoder of SD 1.4's width
    and a tiny random VAE: one forward + backward at 64 px through the loop's SD path."""
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from tokencompose.attention import attach_recorder
    from tokencompose.data import collate, encode_example
    from tokencompose.models import Components, sd_text_config

    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(**{**sd_text_config("sd14"), "num_hidden_layers": 1,
                                                   "intermediate_size": 64}))
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4,
                        norm_num_groups=4, sample_size=64)
    assert vae.config.scaling_factor == pytest.approx(0.18215)
    unet = sd14_unet
    components = Components(tokenizer, text_encoder.requires_grad_(False), vae.requires_grad_(False), unet,
                            DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    cat, kite = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    cat[8:40, 8:40], kite[40:60, 30:60] = True, True
    batch = collate([encode_example(image, "a photo of a cat and a kite.", ["cat", "kite"], [cat, kite], tokenizer,
                                    64, (-1.0, 1.0))])
    # 64 px -> 8 x 8 latents: SD 1.4's mid_8/up_16/32/64 at 512 px become mid_1/up_2/4/8
    config = get_config("sd14", resolution=64, groups=("mid_1", "up_2", "up_4", "up_8"))
    supervised = unet.up_blocks[3].attentions[0]  # the first up_8 transformer: the only weights given a gradient
    unet.requires_grad_(False)
    supervised.requires_grad_(True)
    recorder = attach_recorder(unet, groups=("mid", "up"))
    try:
        losses = compute_losses(components, recorder, batch, config, torch.Generator().manual_seed(0))
        assert {f"token/{g}" for g in config.groups} <= set(losses)
        assert all(math.isfinite(float(v.detach())) for v in losses.values())
        assert float(losses["token"].detach()) > 0
        losses["total"].backward()
        grad = supervised.transformer_blocks[0].attn2.to_k.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
        assert all(p.grad is None for p in text_encoder.parameters()) and all(p.grad is None for p in vae.parameters())
    finally:  # the UNet is shared with other test modules: leave it as it was
        recorder.detach()
        supervised.zero_grad(set_to_none=True)
        unet.requires_grad_(True)
        unet.eval()


def _window_batch(components, n=4):
    """``n`` one-square scenes (different squares, so every sample's grounding term differs)."""
    from tokencompose.data import collate, encode_example

    examples = []
    for i in range(n):
        image = np.zeros((16, 16, 3), dtype=np.uint8)
        mask = np.zeros((16, 16), dtype=bool)
        mask[i:i + 6, 2 * i:2 * i + 6] = True
        image[mask] = 255
        examples.append(encode_example(image, "a photo of a square.", ["square"], [mask], components.tokenizer, 16,
                                       (0.0, 1.0)))
    return collate(examples)


def test_grounding_timesteps_reach_exactly_the_samples_in_the_window():
    """With a window, the grounding terms are those of the in-window samples alone (computed on them by
    hand: the same maps, the other samples' nouns removed); L_LDM is unchanged; the default is the paper's."""
    from tokencompose.attention import attach_recorder
    from tokencompose.losses import grounding_losses
    from tokencompose.objective import in_grounding_window, noised_prediction

    components = build_toy_model(sample_size=16, seed=4)
    recorder = attach_recorder(components.unet, groups=("mid", "up"))
    batch = _window_batch(components)
    base = get_config("toy", resolution=16, groups=("mid_4", "up_8"), train_batch_size=4)
    _, _, timesteps = noised_prediction(components, batch, base, torch.Generator().manual_seed(3), with_timesteps=True)
    drawn = sorted(int(t) for t in timesteps)
    assert len(set(drawn)) == 4, drawn  # four distinct timesteps: a window can split them
    window = (drawn[1], drawn[3])  # holds the 2nd and 3rd smallest
    keep = in_grounding_window(timesteps, window)
    assert sum(keep) == 2

    everywhere = compute_losses(components, recorder, batch, base, torch.Generator().manual_seed(3))
    windowed = compute_losses(components, recorder, batch, base.replace(grounding_timesteps=window),
                              torch.Generator().manual_seed(3))
    assert torch.equal(windowed["ldm"], everywhere["ldm"])  # L_LDM: every sample, same draws

    recorder.reset()
    noised_prediction(components, batch, base, torch.Generator().manual_seed(3))
    maps = recorder.maps()
    kept = [i for i, k in enumerate(keep) if k]
    by_hand = grounding_losses({g: [m[kept] for m in layers] for g, layers in maps.items()},
                               [batch["masks"][i] for i in kept], [batch["positions"][i] for i in kept],
                               groups=base.groups)
    recorder.reset()
    for name in ("token", "pixel", "token/mid_4", "pixel/up_8"):
        assert float(windowed[name].detach()) == pytest.approx(float(by_hand[name].detach()), rel=1e-6), name
    assert float(windowed["token"].detach()) != pytest.approx(float(everywhere["token"].detach()), rel=1e-6)  # the window matters

    outside = compute_losses(components, recorder, batch, base.replace(grounding_timesteps=(drawn[3] + 1, 10_000)),
                             torch.Generator().manual_seed(3))
    assert float(outside["token"].detach()) == 0.0 and float(outside["pixel"].detach()) == 0.0  # no sample in the window
    assert base.grounding_timesteps is None  # the default: every timestep, the paper's uniform range


def test_grounding_timesteps_default_is_bit_identical_to_the_whole_range():
    """(0, T) and None give the same losses to the bit: the default changes nothing of the paper's objective."""
    from tokencompose.attention import attach_recorder

    components = build_toy_model(sample_size=16, seed=5)
    recorder = attach_recorder(components.unet, groups=("mid", "up"))
    batch = _window_batch(components)
    config = get_config("toy", resolution=16, groups=("mid_4", "up_8"), train_batch_size=4)
    paper = compute_losses(components, recorder, batch, config, torch.Generator().manual_seed(8))
    whole = compute_losses(components, recorder, batch, config.replace(grounding_timesteps=(0, 1000)),
                           torch.Generator().manual_seed(8))
    for name in paper:
        assert torch.equal(paper[name], whole[name]), name


@pytest.mark.parametrize("window", [(5, 5), (-1, 10), (10, 2), (1.5, 3), "600:1000", (1, 2, 3)])
def test_bad_grounding_timesteps_are_refused(window):
    with pytest.raises(ValueError, match="grounding_timesteps must be"):
        get_config("toy", grounding_timesteps=window)


def test_grounding_timesteps_flag():
    """``train --grounding-timesteps LOW:HIGH`` reaches the config; a malformed window is an argparse error."""
    from tokencompose.train import build_parser, config_from_args

    config, _ = config_from_args(build_parser().parse_args(["--grounding-timesteps", "600:1000"]))
    assert config.grounding_timesteps == (600, 1000)
    config, _ = config_from_args(build_parser().parse_args([]))
    assert config.grounding_timesteps is None
    for bad in ("600", "1000:600", "a:b", "-1:5"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--grounding-timesteps", bad])
