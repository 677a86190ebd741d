"""Provenance: what made a result, so that a result is never read back for another model or setting.

One mechanism for every cache of generated images and scores (``sample.generate``, MultiGen / VISOR runs, the
ablation, the demo, the notebooks): ``claim_folder(folder, record, patterns)`` keeps ``manifest.json`` with
the record that made the folder's results (``model_digest`` of the loaded weights, the sampling settings, the
package version) and removes (or refuses) results made by anything else before new ones are written.

``weights_digest(folder)`` is a SHA-256 over a model folder's weights and configs (``*.safetensors``,
``*.json``, sorted by relative path, each file's path and bytes hashed): a retrained or swapped model gives a
new digest, an unchanged copy elsewhere the same. A result file that stores the digest of the model it
measured can be checked against the folder before it is reused (``benchmarks/toy_base_gates.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import __version__

logger = logging.getLogger(__name__)


#: files of a model folder that record measurements of its weights (``pretrain.save_gates``), not weights
MEASUREMENT_FILES = frozenset({"gates.json"})


def weights_digest(folder: str | Path, length: int = 16) -> str:
    """Hex SHA-256 (first ``length`` characters) of every ``*.safetensors`` and ``*.json`` file under
    ``folder`` (path and content) except measurements stored beside the weights (``MEASUREMENT_FILES``: they
    name the digest they were made on); ``FileNotFoundError`` when there is none."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json")
                   and p.name not in MEASUREMENT_FILES)
    if not files:
        raise FileNotFoundError(f"no weights or configs (*.safetensors, *.json) under {folder}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:length]


#: the file that says what made a folder's results
MANIFEST = "manifest.json"


class StaleResultError(RuntimeError):
    """A folder holds results of another model or other settings, and regenerating was not allowed."""


def model_digest(model: Any) -> str:
    """Hex SHA-256 (16 characters) of the weights a *loaded* model samples with: the UNet, the text encoder
    and (Stable Diffusion) the VAE, each tensor's name, dtype, shape and bytes, plus the scheduler's config and
    the toy text encoder's padding mode. Whatever the user named (preset, folder, hub id, objects in memory),
    the digest changes exactly when what generates the images changes."""
    digest = hashlib.sha256()
    parts = [("unet", model.unet), ("text_encoder", model.text_encoder)]
    if getattr(model, "vae", None) is not None:
        parts.append(("vae", model.vae))
    for part, module in parts:
        for name, tensor in sorted(module.state_dict().items()):
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{part}.{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    digest.update(str(getattr(model.text_encoder.config, "tokencompose_padding", "encoded")).encode())
    scheduler = model.scheduler
    digest.update(type(scheduler).__name__.encode())
    digest.update(json.dumps(dict(scheduler.config), sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def claim_folder(folder: str | Path, record: dict[str, Any], patterns: Sequence[str],
                 on_mismatch: str = "regenerate") -> Path:
    """Make ``folder`` hold only results made by ``record`` (model digest, settings; the package version is
    added), so that no result of another model or setting is ever read back.

    ``folder/manifest.json`` keeps the record. When it differs from ``record``, or results matching
    ``patterns`` (e.g. ``"*_*.png"``) are there without a manifest, those results are deleted and logged
    (``on_mismatch="regenerate"``) or ``StaleResultError`` names what changed (``"refuse"``). Returns the
    folder."""
    if on_mismatch not in ("regenerate", "refuse"):
        raise ValueError(f"on_mismatch must be 'regenerate' or 'refuse', got {on_mismatch!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = json.loads(json.dumps({**record, "tokencompose": __version__}, sort_keys=True, default=str))
    path = folder / MANIFEST
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    if old == record:
        return folder
    stale = sorted(p for pattern in patterns for p in folder.glob(pattern) if p.is_file())
    if stale:
        changed = ("no manifest (results of unknown origin)" if old is None else
                   "changed: " + ", ".join(f"{k} {old.get(k)!r} -> {record.get(k)!r}"
                                           for k in sorted(set(old) | set(record)) if old.get(k) != record.get(k)))
        if on_mismatch == "refuse":
            raise StaleResultError(f"{folder} holds {len(stale)} results of another model or settings ({changed}); "
                                   "use another output folder, delete it, or allow regenerating")
        logger.warning("%s: %d results of another model or settings removed (%s)", folder, len(stale), changed)
        for stale_path in stale:
            stale_path.unlink()
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return folder
