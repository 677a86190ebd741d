"""toy/own_samples.py: the own-sample fine-tune (CoMat's idea in the toy world): its batches, its objective's
terms and their gradients, and a tiny run from the command line."""

import numpy as np
import pytest
import torch

from tokencompose.__main__ import main
from tokencompose.attention import attach_recorder
from tokencompose.config import get_config
from tokencompose.models import build_toy_model, save_toy_model
from tokencompose.toy.own_samples import OwnSampleObjective, OwnSampleSettings, own_sample_batches

SMALL = OwnSampleSettings(prompts=2, sample_steps=2, grad_steps=1)


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    return build_toy_model(sample_size=16, seed=0)


@pytest.fixture
def config(tmp_path):
    return get_config("toy", resolution=16, groups=("mid_4", "up_8"), train_batch_size=2, token_weight=1e-3,
                      pixel_weight=1e-3, output_dir=str(tmp_path / "run"))


def test_settings_are_checked():
    with pytest.raises(ValueError, match="grad_steps"):
        OwnSampleSettings(sample_steps=2, grad_steps=3)
    with pytest.raises(ValueError, match="prompts"):
        OwnSampleSettings(prompts=0)


def test_batches_add_own_prompts_that_depend_on_step_and_micro_only(toy, config):
    batch_at = own_sample_batches(config, SMALL)(toy.tokenizer, config, 0, 1)
    first, again, other = batch_at(3, 0), batch_at(3, 0), batch_at(4, 0)
    assert first["own"] == again["own"] and first["own"] != other["own"]
    assert len(first["own"]["captions"]) == SMALL.prompts and first["pixel_values"].shape[0] == 2
    assert all(caption.startswith("a photo of") for caption in first["own"]["captions"])


def test_objective_terms_reach_the_weights(toy, config):
    objective = OwnSampleObjective(SMALL)
    batch = own_sample_batches(config, SMALL)(toy.tokenizer, config, 0, 1)(0, 0)
    recorder = attach_recorder(toy.unet, groups=("mid", "up"))
    try:
        toy.unet.train()
        losses = objective(toy, recorder, batch, config, torch.Generator().manual_seed(0))
    finally:
        recorder.detach()
    for key in ("ldm", "token", "pixel", "total", "own_token", "own_pixel", "presence", "own_drawn"):
        assert key in losses and torch.isfinite(losses[key])
    assert losses["total"].requires_grad and not losses["token"].requires_grad  # real scenes: L_LDM only
    toy.unet.zero_grad()
    losses["total"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in toy.unet.parameters())
    assert len(objective.trace) == 1 and 0 <= objective.trace[0]["own_drawn"] <= 1


def test_presence_is_zero_without_a_missing_object_and_has_a_gradient_with_one(toy, config):
    objective = OwnSampleObjective(SMALL)
    own = objective.own_batch(toy, ["a photo of a circle and a star."], [0], config)
    own["missing"] = [[]]
    assert objective.presence(toy, own, config).item() == 0.0
    # (the random model's clamped x0 is full of pure colours: the heart's colour is not one of them)
    own["missing"] = [["heart"]]
    toy.unet.zero_grad()
    presence = objective.presence(toy, own, config)
    assert 0 < presence.item() <= 1
    presence.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in toy.unet.parameters())
    toy.unet.zero_grad()


def test_the_attribute_world_is_refused():
    with pytest.raises(ValueError, match="identity"):
        OwnSampleObjective(SMALL, colour_mode="attribute")


def test_train_command_runs_an_own_sample_fine_tune(tmp_path, capsys):
    torch.manual_seed(0)
    save_toy_model(build_toy_model(sample_size=16, seed=1), tmp_path / "base")
    status = main(["train", "--pretrained", str(tmp_path / "base"), "--own-samples", "--own-prompts", "2",
                   "--own-sample-steps", "2", "--resolution", "16", "--groups", "mid_4", "up_8",
                   "--train-batch-size", "2", "--max-train-steps", "2", "--output-dir", str(tmp_path / "run"),
                   "--no-progress"])
    assert status == 0 and (tmp_path / "run" / "unet" / "config.json").is_file()
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert len(rows) == 3 and np.isfinite(float(rows[-1].split(",")[4]))
    status = main(["train", "--preset", "toy", "--own-samples", "--own-prompts", "0",
                   "--output-dir", str(tmp_path / "bad")])
    assert status == 2 and "argument --own-prompts" in capsys.readouterr().err  # refused by its type, at parse
