"""Why does token-level supervision not improve composition in the toy world? The investigation the toy
ablation (``benchmarks/toy_ablation.py``) calls for when the effect does not appear.

Three measurements, none of them on the held-out test prompts (validation prompts, prompt seed 7, and
fresh scenes of another seed):

1. Loss profile per layer group: L_LDM and the token and pixel losses of every cross-attention group of the
   toy UNet (at 32 x 32: ``down_16`` unsupervised; ``mid_8`` and ``up_16`` supervised) for the base and every fine-tuned
   model, on 2-4-object scenes no run trained on (``ablation.loss_profile``): is the attention grounded
   after fine-tuning, and where?
2. Stronger and longer grounding: seed 0 fine-tuned 3x longer (the ablation's steps x 3) with the grounding
   terms at r = 30% of L_LDM (the sweep's largest ratio; the ablation's chosen r barely moved L_token in
   its steps), "L_LDM only" and "+ L_token" and "+ L_token + L_pixel", scored with MultiGen on the
   validation prompts plus the segmentation-transfer mIoU: does composition follow once attention is
   grounded?
3. Guidance: the base and the ablation's seed-0 "L_LDM only" and "+ L_token + L_pixel" models scored at
   CFG 1, 3 and 7.5 on the validation prompts: is the comparison an artefact of one guidance scale?
4. Attention maps before and after (the base, the ablation's L_LDM only and both, and the long runs) for
   two unseen validation prompts: a figure.

usage:
  python benchmarks/toy_investigation.py                 # after toy_ablation.py --preset cpu (uses its models)
  python benchmarks/toy_investigation.py --preset smoke  # seconds: checks the plumbing
Writes ``benchmarks/results/toy_investigation_<preset>.md`` (+ ``.json``, ``.png``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


from tokencompose.config import TOY_CONTROL_BASE_DIR  # noqa: E402
from tokencompose.results import repository_path  # noqa: E402
from tokencompose.toy.ablation import (  # noqa: E402
    ABLATION_PRESETS,
    LABELS,
    MG_KS,
    PROMPT_OBJECTS,
    VALIDATION_PROMPT_SEED,
    AblationSettings,
    attention_before_after,
    attention_specificity,
    held_out_prompts,
    interval_cell,
    loss_profile,
    paired_difference,
    pooled,
    toy_geometry,
    weights_for_ratio,
)
from tokencompose.toy.jobs import (  # noqa: E402
    init_worker,
    job_spec,
    machine_description,
    run_job,
    strip_scores,
    trained_model,
)

logger = logging.getLogger("toy_investigation")

#: scenes for the loss profile: a seed no fine-tuning run drew its data from (runs use seeds 0-2)
PROFILE_SEED = 99
#: the long runs: ratio of each grounding term to L_LDM, and the factor on the ablation's steps
LONG_RATIO = 0.3
LONG_FACTOR = 3
#: per preset: validation prompts a cell, images a prompt, profile batches
SIZES: dict[str, dict[str, int]] = {
    "cpu": dict(prompts=32, images=4, profile_batches=8, seg_prompts=32),
    "gpu": dict(prompts=128, images=4, profile_batches=16, seg_prompts=128),
    "smoke": dict(prompts=2, images=1, profile_batches=1, seg_prompts=2),
}


def long_runs(work: Path, base: str, preset: dict[str, Any], scales: dict[str, float],
              sizes: dict[str, int]) -> list[dict[str, Any]]:
    """Job specs of the long runs (seed 0, validation prompts)."""
    lam, gam = weights_for_ratio(scales, LONG_RATIO)
    settings = AblationSettings(**{**preset, "prompt_seed": VALIDATION_PROMPT_SEED,
                                   "steps": preset["steps"] * LONG_FACTOR, "prompts_per_count": sizes["prompts"],
                                   "images_per_prompt": sizes["images"], "seg_prompts": sizes["seg_prompts"],
                                   "token_weight": lam, "pixel_weight": gam})
    return [job_spec(work, base, f"long_{variant}", variant, 0, 0.0 if variant == "ldm" else LONG_RATIO,
                                    settings, [3.0], True)
            for variant in ("ldm", "token", "both")]


GUIDANCES = [1.0, 3.0, 7.5]
#: the parts of the investigation (``--parts``); profiles, specificity and the figure always run
PARTS = ("long", "guidance")


def guidance_runs(work: Path, models: dict[str, Path], preset: dict[str, Any],
                  sizes: dict[str, int]) -> dict[str, dict]:
    """Job specs (by model label) that evaluate existing models, without fine-tuning, at every guidance scale
    on validation prompts."""
    settings = AblationSettings(**{**preset, "prompt_seed": VALIDATION_PROMPT_SEED,
                                   "prompts_per_count": sizes["prompts"], "images_per_prompt": sizes["images"],
                                   "seg_prompts": 0})
    return {label: job_spec(work, str(folder), f"cfg_{_slug(label)}", "base", 0, 0.0, settings,
                                           GUIDANCES, False)
            for label, folder in models.items()}


def per_model(path: Path, models: dict[str, Path], measure) -> dict[str, Any]:
    """``measure(folder)`` of every model, cached by label in the JSON file ``path`` (rewritten after each)."""
    results = json.loads(path.read_text()) if path.is_file() else {}
    for name, folder in models.items():
        if name not in results:
            results[name] = measure(folder)
            path.write_text(json.dumps(results, indent=1))
    return {name: results[name] for name in models}


def long_verdicts(long_records: list[dict]) -> list[str]:
    """What the long runs show, decided by the paired intervals (unseen MG3, MG4) and the mIoU intervals."""
    ldm = next(r for r in long_records if r["variant"] == "ldm")
    lines = []
    for record in long_records:
        if record is ldm:
            continue
        parts = []
        for k in (3, 4):
            diff = paired_difference(record, ldm, "3.0", "unseen", k)
            verdict = ("higher" if diff["low"] > 0 else "lower" if diff["high"] < 0 else "no difference detectable")
            parts.append(f"unseen MG{k} {verdict} ({interval_cell(diff)} points)")
        mine, theirs = record.get("miou") or {}, ldm.get("miou") or {}
        if mine.get("miou") is not None and theirs.get("miou") is not None:
            apart = mine["interval"]["low"] > theirs["interval"]["high"]
            parts.append(f"attention mIoU {mine['miou']:.3f} vs {theirs['miou']:.3f} "
                         f"({'higher, intervals apart' if apart else 'intervals overlap or lower'})")
        lines.append(f"- Long run {LABELS[record['variant']]} vs L_LDM only: " + "; ".join(parts) + ".")
    return lines


def report(profiles: dict[str, dict[str, float]], long_records: list[dict], figure_models: list[str],
           preset: str, machine: str, minutes: dict[str, float], scales: dict[str, float], batches: int,
           batch_size: int, guidance_records: list[dict], specificity: dict[str, dict[str, dict[str, float]]],
           base: str = str(TOY_CONTROL_BASE_DIR), command: str | None = None, parts: Sequence[str] | None = None,
           figure_stem: str | None = None) -> str:
    parts = PARTS if parts is None else tuple(parts)
    counts = MG_KS
    groups = [key.partition("/")[2] for key in next(iter(profiles.values())) if key.startswith("token/")]
    lines = [
        f"# Toy-world investigation (preset `{preset}`, base `{Path(base).name}`): is the attention grounded, and "
        "does composition follow?", "",
        f"Measured {datetime.date.today().isoformat()} on {machine}. Produced by "
        f"`{command or f'python benchmarks/toy_investigation.py --preset {preset}'}` after "
        "`benchmarks/toy_ablation.py`. Nothing here is measured on the ablation's held-out test prompts.", "",
        *([f"Costly parts run: {', '.join(parts) or 'none'} (the others were skipped: `--parts`).", ""]
          if set(parts) != set(PARTS) else []),
        "## 1. Loss profile per cross-attention group", "",
        f"Mean over {batches} batches of {batch_size} fresh 2-4-object "
        f"scenes (scene seed {PROFILE_SEED}, which no run trained on). L_token per group is summed over its layers "
        f"(`{groups[-1]}` has two, the others one); lower = attention more inside the nouns' masks. `{groups[0]}` "
        "is never supervised.", "",
        "| model | L_LDM | " + " | ".join(f"L_token {g}" for g in groups) + " | "
        + " | ".join(f"L_pixel {g}" for g in groups) + " |",
        "|---|---|" + "---|" * (2 * len(groups))]
    for name, p in profiles.items():
        lines.append(f"| {name} | {p['ldm']:.4f} | " + " | ".join(f"{p[f'token/{g}']:.3f}" for g in groups) + " | "
                     + " | ".join(f"{p[f'pixel/{g}']:.3f}" for g in groups) + " |")
    lines += [
        "", "### Where the attention goes: own object, other named objects, background", "",
        "Same scenes. Per noun token, the share of its attention (heads and layers averaged) on its own object, on "
        "the other named objects and on the background; specificity = (own share / own area) / (others' share / "
        "others' area): 1 = the token attends to every object alike (an \"objectness\" map), larger = it picks "
        "its own. Lower L_token can come from either.", "",
        "<!-- readme:begin -->",
        "Where each noun token's attention goes on fresh scenes (share on its own object / the other named objects / "
        "the background; specificity 1 = no preference for its own object):", "",
        "| model | " + " | ".join(f"{g} own / others / background | {g} specificity" for g in groups) + " |",
        "|---|" + "---|---|" * len(groups)]
    for name, per_group in specificity.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{per_group[g]['own']:.2f} / {per_group[g]['others']:.2f} / {per_group[g]['background']:.2f} | "
            f"{per_group[g]['specificity']:.2f}" for g in groups) + " |")
    lines += ["<!-- readme:end -->"]
    lam, gam = weights_for_ratio(scales, LONG_RATIO)
    if long_records:
        lines += _long_section(long_records, lam, gam, counts)
    if guidance_records:
        lines += _guidance_section(guidance_records, counts)
    stem = figure_stem or f"toy_investigation_{preset}"
    lines += ["", "## 4. Attention maps before and after", "",
              f"Rows: {', '.join(figure_models)}; two unseen 3-object validation prompts, sampling seed 0.", "",
              f"![attention before and after]({stem}.png)", "",
              "## Time", "", "Minutes of each job (cached jobs keep the record of the invocation that ran them):", "",
              "| job | fine-tune | evaluate | where |", "|---|---|---|---|",
              *[f"| {r['name']} | {r['train_minutes']:.1f} | {r['eval_minutes']:.1f} | {r.get('device', '')} |"
                for r in [*long_records, *guidance_records]],
              "", "Wall clock of this invocation: " + ", ".join(f"{k} {v:.1f} min" for k, v in minutes.items()) + ".",
              ""]
    return "\n".join(lines)


def _long_section(long_records: list[dict], lam: float, gam: float, counts) -> list[str]:
    """Section 2: the long runs' table, verdicts and losses."""
    steps = long_records[0]["settings"]["steps"]
    lines = [
        "", f"## 2. Longer fine-tuning with stronger grounding (seed 0, {steps} steps, r = {LONG_RATIO}: "
        f"lambda {lam:.3g}, gamma {gam:.3g})", "",
        f"Validation prompts (prompt seed {VALIDATION_PROMPT_SEED}): "
        f"{long_records[0]['settings']['prompts_per_count']} prompts x {long_records[0]['settings']['images_per_prompt']} "
        f"images a cell, DDIM {long_records[0]['settings']['sample_steps']}, CFG 3; 95% intervals over prompts. "
        "Paired = minus L_LDM only on the same prompts and sampling seeds.", "",
        "<!-- readme:begin -->",
        f"Seed 0 fine-tuned {steps} steps with the grounding terms at r = {LONG_RATIO} of L_LDM, validation prompts, "
        "CFG 3, 95% intervals:", "",
        "| model | " + " | ".join(f"{s} MG{k}" for s in ("unseen", "seen") for k in counts)
        + " | paired unseen MG3 | attention mIoU |", "|---|" + "---|" * (2 * len(counts) + 2)]
    ldm = next(r for r in long_records if r["variant"] == "ldm")
    for record in long_records:
        cells = [interval_cell(pooled([record], "3.0", s, k)) for s in ("unseen", "seen") for k in counts]
        paired = ("-" if record is ldm
                  else interval_cell(paired_difference(record, ldm, "3.0", "unseen", 3)))
        miou = record.get("miou") or {}
        miou_text = (f"{miou['miou']:.3f} [{miou['interval']['low']:.3f}, {miou['interval']['high']:.3f}]"
                     if miou.get("miou") is not None else "-")
        lines.append(f"| {LABELS[record['variant']]} | " + " | ".join(cells) + f" | {paired} | {miou_text} |")
    lines += ["", *long_verdicts(long_records), "<!-- readme:end -->", "", "Losses during the long runs (mean of the first 20 and last 100 steps):", "",
              "| model | L_LDM first/last | L_token first/last | L_pixel first/last | minutes (fine-tune / evaluate) |",
              "|---|---|---|---|---|"]
    for r in long_records:
        f, last = r["losses"]["first"], r["losses"]["last"]
        lines.append(f"| {LABELS[r['variant']]} | {f['ldm']:.4f} / {last['ldm']:.4f} | {f['token']:.3f} / "
                     f"{last['token']:.3f} | {f['pixel']:.3f} / {last['pixel']:.3f} | {r['train_minutes']:.1f} / "
                     f"{r['eval_minutes']:.1f} |")
    return lines


def _guidance_section(guidance_records: list[dict], counts) -> list[str]:
    """Section 3: the base and the ablation's seed-0 models at each guidance scale."""
    settings = guidance_records[0]["settings"]
    lines = ["", "## 3. Guidance scale", "",
              f"The base and the ablation's seed-0 models at each CFG scale; validation prompts, "
              f"{settings['prompts_per_count']} prompts x {settings['images_per_prompt']} images a cell, DDIM "
              f"{settings['sample_steps']}; MG_k (>= k of the {PROMPT_OBJECTS} named) with 95% intervals.", "",
              "| model | CFG | " + " | ".join(f"{s} MG{k}" for s in ("unseen", "seen") for k in counts) + " |",
              "|---|---|" + "---|" * (2 * len(counts))]
    for record in guidance_records:
        for guidance in GUIDANCES:
            cells = [interval_cell(pooled([record], str(guidance), s, k)) for s in ("unseen", "seen") for k in counts]
            lines.append(f"| {record['label']} | {guidance} | " + " | ".join(cells) + " |")
    return lines


def _slug(name: str) -> str:
    """A folder name for a model label: "L_LDM only (ablation)" -> "l_ldm_only_ablation"."""
    return "_".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--base", default=str(TOY_CONTROL_BASE_DIR),
                        help="the base the ablation ran on (default: the first base, whose investigation is in "
                             "benchmarks/results/toy_investigation_cpu.md)")
    parser.add_argument("--ablation-work", default=None,
                        help="the ablation's work folder (default outputs/toy_ablation_<preset>)")
    parser.add_argument("--work", default=None, help="work folder (default outputs/toy_investigation_<preset>)")
    parser.add_argument("--results", default=None, help="results file stem (default "
                        "benchmarks/results/toy_investigation_<preset>)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--parts", nargs="*", choices=PARTS, default=list(PARTS),
                        help="the costly parts to run (the long runs, the guidance sweep); the loss profiles, "
                             "specificity and the figure always run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    preset = dict(ABLATION_PRESETS[args.preset])
    for key in ("guidances", "base_row", "sweep_steps", "sweep_prompts", "sweep_images"):
        preset.pop(key)
    sizes = SIZES[args.preset]
    ablation_work = Path(args.ablation_work or REPO_ROOT / "outputs" / f"toy_ablation_{args.preset}")
    work = Path(args.work or REPO_ROOT / "outputs" / f"toy_investigation_{args.preset}")
    stem = Path(args.results or REPO_ROOT / "benchmarks" / "results" / f"toy_investigation_{args.preset}")
    scales_file = ablation_work / "scales.json"
    if not scales_file.is_file():
        raise SystemExit(f"{scales_file} not found: run `python benchmarks/toy_ablation.py --preset {args.preset}` "
                         "first (its loss scales and seed-0 models are compared here)")
    scales = json.loads(scales_file.read_text())
    work.mkdir(parents=True, exist_ok=True)
    init_worker(args.threads or 2)
    minutes: dict[str, float] = {}

    began = time.time()
    long_records = ([run_job(spec) for spec in long_runs(work, args.base, preset, scales, sizes)]
                    if "long" in args.parts else [])
    minutes["long runs"] = (time.time() - began) / 60

    models = {"base": Path(args.base)}
    for variant in ("ldm", "pixel", "token", "both"):
        job = ablation_work / f"{variant}_seed0"
        try:
            folder = trained_model(job)  # its own train/, or the sweep's when the fine-tune was shared
        except FileNotFoundError as error:
            logger.warning("%s; its row is left out", error)
            continue
        ratio = json.loads((job / "job.json").read_text())["ratio"]
        models[f"{LABELS[variant]} (ablation{f', r = {ratio}' if variant != 'ldm' else ''})"] = folder
    for record in long_records:
        models[f"{LABELS[record['variant']]} (long{f', r = {LONG_RATIO}' if record['variant'] != 'ldm' else ''})"] = work / record["name"] / "train"

    began = time.time()
    chosen = {name: models[name] for name in models if name == "base" or "(ablation" in name
              and ("L_LDM only" in name or "+ L_token + L_pixel" in name)}
    guidance_records = ([run_job(spec) | {"label": label}
                         for label, spec in guidance_runs(work, chosen, preset, sizes).items()]
                        if "guidance" in args.parts else [])
    minutes["guidance sweep"] = (time.time() - began) / 60

    began = time.time()
    geometry = toy_geometry(args.base)
    groups = (*geometry["unsupervised"], *geometry["groups"])
    sizing = dict(batches=sizes["profile_batches"], batch_size=preset["batch_size"], seed=PROFILE_SEED, groups=groups)
    profiles = per_model(work / "profiles.json", models, lambda folder: loss_profile(folder, **sizing))
    minutes["loss profiles"] = (time.time() - began) / 60

    began = time.time()
    specificity = per_model(work / "specificity.json", models, lambda folder: attention_specificity(folder, **sizing))
    minutes["attention specificity"] = (time.time() - began) / 60

    began = time.time()
    figure_models = [name for name in models if name == "base" or "L_LDM only" in name or "+ L_token + L_pixel" in name]
    prompts = held_out_prompts(2, 3, unseen=True, seed=VALIDATION_PROMPT_SEED)
    figure = attention_before_after({name: models[name] for name in figure_models}, prompts,
                                    steps=preset["sample_steps"], guidance=3.0)
    stem.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(stem.with_suffix(".png"))
    minutes["figure"] = (time.time() - began) / 60

    text = report(profiles, long_records, figure_models, args.preset, machine_description(), minutes, scales,
                  sizes["profile_batches"], preset["batch_size"], guidance_records, specificity,
                  base=repository_path(args.base), parts=args.parts, figure_stem=stem.name,
                  command=shlex.join(["python", "benchmarks/toy_investigation.py",
                                      *(argv if argv is not None else sys.argv[1:])]))
    stem.with_suffix(".md").write_text(text)
    summary = {"profiles": profiles, "specificity": specificity, "minutes": minutes, "scales": scales,
               "long_runs": [{k: v for k, v in r.items() if k != "scores"} | {"scores": strip_scores(r["scores"])}
                             for r in long_records],
               "guidance": [{k: v for k, v in r.items() if k != "scores"} | {"scores": strip_scores(r["scores"])}
                            for r in guidance_records]}
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
