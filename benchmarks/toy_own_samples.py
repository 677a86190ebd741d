"""Supervision on the model's own samples (CoMat's idea) beside the ablation's L_LDM-only and grounded fine-tunes.

The toy ablation found that L_token and L_pixel on training scenes ground each noun's attention but bring no
neglected object back; the early-place probe found that they give every noun, missing ones too, a peaked early
map, and the missing object is still not drawn. CoMat (Jiang et al., NeurIPS 2024) computes TokenCompose's losses
on the model's *own* samples and adds a reward for a missing concept. ``toy.own_samples`` is that idea in the toy
world; this script fine-tunes it in the ablation's protocol (the same base, steps, batch, learning rate, lambda and
gamma as "+ L_token + L_pixel", the same seeds, the same held-out prompts and sampling seeds) and compares it,
paired prompt for prompt, with the ablation's "L_LDM only" and "+ L_token + L_pixel" jobs of the same work folder.

usage:
  python benchmarks/toy_ablation.py --preset cpu --seeds 0 1 2 --variants ldm both --ratio 0.3 --work W
  python benchmarks/toy_own_samples.py --work W          # three own-sample fine-tunes, ~12 min each on 1 core
Writes ``benchmarks/results/toy_own_samples.md`` (+ ``.json``); the jobs are kept (and resumed) in ``--work``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from tokencompose.config import TOY_BASE_DIR  # noqa: E402
from tokencompose.results import repository_path  # noqa: E402
from tokencompose.stats import paired_interval  # noqa: E402
from tokencompose.toy.ablation import (  # noqa: E402
    ABLATION_PRESETS,
    LABELS,
    TEST_PROMPT_SEED,
    AblationSettings,
    interval_cell,
    outcome_rows,
    pooled,
    weights_for_ratio,
)
from tokencompose.toy.jobs import job_pool, job_spec, machine_description, run_job  # noqa: E402
from tokencompose.toy.own_samples import OwnSampleSettings  # noqa: E402

GUIDANCE = "3.0"
COMPARED = ("ldm", "both", "own")


def paired_pooled(a: list[dict], b: list[dict], split: str, k: int) -> dict:
    """``a`` - ``b`` of MG_k, seed by seed on the same prompts and sampling seeds, pooled: each (seed, prompt) a
    cluster (``stats.paired_interval``)."""
    rows_a = [row for record in a for row in outcome_rows(record, GUIDANCE, split, k)]
    rows_b = [row for record in b for row in outcome_rows(record, GUIDANCE, split, k)]
    return paired_interval(rows_a, rows_b)


def reading(diff: dict) -> str:
    return ("higher" if diff["low"] > 0 else "lower" if diff["high"] < 0 else "no difference shown (interval spans 0)")


def report(records: dict[str, list[dict]], seeds: list[int], own: dict, command: str, minutes: float,
           traces: dict[int, list[dict]]) -> tuple[str, dict]:
    numbers: dict = {"scores": {}, "differences": {}, "miou": {}, "trace": {}}
    lines = [
        "# Toy world: supervision on the model's own samples (CoMat's idea) vs the ablation's fine-tunes", "",
        f"Measured {datetime.date.today().isoformat()} on {machine_description()}. Produced by `{command}`; the "
        f"own-sample fine-tunes took {minutes:.1f} minutes (fine-tune and evaluation, as recorded by each job).", "",
        "Every model: the shipped base `toy_base_noun` fine-tuned 400 steps, batch 16 real scenes, the ablation's "
        "lambda and gamma (ratio 0.3), seeds " + ", ".join(map(str, seeds)) + "; evaluated on the ablation's "
        "held-out prompts (4 objects, 128 prompts x 2 images, DDIM 10 steps, CFG 3.0, toy detector). Own samples: "
        f"{own['prompts']} a step, DDIM {own['sample_steps']} steps, presence through the first {own['grad_steps']} "
        f"steps, mu = {own['presence_weight']}. 95% intervals over (seed, prompt) clusters.", "",
        "## MultiGen on 4-object prompts", "",
        "| model | unseen MG2 | unseen MG3 | unseen MG4 | seen MG3 | seen MG4 | attention mIoU |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant in COMPARED:
        group = records[variant]
        cells = {f"{split} MG{k}": pooled(group, GUIDANCE, split, k) for split in ("unseen", "seen") for k in (2, 3, 4)}
        mious = [r["miou"]["miou"] for r in group if r.get("miou")]
        numbers["scores"][variant] = cells
        numbers["miou"][variant] = float(np.mean(mious)) if mious else None
        miou = f"{np.mean(mious):.3f} (mean of {len(mious)} seeds)" if mious else "-"
        lines.append(f"| {LABELS[variant]} | {interval_cell(cells['unseen MG2'])} | {interval_cell(cells['unseen MG3'])} "
                     f"| {interval_cell(cells['unseen MG4'])} | {interval_cell(cells['seen MG3'])} | "
                     f"{interval_cell(cells['seen MG4'])} | {miou} |")
    lines += ["", "## Paired differences (same prompts, sampling seeds and training seeds)", "",
              "<!-- readme:begin -->", "Own-sample fine-tune minus each ablation fine-tune, paired, 95% intervals:", "",
              "| comparison | unseen MG3 | unseen MG4 | seen MG3 | reading (unseen MG3) |", "|---|---|---|---|---|"]
    for other in ("ldm", "both"):
        diffs = {f"{split} MG{k}": paired_pooled(records["own"], records[other], split, k)
                 for split, k in (("unseen", 3), ("unseen", 4), ("seen", 3))}
        numbers["differences"][f"own-{other}"] = diffs
        lines.append(f"| own samples - {LABELS[other]} | {interval_cell(diffs['unseen MG3'])} | "
                     f"{interval_cell(diffs['unseen MG4'])} | {interval_cell(diffs['seen MG3'])} | "
                     f"{reading(diffs['unseen MG3'])} |")
    lines += ["<!-- readme:end -->", "", "## What the own samples looked like during fine-tuning", "",
              "Share of the own samples' named objects that the toy detector found, and the presence term, "
              "averaged over blocks of steps (from each job's `own_trace.json`):", "",
              "| seed | steps 1-50 drawn | steps 351-400 drawn | presence, first 50 | presence, last 50 |",
              "|---|---|---|---|---|"]
    for seed, trace in traces.items():
        if not trace:
            lines.append(f"| {seed} | - | - | - | - |")
            continue
        first, last = trace[:50], trace[-50:]
        row = {key: (float(np.mean([t[key] for t in first])), float(np.mean([t[key] for t in last])))
               for key in ("own_drawn", "presence")}
        numbers["trace"][str(seed)] = row
        lines.append(f"| {seed} | {row['own_drawn'][0]:.1%} | {row['own_drawn'][1]:.1%} | {row['presence'][0]:.3f} | "
                     f"{row['presence'][1]:.3f} |")
    lines += ["", "## Jobs", "", "| job | variant | seed | fine-tune min | evaluation min |", "|---|---|---|---|---|"]
    for variant in COMPARED:
        for record in records[variant]:
            lines.append(f"| {record['name']} | {variant} | {record['seed']} | {record['train_minutes']:.1f} | "
                         f"{record['eval_minutes']:.1f} |")
    return "\n".join(lines) + "\n", numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, help="the --work folder of the ablation run with ldm and both jobs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ratio", type=float, default=0.3, help="the ablation's chosen ratio (lambda, gamma)")
    parser.add_argument("--base", default=str(TOY_BASE_DIR))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", default=str(REPO_ROOT / "benchmarks" / "results" / "toy_own_samples"))
    args = parser.parse_args(argv)
    work = Path(args.work)
    scales = json.loads((work / "scales.json").read_text())
    preset = {k: v for k, v in ABLATION_PRESETS["cpu"].items() if k not in (
        "guidances", "base_row", "sweep_steps", "sweep_prompts", "sweep_images")}
    lam, gam = weights_for_ratio(scales, args.ratio)
    settings = AblationSettings(**{**preset, "prompt_seed": TEST_PROMPT_SEED}, )
    settings = dataclasses.replace(settings, token_weight=lam, pixel_weight=gam)
    own = dataclasses.asdict(OwnSampleSettings())
    began = time.time()
    specs = [job_spec(work, args.base, f"own_seed{s}", "own", s, args.ratio, settings, [3.0], True, own=own)
             for s in args.seeds]
    with job_pool(args.workers, args.threads) as pool:
        futures = [pool.submit(run_job, spec) for spec in specs]
        own_records = [f.result() for f in futures]
    records = {"own": own_records}
    for variant in ("ldm", "both"):
        records[variant] = []
        for s in args.seeds:
            done = work / f"{variant}_seed{s}" / "job.json"
            if not done.is_file():
                raise SystemExit(f"error: {done} is missing; run benchmarks/toy_ablation.py --seeds {' '.join(map(str, args.seeds))} "
                                 f"--variants ldm both --ratio {args.ratio} --work {work} first")
            records[variant].append(json.loads(done.read_text()))
    traces = {}
    for s in args.seeds:
        trace = work / f"own_seed{s}" / "train" / "own_trace.json"
        traces[s] = json.loads(trace.read_text()) if trace.is_file() else []
    minutes = sum(r["train_minutes"] + r["eval_minutes"] for r in own_records)
    command = shlex.join(["python", "benchmarks/toy_own_samples.py", *(argv if argv is not None else sys.argv[1:])])
    text, numbers = report(records, args.seeds, own, command, minutes, traces)
    text += "\nModels: " + ", ".join(f"`{repository_path(work / r['name'])}`" for r in own_records) + \
        f" (invocation {(time.time() - began) / 60:.1f} min).\n"
    stem = Path(args.results)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps({"seeds": args.seeds, "own": own, "ratio": args.ratio, **numbers},
                                                    indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
