"""The project's controlled toy result, read from the committed results file, for the lessons to display.

A lesson that fine-tunes one model and compares it with the base (notebooks 05 and 06) cannot say what the
grounding losses did: the fine-tuning itself (more steps on the toy scenes) changes the model too. The
controlled comparison is ``benchmarks/toy_ablation.py``'s: the same base fine-tuned with L_LDM only and with
L_LDM + L_token + L_pixel, same steps, data order, noise and seeds, three seeds, scored on the same held-out
prompts. Its results file (``benchmarks/results/toy_ablation_cpu_noun_base.json``) keeps every image's
outcome, so the numbers here are computed from it (``ablation.pooled``, ``ablation.paired_difference``), never
typed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tokencompose.stats import paired_interval
from tokencompose.toy.ablation import interval_cell, outcome_rows, pooled

#: the committed results of the ablation on the default toy base
RESULTS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
ABLATION_RESULT = "toy_ablation_cpu_noun_base"
#: the ablation's variants, as its tables name them
VARIANT_LABELS = {"ldm": "L_LDM only", "pixel": "+ L_pixel", "token": "+ L_token", "both": "+ L_token + L_pixel"}


def load_result(name: str = ABLATION_RESULT, folder: str | Path | None = None) -> dict[str, Any]:
    """The JSON results file ``<folder>/<name>.json`` (``folder``: ``benchmarks/results`` of this checkout)."""
    path = Path(folder if folder is not None else RESULTS_DIR) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results file {path}: it is committed in the repository's benchmarks/results/ "
                                "(an installed package without the repository does not have it)")
    return json.loads(path.read_text(encoding="utf-8"))


def records_of(result: Mapping[str, Any], variant: str) -> list[dict[str, Any]]:
    """The job records of one ``variant`` (``VARIANT_LABELS``), sorted by seed."""
    records = sorted((r for r in result["records"] if r["variant"] == variant), key=lambda r: r["seed"])
    if not records:
        raise KeyError(f"no records of variant {variant!r} (have {sorted({r['variant'] for r in result['records']})})")
    return records


def reading(stat: Mapping[str, float]) -> str:
    """"gain" when the interval lies above 0, "loss" below 0, else "no difference shown"."""
    if stat["low"] > 0:
        return "gain"
    if stat["high"] < 0:
        return "loss"
    return "no difference shown"


def controlled_comparison(result: Mapping[str, Any], split: str = "unseen", control: str = "ldm",
                          treated: str = "both") -> dict[str, Any]:
    """``treated`` against ``control`` in the results file: MG_k of each (pooled over seeds, 95% intervals
    clustered by (seed, prompt)), the paired difference ``treated - control`` per k (same prompts and sampling
    seeds, pooled), the attention mIoU of each (mean over seeds) and the settings that make it controlled."""
    treated_records, control_records = records_of(result, treated), records_of(result, control)
    if [r["seed"] for r in treated_records] != [r["seed"] for r in control_records]:
        raise ValueError(f"{treated!r} and {control!r} were not run with the same seeds")
    first = control_records[0]
    guidance = str(first["guidances"][0])
    count = max(int(c) for c in first["scores"][guidance][split])
    ks = range(1, count + 1)
    scores = {variant: {k: pooled(records, guidance, split, k) for k in ks}
              for variant, records in ((control, control_records), (treated, treated_records))}
    difference = {}
    for k in ks:
        rows_t = [row for r in treated_records for row in outcome_rows(r, guidance, split, k)]
        rows_c = [row for r in control_records for row in outcome_rows(r, guidance, split, k)]
        difference[k] = paired_interval(rows_t, rows_c)
    miou = {variant: float(np.mean([r["miou"]["miou"] for r in records]))
            for variant, records in ((control, control_records), (treated, treated_records))}
    settings = first["settings"]
    return {"control": control, "treated": treated, "split": split, "guidance": guidance, "objects": count,
            "seeds": [r["seed"] for r in control_records], "steps": settings["steps"],
            "prompts": settings["prompts_per_count"], "images_per_prompt": settings["images_per_prompt"],
            "ratio": result.get("ratio"), "scores": scores, "difference": difference, "miou": miou}


def comparison_table(comparison: Mapping[str, Any]) -> str:
    """Markdown: one row per model (MG_k with intervals, attention mIoU), then the paired difference with its
    reading (``reading``)."""
    ks = list(comparison["difference"])
    header = ["model", *[f"MG{k}" for k in ks], "attention mIoU"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant in (comparison["control"], comparison["treated"]):
        cells = [interval_cell(comparison["scores"][variant][k]) for k in ks]
        lines.append(f"| {VARIANT_LABELS.get(variant, variant)} | " + " | ".join(cells)
                     + f" | {comparison['miou'][variant]:.2f} |")
    cells = [f"{interval_cell(comparison['difference'][k])}: {reading(comparison['difference'][k])}" for k in ks]
    lines.append("| difference (paired) | " + " | ".join(cells) + " | |")
    return "\n".join(lines)


def loss_weights(result: Mapping[str, Any]) -> dict[str, Any]:
    """The ablation's loss weights: the chosen ratio r, its (lambda, gamma), the base's loss scales they were
    computed from and the sweep's rows (``{"ratio", "lambda", "gamma", "mg", "score"}``)."""
    rows: Sequence[Mapping[str, Any]] = result["sweep"]["rows"]
    chosen = next(row for row in rows if row["ratio"] == result["ratio"])
    return {"ratio": result["ratio"], "lambda": chosen["lambda"], "gamma": chosen["gamma"],
            "scales": dict(result["scales"]), "sweep": list(rows), "sweep_prompts": result["sweep"]["prompts"],
            "sweep_images": result["sweep"]["images"], "sweep_steps": result["sweep"]["steps"]}
