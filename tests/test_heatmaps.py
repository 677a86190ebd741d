"""heatmaps.py under DAAM's protocol: equal to an independent re-implementation of DAAM's steps, different
from the layer-mean variant where it should be, and recording the layers DAAM reads."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fake_recorder import StepRecorder

from tokencompose.evaluate.segmentation import iou
from tokencompose.heatmaps import (
    PROTOCOL_GROUPS,
    AttentionSum,
    aggregate_attention,
    generate_with_attention,
    heat_maps,
    noun_heat_maps,
    recording,
    word_token_positions,
)
from tokencompose.models import build_toy_model
from tokencompose.tokens import clip_tokenizer, token_positions

LATENT = 64  # SD 1.4 at 512 px: an 8 x 8 map is DAAM's factor 8
IMAGE = 96  # the word maps are scored at the image's size (a VAE factor of 1.5 keeps the test small)
TOKENS = 7


def spiky_maps(generator, batch, heads, side):
    """``[B, heads, side*side, T]`` positive maps with sharp peaks (bicubic upsampling undershoots beside them)."""
    return torch.rand(batch, heads, side * side, TOKENS, generator=generator) ** 6


def recorded_steps(steps=3, batch=2, seed=0):
    """Per step: ``{key: [map per layer]}`` with several sizes and head counts, an 8 x 8 "up" map (DAAM drops it:
    factor 8), a mid map (DAAM does not record the mid block) and a self-attention map (ignored)."""
    generator = torch.Generator().manual_seed(seed)
    layout = {"down_32": [3, 3], "down_16": [2], "mid_8": [4], "up_8": [5], "up_16": [2, 1], "up_32": [3],
              "up_64": [1]}
    result = []
    for _ in range(steps):
        step = {key: [spiky_maps(generator, batch, heads, int(key.split("_")[1])) for heads in head_counts]
                for key, head_counts in layout.items()}
        step["up_32_self"] = [torch.rand(batch, 3, 32 * 32, 32 * 32 // 64, generator=generator)]
        result.append(step)
    return result


# ---------------------------------------------------------------------------------------------- DAAM, written out

def daam_reference(steps, sample, merge_positions, latent, image):
    """DAAM's steps from its paper and code, one (layer, head) map at a time, independent of heatmaps.py.

    1. a hook on every down / up cross-attention layer (no mid block) adds each head's map of the conditional
       sample to a running sum keyed (factor, layer, head), except maps with ``factor == 8``;
    2. each summed map is upsampled bicubically to the latent size and clamped at 0; the mean over all of them;
    3. a word's map is the mean over its tokens (every occurrence); upsampled bicubically to the image size;
    4. ``(x - min) / (max - min + 1e-8)``.
    Returns the word map and the largest undershoot seen in step 2 (to check the clamp did something).
    """
    sums = {}
    for step in steps:
        layer_index = 0
        for key, layer_maps in step.items():
            place = key.split("_")[0]
            if key.endswith("_self"):
                continue
            for layer_map in layer_maps:
                layer_index += 1
                if place == "mid":
                    continue
                pixels = layer_map.shape[2]
                factor = int(math.sqrt(latent * latent // pixels))
                if factor == 8:
                    continue
                side = int(math.sqrt(pixels))
                for head in range(layer_map.shape[1]):
                    # [T, h, w] of this sample and head
                    per_token = layer_map[sample, head].T.reshape(TOKENS, side, side).double()
                    name = (factor, layer_index, head)
                    sums[name] = sums.get(name, 0) + per_token
    upsampled = []
    undershoot = 0.0
    for heat in sums.values():
        big = F.interpolate(heat.unsqueeze(1), size=(latent, latent), mode="bicubic")
        undershoot = min(undershoot, big.min().item())
        upsampled.append(big.clamp(min=0))
    merged = torch.stack(upsampled, dim=0).mean(0)[:, 0]  # [T, latent, latent]
    word = merged[merge_positions].mean(0)
    word = F.interpolate(word[None, None], size=(image, image), mode="bicubic")[0, 0]
    word = (word - word.min()) / (word.max() - word.min() + 1e-8)
    return word, undershoot


def daam_iou(word_map, truth, threshold=0.4):
    predicted = (word_map > threshold).double()
    truth = truth.double()
    intersection = (predicted * truth).sum()
    return (intersection / (predicted.sum() + truth.sum() - intersection + 1e-8)).item()


def test_daam_protocol_equals_an_independent_reimplementation():
    steps = recorded_steps()
    recorder = StepRecorder(steps)
    summed = AttentionSum(recorder, keep_heads=True)
    for index in range(len(steps)):
        summed.step(index, 999 - index)
    positions = [[2, 5], [3]]  # word 0 occurs twice (tokens 2 and 5), word 1 once
    ours = heat_maps(summed.maps(), positions, size=(LATENT, LATENT), sample=1, protocol="daam",
                     image_size=(IMAGE, IMAGE))
    assert ours.shape == (2, IMAGE, IMAGE)
    truth = torch.zeros(IMAGE, IMAGE, dtype=torch.bool)
    truth[10:50, 30:80] = True
    for number, merge in enumerate(positions):
        expected, undershoot = daam_reference(steps, sample=1, merge_positions=merge, latent=LATENT, image=IMAGE)
        assert undershoot < -1e-3  # the clamp matters in this case
        torch.testing.assert_close(ours[number].double(), expected, atol=1e-5, rtol=0)
        assert iou(ours[number], truth.numpy()) == pytest.approx(daam_iou(expected, truth), abs=1e-6)


def test_daam_ignores_the_mid_block_and_factor_8_maps():
    step = recorded_steps(steps=1)[0]
    kept = {key: maps for key, maps in step.items() if key not in ("mid_8", "up_8")}
    full = aggregate_attention(step, (LATENT, LATENT), protocol="daam")
    torch.testing.assert_close(full, aggregate_attention(kept, (LATENT, LATENT), protocol="daam"))
    # the layer mean reads every place it is given: the mid map changes it
    assert not torch.allclose(aggregate_attention(step, (LATENT, LATENT)),
                              aggregate_attention(kept, (LATENT, LATENT)))
    with pytest.raises(ValueError, match="DAAM keeps"):
        aggregate_attention({"mid_8": step["mid_8"]}, (LATENT, LATENT), protocol="daam")
    with pytest.raises(ValueError, match="protocol"):
        aggregate_attention(step, (LATENT, LATENT), protocol="daam-ish")


def test_daam_weighs_every_head_layer_mean_every_layer():
    # two 4 x 4 layers, constant maps (bicubic keeps a constant): one head at 1, three heads at 5
    one = torch.ones(1, 1, 16, TOKENS)
    three = torch.full((1, 3, 16, TOKENS), 5.0)
    maps = {"down_4": [one], "up_4": [three]}
    daam = aggregate_attention(maps, (4, 4), protocol="daam")
    layer_mean = aggregate_attention(maps, (4, 4), protocol="layer-mean")
    assert torch.allclose(daam, torch.full_like(daam, (1 + 3 * 5) / 4))
    assert torch.allclose(layer_mean, torch.full_like(layer_mean, (1 + 5) / 2))


def test_the_protocols_differ_on_a_built_case():
    """The object is in the top-left quarter. The down layer sees it; the mid layer attends to the bottom
    right. DAAM records down + up, the layer mean mid + up: only DAAM finds the object."""
    side = 8
    down = torch.zeros(1, 1, 16, TOKENS)  # 4 x 4
    down[0, 0, [0, 1, 4, 5], 1] = 1.0  # token 1: the top-left 2 x 2 of 4 x 4 = the top-left quarter
    mid = torch.zeros(1, 1, 4, TOKENS)  # 2 x 2
    mid[0, 0, 3, 1] = 4.0  # token 1: bottom-right cell
    up = torch.full((1, 2, 16, TOKENS), 0.1)  # flat
    recorded = {"down_4": [down], "mid_2": [mid], "up_4": [up]}
    truth = np.zeros((side, side), dtype=bool)
    truth[:4, :4] = True
    scores = {}
    for protocol, places in PROTOCOL_GROUPS.items():
        seen = {key: maps for key, maps in recorded.items() if key.split("_")[0] in places}  # what it records
        heat = heat_maps(seen, [[1]], size=(side, side), protocol=protocol, image_size=(side, side))[0]
        scores[protocol] = iou(heat, truth)
    assert scores["daam"] > 0.8
    assert scores["layer-mean"] < 0.1


# ---------------------------------------------------------------------------------------------- words

def test_word_positions_merge_every_occurrence():
    tokenizer = clip_tokenizer()
    prompt = "a photo of a star, a circle and a star."
    star, circle = word_token_positions(prompt, ["star", "circle"], tokenizer)
    assert star == token_positions(prompt, "star", tokenizer) + token_positions(prompt, "star", tokenizer, 1)
    assert len(star) == 2 and circle == token_positions(prompt, "circle", tokenizer)


# ---------------------------------------------------------------------------------------------- recording

@pytest.fixture(scope="module")
def toy():
    return build_toy_model(sample_size=16, seed=0)


def test_recording_follows_the_protocol(toy):
    """DAAM reads the down and up layers with every head; the layer mean mid and up, heads averaged."""
    sample = torch.zeros(1, 3, 16, 16)
    context = torch.zeros(1, 77, toy.unet.config.cross_attention_dim)
    for protocol, keys, per_head in (("daam", {"down_8", "up_8"}, True), ("layer-mean", {"mid_4", "up_8"}, False)):
        with recording(toy.unet, classifier_free=False, protocol=protocol) as summed, torch.no_grad():
            toy.unet(sample, 10, context)
            summed.step()
        maps = summed.maps()
        assert set(maps) == keys
        heads = {m.shape[1] for layer_maps in maps.values() for m in layer_maps}
        assert (heads != {1}) if per_head else (heads == {1})


def test_generate_with_attention_daam_on_the_toy(toy):
    prompt = "a photo of a circle and a star."
    images, attention = generate_with_attention(toy, [prompt], [0], steps=2, progress=False, protocol="daam")
    assert images.shape == (1, 16, 16, 3) and attention.shape == (1, 77, 16, 16)
    assert attention.min().item() >= 0.0  # clamped
    maps = noun_heat_maps(attention, prompt, ["circle", "star"], toy.tokenizer, protocol="daam")
    for heat in maps.values():
        assert heat.shape == (16, 16) and heat.min().item() == 0.0 and 0.99 < heat.max().item() <= 1.0


def test_daam_on_a_latent_model_scores_at_image_size():
    from sd_parts import tiny_pipeline

    pipe = tiny_pipeline()
    prompt = "a photo of a cat and a dog."
    images, attention = generate_with_attention(pipe, [prompt], [0], steps=2, progress=False, protocol="daam")
    assert images.shape == (1, 32, 32, 3)
    assert attention.shape == (1, 77, 16, 16)  # latent size (VAE factor 2): down_16 + up_16, mid_8 left out
    maps = noun_heat_maps(attention, prompt, ["cat", "dog"], pipe.tokenizer, protocol="daam", image_size=(32, 32))
    assert maps["cat"].shape == (32, 32)
