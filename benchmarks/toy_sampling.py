"""Toy sampling speed (issue 16, item 2): images a second of the toy DDIM sampler, before and after.

What the ablation waits on is evaluation: held-out 4-object prompts, CFG 3, 10 DDIM steps, the toy detector.
This script samples the same prompts and seeds in each configuration of ``sample.generate_toy`` and reports:

- images/s of sampling (after one warm-up batch), and of the toy detector on the same images;
- agreement with the first configuration (float32, the sampler before this change): share of images whose
  detected set of categories is the same, and the largest pixel difference, so that a faster setting is
  only taken when it changes what the detector sees no more than a different seed would be noticed.

Configurations: float32 at batch 64 (the ablation's ``generate_batch_size`` before), float32 at a larger
batch, and bfloat16 autocast (``generate_toy(autocast=torch.bfloat16)``: oneDNN runs it on the matrix
units of recent x86 CPUs, AMX; on a CPU without them it can be slower).

    python benchmarks/toy_sampling.py                    # 256 images, 10 steps, the noun-route base
    python benchmarks/toy_sampling.py --images 32 --smoke  # seconds: checks the plumbing

Writes ``benchmarks/results/toy_sampling.md`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tokencompose.config import TOY_NOUN_BASE_DIR  # noqa: E402
from tokencompose.models import load_components  # noqa: E402
from tokencompose.sample import generate_toy  # noqa: E402
from tokencompose.toy.ablation import TEST_PROMPT_SEED, held_out_prompts  # noqa: E402
from tokencompose.toy.detector import ToyDetector  # noqa: E402
from tokencompose.toy.jobs import machine_description  # noqa: E402

#: (label, batch size, autocast dtype); the first is the reference ("before")
CONFIGS = (
    ("float32, batch 64 (before)", 64, None),
    ("float32, batch 256", 256, None),
    ("bfloat16 autocast, batch 64", 64, torch.bfloat16),
    ("bfloat16 autocast, batch 256", 256, torch.bfloat16),
)


def measure(components, prompts: list[str], seeds: list[int], steps: int, batch: int, autocast) -> tuple[np.ndarray, float]:
    """Images and seconds of ``generate_toy`` (after a warm-up batch of the same size)."""
    generate_toy(components, prompts[:batch], seeds[:batch], steps=1, batch_size=batch, progress=False,
                 autocast=autocast)
    began = time.perf_counter()
    images = generate_toy(components, prompts, seeds, steps=steps, batch_size=batch, progress=False,
                          autocast=autocast)
    return images, time.perf_counter() - began


def detect_all(detector: ToyDetector, images: np.ndarray, names: list[list[str]]) -> tuple[list[set[str]], float]:
    began = time.perf_counter()
    found = [{d.name for d in detector.detect(image, wanted) if d.score > 0.1}
             for image, wanted in zip(images, names, strict=True)]
    return found, time.perf_counter() - began


#: a faster setting becomes the default only if at least this fast and this faithful (share of images with the
#: same detected set as the reference; below it the sampler is a different one, not a faster copy)
MIN_SPEEDUP, MIN_SAME = 1.2, 99.0


def conclusion(rows: list[tuple]) -> str:
    """The sentence the results file ends with: which configuration to use, decided by the numbers of ``rows``
    (label, images/s, detector images/s, same-detections %, max pixel difference, MG3 %; the first row is the
    reference)."""
    reference = rows[0]
    faithful = [r for r in rows[1:] if r[3] >= MIN_SAME and r[1] >= MIN_SPEEDUP * reference[1]]
    if faithful:
        best = max(faithful, key=lambda r: r[1])
        return (f"use {best[0]} ({best[1] / reference[1]:.2f}x, the same detections in {best[3]:.1f}% of the "
                "images).")
    fastest = max(rows[1:], key=lambda r: r[1], default=None)
    if fastest is None or fastest[1] <= reference[1]:
        return f"keep {reference[0]}: nothing measured here is faster."
    return (f"keep {reference[0]}. The fastest, {fastest[0]} ({fastest[1] / reference[1]:.2f}x), changes what the "
            f"detector sees in {100 - fastest[3]:.1f}% of the images (bar: at most {100 - MIN_SAME:.0f}%), so it is "
            "another sampler, not a faster copy of this one; it stays an option (`generate_toy(autocast=...)`) "
            "for runs that compare only among themselves.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=str(TOY_NOUN_BASE_DIR))
    parser.add_argument("--images", type=int, default=256, help="images a configuration (4-object prompts)")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps (the cpu ablation preset's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="two configurations, batch <= --images")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "toy_sampling.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    components = load_components(args.base)
    held = held_out_prompts(args.images // 2, 4, unseen=True, seed=TEST_PROMPT_SEED)
    held += held_out_prompts(args.images - len(held), 4, unseen=False, seed=TEST_PROMPT_SEED)
    prompts, names = [p.text for p in held], [list(p.objects) for p in held]
    seeds = list(range(len(prompts)))
    configs = [(label, min(batch, args.images), dtype) for label, batch, dtype in CONFIGS]
    if args.smoke:
        configs = [configs[0], configs[2]]
    detector = ToyDetector()
    rows, reference = [], None
    for label, batch, dtype in configs:
        images, seconds = measure(components, prompts, seeds, args.steps, batch, dtype)
        found, detect_seconds = detect_all(detector, images, names)
        if reference is None:
            reference = (images, found)
        same = float(np.mean([a == b for a, b in zip(found, reference[1], strict=True)]))
        diff = int(np.abs(images.astype(int) - reference[0].astype(int)).max())
        hits = float(np.mean([len(f & set(n)) >= 3 for f, n in zip(found, names, strict=True)])) * 100
        rows.append((label, len(images) / seconds, len(images) / detect_seconds, same * 100, diff, hits))
        print(f"{label}: {rows[-1][1]:.1f} images/s sampling, {rows[-1][2]:.0f} images/s detection, "
              f"same detections {same:.1%}", flush=True)
    base_speed = rows[0][1]
    verdict = conclusion(rows)
    lines = [
        "# Toy sampling speed", "",
        f"Measured {datetime.date.today().isoformat()} on {machine_description()}, {args.threads} torch threads, "
        f"nothing else running. Base `{Path(args.base).name}`, {len(prompts)} held-out 4-object prompts (half "
        f"unseen), one image each, DDIM {args.steps} steps, CFG 3 (the UNet sees 2 x batch images a step). "
        f"Produced by `python benchmarks/toy_sampling.py{' --smoke' if args.smoke else ''} --images {args.images} "
        f"--steps {args.steps} --threads {args.threads}`.", "",
        "| configuration | sampling images/s | speed-up | toy detector images/s | same detected set as float32 % "
        "| max pixel difference (0-255) | MG3 % (>= 3 of 4 named) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {label} | {speed:.1f} | {speed / base_speed:.2f}x | {det:.0f} | {same:.1f} | {diff} | {hits:.1f} |"
              for label, speed, det, same, diff, hits in rows]
    lines += ["", "Agreement is with the first row, image by image (same prompt and seed). A setting that "
              "changes detections is a different sampler: the ablation uses one sampler for every model it "
              "compares, so its comparisons stay paired, but its numbers are not comparable with an earlier run "
              "made with another setting.", "", f"**Decision:** {verdict}", ""]
    text = "\n".join(lines)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
