"""pretrain.py: the learning-rate cooldown, and a resumed pre-training run ends where an uninterrupted one does."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tokencompose.pretrain import PretrainSettings, learning_rate_at, pretrain_toy


def test_learning_rate_is_constant_then_falls_linearly_to_zero():
    settings = PretrainSettings(steps=100, learning_rate=1e-3, decay_start=60)
    assert learning_rate_at(0, settings) == learning_rate_at(59, settings) == 1e-3
    assert learning_rate_at(80, settings) == pytest.approx(0.5e-3)
    assert learning_rate_at(100, settings) == 0
    no_decay = PretrainSettings(steps=100, decay_start=100)
    assert learning_rate_at(99, no_decay) == no_decay.learning_rate


def test_resumed_pretraining_matches_an_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    settings = PretrainSettings(steps=4, batch_size=2, decay_start=2, checkpoint_every=2)
    _, seconds = pretrain_toy(tmp_path / "straight", settings, tmp_path / "work_straight")
    assert seconds > 0
    # the same run stopped after 2 steps and resumed
    pretrain_toy(tmp_path / "half", PretrainSettings(steps=2, batch_size=2, decay_start=2, checkpoint_every=2),
                 tmp_path / "work_resumed")
    state = json.loads((tmp_path / "work_resumed" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2 and state["seconds"] > 0
    pretrain_toy(tmp_path / "resumed", settings, tmp_path / "work_resumed")
    straight = load_file(tmp_path / "work_straight" / "checkpoint" / "unet.safetensors")
    resumed = load_file(tmp_path / "work_resumed" / "checkpoint" / "unet.safetensors")
    first = load_file(tmp_path / "work_resumed" / "checkpoint" / "ema.safetensors")
    assert first.keys() == straight.keys()
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "resumed" / "unet" / "config.json").is_file()


def test_cli_trains_at_another_image_size_and_the_card_says_so(tmp_path):
    from tokencompose.pretrain import cli

    out = tmp_path / "base16"
    assert cli(["--out", str(out), "--work-dir", str(tmp_path / "work"), "--steps", "1", "--batch-size", "2",
                "--decay-start", "1", "--size", "16", "--eval-images", "1", "--eval-steps", "1", "--threads", "1"]) == 0
    assert json.loads((out / "unet" / "config.json").read_text())["sample_size"] == 16
    card = (out / "README.md").read_text()
    assert "16 x 16 RGB images" in card and "cross-attention at 8 (down),\n  4 (mid), 8 (up)" in card
