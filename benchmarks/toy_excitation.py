"""Does token-level supervision make the nouns' attention something sampling can steer?

The toy ablation (``benchmarks/toy_ablation.py``) found that L_token and L_pixel ground each noun's attention
(segmentation mIoU 0.61 -> 0.70, per-noun specificity up) but bring no neglected object back. Its lab notes
(``benchmarks/toy_ablation_notes.md``) ask next whether grounding changes what an inference-time intervention on
the same maps can do. This probe samples 4-object prompts from the base and from the ablation's "L_LDM only"
and "+ L_token + L_pixel" fine-tunes of every seed in four ways (``probes.intervention``; the edits act on every
cross-attention layer, the first 40% of the DDIM steps):

- ``none``: the plain sampler;
- ``excite``: each noun token's attention multiplied by 3, rows renormalised (Attend-and-Excite's aim, a
  fixed boost instead of its latent optimisation);
- ``attend-and-excite``: Attend-and-Excite itself (Chefer et al. 2023, ``tokencompose.attend_excite``): gradient
  steps on the latent toward the most neglected noun's maximum attention in the first half of the steps, with
  its iterative refinement; its settings (the authors' ``config.py``) scaled to 25 steps (updates in the first
  12, refinement at steps 0 / 5 / 10), maps at 16 x 16 (the toy's down and up cross-attention layers);
- ``oracle``: each noun token's map replaced by its object's mask in a layout rendered for the prompt (an
  upper bound on "every noun has a place": no model has these masks at test time).

If grounding made the maps steerable, excitation would lift composition more on the grounded model than on
the L_LDM-only one. The last table gives that difference of differences, paired prompt for prompt (the same
prompts and sampling seeds for every model and mode). Prompts: ``ablation.held_out_prompts`` with the probes'
seed (``PROMPT_SEED``), not the ablation's held-out test prompts, and nothing here chooses anything.

usage:
  python benchmarks/toy_excitation.py --ablation-work outputs/toy_ablation_noun_s7     # ~50 min on 2 cores
Writes ``benchmarks/results/toy_excitation.md`` (+ ``.json``); each (model, mode) result is kept in ``--work``
under the digest of the model's weights, so a changed model is sampled again.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from tokencompose.attend_excite import ExciteSettings  # noqa: E402
from tokencompose.config import TOY_BASE_DIR  # noqa: E402
from tokencompose.provenance import weights_digest  # noqa: E402
from tokencompose.results import repository_path  # noqa: E402
from tokencompose.stats import cluster_interval, paired_interval  # noqa: E402
from tokencompose.toy.jobs import machine_description, trained_model  # noqa: E402
from tokencompose.toy.probes import intervention  # noqa: E402

MODES = ("none", "excite", "attend-and-excite", "oracle")
MODE_LABELS = {"none": "plain", "excite": "excitation (nouns x3)", "attend-and-excite": "Attend-and-Excite",
               "oracle": "oracle (layout masks)"}
VARIANT_LABELS = {"base": "base", "ldm": "L_LDM only", "both": "+ L_token + L_pixel"}
COUNT = 4  # objects a prompt, as the base gates' intervention probe
PROMPT_SEED = 1234  # the probes' prompts (probes.intervention's default), not the ablation's test prompts


def models_of(base: str | Path, ablation_work: Path, seeds: list[int]) -> dict[str, tuple[str, int, Path]]:
    """``name -> (variant, seed, folder)``: the base and the ablation's fine-tunes of ``seeds``
    (``jobs.trained_model``: a job's own ``train/``, or the sweep job's it shared)."""
    models = {"base": ("base", -1, Path(base))}
    for seed in seeds:
        for variant in ("ldm", "both"):
            job = ablation_work / f"{variant}_seed{seed}"
            try:
                models[f"{variant}_seed{seed}"] = (variant, seed, trained_model(job))
            except (FileNotFoundError, json.JSONDecodeError) as error:
                raise SystemExit(f"error: {job} holds no finished fine-tune ({error}); run benchmarks/toy_ablation.py "
                                 f"with --work {ablation_work} first (or pass the --ablation-work it used)") from error
    return models


def run(folder: Path, digest: str, mode: str, settings: dict, work: Path) -> dict:
    """``probes.intervention`` of one model (``digest``: ``provenance.weights_digest`` of ``folder``) and mode,
    cached in ``work`` under that digest and a hash of the mode and settings (a retrained model or other settings
    are sampled again; each setting keeps its own file). ``settings`` may name a ``band`` of steps and an oracle
    ``overlap`` (``probes.intervention``)."""
    key = hashlib.sha256(json.dumps([mode, settings], sort_keys=True).encode()).hexdigest()[:12]
    cached = work / f"{digest}_{mode}_{key}.json"
    if cached.is_file():
        record = json.loads(cached.read_text())
        if record["settings"] == settings:
            return record
    began = time.time()
    band = settings.get("band")
    scores = intervention(folder, mode, n=settings["n"], count=settings["count"], unseen=settings["unseen"],
                          fraction=settings["fraction"], factor=settings["factor"], seed=settings["prompt_seed"],
                          steps=settings["steps"], guidance=settings["guidance"], batch_size=settings["batch_size"],
                          band=tuple(band) if band is not None else None, overlap=settings.get("overlap", 0.0))
    record = {"settings": settings, "scores": scores, "minutes": (time.time() - began) / 60}
    work.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(record))
    return record


def success_rows(results: dict[str, dict[str, dict]], names: list[str], mode: str, k: int) -> list[list[float]]:
    """Per (model of ``names``, prompt) under ``mode``, one cluster each: 1.0 where >= ``k`` named objects were
    detected."""
    return [[float(hits >= k)] for name in names for hits in results[name][mode]["scores"]["hits"]]


def change(results: dict[str, dict[str, dict]], names: list[str], mode: str, k: int) -> list[list[float]]:
    """Per (model of ``names``, prompt): success at MG_k under ``mode`` minus under plain sampling."""
    edited, plain = success_rows(results, names, mode, k), success_rows(results, names, "none", k)
    return [[e[0] - p[0]] for e, p in zip(edited, plain, strict=True)]


def cell(interval: dict) -> str:
    return f"{interval['mean']:.1f} [{interval['low']:.1f}, {interval['high']:.1f}]"


def report(results: dict[str, dict[str, dict]], models: dict, digests: dict[str, str], settings: dict,
           seeds: list[int], command: str, minutes: float) -> tuple[str, dict]:
    """The markdown report and its numbers: MG3 / MG4 of every (variant, mode), pooled over seeds, then the
    paired gains of each intervention and their difference between the grounded and the L_LDM-only model."""
    by_variant = {v: [name for name, (variant, _, _) in models.items() if variant == v] for v in VARIANT_LABELS}
    numbers: dict = {"scores": {}, "gains": {}, "interaction": {}}
    lines = [
        "# Toy world: does grounding make the nouns' attention steerable? (excitation, Attend-and-Excite, oracle)", "",
        f"Measured {datetime.date.today().isoformat()} on {machine_description()}, {torch.get_num_threads()} torch "
        f"threads. Produced by `{command}`. Sampling took {minutes:.1f} minutes (the sum of the "
        f"{sum(len(modes) for modes in results.values())} (model, mode) runs, as recorded when each ran).", "",
        f"{settings['n']} {'unseen' if settings['unseen'] else 'seen'} {settings['count']}-object prompts "
        f"(`held_out_prompts`, prompt seed {settings['prompt_seed']}, not the ablation's test prompts), one image each (sampling seeds 0..{settings['n'] - 1}, "
        f"the same for every model and mode), DDIM {settings['steps']} steps, CFG {settings['guidance']}, toy "
        f"detector. The edits act on every cross-attention layer for the first {settings['fraction']:.0%} of the "
        f"steps; excitation multiplies each noun token's attention by {settings['factor']:g}. Attend-and-Excite "
        "moves the latent instead, with its own schedule (`attend_excite.ExciteSettings`, the authors' settings "
        f"scaled to {settings['steps']} steps). Fine-tuned models: "
        f"the ablation's seeds {seeds}, pooled (each (seed, prompt) one cluster). 95% intervals over prompts.", "",
        "## MG3 and MG4 by model and sampling", "",
        "| model | sampling | MG3 | MG4 (all named) |", "|---|---|---|---|",
    ]
    for variant, names in by_variant.items():
        for mode in MODES:
            scores = {f"MG{k}": cluster_interval(success_rows(results, names, mode, k)) for k in (3, 4)}
            numbers["scores"][f"{variant}/{mode}"] = scores
            lines.append(f"| {VARIANT_LABELS[variant]} | {MODE_LABELS[mode]} | {cell(scores['MG3'])} | "
                         f"{cell(scores['MG4'])} |")
    lines += ["", "## Gain of each intervention over plain sampling (paired, same prompts and seeds)", "",
              "<!-- readme:begin -->", "Gain over plain sampling, paired, 95% intervals:", "",
              "| model | intervention | MG3 gain | MG4 gain |", "|---|---|---|---|"]
    for variant, names in by_variant.items():
        for mode in MODES[1:]:
            gains = {f"MG{k}": paired_interval(success_rows(results, names, mode, k),
                                               success_rows(results, names, "none", k)) for k in (3, 4)}
            numbers["gains"][f"{variant}/{mode}"] = gains
            lines.append(f"| {VARIANT_LABELS[variant]} | {MODE_LABELS[mode]} | {cell(gains['MG3'])} | "
                         f"{cell(gains['MG4'])} |")
    lines += ["<!-- readme:end -->", "",
              "## Does grounding change the gain? (+ L_token + L_pixel's gain minus L_LDM only's, paired)", "",
              "<!-- readme:begin -->", "The grounded model's gain (+ L_token + L_pixel) minus L_LDM only's, paired:", "",
              "| intervention | MG3 | MG4 | reading |", "|---|---|---|---|"]
    for mode in MODES[1:]:
        row = {f"MG{k}": paired_interval(change(results, by_variant["both"], mode, k),
                                         change(results, by_variant["ldm"], mode, k)) for k in (3, 4)}
        numbers["interaction"][mode] = row
        mg3 = row["MG3"]
        reading = ("larger on the grounded model" if mg3["low"] > 0 else
                   "smaller on the grounded model" if mg3["high"] < 0 else "no difference shown (interval spans 0)")
        lines.append(f"| {MODE_LABELS[mode]} | {cell(mg3)} | {cell(row['MG4'])} | MG3: {reading} |")
    lines += ["<!-- readme:end -->", "", "## Models", "", "| name | folder | weights digest |", "|---|---|---|"]
    lines += [f"| {name} | `{repository_path(folder)}` | `{digests[name]}` |"
              for name, (_, _, folder) in models.items()]
    return "\n".join(lines) + "\n", numbers


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags naming the models (the base and the ablation's fine-tunes of ``--seeds``) and the prompt count;
    ``toy_oracle_bands.py`` shares them."""
    parser.add_argument("--ablation-work", required=True, help="the --work folder of benchmarks/toy_ablation.py")
    parser.add_argument("--base", default=str(TOY_BASE_DIR), help="the base the ablation fine-tuned")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--prompts", type=int, default=128, help="4-object prompts (one image each)")


def sampling_settings(prompts: int, unseen: bool, steps: int, guidance: float, fraction: float, factor: float,
                      batch_size: int) -> dict:
    """The settings every cached run is keyed by (``run``); one builder, so ``toy_oracle_bands.py``'s plain and
    0-``fraction`` oracle runs hit this script's cache."""
    return {"n": prompts, "count": COUNT, "unseen": unseen, "prompt_seed": PROMPT_SEED, "steps": steps,
            "guidance": guidance, "fraction": fraction, "factor": factor, "batch_size": batch_size,
            # Attend-and-Excite's settings (the maps' side follows each model: half its image): part of the
            # cache key, so changed settings sample again
            "attend_excite": json.loads(json.dumps(dataclasses.asdict(ExciteSettings())))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--seen", action="store_true", help="seen combinations (default: unseen, as MultiGen's "
                        "question is about combinations not trained on)")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps (the gates' 25)")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--fraction", type=float, default=0.4, help="share of the steps the edit acts on")
    parser.add_argument("--factor", type=float, default=3.0, help="excitation factor")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2 on the 2-core machine)")
    parser.add_argument("--work", default=str(REPO_ROOT / "outputs" / "toy_excitation"))
    parser.add_argument("--results", default=str(REPO_ROOT / "benchmarks" / "results" / "toy_excitation"),
                        help="results file stem")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = models_of(args.base, Path(args.ablation_work), args.seeds)
    settings = sampling_settings(args.prompts, not args.seen, args.steps, args.guidance, args.fraction, args.factor,
                                 args.batch_size)
    digests = {name: weights_digest(folder) for name, (_, _, folder) in models.items()}  # once: it reads every file
    results: dict[str, dict[str, dict]] = {}
    for name, (_, _, folder) in models.items():
        results[name] = {}
        for mode in MODES:
            record = results[name][mode] = run(folder, digests[name], mode, settings, Path(args.work))
            mg3 = success_rows(results, [name], mode, 3)
            print(f"{name:12s} {mode:7s} MG3 {sum(row[0] for row in mg3) / len(mg3):.3f} ({record['minutes']:.1f} min)",
                  flush=True)
    command = shlex.join(["python", "benchmarks/toy_excitation.py", *(argv if argv is not None else sys.argv[1:])])
    sampled = sum(record["minutes"] for modes in results.values() for record in modes.values())
    text, numbers = report(results, models, digests, settings, args.seeds, command, sampled)
    stem = Path(args.results)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(text)
    # sampling minutes of each mode, summed over the models (its cost beside plain sampling's: toy_levers.py)
    numbers["minutes"] = {mode: sum(results[name][mode]["minutes"] for name in results) for mode in MODES}
    stem.with_suffix(".json").write_text(json.dumps({"settings": settings, "seeds": args.seeds, **numbers}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
