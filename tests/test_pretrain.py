"""pretrain.py: the toy pre-training runs, checkpoints safely (no pickle) and resumes where it stopped."""

import json

import torch
from safetensors.torch import load_file

from tokencompose.pretrain import PretrainSettings, _flatten_optimizer, _load_optimizer, pretrain_toy


def test_optimizer_state_round_trips_through_safetensors():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    tensors, meta = _flatten_optimizer(optimizer)
    meta = json.loads(json.dumps(meta))  # what the checkpoint's state.json holds
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _load_optimizer(fresh, tensors, meta)
    for index, entry in optimizer.state_dict()["state"].items():
        for name, value in entry.items():
            assert torch.equal(torch.as_tensor(fresh.state_dict()["state"][index][name]), torch.as_tensor(value))


def test_two_steps_then_resume(tmp_path):
    settings = PretrainSettings(steps=2, batch_size=2, checkpoint_every=1, size=32)
    work = tmp_path / "work"
    components = pretrain_toy(tmp_path / "model", settings, work_dir=work, resume=False)
    assert (tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pt"))
    state = json.loads((work / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2
    log = (work / "log.csv").read_text().splitlines()
    assert log[0] == "step,loss,seconds" and len(log) == 3
    # asking for 3 steps resumes from step 2 and runs one more
    pretrain_toy(tmp_path / "model", PretrainSettings(steps=3, batch_size=2, checkpoint_every=1), work_dir=work)
    assert json.loads((work / "checkpoint" / "state.json").read_text())["step"] == 3
    assert len((work / "log.csv").read_text().splitlines()) == 4
    ema = load_file(work / "checkpoint" / "ema.safetensors")
    assert set(ema) == set(components.unet.state_dict())
