"""The gates of a toy base (issue 12) and the experiments that tell the hypotheses apart, measured side by side
for every base named, the first base ("caption read from the padding") as the negative control.

    python benchmarks/toy_base_gates.py --model tokencompose/assets/toy_base_identity --label "first base (control)"
    python benchmarks/toy_base_gates.py --model tokencompose/assets/toy_base --label "attribute base"
    python benchmarks/toy_base_gates.py --table        # benchmarks/results/toy_base_gates.md from the JSON files

Each model's measurements (``probes.base_report``: composition with the paper's MG_k and the error breakdown,
specificity, noun-map mIoU, routing, noun-feature cosine, oracle attention and excitation) go to
``benchmarks/results/toy_base_gates/<label>.json`` with the digest of the weights they were measured on; the
table refuses a file whose model folder now holds other weights (measure it again). ``--smoke`` runs tiny
sizes (tests).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from pathlib import Path

import torch

from tokencompose.provenance import weights_digest
from tokencompose.toy.pretrain import GATES_FILE
from tokencompose.toy.probes import base_report, gates_markdown

RESULTS = Path(__file__).resolve().parent / "results"


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def saved_report(model: Path) -> dict | None:
    """The measurements ``pretrain-toy`` made for the model's card (``gates.json``), if they were made on the
    weights the folder holds now (same digest); else None."""
    path = model / GATES_FILE
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    return report if report.get("digest") == weights_digest(model) else None


def measure(model: Path, label: str, out: Path, smoke: bool, remeasure: bool = False) -> dict:
    sizes = dict(n=4, seg_prompts=2, intervention_prompts=2, steps=3) if smoke else {}
    report = None if (smoke or remeasure) else saved_report(model)
    if report is not None:
        print(f"{label}: the card's measurements ({model / GATES_FILE}, weights {report['digest']}), not measured again")
    else:
        began = time.time()
        report = base_report(model, **sizes)
        report.update(digest=weights_digest(model), minutes=(time.time() - began) / 60,
                      machine=f"{platform.machine()} CPU, torch threads: {torch.get_num_threads()}, "
                              f"torch {torch.__version__}")
    report.update(label=label, model=str(model))  # the folder named here (the card was measured where it trained)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{slug(label)}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print(f"{label}: {path} ({report['minutes']:.1f} min)")
    return report


def table(out: Path, target: Path) -> str:
    reports = {}
    for path in sorted(out.glob("*.json")):
        report = json.loads(path.read_text())
        model = Path(report["model"])
        if model.is_dir() and weights_digest(model) != report["digest"]:
            raise SystemExit(f"{path} was measured on other weights than {model} holds now "
                             f"({report['digest']} vs {weights_digest(model)}); measure it again")
        reports[report["label"]] = report
    if not reports:
        raise SystemExit(f"no measurements in {out}; run with --model first")
    settings = next(iter(reports.values()))["settings"]
    lines = [f"- {label}: `{r['model']}` (weights {r['digest']}, {r['colour_mode']} world), measured in "
             f"{r['minutes']:.0f} min on {r['machine']}" for label, r in reports.items()]
    text = ("# Toy bases: the gates and the discriminating experiments (issue 12)\n\n" + "\n".join(lines) +
            f"\n\nSampling: DDIM {settings['steps']} steps, CFG {settings['guidance']}, one image a prompt "
            f"(seeds 0..n-1), {settings['n']} prompts a row; noun-map mIoU on {settings['seg_prompts']} "
            f"generated 2-4-object images; interventions on {settings['intervention_prompts']} prompts.\n\n"
            + gates_markdown(reports))
    target.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="toy model folder to measure")
    parser.add_argument("--label", help="its name in the table")
    parser.add_argument("--table", action="store_true", help="write the side-by-side table")
    parser.add_argument("--out", type=Path, default=RESULTS / "toy_base_gates")
    parser.add_argument("--target", type=Path, default=RESULTS / "toy_base_gates.md")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (tests)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--remeasure", action="store_true",
                        help="measure even when the model folder holds its card's measurements (gates.json)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        measure(args.model, args.label or args.model.name, args.out, args.smoke, args.remeasure)
    if args.table:
        print(table(args.out, args.target))


if __name__ == "__main__":
    main()
