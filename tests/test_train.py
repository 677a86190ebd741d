"""train.py: the loop trains the UNet only, resumes exactly, stops on NaN, saves loadable models, launches with accelerate."""

import csv
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tokencompose.__main__ import train_cli as cli
from tokencompose.config import get_config
from tokencompose.models import build_toy_model, save_toy_model
from tokencompose.toy.world import scene_batches
from tokencompose.train import NonFiniteLossError, TrainOptions, train

SCENES = TrainOptions(progress=False, tensorboard=False)


def toy_train(config, options=SCENES, **kwargs):
    """``train`` on the toy world's fresh scenes (the caller's batches: the loop knows no world)."""
    return train(config, options, batches=scene_batches(config), **kwargs)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models train faster on one thread, and much faster when other jobs share the 2 cores (OpenMP
    threads spin while they wait for each other: 24 s instead of 0.8 s a toy step, measured). Restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A random toy base model on disk (the shipped one may not exist yet)."""
    folder = tmp_path_factory.mktemp("toy_base")
    save_toy_model(build_toy_model(seed=0), folder)
    return folder


def toy_config(base_dir, out, **overrides):
    fields = dict(pretrained=str(base_dir), output_dir=str(out), learning_rate=1e-3, train_batch_size=1,
                  gradient_accumulation_steps=1, max_train_steps=2, checkpointing_steps=100)
    return get_config("toy", **{**fields, **overrides})


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def read_log(out):
    with open(out / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_two_steps_train_unet_only(tmp_path):
    components = build_toy_model(seed=1)
    unet_before, text_before = snapshot(components.unet), snapshot(components.text_encoder)
    config = get_config("toy", output_dir=str(tmp_path), learning_rate=1e-3, train_batch_size=2,
                        gradient_accumulation_steps=2, max_train_steps=2, checkpointing_steps=1)
    result = toy_train(config, SCENES, components=components)

    assert [row["step"] for row in result.history] == [1, 2]
    for row in result.history:
        for key in ("ldm", "token", "pixel", "total", "token/mid_8", "pixel/up_16"):
            assert math.isfinite(row[key]), (key, row)
        # Eq. (5) by hand from the logged parts (each a mean over the 2 micro-batches, so is the total)
        expected = row["ldm"] + config.token_weight * row["token"] + config.pixel_weight * row["pixel"]
        assert row["total"] == pytest.approx(expected, rel=1e-5)
        assert row["token"] == pytest.approx(row["token/mid_8"] + row["token/up_16"], rel=1e-5)
    unet_after = components.unet.state_dict()
    changed = [k for k in unet_before if not torch.equal(unet_before[k], unet_after[k])]
    assert len(changed) > 0.9 * len(unet_before), f"only {len(changed)} of {len(unet_before)} UNet tensors changed"
    text_after = components.text_encoder.state_dict()
    assert all(torch.equal(text_before[k], text_after[k]) for k in text_before), "the text encoder changed"

    rows = read_log(tmp_path)
    assert list(rows[0]) == ["step", "ldm", "token", "pixel", "total", "lr", "seconds"]
    assert [int(r["step"]) for r in rows] == [1, 2] and float(rows[0]["lr"]) == 1e-3
    # checkpoint limit 2 (the preset's): both kept, no temporary folder left behind
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-1", "checkpoint-2"]


def test_ldm_only_baseline_still_logs_grounding(tmp_path):
    components = build_toy_model(seed=2)
    config = get_config("toy", output_dir=str(tmp_path), token_weight=0.0, pixel_weight=0.0,
                        max_train_steps=1, gradient_accumulation_steps=1)
    row = toy_train(config, SCENES, components=components).history[0]
    assert row["token"] > 0 and row["pixel"] > 0  # a random model's attention is not grounded
    assert row["total"] == pytest.approx(row["ldm"], rel=1e-6)


def test_resume_is_exact(tmp_path, base_dir):
    from tokencompose.toy.world import make_toy_dataset

    data = make_toy_dataset(tmp_path / "data", n=3, objects=(2, 3), seed=5)  # 3 images: epochs wrap in 4 steps
    common = dict(train_data_dir=str(data), use_ema=True, max_train_steps=4, checkpointing_steps=2)
    options = TrainOptions(progress=False, tensorboard=False)
    straight = train(toy_config(base_dir, tmp_path / "straight", **common), options)
    train(toy_config(base_dir, tmp_path / "resumed", **{**common, "max_train_steps": 2}), options)
    resumed = train(toy_config(base_dir, tmp_path / "resumed", **common), options.replace(resume="latest"))

    assert resumed.resumed_from == tmp_path / "resumed" / "checkpoints" / "checkpoint-2"
    assert [row["step"] for row in resumed.history] == [3, 4]
    for a, b in zip(straight.history[2:], resumed.history, strict=True):
        assert a["ldm"] == pytest.approx(b["ldm"], abs=1e-6)
    raw_a = load_file(tmp_path / "straight" / "checkpoints" / "checkpoint-4" / "unet.safetensors")
    raw_b = load_file(tmp_path / "resumed" / "checkpoints" / "checkpoint-4" / "unet.safetensors")
    ema_a = load_file(tmp_path / "straight" / "unet" / "diffusion_pytorch_model.safetensors")
    ema_b = load_file(tmp_path / "resumed" / "unet" / "diffusion_pytorch_model.safetensors")
    for a, b in ((raw_a, raw_b), (ema_a, ema_b)):
        assert a.keys() == b.keys()
        assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    assert not all(torch.equal(raw_a[k], ema_a[k]) for k in raw_a), "EMA weights should differ from raw ones"
    assert [int(r["step"]) for r in read_log(tmp_path / "resumed")] == [1, 2, 3, 4]


def test_nan_stops_with_step_and_keeps_checkpoint(tmp_path):
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    components = build_toy_model(seed=3)
    calls = []

    def poison_third_forward(module, args, output):
        calls.append(1)
        return UNet2DConditionOutput(sample=output.sample * float("nan")) if len(calls) == 3 else output

    components.unet.register_forward_hook(poison_third_forward)
    config = get_config("toy", output_dir=str(tmp_path), learning_rate=1e-3, max_train_steps=4,
                        gradient_accumulation_steps=1, checkpointing_steps=2)
    with pytest.raises(NonFiniteLossError, match=r"step 3 \(micro-batch 1 of 1\)") as caught:
        toy_train(config, SCENES, components=components)
    error = caught.value
    assert error.step == 3 and error.captions and error.captions[0].startswith("a photo of")
    assert error.captions[0] in str(error)
    checkpoint = tmp_path / "checkpoints" / "checkpoint-2"
    assert error.checkpoint == checkpoint
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-2"]
    assert json.loads((checkpoint / "state.json").read_text())["step"] == 2
    saved = load_file(checkpoint / "unet.safetensors")
    assert all(torch.isfinite(v).all() for v in saved.values())
    # the failing step changed no weight: the UNet in memory is still the checkpoint's
    current = components.unet.state_dict()
    assert all(torch.equal(saved[k], current[k]) for k in saved)


def test_divergence_stops_before_any_bad_checkpoint(tmp_path):
    """A learning rate of 1e30: the weights jump to ~1e30 with a finite loss (and the maps would go NaN next,
    where the BCE used to raise a raw RuntimeError); the run stops at that step with a named error, writes
    nothing of it, and names the last good checkpoint."""
    components = build_toy_model(seed=3)
    config = get_config("toy", output_dir=str(tmp_path), learning_rate=1e-3, max_train_steps=6,
                        gradient_accumulation_steps=1, checkpointing_steps=1)
    toy_train(config.replace(max_train_steps=1), SCENES, components=components)  # one good step, checkpointed
    with pytest.raises(NonFiniteLossError, match="weights diverged") as caught:
        toy_train(config.replace(learning_rate=1e30), SCENES.replace(resume="latest"), components=components)
    assert caught.value.step == 2 and caught.value.checkpoint == tmp_path / "checkpoints" / "checkpoint-1"
    assert "checkpoint-1" in str(caught.value)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-1"]
    saved = load_file(tmp_path / "checkpoints" / "checkpoint-1" / "unet.safetensors")
    assert all(torch.isfinite(v).all() and v.abs().max() < 1e3 for v in saved.values())


def test_a_finite_blow_up_is_stopped_and_the_named_checkpoint_resumes(tmp_path):
    """A learning rate of 1e4 leaves finite weights ~1e5 times the start after one step (no earlier step to
    compare with): the drift from the run's start stops it before anything is saved, the checkpoint it names
    holds the good weights, and resuming from it with a sane learning rate trains on."""
    from tokencompose.train import MAX_WEIGHT_DRIFT, weight_norm_of

    components = build_toy_model(seed=3)
    start = weight_norm_of(components.unet)
    config = get_config("toy", output_dir=str(tmp_path), learning_rate=1e-3, max_train_steps=1,
                        gradient_accumulation_steps=1, checkpointing_steps=1)
    toy_train(config, SCENES, components=components)  # one good step, checkpointed
    with pytest.raises(NonFiniteLossError, match="times the run's start") as caught:
        toy_train(config.replace(learning_rate=1e4, max_train_steps=3), SCENES.replace(resume="latest"),
              components=components)
    assert caught.value.step == 2 and caught.value.checkpoint == tmp_path / "checkpoints" / "checkpoint-1"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-1"]
    saved = load_file(tmp_path / "checkpoints" / "checkpoint-1" / "unet.safetensors")
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v.float()) for v in saved.values()])))
    assert norm <= MAX_WEIGHT_DRIFT * start
    resumed = toy_train(config.replace(max_train_steps=2), SCENES.replace(resume="latest"),
                    components=build_toy_model(seed=3))
    assert resumed.final_step == 2 and resumed.resumed_from.name == "checkpoint-1"


def test_non_finite_weights_are_refused_by_the_config():
    with pytest.raises(ValueError, match="token_weight must be a finite number"):
        get_config("toy", token_weight=float("nan"))
    with pytest.raises(ValueError, match="learning_rate must be a finite number"):
        get_config("toy", learning_rate=float("inf"))


def test_cli_output_folder_loads(tmp_path, base_dir):
    from diffusers import UNet2DConditionModel

    from tokencompose.models import load_components

    out = tmp_path / "out"
    status = cli(["--preset", "toy", "--pretrained", str(base_dir), "--toy-scenes", "--max-train-steps", "1",
                  "--gradient-accumulation-steps", "1", "--learning-rate", "1e-3", "--output-dir", str(out),
                  "--lambda", "0.01", "--no-progress"])
    assert status == 0
    unet = UNet2DConditionModel.from_pretrained(out, subfolder="unet")
    trained = load_file(out / "checkpoints" / "checkpoint-1" / "unet.safetensors")
    assert all(torch.equal(trained[k], v) for k, v in unet.state_dict().items())
    components = load_components(str(out))  # a whole toy model: unet + text encoder + scheduler
    assert components.vae is None and components.unet.config.sample_size == 32
    saved = json.loads((out / "training_config.json").read_text())
    assert saved["token_weight"] == 0.01 and saved["max_train_steps"] == 1
    assert not any(p.suffix == ".bin" or p.suffix == ".pt" for p in out.rglob("*")), "pickle files written"


@pytest.mark.parametrize(
    ("overrides", "options", "message"),
    [
        (dict(max_grad_norm=0.0), SCENES, "max_grad_norm"),
        (dict(groups=("mid_8", "up_64")), SCENES, r"group 'up_64' does not exist at resolution 32"),
        (dict(), TrainOptions(), "no training data: set train_data_dir"),
        (dict(train_data_dir="/no/such/folder"), TrainOptions(), "is not a folder"),
        (dict(), SCENES.replace(resume="/no/such/checkpoint"), "not a checkpoint folder"),
        (dict(mixed_precision="fp16", device="cpu"), SCENES, "fp16.*needs a CUDA GPU"),
        (dict(prediction_type="v_prediction"), SCENES, "does not match the base model's scheduler"),
    ],
)
def test_bad_values_rejected(tmp_path, overrides, options, message):
    config = get_config("toy", output_dir=str(tmp_path), **overrides)
    with pytest.raises(ValueError, match=message):
        runner = toy_train if options is not None and options.tensorboard is False else train
        runner(config, options, components=build_toy_model(sample_size=16) if "prediction_type" in overrides else None)


def test_sd_preset_refuses_toy_scenes_and_bad_dataset(tmp_path):
    with pytest.raises(ValueError, match="toy scenes are toy-world images"):
        scene_batches(get_config("sd14", output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match=r"must be \(min, max\) with 1 <= min <= max"):
        scene_batches(get_config("toy"), objects=(3, 2))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metadata.jsonl").write_text('{"file_name": "missing.png", "text": "a cat", "attn_list": []}\n')
    config = get_config("toy", output_dir=str(tmp_path / "o"), train_data_dir=str(bad))
    with pytest.raises(ValueError, match="missing.png"):
        train(config, TrainOptions(progress=False), components=build_toy_model(sample_size=16))


def test_8bit_adam_without_bitsandbytes_says_what_to_install(tmp_path):
    try:
        import bitsandbytes  # noqa: F401
        pytest.skip("bitsandbytes is installed")
    except ImportError:
        pass
    config = get_config("toy", output_dir=str(tmp_path), use_8bit_adam=True, max_train_steps=1)
    with pytest.raises(ImportError, match="pip install bitsandbytes"):
        toy_train(config, SCENES, components=build_toy_model(sample_size=16))


def test_8bit_adam_trains_and_resumes(tmp_path, base_dir):
    """The t4 profile's optimizer: bitsandbytes' AdamW8bit (uint8 moments) updates the UNet, and its state goes
    through a checkpoint and back. Runs where bitsandbytes is installed (it has a CPU backend since 0.45):
    `bash scripts/test_8bit.sh`, which CI runs."""
    bitsandbytes = pytest.importorskip("bitsandbytes")
    from tokencompose.models import load_components
    from tokencompose.train import _make_optimizer

    components = load_components(str(base_dir))
    before = snapshot(components.unet)
    config = toy_config(base_dir, tmp_path / "run", use_8bit_adam=True, max_train_steps=2, checkpointing_steps=1)
    optimizer = _make_optimizer(components.unet, config)
    assert isinstance(optimizer, bitsandbytes.optim.AdamW8bit)
    result = toy_train(config, SCENES, components=components)
    changed = [k for k, v in components.unet.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "8-bit AdamW did not change any UNet weight"
    state = load_file(result.checkpoints[-1] / "optimizer.safetensors")
    assert any(v.dtype == torch.uint8 for v in state.values()), "no 8-bit moments in the checkpoint"
    resumed = toy_train(toy_config(base_dir, tmp_path / "run", use_8bit_adam=True, max_train_steps=3,
                               checkpointing_steps=1), SCENES.replace(resume="latest"))
    assert resumed.final_step == 3 and resumed.resumed_from is not None


def test_accelerate_launch_runs_two_processes(tmp_path, base_dir):
    """`accelerate launch` works unchanged: two processes train together (gloo on CPU: accelerate's `--cpu`
    flag launches a single process, so the multi-process launcher is asked for and the run set to the CPU)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "tokencompose", "train", "--preset", "toy", "--pretrained", str(base_dir), "--toy-scenes",
               "--max-train-steps", "2", "--train-batch-size", "2", "--output-dir", str(out), "--no-progress",
               "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("trained to step 2") == 2, result.stdout  # both processes finished the run
    assert (out / "unet" / "config.json").is_file()
    with open(out / "log.csv") as handle:
        assert [row["step"] for row in csv.DictReader(handle)] == ["1", "2"]  # one log, written by the main process


def test_a_new_run_refuses_another_runs_folder_and_a_corrupt_checkpoint_falls_back(tmp_path, caplog):
    from tokencompose.train import RunFolderError

    components = build_toy_model(seed=3)
    config = get_config("toy", output_dir=str(tmp_path), learning_rate=1e-3, max_train_steps=2,
                        gradient_accumulation_steps=1, checkpointing_steps=1)
    toy_train(config, SCENES, components=components)
    with pytest.raises(RunFolderError, match="--resume latest.*--overwrite"):
        toy_train(config, SCENES, components=build_toy_model(seed=3))
    # the newest checkpoint is corrupt: resuming warns and continues from the one before it
    (tmp_path / "checkpoints" / "checkpoint-2" / "unet.safetensors").write_bytes(b"truncated")
    result = toy_train(config.replace(max_train_steps=3), SCENES.replace(resume="latest"),
                   components=build_toy_model(seed=3))
    assert result.resumed_from == tmp_path / "checkpoints" / "checkpoint-1"
    assert "checkpoint-2 cannot be read" in caplog.text
    # --overwrite starts afresh: the old checkpoints and log are gone
    fresh = toy_train(config.replace(max_train_steps=1), SCENES.replace(overwrite=True), components=build_toy_model(seed=3))
    assert fresh.resumed_from is None
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-1"]
    assert [row["step"] for row in read_log(tmp_path)] == ["1"]


def test_a_finite_loss_that_jumps_stops_the_run_before_it_is_saved(tmp_path, base_dir, monkeypatch):
    """The divergence guard's loss test: the loss of step 26 made 1e6 times larger (finite: the case that was saved
    as 'the last good checkpoint'); the run stops, saves nothing of that step, and names a checkpoint from before
    the weights that gave the jump."""
    import tokencompose.train as train_module

    real = train_module.compute_losses
    calls = []

    def jumping(*args, **kwargs):
        losses = real(*args, **kwargs)
        calls.append(1)
        return {**losses, "total": losses["total"] * 1e6} if len(calls) == 6 else losses

    monkeypatch.setattr(train_module, "compute_losses", jumping)
    monkeypatch.setattr(train_module, "SPIKE_WARMUP", 3)  # the guard's wait, shortened to keep the test small
    config = toy_config(base_dir, tmp_path / "run", max_train_steps=8, checkpointing_steps=2, learning_rate=1e-4)
    with pytest.raises(NonFiniteLossError, match=r"step 6: the loss jumped to .* times the median") as caught:
        toy_train(config, SCENES)
    # the loss of step 6 is that of the weights after step 5: checkpoint-4 is the last one written before them
    assert caught.value.checkpoint is not None and caught.value.checkpoint.name == "checkpoint-4"
    assert "checkpoint-4" in str(caught.value)
    saved = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert saved[-1] == "checkpoint-4" and not (tmp_path / "run" / "unet").exists()
    # the guard can be turned off: the same run then finishes
    calls.clear()
    finished = toy_train(config.replace(output_dir=str(tmp_path / "off")), SCENES.replace(loss_spike_factor=0))
    assert finished.final_step == 8
