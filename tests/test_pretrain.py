"""pretrain.py: the learning-rate cooldown, and a resumed pre-training run ends where an uninterrupted one does."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tokencompose.toy.pretrain import PretrainSettings, learning_rate_at, pretrain_toy


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
    from tokencompose.toy.pretrain import cli

    out = tmp_path / "base16"
    assert cli(["--out", str(out), "--work-dir", str(tmp_path / "work"), "--steps", "1", "--batch-size", "2",
                "--decay-start", "1", "--size", "16", "--eval-images", "1", "--eval-steps", "1", "--threads", "1"]) == 0
    assert json.loads((out / "unet" / "config.json").read_text())["sample_size"] == 16
    card = (out / "README.md").read_text()
    assert "16 x 16 RGB images" in card and "cross-attention at 8 (down), 4 (mid), 8 (up)" in card
    assert "### Gates" in card and "Gates NOT met" in card  # one step of training meets no gate
    assert "frozen random 2-layer CLIP" in card and "identity" in card


def test_cli_attribute_world_with_zero_padding_and_a_jointly_trained_encoder(tmp_path):
    from tokencompose.models import encode_prompts, load_components
    from tokencompose.toy.pretrain import cli

    out = tmp_path / "attribute"
    assert cli(["--out", str(out), "--work-dir", str(tmp_path / "work"), "--steps", "2", "--batch-size", "2",
                "--decay-start", "2", "--size", "16", "--colours", "attribute", "--padding", "zero",
                "--text-encoder", "joint", "--eval-images", "1", "--eval-steps", "1", "--threads", "1"]) == 0
    settings = json.loads((out / "pretrain_settings.json").read_text())
    assert (settings["colour_mode"], settings["padding"], settings["text_encoder"]) == ("attribute", "zero", "joint")
    assert (encode_prompts(load_components(str(out)), ["a photo of a red star."])[0, 9:] == 0).all()
    card = (out / "README.md").read_text()
    assert "random colour named in the caption" in card and "trained jointly" in card


@pytest.mark.parametrize("text_encoder", ["frozen", "joint"])
def test_only_a_joint_text_encoder_trains(tmp_path, text_encoder):
    from tokencompose.models import build_toy_model

    torch.set_num_threads(1)
    settings = PretrainSettings(steps=2, batch_size=2, decay_start=2, size=16, ema_decay=0.0, padding="zero",
                                colour_mode="attribute", text_encoder=text_encoder)
    components, _ = pretrain_toy(tmp_path / "m", settings, tmp_path / "work")
    fresh = build_toy_model(sample_size=16, padding="zero").text_encoder.state_dict()  # where the run began
    # (the saved model is stored in float16: compare with the fresh weights rounded the same way)
    moved = [name for name, value in components.text_encoder.state_dict().items()
             if value.is_floating_point() and not torch.equal(value, fresh[name].half().float())]
    assert bool(moved) == (text_encoder == "joint")
    assert not any(p.requires_grad for p in components.text_encoder.parameters())  # frozen afterwards


def test_export_checkpoint_of_a_running_pretraining(tmp_path):
    from tokencompose.models import load_components
    from tokencompose.toy.pretrain import export_checkpoint

    torch.set_num_threads(1)
    settings = PretrainSettings(steps=2, batch_size=2, decay_start=2, size=16, text_encoder="joint",
                                padding="zero", colour_mode="attribute", checkpoint_every=1)
    components, _ = pretrain_toy(tmp_path / "final", settings, tmp_path / "work")
    exported = export_checkpoint(tmp_path / "work", tmp_path / "ema", settings)
    loaded = load_components(str(exported))
    for name, value in components.unet.state_dict().items():  # the finished run ships the EMA weights
        torch.testing.assert_close(loaded.unet.state_dict()[name], value.half().float())  # stored in float16
    assert json.loads((exported / "pretrain_settings.json").read_text())["exported_step"] == 2
    raw = load_components(str(export_checkpoint(tmp_path / "work", tmp_path / "raw", settings, weights="raw")))
    assert any(not torch.equal(raw.unet.state_dict()[k], v) for k, v in loaded.unet.state_dict().items())
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        export_checkpoint(tmp_path / "nothing", tmp_path / "x", settings)


def test_min_snr_weights_lower_only_the_nearly_clean_steps():
    import torch
    from diffusers import DDPMScheduler

    from tokencompose.models import TOY_SCHEDULER
    from tokencompose.toy.pretrain import timestep_weights

    abar = DDPMScheduler(**TOY_SCHEDULER).alphas_cumprod
    t = torch.tensor([0, 50, 200, 500, 999])
    assert torch.equal(timestep_weights(abar, t, "uniform"), torch.ones(5))
    weights = timestep_weights(abar, t, "min-snr", gamma=5.0)
    snr = abar[t] / (1 - abar[t])
    assert torch.allclose(weights[snr <= 5], torch.ones(int((snr <= 5).sum())))
    assert (weights[snr > 5] < 1).all() and weights[0] < weights[1]  # the cleaner, the lower
    assert torch.allclose(weights[snr > 5], 5 / snr[snr > 5])
    with pytest.raises(ValueError, match="unknown loss weighting"):
        timestep_weights(abar, t, "snr")


def test_single_object_curriculum_draws_one_object_scenes_first(tmp_path, monkeypatch):
    from tokencompose.toy import pretrain
    from tokencompose.toy.world import ToyScenes

    seen = []
    original = ToyScenes.batch

    def spy(self, index):
        batch = original(self, index)
        seen.append((index, max(len(masks) for masks in batch.masks)))
        return batch

    monkeypatch.setattr(ToyScenes, "batch", spy)
    settings = pretrain.PretrainSettings(steps=4, batch_size=8, decay_start=4, checkpoint_every=4, size=16,
                                         single_object_until=2, loss_weighting="min-snr")
    pretrain.pretrain_toy(tmp_path / "m", settings, tmp_path / "work")
    objects = dict(seen)
    assert objects[0] == objects[1] == 1 and max(objects[2], objects[3]) > 1
    command = pretrain.reproduce_command(settings, "some/base")
    assert "--single-object-until 2" in command and "--loss-weighting min-snr" in command
    assert command.endswith("--init-from some/base")
    assert "--loss-weighting" not in pretrain.reproduce_command(pretrain.PretrainSettings())


def test_new_world_starts_from_another_worlds_weights_at_step_zero(tmp_path):
    """--init-from refuses a model of another world unless --new-world, which keeps only the architecture check
    and starts the run at step 0 from those weights."""
    import dataclasses

    from tokencompose.models import load_components
    from tokencompose.toy import pretrain

    torch.set_num_threads(1)
    attribute = PretrainSettings(steps=2, batch_size=2, decay_start=2, size=16, text_encoder="joint",
                                 padding="zero", colour_mode="attribute", checkpoint_every=2)
    pretrain_toy(tmp_path / "attribute", attribute, tmp_path / "work_a")
    identity = dataclasses.replace(attribute, colour_mode="identity", steps=1, decay_start=1)
    with pytest.raises(ValueError, match="colour_mode: 'attribute' there, 'identity' here"):
        pretrain_toy(tmp_path / "x", identity, tmp_path / "work_x", init_from=tmp_path / "attribute")
    with pytest.raises(ValueError, match="padding"):  # the architecture must match even across worlds
        pretrain_toy(tmp_path / "y", dataclasses.replace(identity, padding="encoded"), tmp_path / "work_y",
                     init_from=tmp_path / "attribute", new_world=True)
    components, _ = pretrain_toy(tmp_path / "identity", dataclasses.replace(identity, learning_rate=1e-12, ema_decay=0.0),
                                 tmp_path / "work_i", init_from=tmp_path / "attribute", new_world=True)
    start = load_components(str(tmp_path / "attribute"))
    for name, value in start.unet.state_dict().items():  # one step at lr ~0: the attribute model's weights
        torch.testing.assert_close(components.unet.state_dict()[name], value, atol=1e-3, rtol=1e-3)
    command = pretrain.reproduce_command(dataclasses.replace(identity, learning_rate=1e-12), "a", new_world=True)
    assert "--init-from a --new-world" in command and "--lr 1e-12" in command and "--size 16" in command
    assert "--lr" not in pretrain.reproduce_command(pretrain.PretrainSettings())
