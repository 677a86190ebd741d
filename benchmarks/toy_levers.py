"""What moves composition in the toy world: one table of levers, each against its control, from the results files.

Nothing is sampled or trained here: every number is read from ``benchmarks/results/*.json`` (written by the
scripts named in each row), so the table cannot drift from the runs. Two kinds of lever:

- **training** levers change the fine-tuning; each is paired against the L_LDM-only fine-tune of the same steps,
  data, noise and seeds (the paper's own control, Table 2's first row), on the same unseen 4-object prompts;
- **sampling** levers change only how a model samples; each is paired against plain sampling of the same model,
  prompts and seeds. Their cost is the sampling time beside plain sampling's.

A gain is named only where its 95% interval lies above 0. The paper's number for the same lever stands beside
the toy's where one exists (Table 1, COCO MultiGen, SD 1.4: those are gains over the SD 1.4 *base*, not over an
L_LDM-only fine-tune). The ``finding`` block is the short side-by-side the README quotes.

usage:
  python benchmarks/toy_levers.py            # writes benchmarks/results/toy_levers.md (+ .json)
  python benchmarks/toy_levers.py --check    # exit 1 if the file is out of date with the results (tests)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tokencompose.evaluate.paper import TABLE1_MULTIGEN_COCO, TABLE2_OBJECT_ACCURACY, gains  # noqa: E402
from tokencompose.results import interval_reading  # noqa: E402
from tokencompose.stats import paired_interval  # noqa: E402
from tokencompose.toy.ablation import SEG_OBJECTS, outcome_rows  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
GUIDANCE = "3.0"
#: the paper's numbers (tokencompose/evaluate/paper.py holds them): Table 1 MultiGen, Table 2 VISOR OA
PAPER_MG = TABLE1_MULTIGEN_COCO
PAPER_OA = {"ldm": TABLE2_OBJECT_ACCURACY["L_LDM only"], "both": TABLE2_OBJECT_ACCURACY["+ L_token + L_pixel"]}
#: Table 4, segmentation mIoU of the attention maps (DAAM's protocol)
PAPER_MIOU = {"SD 1.4": 0.5371, "TokenCompose": 0.5876}


def paper_gain(lever: str, k: int) -> float:
    return gains(lever, "SD 1.4")[k]


def cell(stat: dict | None) -> str:
    if stat is None:
        return "—"
    return f"{stat['mean']:+.1f} [{stat['low']:.1f}, {stat['high']:.1f}]"


def reading(stat: dict | None) -> str:
    """``results.interval_reading``, a gain in bold (the table's one word that matters)."""
    text = interval_reading(stat)
    return f"**{text}**" if text == "gain" else text


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def ablation_gain(results: dict, seeds: list[int], k: int) -> dict:
    """Paired MG_k of "both" minus "ldm" (unseen prompts), pooled over ``seeds``: each (seed, prompt) a pair."""
    records = {r["name"]: r for r in results["records"]}
    both = [row for s in seeds for row in outcome_rows(records[f"both_seed{s}"], GUIDANCE, "unseen", k, "mg")]
    ldm = [row for s in seeds for row in outcome_rows(records[f"ldm_seed{s}"], GUIDANCE, "unseen", k, "mg")]
    return paired_interval(both, ldm)


def _seeds(results: dict) -> list[int]:
    names = {r["name"] for r in results["records"]}
    return sorted(r["seed"] for r in results["records"] if r["variant"] == "both" and f"ldm_seed{r['seed']}" in names)


def _minutes(results: dict) -> str:
    """Fine-tuning minutes of one seed's grounded model (a job that shared the sweep's fine-tune recorded 0:
    the L_LDM-only job of the same steps stands in)."""
    values = [r["train_minutes"] for r in results["records"] if r["variant"] in ("both", "ldm") and r["train_minutes"]]
    return f"{max(values):.1f} min a seed" if values else "—"


def training_rows() -> list[dict]:
    rows = []
    sources: list[tuple[str, str, Callable[[dict], str]]] = [
        ("toy_ablation_cpu_noun_base", "the paper's losses (L_token + L_pixel), every timestep",
         lambda r: f"r = {r['ratio']:g} (chosen by a sweep on validation prompts)"),
        ("toy_window_high_cpu", "the paper's losses only at t in [600, 1000) (high noise)",
         lambda r: f"r = {r['ratio']:g} (its sweep's choice)"),
        ("toy_window_low_cpu", "the paper's losses only at t in [0, 400) (low noise)",
         lambda r: f"r = {r['ratio']:g} (its sweep's choice)"),
    ]
    for name, label, note in sources:
        results = _load(name)
        if results is None:
            rows.append({"lever": label, "source": name, "seeds": [], "MG3": None, "MG4": None, "cost": "—",
                         "note": "results file absent"})
            continue
        seeds = _seeds(results)
        rows.append({"lever": label, "source": name, "seeds": seeds, "MG3": ablation_gain(results, seeds, 3),
                     "MG4": ablation_gain(results, seeds, 4), "cost": _minutes(results), "note": note(results)})
    own = _load("toy_own_samples")
    if own is not None:
        diff = own["differences"]["own-ldm"]
        rows.append({"lever": "supervision on the model's own samples + a presence reward (CoMat's idea)",
                     "source": "toy_own_samples", "seeds": own["seeds"], "MG3": diff["unseen MG3"],
                     "MG4": diff["unseen MG4"], "cost": "—",
                     "note": "taught colour blobs (the results file's trace); one seed collapsed"})
    for label in ("10x the fine-tuning length (L_LDM only vs both losses)",
                  "CTCal-style target (own low-noise maps as targets for high-noise maps)",
                  "Separate-and-Enhance (overlap and strength of the objects' maps, no masks)"):
        rows.append({"lever": label, "source": None, "seeds": [], "MG3": None, "MG4": None, "cost": "—",
                     "note": "not run yet"})
    return rows


MODE_LEVERS = {"excite": "excitation (each noun's attention x3, first 40% of steps)",
               "attend-and-excite": "Attend-and-Excite (latent updates toward the most neglected noun)",
               "oracle": "oracle layout (each noun's map = its object's mask, first 10 of 25 steps)"}
VARIANT_NAMES = {"base": "base", "ldm": "L_LDM only", "both": "+ L_token + L_pixel"}


def sampling_rows() -> list[dict]:
    rows = []
    excitation = _load("toy_excitation")
    if excitation is None:
        return rows
    minutes = excitation.get("minutes", {})
    for mode, label in MODE_LEVERS.items():
        for variant, name in VARIANT_NAMES.items():
            gains = excitation["gains"].get(f"{variant}/{mode}")
            seeds = [] if variant == "base" else excitation["seeds"]
            cost = (f"{minutes[mode] / minutes['none']:.1f}x plain sampling" if minutes.get("none") and
                    minutes.get(mode) else "—")
            rows.append({"lever": label, "model": name, "source": "toy_excitation", "seeds": seeds,
                         "MG3": gains["MG3"] if gains else None, "MG4": gains["MG4"] if gains else None,
                         "cost": cost, "note": "" if gains else "not run yet"})
    bands = _load("toy_oracle_bands")
    if bands is not None:
        for variant, by_label in bands["gains"].items():
            for label, gains in by_label.items():
                rows.append({"lever": label, "model": VARIANT_NAMES[variant], "source": "toy_oracle_bands",
                             "seeds": [] if variant == "base" else bands["seeds"], "MG3": gains["MG3"],
                             "MG4": gains["MG4"], "cost": "—", "note": ""})
    return rows


PAPER_FOR = {"the paper's losses (L_token + L_pixel), every timestep": ("TokenCompose", "over the SD 1.4 base"),
             MODE_LEVERS["attend-and-excite"]: ("Attend-and-Excite", "over SD 1.4")}


def _paper(lever: str) -> str:
    if lever not in PAPER_FOR:
        return ""
    name, against = PAPER_FOR[lever]
    return f"{paper_gain(name, 3):+.1f} / {paper_gain(name, 4):+.1f} ({against})"


def _seeds_text(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds)) if seeds else "—"


def finding(training: list[dict], sampling: list[dict]) -> list[str]:
    """The README's side-by-side: the paper's composition and attention numbers and the toy's controlled ones."""
    ablation = _load("toy_ablation_cpu_noun_base")
    lines = ["| | paper, SD 1.4 (COCO MultiGen) | toy world (unseen 4-object prompts, paired) |", "|---|---|---|"]
    if ablation is None:
        return lines + ["| (toy_ablation_cpu_noun_base.json absent) | | |"]
    records = ablation["records"]
    seeds = _seeds(ablation)

    def mean_miou(variant: str) -> float:
        values = [r["miou"]["miou"] for r in records if r["variant"] == variant]
        return sum(values) / len(values)

    main = training[0]
    mg2 = ablation_gain(ablation, seeds, 2)
    seg_prompts = records[0]["settings"]["seg_prompts"]
    lines += [
        f"| MG2 gain of the losses | {paper_gain('TokenCompose', 2):+.1f} ({PAPER_MG['SD 1.4'][2]} -> "
        f"{PAPER_MG['TokenCompose'][2]}, over the base) | {cell(mg2)} over L_LDM only ({len(seeds)} seeds): "
        f"{reading(mg2).strip('*')} |",
        f"| MG3 gain of the losses | {paper_gain('TokenCompose', 3):+.1f} ({PAPER_MG['SD 1.4'][3]} -> "
        f"{PAPER_MG['TokenCompose'][3]}) | {cell(main['MG3'])}: {reading(main['MG3']).strip('*')} |",
        f"| MG4 gain of the losses | {paper_gain('TokenCompose', 4):+.1f} ({PAPER_MG['SD 1.4'][4]} -> "
        f"{PAPER_MG['TokenCompose'][4]}) | {cell(main['MG4'])}: {reading(main['MG4']).strip('*')} |",
        f"| the losses against their control | VISOR OA {PAPER_OA['ldm']} (L_LDM only) -> {PAPER_OA['both']} "
        "(both), Table 2 | the MG rows above are that control |",
        f"| attention-mask mIoU (DAAM protocol) | {PAPER_MIOU['SD 1.4']} -> {PAPER_MIOU['TokenCompose']} "
        f"(Table 4, over the base) | {mean_miou('ldm'):.2f} (L_LDM only) -> {mean_miou('both'):.2f} (both), mean of "
        f"{len(seeds)} seeds on {seg_prompts} unseen {SEG_OBJECTS}-object prompts |",
    ]
    for row in sampling:
        if row["source"] == "toy_excitation" and row["model"] == "L_LDM only" and row["MG3"] is not None:
            paper = _paper(row["lever"]).split(" (")[0] or "—"
            lines.append(f"| MG3 gain, {row['lever']}, at sampling | {paper} | {cell(row['MG3'])} on the L_LDM-only "
                         f"fine-tune, over its plain sampling: {reading(row['MG3']).strip('*')} |")
    return lines


def report(training: list[dict], sampling: list[dict]) -> str:
    lines = ["# Toy world: what moves composition? One table of levers, each against its control", "",
             "Generated by `python benchmarks/toy_levers.py` from the results files named in each row (nothing is "
             "re-run). Unseen 4-object prompts, MG_k = % of images with at least k of the named objects detected "
             "by the toy detector; gains in percentage points, paired (same prompts and sampling seeds), 95% "
             "intervals with each (seed, prompt) a cluster. **gain** = interval above 0; loss = below 0.", "",
             "## The finding, beside the paper", "", "<!-- finding:begin -->", *finding(training, sampling),
             "<!-- finding:end -->", "",
             "## Training levers: gain over the L_LDM-only fine-tune (same steps, data and seeds)", "",
             "<!-- readme:begin -->",
             "| lever | MG3 gain | MG4 gain | reading (MG3) | seeds | fine-tuning cost | paper (MG3 / MG4) | note |",
             "|---|---|---|---|---|---|---|---|"]
    for row in training:
        source = f" (`{row['source']}`)" if row["source"] else ""
        lines.append(f"| {row['lever']}{source} | {cell(row['MG3'])} | {cell(row['MG4'])} | {reading(row['MG3'])} | "
                     f"{_seeds_text(row['seeds'])} | {row['cost']} | {_paper(row['lever'])} | {row['note']} |")
    lines += ["", "## Sampling levers: gain over plain sampling of the same model (same prompts and seeds)", "",
              "| lever | model | MG3 gain | MG4 gain | reading (MG3) | seeds | sampling cost | paper (MG3 / MG4) |",
              "|---|---|---|---|---|---|---|---|"]
    for row in sampling:
        lines.append(f"| {row['lever']} (`{row['source']}`) | {row['model']} | {cell(row['MG3'])} | "
                     f"{cell(row['MG4'])} | {reading(row['MG3'])} | {_seeds_text(row['seeds'])} | {row['cost']} | "
                     f"{_paper(row['lever'])} |")
    lines += ["<!-- readme:end -->", "",
              "Paper: Wang et al., CVPR 2024, Table 1 (COCO MultiGen MG3 / MG4: SD 1.4 50.74 / 11.68, "
              "Attend-and-Excite 65.10 / 28.01, TokenCompose 76.16 / 28.81), Table 2 (VISOR OA), Table 4 (mIoU)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the results file is out of date")
    parser.add_argument("--out", type=Path, default=RESULTS / "toy_levers")
    args = parser.parse_args(argv)
    training, sampling = training_rows(), sampling_rows()
    text = report(training, sampling)
    md = args.out.with_suffix(".md")
    if args.check:
        if not md.is_file() or md.read_text() != text:
            print(f"{md} is out of date: run python benchmarks/toy_levers.py", file=sys.stderr)
            return 1
        return 0
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"training": training, "sampling": sampling}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
