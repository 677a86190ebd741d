"""When is the toy's layout decided, and must each noun's place be its own? The oracle by step band and overlap.

The oracle layout (each noun token's cross-attention map replaced by its object's mask of a rendered layout,
``probes.AttentionEdit``) lifts unseen 4-object MG3 by ~19 points on every model when it acts on the first 10
of 25 DDIM steps (``benchmarks/results/toy_excitation.md``), while grounding gives every noun a sharper early
map that still overlaps the most similar other noun's by 0.71-0.77 (``toy_early_place.md``; L_LDM only 0.87).
Two readings fit that: "the image does not follow an early place" and "the early place is not the noun's own".
This probe tells them apart on the base and the ablation's L_LDM-only and grounded fine-tunes, paired prompt for
prompt (the prompts, sampling seeds and layouts of ``toy_excitation.py``):

- **bands**: the disjoint oracle during DDIM steps 0-1, 0-2, 0-5, 0-10, 0-25, and 10-25 only (step 0 the
  noisiest): the shortest early band that recovers most of the full oracle's gain is where the layout is
  decided; a late band that recovers nothing says the same from the other side;
- **overlap**: the oracle on steps 0-10 with each noun's mask blended with the union of the prompt's masks
  (``AttentionEdit.layout_maps``; overlap a makes two disjoint objects' maps share a fraction a of their mass,
  the histogram intersection the early-place probe measures): a = 0.5, and 0.75 (the grounded models' early
  overlap). A place that is not exclusive keeps each object where it was and gives it no room of its own.

If a disjoint layout in the deciding steps recovers most of the gain and an overlapped one does not, what
grounding's maps lack is exclusivity, not a place. The report computes that reading from the intervals.

usage:
  python benchmarks/toy_oracle_bands.py --ablation-work outputs/toy_ablation_noun_s7 --seeds 0   # ~25 min, 2 cores
  python benchmarks/toy_oracle_bands.py --ablation-work outputs/toy_ablation_noun_s7              # seeds 0 1 2
Writes ``benchmarks/results/toy_oracle_bands.md`` (+ ``.json``). Each (model, variant) result is cached in
``--work`` (the same folder and keys as ``toy_excitation.py``, so plain sampling and the 0-10 oracle are shared)
under the digest of the model's weights and the settings.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from benchmarks.toy_excitation import (  # noqa: E402
    VARIANT_LABELS,
    add_model_arguments,
    cell,
    models_of,
    run,
    sampling_settings,
    success_rows,
)
from tokencompose.provenance import weights_digest  # noqa: E402
from tokencompose.results import repository_path  # noqa: E402
from tokencompose.stats import paired_interval  # noqa: E402
from tokencompose.toy.jobs import machine_description  # noqa: E402

#: the shortest early band whose MG3 gain reaches this share of the full oracle's is called "where it is decided"
DECIDED_SHARE = 0.8
#: the overlap the grounded models' early maps show (toy_early_place.md: 0.71-0.77), rounded
GROUNDED_OVERLAP = 0.75


def variants(steps: int, fraction_steps: int) -> dict[str, tuple[str, dict]]:
    """``label -> (mode, extra settings)``. The ``fraction_steps`` band is left to ``fraction`` (no ``band`` key)
    so it shares its cache with ``toy_excitation.py``'s oracle."""
    out: dict[str, tuple[str, dict]] = {"plain": ("none", {})}
    for stop in sorted({1, 2, 5, fraction_steps, steps}):
        out[f"oracle, steps 0-{stop}"] = ("oracle", {} if stop == fraction_steps else {"band": [0, stop]})
    out[f"oracle, steps {fraction_steps}-{steps} only"] = ("oracle", {"band": [fraction_steps, steps]})
    for overlap in (0.5, GROUNDED_OVERLAP):
        out[f"oracle, steps 0-{fraction_steps}, overlap {overlap:g}"] = ("oracle", {"overlap": overlap})
    return out


def gain(results: dict, names: list[str], label: str, k: int) -> dict:
    """Paired MG_k gain of ``label`` over plain sampling, pooled over the models ``names`` (percentage points)."""
    return paired_interval(success_rows(results, names, label, k), success_rows(results, names, "plain", k))


def readings(numbers: dict, labels: list[str], steps: int, fraction_steps: int) -> list[str]:
    """Plain sentences computed from the MG3 gains: where the layout is decided, and whether exclusivity matters."""
    lines = []
    for variant, by_label in numbers["gains"].items():
        full = by_label[f"oracle, steps 0-{steps}"]["MG3"]
        early = [label for label in labels if label.startswith("oracle, steps 0-") and "overlap" not in label]
        decided = next((label for label in early
                        if full["mean"] > 0 and by_label[label]["MG3"]["mean"] >= DECIDED_SHARE * full["mean"]), None)
        late = by_label[f"oracle, steps {fraction_steps}-{steps} only"]["MG3"]
        disjoint = by_label[f"oracle, steps 0-{fraction_steps}"]["MG3"]
        overlapped = by_label[f"oracle, steps 0-{fraction_steps}, overlap {GROUNDED_OVERLAP:g}"]["MG3"]
        loss = numbers["overlap_cost"][variant]["MG3"]
        name = VARIANT_LABELS[variant]
        if full["low"] <= 0:
            lines.append(f"- {name}: the full oracle's MG3 gain ({cell(full)}) does not lie above 0; no band reading.")
            continue
        where = (f"the first {decided.split('0-')[1]} of {steps} steps already give at least "
                 f"{DECIDED_SHARE:.0%} of the full oracle's MG3 gain ({cell(by_label[decided]['MG3'])} of "
                 f"{cell(full)})" if decided else
                 f"no early band reaches {DECIDED_SHARE:.0%} of the full oracle's MG3 gain ({cell(full)})")
        late_text = ("the late band alone (steps "
                     f"{fraction_steps}-{steps}) {'also lifts MG3' if late['low'] > 0 else 'lifts nothing shown'} "
                     f"({cell(late)})")
        if overlapped["low"] > 0 and loss["high"] >= 0:
            exclusive = (f"an overlap of {GROUNDED_OVERLAP:g} keeps the gain ({cell(overlapped)} vs "
                         f"{cell(disjoint)} disjoint; difference {cell(loss)}): a shared early place is enough")
        elif loss["high"] < 0:
            exclusive = (f"an overlap of {GROUNDED_OVERLAP:g} costs {cell(loss)} points of the disjoint layout's "
                         f"{cell(disjoint)}" + (" and leaves no gain shown" if overlapped["low"] <= 0 else
                                                 f" (it still gains {cell(overlapped)})") +
                         ": exclusivity carries part of the oracle's effect")
        else:
            exclusive = (f"an overlap of {GROUNDED_OVERLAP:g} gains {cell(overlapped)} against {cell(disjoint)} "
                         f"disjoint (difference {cell(loss)}): the intervals cannot tell whether exclusivity matters")
        lines.append(f"- {name}: {where}; {late_text}; {exclusive}.")
    return lines


def report(results: dict, models: dict, digests: dict, settings: dict, labels: list[str], seeds: list[int],
           command: str, minutes: float, steps: int, fraction_steps: int) -> tuple[str, dict]:
    by_variant = {v: [n for n, (variant, _, _) in models.items() if variant == v] for v in VARIANT_LABELS}
    by_variant = {v: names for v, names in by_variant.items() if names}
    numbers: dict = {"gains": {}, "overlap_cost": {}}
    lines = [
        "# Toy world: when is the layout decided, and must a noun's place be its own? (oracle by band and overlap)",
        "", f"Measured {datetime.date.today().isoformat()} on {machine_description()}, {torch.get_num_threads()} "
        f"torch threads. Produced by `{command}`. Sampling took {minutes:.1f} minutes (the sum of the runs, as "
        "recorded when each ran; shared runs are cached).", "",
        f"{settings['n']} unseen {settings['count']}-object prompts (prompt seed {settings['prompt_seed']}, the "
        f"prompts, seeds and layouts of `toy_excitation.py`), one image each, DDIM {steps} steps (step 0 the "
        f"noisiest), CFG {settings['guidance']}, toy detector. Fine-tuned models: the ablation's seeds {seeds}, "
        "pooled (each (seed, prompt) one cluster). Gains are paired against plain sampling of the same model, "
        "prompts and seeds; 95% intervals over prompts. Overlap a: each noun's map is (1 - a) its own mask + a "
        "the union of the prompt's masks, so two objects' maps share a fraction a of their mass.", "",
        "<!-- readme:begin -->", "Gain over plain sampling (MG3 / MG4 points, paired, 95% intervals):", "",
        "| model | oracle | MG3 gain | MG4 gain |", "|---|---|---|---|"]
    for variant, names in by_variant.items():
        numbers["gains"][variant] = {}
        for label in labels[1:]:
            row = numbers["gains"][variant][label] = {f"MG{k}": gain(results, names, label, k) for k in (3, 4)}
            lines.append(f"| {VARIANT_LABELS[variant]} | {label.removeprefix('oracle, ')} | {cell(row['MG3'])} | "
                         f"{cell(row['MG4'])} |")
        overlapped = f"oracle, steps 0-{fraction_steps}, overlap {GROUNDED_OVERLAP:g}"
        numbers["overlap_cost"][variant] = {f"MG{k}": paired_interval(
            success_rows(results, names, overlapped, k), success_rows(results, names, f"oracle, steps 0-{fraction_steps}", k))
            for k in (3, 4)}
    lines += ["<!-- readme:end -->", "", "## Reading", ""]
    lines += readings(numbers, labels, steps, fraction_steps)
    lines += ["", "## Models", "", "| name | folder | weights digest |", "|---|---|---|"]
    lines += [f"| {name} | `{repository_path(folder)}` | `{digests[name]}` |" for name, (_, _, folder) in models.items()]
    return "\n".join(lines) + "\n", numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--fraction", type=float, default=0.4, help="toy_excitation's edited share of the steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=str(REPO_ROOT / "outputs" / "toy_excitation"))
    parser.add_argument("--results", default=str(REPO_ROOT / "benchmarks" / "results" / "toy_oracle_bands"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    fraction_steps = int(round(args.fraction * args.steps))
    if not 5 < fraction_steps < args.steps:
        parser.error(f"--fraction {args.fraction} of {args.steps} steps must edit more than 5 and fewer than all steps")
    models = models_of(args.base, Path(args.ablation_work), args.seeds)
    # toy_excitation.py's settings (its defaults: unseen, CFG 3, factor 3), so its cached plain and oracle runs are reused
    settings = sampling_settings(args.prompts, True, args.steps, 3.0, args.fraction, 3.0, args.batch_size)
    table = variants(args.steps, fraction_steps)
    digests = {name: weights_digest(folder) for name, (_, _, folder) in models.items()}
    results: dict[str, dict[str, dict]] = {}
    for name, (_, _, folder) in models.items():
        results[name] = {}
        for label, (mode, extra) in table.items():
            record = results[name][label] = run(folder, digests[name], mode, settings | extra, Path(args.work))
            mg3 = success_rows(results, [name], label, 3)
            print(f"{name:12s} {label:34s} MG3 {sum(r[0] for r in mg3) / len(mg3):.3f} ({record['minutes']:.1f} min)",
                  flush=True)
    command = shlex.join(["python", "benchmarks/toy_oracle_bands.py", *(argv if argv is not None else sys.argv[1:])])
    minutes = sum(record["minutes"] for by_label in results.values() for record in by_label.values())
    text, numbers = report(results, models, digests, settings, list(table), args.seeds, command, minutes,
                           args.steps, fraction_steps)
    stem = Path(args.results)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps({"settings": settings, "seeds": args.seeds, **numbers}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
