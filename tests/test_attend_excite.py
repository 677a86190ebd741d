"""attend_excite.py: Attend-and-Excite's schedule, smoothing and loss, its latent update on the toy sampler, and
the Stable Diffusion path through diffusers' pipeline (random weights): the latent moves, the weights do not."""

import json
import math

import numpy as np
import pytest
import torch
from sd_parts import tiny_pipeline

from tokencompose.attend_excite import (
    AttendExcite,
    ExciteSettings,
    excite_loss,
    smoothing_kernel,
    subject_nouns,
    subject_token_indices,
    token_maxima,
)
from tokencompose.models import build_toy_model, encode_prompts, save_toy_model
from tokencompose.sample import Generator, cli, generate_batch

PROMPTS = ["a photo of a circle and a star.", "a photo of a ring, a heart and a square."]
NOUNS = [["circle", "star"], ["ring", "heart", "square"]]


@pytest.fixture(scope="module")
def toy():
    return build_toy_model(sample_size=16, seed=0)


def weights(module):
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def test_schedule_is_the_authors_at_50_steps_and_scales_to_25():
    alter, thresholds, sizes = ExciteSettings().schedule(50)
    assert alter == 25 and thresholds == {0: 0.05, 10: 0.5, 20: 0.8}
    assert sizes[0] == pytest.approx(20.0) and sizes[-1] == pytest.approx(20 * math.sqrt(0.5))
    alter, thresholds, sizes = ExciteSettings().schedule(25)
    assert alter == 12 and sorted(thresholds) == [0, 5, 10] and len(sizes) == 25
    with pytest.raises(ValueError):
        ExciteSettings().schedule(0)
    arguments = ExciteSettings(pipeline_attn_res=8).pipeline_arguments(25)
    assert arguments["max_iter_to_alter"] == 12 and arguments["attn_res"] == (8, 8)


def test_smoothing_kernel_is_the_codes_gaussian():
    kernel = smoothing_kernel(3, 0.5)
    assert kernel.sum() == pytest.approx(1.0) and torch.allclose(kernel, kernel.T)
    # the authors' weight of offset d is exp(-(d / (2 sigma))^2): centre / edge = e at sigma 0.5
    assert (kernel[1, 1] / kernel[1, 0]).item() == pytest.approx(math.e, rel=1e-5)


def test_token_maxima_and_loss_single_out_the_most_neglected_subject():
    side, tokens = 4, 8
    maps = torch.full((1, side * side, tokens), 1.0 / tokens)
    maps[0, :, 0] += 1.0  # the start token takes most of the mass, as in SD
    maps[0, 5, 2] += 0.5  # token 2 peaks at one pixel; token 3 stays flat
    maps = maps / maps.sum(-1, keepdim=True)
    peaked, flat = token_maxima(maps, [[2, 3]])[0].tolist()
    assert peaked > flat
    loss = excite_loss([torch.tensor([peaked, flat])])
    assert loss.item() == pytest.approx(1 - flat)
    assert excite_loss([torch.tensor([1.2, 1.5])]).item() == 0.0  # clipped at 0
    with pytest.raises(ValueError, match="no subject"):
        token_maxima(maps, [[]])


def test_subject_nouns_drop_the_frame_word_and_indices_cover_every_token(toy):
    assert subject_nouns("a photo of a circle, a star and a ring.", tagger="perceptron") == ["circle", "star", "ring"]
    indices = subject_token_indices(PROMPTS, NOUNS, toy.tokenizer)
    ids = toy.tokenizer(PROMPTS[0]).input_ids
    assert [toy.tokenizer.decode([ids[i]]) for i in indices[0]] == ["circle", "star"]
    with pytest.raises(ValueError, match="names no subject"):
        subject_token_indices(["a photo."], [[]], toy.tokenizer)


def test_the_update_moves_the_latent_in_the_first_half_only_and_never_the_weights(toy):
    before = weights(toy.unet)
    processors = {name: type(p) for name, p in toy.unet.attn_processors.items()}
    cond = encode_prompts(toy, PROMPTS)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    timesteps = [999, 500]
    with AttendExcite(toy.unet, cond, subject_token_indices(PROMPTS, NOUNS, toy.tokenizer), steps=4,
                      settings=ExciteSettings(resolution=8, max_refinement_steps=2)) as hook:
        moved = hook(0, timesteps[0], x.clone())
        kept = hook(3, timesteps[1], x.clone())  # step 3 of 4 is past the first half
        assert len(hook.losses) == 1 and all(0 <= value <= 1 for value in hook.losses[0])
    assert not torch.equal(moved, x) and torch.equal(kept, x)
    assert all(torch.equal(before[k], v) for k, v in toy.unet.state_dict().items())
    assert all(p.grad is None for p in toy.unet.parameters())
    assert {name: type(p) for name, p in toy.unet.attn_processors.items()} == processors  # recorder removed


def test_toy_sampling_with_attend_and_excite_differs_from_plain_and_is_deterministic(toy):
    settings = ExciteSettings(resolution=8, max_refinement_steps=2)
    plain = generate_batch(toy, PROMPTS, [0, 1], steps=4)
    excited = generate_batch(toy, PROMPTS, [0, 1], steps=4, method="attend-and-excite", nouns=NOUNS, excite=settings)
    again = generate_batch(toy, PROMPTS, [0, 1], steps=4, method="attend-and-excite", nouns=NOUNS, excite=settings)
    assert excited.shape == plain.shape and not np.array_equal(excited, plain)
    assert np.array_equal(excited, again)
    with pytest.raises(ValueError, match="unknown sampling method"):
        generate_batch(toy, PROMPTS, [0, 1], steps=2, method="excite")


def test_stable_diffusion_path_runs_diffusers_pipeline_and_keeps_the_weights():
    pipe = tiny_pipeline()
    before = weights(pipe.unet)
    settings = ExciteSettings(pipeline_attn_res=16, thresholds=())  # no refinement: 20 tries a step are slow
    plain = generate_batch(pipe, PROMPTS, [0, 1], steps=2, guidance=7.5)
    excited = generate_batch(pipe, PROMPTS, [0, 1], steps=2, guidance=7.5, method="attend-and-excite", nouns=NOUNS,
                             excite=settings)
    assert excited.shape == plain.shape and not np.array_equal(excited, plain)
    assert all(torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items())


def test_generator_provenance_names_the_method_only_when_it_is_not_plain(toy):
    plain = Generator(toy, steps=2).provenance
    excited = Generator(toy, steps=2, method="attend-and-excite").provenance
    assert "method" not in plain and excited["method"] == "attend-and-excite"
    assert excited["excite"]["scale_factor"] == 20.0 and excited["model"] == plain["model"]


def test_sample_command_with_attend_and_excite(tmp_path):
    # 32 px, as the shipped toy bases: their cross-attention has the 16 x 16 level the settings name
    model = save_toy_model(build_toy_model(sample_size=32, seed=0), tmp_path / "toy")
    out = tmp_path / "out"
    assert cli(["--model", str(model), "--prompts", PROMPTS[0], "--seeds", "0", "--steps", "2", "--out", str(out),
                "--method", "attend-and-excite"]) == 0
    assert (out / "0_0.png").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert "attend-and-excite" in json.dumps(manifest)
