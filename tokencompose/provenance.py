"""Provenance: what made a result, so that a result is never read back for another model or setting.

One mechanism for every cache of generated images and scores (``sample.generate``, MultiGen / VISOR runs, the
ablation, the demo, the notebooks): ``claim_folder(folder, record, patterns)`` keeps ``manifest.json`` with
the record that made the folder's results (``model_digest`` of the loaded weights, the sampling settings, the
inputs, the package version) and removes (or refuses) results made by anything else before new ones are written.

The output-folder rule, one for every command that writes (``sample``, ``evaluate``, ``train``, ``toy-data``,
``demo``, ``prepare``, ``pretrain-toy``, ``setup-tokenizer``): a command checks every input and its output folder
first, then writes; it deletes or overwrites only files that the folder's list of what this project wrote
(``record_written``, ``written-*.json``) holds, never a file of the user's, ``--overwrite`` included. A file of
unknown origin under one of the names a command writes is refused (``OutputFolderError``, naming it and saying
what to do); files of other names are never touched. ``--overwrite`` lets a command replace *its own* earlier
results where it would otherwise refuse (a finished dataset, model or run); it never empties a folder.
Folders of results keyed by what made them use ``claim_folder``; single named outputs (a report, a model, a
dataset) use ``check_outputs`` before anything is written, ``record_written`` before or as each file is written,
and ``remove_written`` to delete only what the list holds.

``weights_digest(folder)`` is a SHA-256 over a model folder's weights and configs (``*.safetensors``,
``*.json``, sorted by relative path, each file's path and bytes hashed): a retrained or swapped model gives a
new digest, an unchanged copy elsewhere the same. A result file that stores the digest of the model it
measured can be checked against the folder before it is reused (``benchmarks/toy_base_gates.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
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
    ``folder`` (path and content) except the lists of what this project wrote there (``written-*.json``) and
    measurements stored beside the weights (``MEASUREMENT_FILES``: they
    name the digest they were made on); ``FileNotFoundError`` when there is none."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json")
                   and p.name not in MEASUREMENT_FILES and not p.name.startswith("written-"))
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
    """An output folder holds files this project did not write where it would write its own (or, without
    ``--overwrite``, an earlier result of its own): nothing was changed; the message names them and what to do."""


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
    _write_json(path, current)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=0, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def _result_files(folder: Path, patterns: Sequence[str]) -> list[str]:
    return sorted({p.name for pattern in patterns for p in folder.glob(pattern)
                   if p.is_file() and p.name != MANIFEST and not p.name.startswith(WRITTEN_PREFIX)})


def _shown(names: Sequence[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def unknown_origin_error(folder: Path, foreign: Sequence[str]) -> OutputFolderError:
    """The one message of the rule for files this project did not write under the names it would write."""
    return OutputFolderError(
        f"{folder} holds {len(foreign)} file(s) this project did not write ({_shown(foreign)}) under the names "
        "this command writes; tokencompose never deletes or overwrites a file it did not write, --overwrite "
        "included. Move them out of that folder, or choose another output folder")


def check_folder(folder: str | Path, patterns: Sequence[str]) -> list[str]:
    """The first half of ``claim_folder``, changing nothing: ``OutputFolderError`` when ``folder`` holds files
    under the result names ``patterns`` that this project did not write. Commands call it before any model
    loads, so a refusal costs nothing. Returns the result files present (all of them this project's)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"{folder} is a file, not a folder: choose a folder for the results")
    if not folder.is_dir():
        return []
    present = _result_files(folder, patterns)
    listed = written_files(folder)
    ours = set(listed) if listed is not None else set(present) if (folder / MANIFEST).is_file() else set()
    foreign = [name for name in present if name not in ours]
    if foreign:
        raise unknown_origin_error(folder, foreign)
    return present


def _existing(folder: Path, names: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """``names`` (paths relative to ``folder``) that exist, and the files matching ``patterns``, sorted."""
    found = {name for name in names if os.path.lexists(folder / name)}
    found |= {p.relative_to(folder).as_posix() for pattern in patterns for p in folder.glob(pattern)
              if p.is_file() and not p.name.startswith(WRITTEN_PREFIX) and p.name != MANIFEST}
    return sorted(found)


def check_outputs(folder: str | Path, names: Sequence[str] = (), patterns: Sequence[str] = (), *,
                  replace: bool = True, what: str = "results", also_ours: Sequence[str] = ()) -> list[str]:
    """The output-folder rule for named outputs, changing nothing: call it before anything is written.

    ``names``: the paths (relative to ``folder``, files or folders) the command will write; ``patterns``: globs of
    the names its results take (e.g. ``"images/[0-9]*.png"``). Any of them present that the folder's written list
    (``record_written``; plus ``also_ours``, an earlier version's files recognised by their content) does not
    hold raises ``OutputFolderError`` naming them. When not ``replace`` (the command was not given
    ``--overwrite``), this project's own earlier ``what`` there is refused too. Returns this project's files
    present, which the command may replace or remove (``remove_written``)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"{folder} is a file, not a folder: choose a folder for the {what}")
    if not folder.is_dir():
        return []
    present = _existing(folder, names, patterns)
    ours = set(written_files(folder) or {}) | set(also_ours)
    foreign = [name for name in present if name not in ours]
    if foreign:
        raise unknown_origin_error(folder, foreign)
    if present and not replace:
        raise OutputFolderError(
            f"{folder} already holds {what} this project wrote ({_shown(present)}); pass --overwrite to replace "
            "them (only files this project wrote are replaced), or choose another output folder")
    return present


def result_and_table(path: str | Path | None) -> list[str]:
    """The names a ``--out x.json`` result writes in its folder: ``x.json`` and the ``x.md`` table beside it
    (none without a path), for ``check_outputs`` / ``record_written``."""
    if not path:
        return []
    path = Path(path)
    return [path.name, path.with_suffix(".md").name]


def remove_written(folder: str | Path, names: Sequence[str]) -> list[str]:
    """Delete those of ``names`` (relative paths, files or folders) that the written list of ``folder`` holds and
    forget them; a name it does not hold is never touched. Returns what was removed."""
    folder = Path(folder)
    listed = written_files(folder) or {}
    removed = []
    for name in names:
        path = folder / name
        if name not in listed or not os.path.lexists(path):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(name)
    if removed:
        for part in folder.glob(f"{WRITTEN_PREFIX}*.json"):
            entries = _read_json(part) or {}
            kept = {k: v for k, v in entries.items() if k not in removed}
            if kept != entries:
                _write_json(part, kept)
    return removed


def claim_folder(folder: str | Path, record: dict[str, Any], patterns: Sequence[str],
                 on_mismatch: str = "regenerate") -> Path:
    """Make ``folder`` hold only results made by ``record`` (model digest, settings, inputs; the package version
    is added), so that no result of another model, setting or input is ever read back.

    The output-folder rule (module docstring): files matching ``patterns`` (the names results take, e.g.
    ``"*_*.png"``) that this project did not write (a user's photos; results of unknown origin) raise
    ``OutputFolderError`` naming them, before anything changes; they are never deleted. Files of other names are
    never touched.

    ``folder/manifest.json`` keeps the record. When it differs from ``record``, the project's own results are
    deleted and logged (``on_mismatch="regenerate"``) or ``StaleResultError`` names what changed (``"refuse"``).
    A folder claimed by an earlier version (a manifest, no written list) counts its results as its own.
    Returns the folder."""
    if on_mismatch not in ("regenerate", "refuse"):
        raise ValueError(f"on_mismatch must be 'regenerate' or 'refuse', got {on_mismatch!r}")
    folder = Path(folder)
    # 1. check everything: refuse before changing anything
    present = check_folder(folder, patterns)  # every one of them this project's
    record = json.loads(json.dumps({**record, "tokencompose": __version__}, sort_keys=True, default=str))
    path = folder / MANIFEST
    old = _read_json(path) if path.is_file() else None
    same = old == record
    stale = [] if same else present
    if stale and on_mismatch == "refuse":
        changed = ("no manifest" if not isinstance(old, dict) else
                   "changed: " + ", ".join(f"{k} {old.get(k)!r} -> {record.get(k)!r}"
                                           for k in sorted(set(old) | set(record)) if old.get(k) != record.get(k)))
        raise StaleResultError(f"{folder} holds {len(stale)} results of another model or settings ({changed}); "
                               "use another output folder, delete it, or allow regenerating")
    # 2. act
    folder.mkdir(parents=True, exist_ok=True)
    if present and written_files(folder) is None:  # an earlier version's folder: its results are listed as ours
        record_written(folder, {name: None for name in present})
    if same:
        return folder
    if stale:
        logger.warning("%s: %d results of another model or settings removed", folder, len(stale))
        remove_written(folder, stale)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return folder
