"""Provenance: what made a result, so that a result is never read back for another model or setting.

One mechanism for every cache of generated images and scores (``sample.generate``, MultiGen / VISOR runs, the
ablation, the demo, the notebooks): ``claim_folder(folder, record, patterns)`` keeps ``manifest.json`` with
the record that made the folder's results (``model_digest`` of the loaded weights, the sampling settings, the
inputs, the package version) and removes (or refuses) results made by anything else before new ones are written.

The output-folder rule (``claim_folder``): a command deletes or overwrites only files this project recorded as
written there (``record_written``), and checks before it changes anything; files of unknown origin under the
names results take are refused (``OutputFolderError``), or handed over with ``--overwrite``.

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
from .cli_args import UserError

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


class OutputFolderError(UserError):
    """An output folder holds files this project did not write where it would write its own: nothing was
    changed; the message names them and how to proceed (another folder, or ``--overwrite``)."""


#: side files of a folder listing what this project wrote there: one a writing process (``record_written``)
WRITTEN_PREFIX = "written-"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def written_files(folder: str | Path) -> dict[str, Any] | None:
    """``{file name: tag}`` of the files this project wrote in ``folder`` (merged ``written-*.json``; the tag is
    what the file is of, e.g. its prompt), or ``None`` for a folder claimed before the files were listed."""
    folder = Path(folder)
    parts = sorted(folder.glob(f"{WRITTEN_PREFIX}*.json"))
    if not parts:
        return None
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(_read_json(part) or {})
    return merged


def record_written(folder: str | Path, files: dict[str, Any], part: str = "0") -> None:
    """Add ``files`` (``{file name: tag}``) to what this project wrote in ``folder``: the list ``claim_folder``
    trusts. Each writing process passes its own ``part`` (its rank), so parallel writers never race."""
    path = Path(folder) / f"{WRITTEN_PREFIX}{part}.json"
    current = _read_json(path) or {}
    current.update(files)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(current, indent=0, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def _result_files(folder: Path, patterns: Sequence[str]) -> list[str]:
    return sorted({p.name for pattern in patterns for p in folder.glob(pattern)
                   if p.is_file() and p.name != MANIFEST and not p.name.startswith(WRITTEN_PREFIX)})


def check_folder(folder: str | Path, patterns: Sequence[str], overwrite: bool = False) -> list[str]:
    """The first half of ``claim_folder``, changing nothing: ``OutputFolderError`` when ``folder`` holds files
    under the result names ``patterns`` that this project did not write (unless ``overwrite``); returns them.
    Commands call it before any model loads, so a refusal costs nothing."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"{folder} is a file, not a folder: choose a folder for the results")
    if not folder.is_dir():
        return []
    present = _result_files(folder, patterns)
    listed = written_files(folder)
    ours = set(listed) if listed is not None else set(present) if (folder / MANIFEST).is_file() else set()
    foreign = [name for name in present if name not in ours]
    if foreign and not overwrite:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputFolderError(
            f"{folder} holds {len(foreign)} file(s) this project did not write ({shown}) under the names its "
            "results take; tokencompose never deletes or overwrites them. Choose another output folder, or pass "
            "--overwrite (overwrite=True) to let this command replace them")
    return foreign


def claim_folder(folder: str | Path, record: dict[str, Any], patterns: Sequence[str],
                 on_mismatch: str = "regenerate", overwrite: bool = False) -> Path:
    """Make ``folder`` hold only results made by ``record`` (model digest, settings, inputs; the package version
    is added), so that no result of another model, setting or input is ever read back.

    The output-folder rule, the same for every command: a command deletes or overwrites only files that this
    project recorded as written there (``record_written``); it checks first and refuses before it changes
    anything. Files matching ``patterns`` (the names results take, e.g. ``"*_*.png"``) that the project did not
    write (a user's photos; results of unknown origin) raise ``OutputFolderError`` naming them, unless
    ``overwrite`` (``--overwrite``) hands them over. Files of other names are never touched.

    ``folder/manifest.json`` keeps the record. When it differs from ``record``, the project's own results are
    deleted and logged (``on_mismatch="regenerate"``) or ``StaleResultError`` names what changed (``"refuse"``).
    A folder claimed by an earlier version (a manifest, no written list) counts its results as its own.
    Returns the folder."""
    if on_mismatch not in ("regenerate", "refuse"):
        raise ValueError(f"on_mismatch must be 'regenerate' or 'refuse', got {on_mismatch!r}")
    folder = Path(folder)
    # 1. check everything: refuse before changing anything
    foreign = check_folder(folder, patterns, overwrite)
    record = json.loads(json.dumps({**record, "tokencompose": __version__}, sort_keys=True, default=str))
    path = folder / MANIFEST
    old = _read_json(path) if path.is_file() else None
    present = _result_files(folder, patterns) if folder.is_dir() else []
    listed = written_files(folder) if folder.is_dir() else None
    same = old == record
    stale = [] if same else [name for name in present if name not in foreign]
    if stale and on_mismatch == "refuse":
        changed = ("no manifest" if not isinstance(old, dict) else
                   "changed: " + ", ".join(f"{k} {old.get(k)!r} -> {record.get(k)!r}"
                                           for k in sorted(set(old) | set(record)) if old.get(k) != record.get(k)))
        raise StaleResultError(f"{folder} holds {len(stale)} results of another model or settings ({changed}); "
                               "use another output folder, delete it, or allow regenerating")
    # 2. act
    folder.mkdir(parents=True, exist_ok=True)
    if foreign:  # overwrite: the user handed them over
        logger.warning("%s: --overwrite: %d file(s) this project did not write are replaced", folder, len(foreign))
        for name in foreign:
            (folder / name).unlink()
    if same and listed is None and present:  # an earlier version's folder: list its results as ours from now on
        record_written(folder, {name: None for name in present if name not in foreign})
    if same:
        return folder
    if stale:
        logger.warning("%s: %d results of another model or settings removed", folder, len(stale))
        for name in stale:
            (folder / name).unlink()
    for part in folder.glob(f"{WRITTEN_PREFIX}*.json"):
        part.unlink()
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return folder
