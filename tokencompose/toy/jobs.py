"""Resumable ablation jobs: one fine-tune of a toy base and its evaluations, cached in the job's folder.

A *job* is described by a JSON-normal spec (``job_spec``): the base model, the loss variant (a row of the
paper's Table 2, ``ablation.VARIANTS``, or ``"base"`` = evaluate the base without fine-tuning), the training
seed, the ``AblationSettings`` and the guidance scales. ``run_job`` fine-tunes and evaluates it and writes
``job.json``; a second call with the same spec returns that record without running anything, so an
interrupted benchmark resumes where it stopped. The spec holds the base's ``provenance.weights_digest``: a
job made from other weights or settings is refused (``StaleResultError``), never served.

``job_pool`` runs jobs inline (one worker: the CPU) or in worker processes (a GPU fits one or two). Used by
``benchmarks/toy_ablation.py`` and ``benchmarks/toy_investigation.py``::

    spec = job_spec(Path("outputs/abl"), "tokencompose/assets/toy_base", "both_seed0", "both", 0, 0.03,
                    AblationSettings(steps=400), [3.0], miou=True)
    record = run_job(spec)   # {"scores": {"3.0": {"seen": {"4": {...}}, ...}}, "losses": ..., ...}
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import multiprocessing
import os
import platform
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..provenance import StaleResultError, weights_digest
from .ablation import EXTRA_VARIANTS, VARIANTS, AblationSettings, attention_miou, evaluate_model, finetune

logger = logging.getLogger(__name__)

RESUMED_NOTE = ("resumed after an interrupted invocation: fine-tune minutes summed from train/log.csv, evaluation "
                "minutes count only the part after the resume")


def init_worker(threads: int) -> None:
    """Set a worker's torch threads (on the CPU keep processes x threads <= cores) and quiet its logging."""
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)


def job_spec(work: Path, base: str, name: str, variant: str, seed: int, ratio: float, settings: AblationSettings,
             guidances: list[float], miou: bool, own: dict | None = None) -> dict[str, Any]:
    """The description of one job for ``run_job`` (folder ``work / name``); ``variant`` picks which of the
    settings' loss weights are kept ("base" = evaluate ``base`` without fine-tuning). The base's weights digest
    is part of the spec, so a retrained base never reuses a job. ``own``: the ``own_samples.OwnSampleSettings``
    fields of the "own" variant (part of the spec and of the fine-tune's identity)."""
    use_token, use_pixel = {**VARIANTS, **EXTRA_VARIANTS}.get(variant, (False, False))
    # a term that is off has no weight, and with no term on, no window (L_LDM only is the same model either way)
    settings = dataclasses.replace(settings, token_weight=settings.token_weight if use_token else 0.0,
                                   pixel_weight=settings.pixel_weight if use_pixel else 0.0,
                                   grounding_timesteps=settings.grounding_timesteps if use_token or use_pixel
                                   else None)
    return {"name": name, "variant": variant, "seed": seed, "ratio": ratio, "base": base,
            "base_digest": weights_digest(base), "folder": str(Path(work) / name), "guidances": guidances,
            # JSON-normal (lists, not tuples) so that a cached job compares equal to its spec
            "settings": json.loads(json.dumps(dataclasses.asdict(settings))),
            "miou": miou, **({"own": json.loads(json.dumps(own))} if variant == "own" else {})}


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune (unless ``variant == "base"``) and evaluate at every guidance scale; cached in ``job.json``.

    Raises ``StaleResultError`` when the folder holds a job of other settings, guidances or base weights."""
    folder = Path(spec["folder"])
    done = folder / "job.json"
    if done.is_file():
        cached = json.loads(done.read_text())
        changed = [key for key in ("settings", "guidances", "base_digest", "own") if cached.get(key) != spec.get(key)]
        if changed:
            raise StaleResultError(f"{folder} holds a job made with other {', '.join(changed)} (e.g. a retrained "
                                   "base); delete that folder or use another --work")
        return cached
    settings = AblationSettings(**spec["settings"])
    began = time.time()
    result = None
    shared = None if spec["variant"] == "base" else same_finetune(spec)
    if spec["variant"] == "base":
        model_dir = Path(spec["base"])
    elif shared is not None:  # the same fine-tune was run by another job (e.g. the sweep's): its weights
        model_dir = shared / "train"
        logger.warning("job %s: fine-tune shared with %s (same base, variant, seed and training settings)",
                       spec["name"], shared.name)
    else:
        result = finetune(spec["variant"], spec["seed"], settings, folder / "train", spec["base"], own=spec.get("own"))
        model_dir = result.unet_dir.parent
    train_minutes = (time.time() - began) / 60
    note, losses = None, {}
    if shared is not None:
        losses = losses_from_log(shared / "train" / "log.csv")["losses"]
        train_minutes, note = 0.0, SHARED_NOTE + shared.name
    if result is not None:
        logged = losses_from_log(folder / "train" / "log.csv")
        losses = logged["losses"]
        if len(result.history) < settings.steps:  # resumed: part of the fine-tune ran in an earlier invocation
            train_minutes, note = logged["train_minutes"], RESUMED_NOTE
    began = time.time()
    scores = {}
    for guidance in spec["guidances"]:
        cfg_settings = dataclasses.replace(settings, guidance=guidance)
        scores[str(guidance)] = evaluate_model(model_dir, cfg_settings, folder / f"eval_cfg{guidance}", spec["name"])
    miou = attention_miou(model_dir, settings) if spec.get("miou") else None
    record = {**{k: spec[k] for k in ("name", "variant", "seed", "ratio", "guidances")}, "settings": spec["settings"],
              **({"own": spec["own"]} if "own" in spec else {}),
              "base_digest": spec["base_digest"], "device": device_description(),
              "train_minutes": train_minutes, "eval_minutes": (time.time() - began) / 60, "losses": losses,
              "scores": scores, "miou": miou, **({"note": note} if note else {})}
    folder.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(record, default=str))
    return json.loads(done.read_text())  # the same (string) keys whether fresh or cached


SHARED_NOTE = "fine-tune shared with job "


def trained_model(folder: str | Path) -> Path:
    """The fine-tuned model folder of the finished job in ``folder``: its own ``train/``, or, when its fine-tune
    was shared (``same_finetune``), the other job's. ``FileNotFoundError`` when the job has no model."""
    folder = Path(folder)
    record = json.loads((folder / "job.json").read_text())
    note = record.get("note") or ""
    model = (folder.parent / note.removeprefix(SHARED_NOTE) / "train") if note.startswith(SHARED_NOTE) else folder / "train"
    if not (model / "unet").is_dir():
        raise FileNotFoundError(f"job {folder.name}: no fine-tuned model in {model} (a 'base' job, or deleted)")
    return model


#: the settings that decide a fine-tune's weights (the rest of ``AblationSettings`` is evaluation)
FINETUNE_KEYS = ("steps", "batch_size", "learning_rate", "token_weight", "pixel_weight", "grounding_timesteps")


def finetune_identity(spec: dict[str, Any]) -> tuple:
    """What makes a job's fine-tuned weights: base weights, variant, seed and ``FINETUNE_KEYS``. Two jobs with
    the same identity train bit-identical models (same data order, noise and seed), whatever they evaluate."""
    return (spec["base_digest"], spec["variant"], spec["seed"],
            *(json.dumps(spec["settings"].get(k)) for k in FINETUNE_KEYS), json.dumps(spec.get("own")))


def same_finetune(spec: dict[str, Any]) -> Path | None:
    """A finished job beside ``spec``'s folder (same work folder) whose fine-tune is the one ``spec`` asks for
    (``finetune_identity``) and whose weights are on disk, or None. Lets the main runs reuse the ratio sweep's
    fine-tunes (the ablation's seed-0 "both" at the chosen ratio, and "L_LDM only") instead of training them
    twice; evaluation still runs on the job's own prompts."""
    folder = Path(spec["folder"])
    wanted = finetune_identity(spec)
    for done in sorted(folder.parent.glob("*/job.json")):
        other = done.parent
        if other == folder or not (other / "train" / "unet").is_dir() or not (other / "train" / "log.csv").is_file():
            continue
        try:
            record = json.loads(done.read_text())
            if (record.get("note") or "").startswith(SHARED_NOTE):
                continue  # it has no weights of its own
            if finetune_identity(record) == wanted:
                return other
        except (KeyError, ValueError, TypeError):
            continue
    return None


def losses_from_log(log: Path) -> dict[str, Any]:
    """Losses (mean of the first 20 and last 100 steps) and fine-tuning minutes (sum of the per-step seconds) of
    a run's ``log.csv``: complete even when the run was resumed."""
    with open(log, newline="") as handle:
        rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]
    return {"losses": {"first": _mean_rows(rows[:20]), "last": _mean_rows(rows[-100:])},
            "train_minutes": sum(row.get("seconds", 0.0) for row in rows) / 60}


def _mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in ("ldm", "token", "pixel", "total") if rows and k in rows[0]]
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


class _Inline:
    """An executor that runs each job at once, in this process (one worker)."""

    def submit(self, fn, *args):
        future: Future = Future()
        logger.warning("job %s ...", args[0]["name"])
        future.set_result(fn(*args))
        return future

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def job_pool(workers: int, threads: int):
    """Worker processes when ``workers > 1`` (one or two per GPU), else inline in this process."""
    if workers <= 1:
        init_worker(threads)
        return _Inline()

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker,
                               initargs=(threads,))


def device_description() -> str:
    """Where a job runs: the GPU's name, or the CPU with its torch threads."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"


def machine_description() -> str:
    """The machine of a benchmark run, for its results file."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} GPU ({os.cpu_count()} CPU cores), torch {torch.__version__}"
    return (f"{platform.machine()} CPU, {os.cpu_count()} cores ({platform.processor() or 'cpu'}), "
            f"torch {torch.__version__}")


def strip_scores(scores: dict) -> dict:
    """A job's scores without ``run_multigen``'s model label (kept: scores and per-image outcomes, for
    re-analysis)."""
    return {g: {s: {k: {key: v for key, v in res.items() if key not in ("model",)} for k, res in cells.items()}
                for s, cells in splits.items()} for g, splits in scores.items()}
