"""Learning-rate schedules and weight averages (EMA) of both trainers, in one place.

Fine-tuning (``train.py``) uses the library pieces the authors' script uses:

- ``fine_tuning_schedule``: diffusers' ``get_scheduler("constant_with_warmup")``, linear warm-up from 0 over
  ``Config.lr_warmup_steps`` optimizer steps, then constant (the authors' ``train.sh``: constant, 0 warm-up
  steps, where it is exactly ``learning_rate``). A resumed run rebuilds it at its step (``last_epoch``), so
  nothing of it needs checkpointing;
- ``fine_tuning_ema``: diffusers' ``EMAModel`` (its shadow parameters are checkpointed as safetensors and its
  counters as JSON, ``checkpoints.ema_state`` / ``load_ema``).

Toy pre-training (``pretrain.py``) keeps two small pieces by hand, for one reason: the shipped toy bases were
trained with them, and a library version rounds differently, so a base retrained from its card's command
would no longer come out bit for bit:

- ``cooldown_learning_rate``: constant, then linear to 0. transformers' ``get_wsd_schedule`` has this shape,
  but a ``LambdaLR`` sets ``lr = base * factor`` with ``factor = 1 - (step - decay_start) / (steps -
  decay_start)``; ours is ``base * (steps - step) / (steps - decay_start)``, which differs in the last bit at
  about half the cooldown's steps (1942 of 4000 for the first base's 10k-step recipe);
- ``update_average``: ``average.lerp_(weights, 1 - decay)`` over every floating tensor of the state dict.
  ``EMAModel`` computes ``s - (1 - decay) (s - p)`` instead (another rounding), copies the weights at its first
  update (decay 0) where the bases average from the first step with a constant decay, and averages parameters
  only, where a jointly trained text encoder's checkpoint and shipped model hold its whole state dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch


def fine_tuning_schedule(optimizer: torch.optim.Optimizer, learning_rate: float, warmup_steps: int,
                         start_step: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """diffusers' ``constant_with_warmup`` schedule of ``optimizer``, positioned at optimizer step ``start_step``.

    The learning rate of step ``k`` (0-based) is ``learning_rate * min(1, k / warmup_steps)``; with no warm-up,
    exactly ``learning_rate``. Call ``.step()`` once after each optimizer step; ``get_last_lr()[0]`` is the
    rate the next step uses.
    """
    from diffusers.optimization import get_scheduler  # lazy: diffusers takes seconds to import

    for group in optimizer.param_groups:
        group["initial_lr"] = learning_rate  # what LambdaLR scales; set here so a resumed run needs no state
    return get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=warmup_steps,
                         last_epoch=start_step - 1)


def fine_tuning_ema(parameters: Iterable[torch.nn.Parameter], decay: float) -> Any:
    """diffusers' ``EMAModel`` of ``parameters``: decay ``min(decay, (1 + n) / (10 + n))`` at its (n + 1)-th
    update, the first one copying the weights (as in diffusers' ``train_text_to_image.py``)."""
    from diffusers.training_utils import EMAModel  # lazy: diffusers takes seconds to import

    return EMAModel(parameters, decay=decay)


def cooldown_learning_rate(step: int, learning_rate: float, decay_start: int, steps: int) -> float:
    """``learning_rate`` up to ``decay_start``, then a linear cooldown to 0 at ``steps`` (by hand: module
    docstring)."""
    if step < decay_start or decay_start >= steps:
        return learning_rate
    return learning_rate * (steps - step) / (steps - decay_start)


@torch.no_grad()
def update_average(average: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor], decay: float) -> None:
    """One EMA update in place, constant ``decay``: each floating tensor of ``average`` moves ``1 - decay`` of
    the way to ``weights`` (by hand: module docstring); other tensors (integer buffers) stay as they are."""
    for name, value in weights.items():
        if value.is_floating_point():
            average[name].lerp_(value, 1 - decay)
