"""schedules.py + checkpoints.ema_state: the fine-tuning schedule and EMA resume exactly, the pre-training pieces
compute what the shipped bases were trained with."""

import json

import torch

from tokencompose.checkpoints import ema_state, load_ema
from tokencompose.schedules import (
    cooldown_learning_rate,
    fine_tuning_ema,
    fine_tuning_schedule,
    update_average,
)


def _learning_rates(start: int, steps: int, warmup: int) -> list[float]:
    parameter = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([parameter], lr=1.0)
    schedule = fine_tuning_schedule(optimizer, 1e-4, warmup, start)
    rates = []
    for _ in range(steps):
        rates.append(schedule.get_last_lr()[0])
        assert optimizer.param_groups[0]["lr"] == rates[-1]
        optimizer.step()
        schedule.step()
    return rates


def test_fine_tuning_schedule_warms_up_then_is_constant_and_resumes_at_its_step():
    straight = _learning_rates(0, 6, warmup=4)
    assert straight[0] == 0.0 and straight[4:] == [1e-4, 1e-4]  # diffusers' constant_with_warmup
    assert all(a < b for a, b in zip(straight[:4], straight[1:5], strict=True))
    assert _learning_rates(3, 3, warmup=4) == straight[3:]
    assert _learning_rates(0, 3, warmup=0) == [1e-4] * 3  # the authors' recipe: exactly the learning rate


def test_ema_checkpoint_round_trip_continues_exactly():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    names = [name for name, _ in model.named_parameters()]
    ema = fine_tuning_ema(model.parameters(), decay=0.9)
    updates = [torch.randn(2, 3) for _ in range(4)]
    for update in updates[:2]:
        model.weight.data += update
        ema.step(model.parameters())
    tensors, meta = ema_state(ema, names)
    assert set(tensors) == set(names) and meta["optimization_step"] == 2
    resumed = fine_tuning_ema(model.parameters(), decay=0.9)
    load_ema(resumed, tensors, json.loads(json.dumps(meta)), names)
    for update in updates[2:]:
        model.weight.data += update
        ema.step(model.parameters())
        resumed.step(model.parameters())
    for a, b in zip(ema.shadow_params, resumed.shadow_params, strict=True):
        assert torch.equal(a, b)


def test_pretraining_cooldown_and_average_are_the_shipped_bases_formulas():
    assert cooldown_learning_rate(59, 1e-3, 60, 100) == 1e-3
    assert cooldown_learning_rate(70, 1e-3, 60, 100) == 1e-3 * 30 / 40
    assert cooldown_learning_rate(99, 1e-3, 100, 100) == 1e-3  # no cooldown
    average = {"w": torch.zeros(3), "ids": torch.arange(3)}
    update_average(average, {"w": torch.ones(3), "ids": torch.arange(3) + 5}, decay=0.75)
    assert torch.equal(average["w"], torch.full((3,), 0.25)) and torch.equal(average["ids"], torch.arange(3))
