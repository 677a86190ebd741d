"""The paper's ablation (Table 2) and composition result (Table 1, MultiGen) in miniature, on the toy world.

Four fine-tunes of a toy base (`--base`, default the shipped one) with identical data order, noise, seeds and steps (L_LDM only,
+ L_pixel, + L_token, + both), over three training seeds, each evaluated with the toy detector on the same
held-out prompts of 4 categories (MG_1..MG_4, the paper's definition), seen and unseen combinations (unseen: the prompt contains one of
``toy.world.EXCLUDED_PAIRS``, which no training scene ever shows together), plus the segmentation-transfer
mIoU of the attention maps. The base model itself is evaluated too (the "before" row).

Loss weights: the paper's lambda = 1e-3, gamma = 5e-5 were tuned for SD 1.4's loss scale. Here they are
set by the ratio of each grounding term to L_LDM at the start of fine-tuning (``ablation.loss_scales``):
a sweep over ratios (1%, 3%, 10%, 30%) fine-tunes "both" on seed 0 and scores it on *validation* prompts
(another prompt seed than the held-out ones, which are never used to choose anything).

Phases (each resumable: a finished job leaves ``job.json`` and is not rerun):
  1. scales   L_LDM / L_token / L_pixel of the base on fine-tuning scenes;
  2. sweep    "both" at each ratio + "ldm", seed 0, validation prompts -> the chosen ratio;
  3. main     base + 4 variants x seeds at the chosen ratio, held-out prompts, each guidance scale.

usage:
  python benchmarks/toy_ablation.py --preset cpu --seeds 0            # one seed (the 30-minute budget)
  python benchmarks/toy_ablation.py --preset cpu --seeds 0 1 2        # three seeds
  python benchmarks/toy_ablation.py --preset gpu --workers 2          # larger sizes, on a GPU (1-2 a GPU)
Writes ``benchmarks/results/toy_ablation[_<preset>].md`` (+ ``.json``, ``.png``); work files go to ``--work``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tokencompose.config import TOY_BASE_DIR  # noqa: E402
from tokencompose.results import repository_path  # noqa: E402
from tokencompose.toy.ablation import (  # noqa: E402
    ABLATION_PRESETS,
    LABELS,
    MG_KS,
    PAPER_OBJECT_ACCURACY,
    PROMPT_OBJECTS,
    RATIOS,
    TEST_PROMPT_SEED,
    VALIDATION_PROMPT_SEED,
    VARIANTS,
    AblationSettings,
    interval_cell,
    loss_scales,
    paired_difference,
    pooled,
    sweep_row,
    verdicts,
    weights_for_ratio,
)
from tokencompose.toy.jobs import job_pool, job_spec, machine_description, run_job, strip_scores  # noqa: E402
from tokencompose.train import timestep_window  # noqa: E402

logger = logging.getLogger("toy_ablation")

# --------------------------------------------------------------------------------------------------
# statistics and the report
# --------------------------------------------------------------------------------------------------

def report(scales: dict, sweep: dict | None, records: list[dict], preset: str, settings: dict, seeds: list[int],
           guidances: list[float], timings: dict[str, float], machine: str, threads: int, workers: int,
           sweep_records: list[dict] | None = None, base: str = str(TOY_BASE_DIR), command: str | None = None,
           note: str = "") -> str:
    by_variant = {v: [r for r in records if r["variant"] == v] for v in ("base", *VARIANTS)}
    counts = MG_KS
    window = settings.get("grounding_timesteps")
    where = f", grounding terms at t in [{window[0]}, {window[1]})" if window else ""
    lines = [
        f"# Toy-world ablation (preset `{preset}`, base `{Path(base).name}`{where})", "",
        f"Measured {datetime.date.today().isoformat()} on {machine}; {workers} worker process(es) x {threads} "
        "torch threads. Produced by `" + (command or f"python benchmarks/toy_ablation.py --preset {preset} --seeds "
                                          f"{' '.join(map(str, seeds))}") + "`.", "",
        *([f"**{note}**", ""] if note else []),
        f"Setup: the toy base `{base}` fine-tuned on fresh 2-4-object toy scenes "
        f"(excluded pairs never shown) for {settings['steps']} steps, batch {settings['batch_size']}, lr "
        f"{settings['learning_rate']}, identical data order, noise and steps for every variant of a seed; "
        f"seeds {seeds}. Held-out prompts (prompt seed {TEST_PROMPT_SEED}): {settings['prompts_per_count']} "
        f"prompts x {settings['images_per_prompt']} images for each number of objects and split "
        f"({settings['prompts_per_count'] * settings['images_per_prompt']} images per cell and seed), DDIM "
        f"{settings['sample_steps']} steps, toy detector. Prompts name {PROMPT_OBJECTS} categories; MG_k = % of "
        "images with at least k of them detected (the paper's definition, whose prompts name 5); 95% intervals "
        "over prompts (normal approximation, each prompt's images one cluster; pooled = every (seed, prompt) a "
        "cluster). \"nothing extra\" = % of images with exactly the named categories.", "",
        "## Loss scales and weights", "",
        f"Base model on fine-tuning scenes: L_LDM {scales['ldm']:.4f}, L_token {scales['token']:.3f}, "
        f"L_pixel {scales['pixel']:.3f}. lambda = r L_LDM / L_token, gamma = r L_LDM / L_pixel.", ""]
    if sweep:
        lines += ["### Sweep of the ratio r (\"both\", seed 0, validation prompts: prompt seed "
                  f"{VALIDATION_PROMPT_SEED}, {sweep['prompts']} prompts x {sweep['images']} images, "
                  f"{sweep['steps']} steps, CFG 3)", "",
                  "| r | lambda | gamma | MG2 | MG3 | MG4 | mean (seen + unseen) |", "|---|---|---|---|---|---|---|"]
        for row in sweep["rows"]:
            lines.append(f"| {row['ratio']} | {row['lambda']:.3g} | {row['gamma']:.3g} | "
                         + " | ".join(f"{row['mg'][str(k)]:.1f}" for k in sorted(map(int, row['mg']))) + f" | {row['score']:.1f} |")
        lines += ["", f"Chosen: r = {sweep['chosen']} (highest mean; the L_LDM-only row is the reference).", ""]
    middle = "3.0" if "3.0" in map(str, guidances) else str(guidances[0])
    for guidance in guidances:
        g = str(guidance)
        marked = g == middle  # the README shows this table (scripts/readme_results.py)
        lines += [f"## MultiGen-style scores, CFG {guidance} (pooled over seeds)", "",
                  *(["<!-- readme:begin -->", f"CFG {guidance}, pooled over seeds {seeds}, 95% intervals:", ""]
                    if marked else []),
                  "| model | L_token | L_pixel | " + " | ".join(f"{s} MG{k}" for s in ("unseen", "seen") for k in counts)
                  + " | nothing extra (unseen) | paper: VISOR OA, SD 1.4 |", "|---|---|---|" + "---|" * (2 * len(counts) + 2)]
        for variant, recs in by_variant.items():
            if not recs:
                continue
            cells = [interval_cell(pooled(recs, g, s, k)) for s in ("unseen", "seen") for k in counts]
            extra = pooled(recs, g, "unseen", key="exact")["mean"]
            name = "base (no fine-tuning)" if variant == "base" else LABELS[variant]
            token, pixel = ("", "") if variant == "base" else tuple("✓" if on else "✗" for on in VARIANTS[variant])
            lines.append(f"| {name} | {token} | {pixel} | " + " | ".join(cells) + f" | {extra:.1f} | "
                         f"{PAPER_OBJECT_ACCURACY[variant]} |")
        lines += ["<!-- readme:end -->"] if marked else []
        lines += ["", "Paired difference, + L_token + L_pixel minus L_LDM only (same prompts and sampling "
                  "seeds), per seed:", "", "| seed | " + " | ".join(f"unseen MG{k}" for k in counts) + " |",
                  "|---|" + "---|" * len(counts)]
        for r_both, r_ldm in zip(by_variant["both"], by_variant["ldm"], strict=True):
            lines.append(f"| {r_both['seed']} | " + " | ".join(
                interval_cell(paired_difference(r_both, r_ldm, g, "unseen", k)) for k in counts) + " |")
        lines += [""]
    lines += [f"## What counts as reproduced (CFG {middle})", "", "<!-- readme:begin -->",
              *verdicts(by_variant, middle, seeds), "<!-- readme:end -->", ""]
    if any(r.get("miou") for r in records):
        lines += ["## Segmentation transfer (attention maps vs the colour segmentation of the generated image)", "",
                  f"{settings['seg_prompts']} unseen 3-object prompts, one image each, threshold 0.4.", "",
                  "| model | mIoU [95% interval over (image, noun) pairs], per seed |", "|---|---|"]
        for variant, recs in by_variant.items():
            values = [f"{r['miou']['miou']:.3f} [{r['miou']['interval']['low']:.3f}, {r['miou']['interval']['high']:.3f}]"
                      for r in recs if r.get("miou") and r["miou"]["miou"] is not None]
            if values:
                lines.append(f"| {'base' if variant == 'base' else LABELS[variant]} | {', '.join(values)} |")
        lines += [""]
    lines += ["## Losses (mean of the first 20 and last 100 steps)", "",
              "| model | seed | L_LDM first/last | L_token first/last | L_pixel first/last |", "|---|---|---|---|---|"]
    for r in records:
        if r["losses"]:
            f, last = r["losses"]["first"], r["losses"]["last"]
            lines.append(f"| {LABELS[r['variant']]} | {r['seed']} | {f['ldm']:.4f} / {last['ldm']:.4f} | "
                         f"{f['token']:.3f} / {last['token']:.3f} | {f['pixel']:.3f} / {last['pixel']:.3f} |")
    lines += ["", "## Time", "", "Minutes of each job (fine-tuning / evaluation) and where it ran (a job cached from an "
              "earlier invocation keeps its own record; `not recorded` = a job from before the device was logged):", "",
              "| job | fine-tune | evaluate | where |", "|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['train_minutes']:.1f} | {r['eval_minutes']:.1f} | {r.get('device', 'not recorded')}"
              f"{' (' + r['note'] + ')' if r.get('note') else ''} |"
              for r in [*(sweep_records or []), *records]]
    for seed in seeds:
        mine = [r for r in records if r["seed"] == seed and r["variant"] in VARIANTS]
        total = sum(r["train_minutes"] + r["eval_minutes"] for r in mine)
        lines.append(f"\nSeed {seed}, the {len(mine)} variants fine-tuned and evaluated: {total:.1f} minutes.")
    lines += ["", "Wall clock of this invocation (cached jobs cost nothing): " + ", ".join(
        f"{k} {v:.1f} min" for k, v in timings.items()), ""]
    return "\n".join(lines)


def figure(records: list[dict], guidance: str, path: Path) -> None:
    """Bars of MG_k per variant (unseen and seen) with 95% intervals (``viz.score_bars``)."""
    from tokencompose.viz import score_bars

    variants = [v for v in ("base", *VARIANTS) if any(r["variant"] == v for r in records)]
    panels = {}
    for split in ("unseen", "seen"):
        panels[f"{split} combinations (CFG {guidance})"] = {
            "base" if variant == "base" else LABELS[variant]: [
                (stat["mean"], stat["low"], stat["high"]) for stat in
                (pooled([r for r in records if r["variant"] == variant], guidance, split, k) for k in MG_KS)]
            for variant in variants}
    score_bars(panels, [f"MG{k}" for k in MG_KS], ylabel=f"% of images with >= k of the {PROMPT_OBJECTS} named"
               ).savefig(path)


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(ABLATION_PRESETS), default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--ratio", type=float, default=None, help="skip the sweep and use this ratio")
    parser.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS),
                        help=f"the sweep's ratios of each grounding term to L_LDM (default {' '.join(map(str, RATIOS))})")
    parser.add_argument("--grounding-timesteps", type=timestep_window, default=None, metavar="LOW:HIGH",
                        help="the grounding terms only on samples with LOW <= t < HIGH (default: every timestep)")
    parser.add_argument("--base", default=str(TOY_BASE_DIR))
    parser.add_argument("--work", default=None, help="work folder (default outputs/toy_ablation_<preset>)")
    parser.add_argument("--results", default=None, help="results file stem (default "
                        "benchmarks/results/toy_ablation_<preset>)")
    parser.add_argument("--workers", type=int, default=2, help="parallel jobs (default 2: on the 2-core CPU two "
                        "1-thread jobs finish 27%% sooner than one 2-thread job after the other, measured; on a GPU "
                        "one or two)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    parser.add_argument("--note", default="", help="a sentence printed in bold under the title (e.g. what makes "
                        "this run preliminary)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    preset = dict(ABLATION_PRESETS[args.preset])
    guidances = list(preset.pop("guidances"))
    base_row = preset.pop("base_row")
    sweep_steps, sweep_prompts, sweep_images = (preset.pop(k) for k in ("sweep_steps", "sweep_prompts",
                                                                       "sweep_images"))
    work = Path(args.work or REPO_ROOT / "outputs" / f"toy_ablation_{args.preset}")
    stem = Path(args.results or REPO_ROOT / "benchmarks" / "results" / f"toy_ablation_{args.preset}")
    threads = args.threads or max(1, (os.cpu_count() or 2) // max(1, args.workers))
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    began = time.time()
    scales_file = work / "scales.json"
    if scales_file.is_file():
        scales = json.loads(scales_file.read_text())
    else:
        scales = loss_scales(args.base, batch_size=preset["batch_size"])
        scales_file.write_text(json.dumps(scales))
    timings["loss scales"] = (time.time() - began) / 60
    print(f"loss scales of the base: {scales}", flush=True)

    def spec(name, variant, seed, ratio, settings, guidance_list, miou):
        return job_spec(work, args.base, name, variant, seed, ratio, settings, guidance_list, miou)

    began = time.time()
    test_settings = AblationSettings(**{**preset, "prompt_seed": TEST_PROMPT_SEED,
                                        "grounding_timesteps": args.grounding_timesteps})
    with job_pool(args.workers, threads) as pool:
        # jobs that do not depend on the loss weights start first (in parallel with the sweep)
        free = [spec("base", "base", -1, 0.0, test_settings, guidances, True)] if base_row else []
        free += [spec(f"ldm_seed{s}", "ldm", s, 0.0, test_settings, guidances, True)
                 for s in args.seeds if "ldm" in args.variants]
        free_futures = [pool.submit(run_job, item) for item in free]
        sweep = None
        ratio = args.ratio
        if ratio is None:
            sweep_settings = dataclasses.replace(
                test_settings, steps=sweep_steps, prompts_per_count=sweep_prompts, images_per_prompt=sweep_images,
                seg_prompts=0, prompt_seed=VALIDATION_PROMPT_SEED)
            sweep_specs = [spec("sweep_ldm", "ldm", 0, 0.0, sweep_settings, [3.0], False)]
            for r in args.ratios:
                lam, gam = weights_for_ratio(scales, r)
                sweep_specs.append(spec(f"sweep_r{r}", "both", 0, r, dataclasses.replace(
                    sweep_settings, token_weight=lam, pixel_weight=gam), [3.0], False))
            results = [f.result() for f in [pool.submit(run_job, item) for item in sweep_specs]]
            rows = [sweep_row(record, r, scales) for r, record in zip([0.0, *args.ratios], results, strict=True)]
            ratio = max(rows[1:], key=lambda row: row["score"])["ratio"]
            sweep = {"rows": rows, "chosen": ratio, "prompts": sweep_prompts, "images": sweep_images,
                     "steps": sweep_steps, "records": results}
            print(f"sweep: chose ratio {ratio}", flush=True)
        lam, gam = weights_for_ratio(scales, ratio)
        settings = dataclasses.replace(test_settings, token_weight=lam, pixel_weight=gam)
        dependent = [spec(f"{v}_seed{s}", v, s, ratio, settings, guidances, True)
                     for s in args.seeds for v in args.variants if v != "ldm"]
        dependent_futures = [pool.submit(run_job, item) for item in dependent]
        records = [f.result() for f in free_futures + dependent_futures]
    records.sort(key=lambda r: (r["seed"], list(VARIANTS).index(r["variant"]) if r["variant"] in VARIANTS else -1))
    timings["total"] = sum(timings.values()) + (time.time() - began) / 60

    text = report(scales, sweep, records, args.preset, dataclasses.asdict(settings), args.seeds, guidances,
                  timings, machine_description(), threads, args.workers, sweep_records=(sweep or {}).get("records"),
                  base=repository_path(args.base), note=args.note,
                  command=shlex.join(["python", "benchmarks/toy_ablation.py", *(argv if argv is not None else sys.argv[1:])]))
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(text + f"\n![MultiGen bars]({stem.name}.png)\n")
    middle = "3.0" if 3.0 in guidances else str(guidances[0])
    figure(records, middle, stem.with_suffix(".png"))
    if sweep:
        sweep = {k: v for k, v in sweep.items() if k != "records"}
    summary = {"scales": scales, "sweep": sweep, "ratio": ratio, "timings": timings,
               "records": [{k: v for k, v in r.items() if k != "scores"} | {"scores": strip_scores(r["scores"])}
                           for r in records]}
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
