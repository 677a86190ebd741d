"""``make demo`` / ``python -m tokencompose demo``: the whole method, on the toy preset, on a CPU, in minutes.

1. fine-tune the shipped toy base twice on fresh multi-object toy scenes, with identical data and seeds:
   L_LDM only, and L_LDM + lambda L_token + gamma L_pixel (TokenCompose);
2. sample held-out prompts of 4 objects, seen and unseen combinations, and score MG_1..MG_4 (the paper's
   MultiGen definition) with the toy detector;
3. write ``outputs/demo/report.md`` with sample grids, attention maps of one prompt (base vs fine-tuned), loss
   curves and the score table.

The numbers of a demo run are small-sample (a few hundred images, one seed, few steps): the full experiment
with intervals and three seeds (issue 7, ``tokencompose.toy.ablation`` over four variants) is not run here.

Where the time goes (``python -m cProfile -m tokencompose demo`` on the 2-core CPU, 2026-11-30, 302 s in all
under the profiler): fine-tuning 232 s (backward 104 s, forward and losses 71 s, drawing and encoding the toy
scenes 31 s), evaluation sampling 57 s, loading models 10 s. ``torch.profiler`` on a fine-tuning step put 13%
in ``aten::fill_`` of zero tensors the size of the whole batch's attention maps: the losses indexed the
stacked maps once per sample, and each index's backward allocated them anew; they now split the batch once
(``losses._by_sample``). With that, PIL skipped for scenes already at the training size, and the world checked
in one call, the same fine-tune (bit-identical weights) runs about 15% faster. ``benchmarks/demo_time.py``
measures the demo from a fresh clone (``benchmarks/results/demo_time.md``).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import matplotlib

from ..cli_args import ArgumentParser, output_folder, positive_int
from ..config import TOY_BASE_DIR
from ..heatmaps import generate_with_attention, noun_heat_maps
from ..provenance import check_outputs, record_written
from ..sample import load_model
from ..stats import paired_interval
from ..viz import attention_maps_figure, loss_curves, sample_grid
from .ablation import (
    ABLATION_RESULTS,
    LABELS,
    AblationSettings,
    check_ablation_folders,
    earlier_ablation_results,
    held_out_prompts,
    interval_cell,
    mg_table,
    run_ablation,
    split_rows,
)

logger = logging.getLogger(__name__)


def _figures(out: Path, runs: list[dict], settings: AblationSettings, base: str) -> list[str]:
    """Sample grids, attention maps (base vs each model) and loss curves; returns markdown lines."""
    matplotlib.use("Agg")  # figures are written to files, never shown
    lines = []
    prompts = held_out_prompts(4, 3, unseen=True, seed=settings.prompt_seed)
    texts = [p.text for p in prompts]
    models = {"base": base} | {LABELS[r["variant"]]: r["model_dir"] for r in runs}
    attention_rows = {}
    for name, folder in models.items():
        model = load_model(folder)
        images, attention = generate_with_attention(model, texts, [0] * len(texts), steps=settings.sample_steps,
                                                    guidance=settings.guidance, progress=False)
        safe = name.replace(" ", "_").replace("+", "plus")
        record_written(out, {f"samples_{safe}.png": None})
        figure = sample_grid(list(images), [p.text.removeprefix("a photo of ") for p in prompts], columns=4,
                             title=name)
        figure.savefig(out / f"samples_{safe}.png")
        lines += [f"### {name}", "", f"![samples {name}](samples_{safe}.png)", ""]
        nouns = list(prompts[0].objects)
        heat = noun_heat_maps(attention[:1], texts[0], nouns, model.tokenizer)
        attention_rows[name] = {noun: heat[noun] for noun in nouns}
    record_written(out, dict.fromkeys(DEMO_FILES))
    figure = attention_maps_figure(attention_rows, title=f"attention of each noun: {texts[0]}")
    figure.savefig(out / "attention.png")
    lines += ["## Attention maps of one prompt (rows: models; columns: nouns)", "", "![attention](attention.png)",
              "", "Each map is the noun's cross-attention summed over sampling steps, averaged over the recorded "
              "layers and heads, min-max normalised (the segmentation-transfer heat map).", ""]
    figure = loss_curves([Path(r["model_dir"]) / "log.csv" for r in runs], keys=["ldm", "token", "pixel"])
    figure.savefig(out / "losses.png")
    lines += ["## Training losses", "", "![losses](losses.png)", "",
              "The L_LDM-only run logs L_token and L_pixel too (not trained on) to show its attention quality.", ""]
    return lines


def _score_table(runs: list[dict]) -> str:
    """MG_k (the paper's definition: >= k of the prompt's named categories detected) for k = 1..n on the n-object
    prompts, seen and unseen, with 95% intervals clustered by prompt (``ablation.mg_table``), and the share of
    unseen images with exactly the named categories ("nothing extra")."""
    def nothing_extra(run: dict) -> str:
        # outcomes["exact"]: per prompt, per image 1 when exactly the named categories were detected
        values = [v for cell in run["scores"]["unseen"].values() for prompt in cell["outcomes"]["exact"]
                  for v in prompt]
        return f"{100 * sum(values) / len(values):.1f}" if values else "-"
    return mg_table({LABELS[run["variant"]]: run["scores"] for run in runs},
                    columns={"nothing extra (unseen) %": ""},
                    rows={LABELS[run["variant"]]: [nothing_extra(run)] for run in runs})


def verdict(runs: list[dict]) -> str:
    """The sentence that says what the scores mean, decided by the numbers: unseen MG_3 (the paper's gain is
    largest on uncommon combinations) of TokenCompose minus L_LDM only, paired by prompt, with its 95% interval
    (``stats.paired_interval``): a gain, a loss, or no difference this run can show."""
    by_variant = {run["variant"]: run["scores"] for run in runs}
    if not {"ldm", "both"} <= set(by_variant):
        return ""
    k = min(3, max(int(c) for c in by_variant["both"]["unseen"]))
    diff = paired_interval(split_rows(by_variant["both"]["unseen"], k), split_rows(by_variant["ldm"]["unseen"], k))
    measured = (f"**What the numbers say:** on unseen combinations, MG_{k} with both losses minus L_LDM only = "
                f"{interval_cell(diff)} points (paired by prompt, 95% interval): ")
    if diff["low"] > 0:
        return measured + "TokenCompose composed more of the named objects in this run."
    if diff["high"] < 0:
        return measured + "TokenCompose composed fewer of the named objects in this run."
    return (measured + "the interval contains 0, so this run shows no difference in composition; the measured "
            "three-seed ablation (benchmarks/results/toy_ablation_*.md) is the experiment that decides.")


#: the files the demo writes into its folder itself (``run_ablation`` adds ``results.json`` and a folder a run)
DEMO_FILES = ("report.md", "attention.png", "losses.png")
DEMO_PATTERNS = ("samples_*.png",)
#: the variants the demo fine-tunes (``ablation.VARIANTS``): L_LDM only, and both grounding losses
VARIANTS_RUN = ["ldm", "both"]


def check_demo_folder(out_dir: str | Path) -> None:
    """The output-folder rule for the demo (``provenance.check_outputs``), changing nothing: its report and
    figures there, and ``results.json``, absent or this project's (a rerun resumes and replaces them)."""
    check_outputs(out_dir, (*DEMO_FILES, ABLATION_RESULTS), DEMO_PATTERNS, what="a demo",
                  also_ours=earlier_ablation_results(out_dir))


def run_demo(out_dir: str | Path = "outputs/demo", settings: AblationSettings | None = None,
             base: str = str(TOY_BASE_DIR)) -> Path:
    """Run the demo; returns the path of ``report.md``. The output-folder rule first (``check_demo_folder``):
    a file the project did not write under one of the demo's names is refused before anything is written."""
    out = Path(out_dir)
    settings = settings or AblationSettings(steps=200, batch_size=16, prompts_per_count=8, images_per_prompt=4,
                                            sample_steps=25)
    check_demo_folder(out)
    check_ablation_folders(out, VARIANTS_RUN, [0], settings)  # every folder, before the first run starts
    out.mkdir(parents=True, exist_ok=True)
    began = time.time()
    results = run_ablation(VARIANTS_RUN, seeds=[0], settings=settings, out_dir=out, base=base)
    runs = results["runs"]
    lines = [
        "# tokencompose demo: TokenCompose on the toy world", "",
        f"Base: `{base}`. Fine-tuning: {settings.steps} steps, batch {settings.batch_size}, lr "
        f"{settings.learning_rate}, lambda {settings.token_weight}, gamma {settings.pixel_weight}, seed 0, fresh "
        "2-4-object scenes (excluded pairs never shown). Evaluation: "
        f"{settings.prompts_per_count} prompts per number of objects x {settings.images_per_prompt} images, "
        f"DDIM {settings.sample_steps} steps, CFG {settings.guidance}, toy detector; MG_k = % of images with at "
        "least k of the prompt's named categories detected (the paper's definition), with 95% intervals clustered "
        "by prompt.", "",
        "A demo run is small: differences of a few points are within noise; the measured experiment is the "
        "four-variant, three-seed ablation (tokencompose.toy.ablation).", "",
        "## Scores", "", _score_table(runs), "", verdict(runs), "",
        "## Samples (unseen combinations, seed 0)", "",
        *_figures(out, runs, settings, base),
        f"Total time: {(time.time() - began) / 60:.1f} minutes.",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def cli(argv: list[str]) -> int:
    """``python -m tokencompose demo [--steps N] [--out DIR]``: the main job on the toy preset."""
    parser = ArgumentParser(prog="tokencompose demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=output_folder, default="outputs/demo")
    parser.add_argument("--steps", type=positive_int, default=200, help="fine-tuning steps of each model")
    parser.add_argument("--prompts", type=positive_int, default=8, help="prompts per number of objects and split")
    parser.add_argument("--base", default=str(TOY_BASE_DIR), help="toy base model folder")
    args = parser.parse_args(argv)
    if not (Path(args.base) / "unet").is_dir():
        parser.error(f"no toy base model in {args.base}; build it with `python -m tokencompose pretrain-toy`")
    settings = AblationSettings(steps=args.steps, prompts_per_count=args.prompts, images_per_prompt=4,
                                sample_steps=25)
    report = run_demo(args.out, settings, args.base)
    logger.info("demo report: %s", report)
    print(report.read_text())
    return 0
