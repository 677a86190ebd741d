"""Which tokens of a toy caption find their own object: attention specificity by token role and noise level.

Issue 12 asks for a toy base whose *noun* attention is per-noun (own / other-object density >= 2, as Stable
Diffusion's is before any fine-tuning). The attribute-world base reads its caption through its own tokens
(not the padding) yet its noun tokens stay near 1. This measures, on the same fresh 2-4-object scenes, the
specificity of three token roles of each named object (``ablation.TOKEN_ROLES``): the noun (what TokenCompose
supervises), the colour word just before it ("a *red* circle"), and the two together, at random training
timesteps (the gates' protocol) and at fixed ones.

    python benchmarks/investigations/toy_token_routes.py                 # benchmarks/results/toy_token_routes.md
    python benchmarks/investigations/toy_token_routes.py --smoke         # tiny sizes (tests)

specificity = (attention share on the object's own mask / its area) / (share on the other named objects / their
area); 1 = no preference. Each model's digest is in the table: a retrained base must be measured again.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from tokencompose.provenance import weights_digest  # noqa: E402
from tokencompose.toy.ablation import TOKEN_ROLES, attention_specificity  # noqa: E402
from tokencompose.toy.world import model_colour_mode  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
#: label -> model folder: the attribute-world base, the noun-route base (warm-started from it in the identity
#: world) and the first base (the control)
MODELS = {"attribute base (WIP)": REPO_ROOT / "tokencompose" / "assets" / "toy_base_attribute",
          "noun-route base": REPO_ROOT / "tokencompose" / "assets" / "toy_base_noun",
          "first base (control)": REPO_ROOT / "tokencompose" / "assets" / "toy_base"}
#: None = a random training timestep per image (the gates' protocol), else every image at that timestep
TIMESTEPS = (None, 100, 300, 500, 700, 900)
#: the scenes and noise of the gates' specificity (``probes.base_report``)
SEED = 1


def measure(model: Path, batches: int, batch_size: int, timesteps=TIMESTEPS) -> list[dict]:
    """One row per (role, timestep) the model's world has: specificity and own / others share per group."""
    roles = TOKEN_ROLES if model_colour_mode(model) == "attribute" else ("noun",)
    rows = []
    for role in roles:
        for timestep in timesteps:
            result = attention_specificity(model, batches=batches, batch_size=batch_size, seed=SEED, role=role,
                                           timestep=timestep)
            rows.append({"role": role, "timestep": timestep, "groups": result})
    return rows


def table(label: str, model: Path, rows: list[dict]) -> list[str]:
    groups = list(rows[0]["groups"])
    lines = [f"### {label}: `{model.relative_to(REPO_ROOT) if model.is_relative_to(REPO_ROOT) else model}` "
             f"(weights {weights_digest(model)}, {model_colour_mode(model)} world)", "",
             "| tokens | timestep | " + " | ".join(f"{g} specificity (own / others share)" for g in groups) + " |",
             "|---|---|" + "---|" * len(groups)]
    for row in rows:
        cells = [f"**{v['specificity']:.2f}** ({v['own']:.2f} / {v['others']:.2f})" if v["specificity"] >= 2
                 else f"{v['specificity']:.2f} ({v['own']:.2f} / {v['others']:.2f})"
                 for v in row["groups"].values()]
        when = "random (training)" if row["timestep"] is None else str(row["timestep"])
        lines.append(f"| {row['role']} | {when} | " + " | ".join(cells) + " |")
    return lines + [""]


def summary(measured: dict[str, list[dict]]) -> list[str]:
    """The README's block: specificity at random training timesteps (the gates' protocol), per model and role."""
    groups = list(next(iter(measured.values()))[0]["groups"])
    lines = ["<!-- readme:begin -->", "Specificity at random training timesteps (the gates' protocol; >= 2 in bold):", "",
             "| model | tokens | " + " | ".join(groups) + " |", "|---|---|" + "---|" * len(groups)]
    for label, rows in measured.items():
        for row in rows:
            if row["timestep"] is None:
                cells = [f"**{v['specificity']:.2f}**" if v["specificity"] >= 2 else f"{v['specificity']:.2f}"
                         for v in row["groups"].values()]
                lines.append(f"| {label} | {row['role']} | " + " | ".join(cells) + " |")
    return lines + ["<!-- readme:end -->", ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (tests)")
    parser.add_argument("--out", default=str(RESULTS / "toy_token_routes.md"))
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    batches, batch_size = (1, 2) if args.smoke else (args.batches, args.batch_size)
    timesteps = (None, 300) if args.smoke else TIMESTEPS
    began = time.time()
    lines = ["# Which tokens find their own object (toy bases)", "",
             f"Fresh 2-4-object scenes of each model's world, {batches} x {batch_size} scenes a row (seed 1, as the gates), "
             "noised at the timestep named, no update; attention of each token role averaged over heads and "
             "layers of a group. specificity = (share on own object / its area) / (share on the other named "
             "objects / their area), 1 = no preference; >= 2 (the issue-12 gate) in bold. Roles: `noun` = the "
             "noun's tokens (what TokenCompose supervises), `attribute` = the colour word before it (attribute "
             "world only), `phrase` = both.", ""]
    measured = {label: measure(model, batches, batch_size, timesteps) for label, model in MODELS.items()}
    lines += summary(measured)
    for label, model in MODELS.items():
        lines += table(label, model, measured[label])
    lines += [f"Measured on {platform.machine()} CPU, torch threads {torch.get_num_threads()}, torch "
              f"{torch.__version__}, in {(time.time() - began) / 60:.1f} minutes by "
              f"`python benchmarks/investigations/toy_token_routes.py{' --smoke' if args.smoke else ''}`.", ""]
    text = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
