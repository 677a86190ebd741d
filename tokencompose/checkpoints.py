"""Checkpoints of both training loops (``train.py``, ``pretrain.py``): written then renamed, safetensors + JSON.

- ``publish(tmp, final)``: a checkpoint is written into a temporary folder, every file and the folder are
  fsynced, then the folder is renamed into place (and the parent fsynced), so a crash or a power cut never
  leaves a half-written checkpoint under its final name;
- ``flatten_optimizer`` / ``load_optimizer``: an optimizer's state as flat tensors (safetensors, no pickle)
  plus JSON, nested state included (bitsandbytes' 8-bit optimizers);
- ``ema_state`` / ``load_ema``: diffusers' ``EMAModel`` the same way: its shadow parameters as tensors named
  after the model's parameters, its counters (``optimization_step``, decay) as JSON. (``EMAModel.save_pretrained``
  writes a whole model folder, and ``torch.save(ema.state_dict())`` a pickle.)

Written by hand rather than with ``accelerate``'s ``save_state``: that pickles the optimizer and RNG states
(``torch.load`` of a pickle is what ``weights_only`` loaders refuse), and our exact resume re-seeds every step
from (seed, step) instead of restoring RNG states.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def fsync_tree(folder: Path) -> None:
    """fsync every file under ``folder`` and the folders themselves (POSIX; a no-op where unsupported)."""
    for path in sorted(folder.rglob("*")) + [folder]:
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(descriptor)
        except OSError:
            pass
        finally:
            os.close(descriptor)


def publish(tmp: Path, final: Path) -> Path:
    """Make the complete folder ``tmp`` the checkpoint ``final``: fsync, replace, fsync the parent."""
    fsync_tree(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    try:
        descriptor = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError:
        pass
    return final


def flatten_optimizer(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state as flat tensors (safetensors, no pickle) plus the JSON-able rest.

    Tensors nested in dicts (bitsandbytes' 8-bit optimizers keep theirs under a sub-dict) are stored under
    ``"<param index>.<key>/<sub key>..."`` and put back in place by ``load_optimizer``.
    """
    state = optimizer.state_dict()
    tensors, meta = {}, {"param_groups": state["param_groups"], "state": {}}
    seen: set[int] = set()  # safetensors refuses tensors sharing memory (8-bit optimizers share their qmaps)

    def split(entry: dict, prefix: str) -> dict:
        rest = {}
        for name, value in entry.items():
            if torch.is_tensor(value):
                shared = value.untyped_storage().data_ptr() in seen
                seen.add(value.untyped_storage().data_ptr())
                tensors[f"{prefix}{name}"] = value.clone() if shared else value.contiguous()
            elif isinstance(value, dict):
                rest[name] = {"__nested__": split(value, f"{prefix}{name}/")}
            else:
                rest[name] = value
        return rest

    for index, entry in state["state"].items():
        meta["state"][str(index)] = split(entry, f"{index}.")
    return tensors, meta


def load_optimizer(optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    def join(rest: dict, prefix: str) -> dict:
        entry = {name: join(value["__nested__"], f"{prefix}{name}/")
                 if isinstance(value, dict) and "__nested__" in value else value for name, value in rest.items()}
        for key, value in tensors.items():
            if key.startswith(prefix) and "/" not in key[len(prefix):]:
                entry[key[len(prefix):]] = value
        return entry

    state = {int(index): join(rest, f"{index}.") for index, rest in meta["state"].items()}
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def ema_state(ema: Any, names: Sequence[str]) -> tuple[dict[str, torch.Tensor], dict]:
    """An ``EMAModel``'s shadow parameters as ``{parameter name: tensor}`` (``names``: the averaged model's
    ``named_parameters()`` names, in order) and the JSON-able rest of its ``state_dict``."""
    state = dict(ema.state_dict())
    shadow = state.pop("shadow_params")
    if len(shadow) != len(names):
        raise ValueError(f"the EMA averages {len(shadow)} tensors, but {len(names)} parameter names were given")
    return {name: value.detach().contiguous().cpu() for name, value in zip(names, shadow, strict=True)}, state


def load_ema(ema: Any, tensors: dict[str, torch.Tensor], meta: dict, names: Sequence[str]) -> None:
    """Put ``ema_state``'s tensors and counters back into ``ema`` (an ``EMAModel`` of the same model); a
    parameter missing from ``tensors`` raises ``KeyError`` naming it."""
    missing = [name for name in names if name not in tensors]
    if missing:
        raise KeyError(f"the EMA checkpoint has no tensor for {missing[:3]} ({len(missing)} missing)")
    device = ema.shadow_params[0].device if ema.shadow_params else None
    ema.load_state_dict({**meta, "shadow_params": [tensors[name].to(device) for name in names]})
