"""What recording cross-attention costs: one training step of SD 1.4's UNet, plain vs recorded.

Three variants of one step (forward + backward) of the SD 1.4 UNet architecture (random weights, 32x32
latents = 256 px, batch 1, CPU):

- ``plain``: L_LDM only, every layer on the default fused attention (SDPA);
- ``recorder``: L_LDM + grounding losses, our recorder on the supervised cross-attention layers only
  (mid + up, 10 layers), every other layer still SDPA;
- ``all``: the same losses, every attention layer (32, self and cross) computed explicitly and recorded,
  as the authors' code did.

Each variant runs in its own process (so peak memory is its own): median seconds over ``--runs`` steps after
one warm-up, and peak resident memory during the steps above the memory after building the model. Usage::

    python benchmarks/attention_overhead.py [--runs 3] [--size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "attention_overhead.md"
VARIANTS = ("plain", "recorder", "all")


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_variant(variant: str, runs: int, size: int) -> dict:
    """One variant, in this process: returns median seconds and peak MiB above the built model."""
    import torch
    import torch.nn.functional as F

    from tokencompose.attention import attach_recorder
    from tokencompose.losses import grounding_losses, total_loss
    from tokencompose.models import build_architecture

    unet, _ = build_architecture("sd14", sample_size=size, text_encoder=False)
    unet.train()
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, size, size, generator=generator)
    context = torch.randn(1, 77, 768, generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    masks = [(torch.rand(2, size * 8, size * 8, generator=generator) > 0.7).float()]
    positions = [[[2], [5, 6]]]
    recorder = None
    if variant != "plain":
        recorder = attach_recorder(unet, groups=("mid", "up"), mode="cross" if variant == "recorder" else "all")
    groups = [f"mid_{size // 8}", f"up_{size // 4}", f"up_{size // 2}", f"up_{size}"]

    def step() -> None:
        unet.zero_grad(set_to_none=True)
        ldm = F.mse_loss(unet(latents, 500, context).sample, noise)
        if recorder is None:
            loss = ldm
        else:
            loss = total_loss(ldm, grounding_losses(recorder.maps(), masks, positions, groups=groups))
        loss.backward()
        if recorder is not None:
            recorder.reset()

    step()  # warm-up
    baseline = _rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    seconds = []
    for _ in range(runs):
        began = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - began)
    peak = _rss_kib("VmHWM")
    return {"variant": variant, "median_s": statistics.median(seconds), "seconds": seconds,
            "peak_mib_above_model": (peak - baseline) / 1024 + 0.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=32, help="latent size (32 = 256 px)")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one subprocess
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.runs, args.size)))
        return 0
    rows = []
    for variant in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--variant", variant, "--runs", str(args.runs),
                              "--size", str(args.size)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{variant}: {rows[-1]['median_s']:.2f} s", file=sys.stderr)
    plain = rows[0]
    import torch

    lines = [
        "# Attention recording overhead (one training step, SD 1.4 UNet architecture)",
        "",
        f"Measured {date.today()} on {platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; random weights, {args.size}x{args.size} latents, batch 1; "
        f"median of {args.runs} steps after one warm-up; peak = resident memory during the steps above the "
        "memory after the warm-up step (each variant in its own process). Other work shared the machine, so "
        "read the ratios rather than the absolute seconds.",
        "",
        "| variant | what is recorded | median s/step | x plain | peak MiB above model | x plain |",
        "|---|---|---|---|---|---|",
    ]
    what = {"plain": "nothing (L_LDM only, SDPA everywhere)",
            "recorder": "cross-attention of mid + up (10 layers); losses",
            "all": "every attention layer, self + cross (32 layers, authors' way); losses"}
    for row in rows:
        lines.append(
            f"| {row['variant']} | {what[row['variant']]} | {row['median_s']:.2f} | "
            f"{row['median_s'] / plain['median_s']:.2f} | {row['peak_mib_above_model']:.0f} | "
            f"{row['peak_mib_above_model'] / max(plain['peak_mib_above_model'], 1e-9):.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
