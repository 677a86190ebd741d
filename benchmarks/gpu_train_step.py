"""What the grounding losses cost a training step of SD 1.4's UNet on a GPU: time and peak memory.

SD 1.4's UNet architecture with random weights (``models.build_architecture("sd14")``), 64 x 64 latents
(512 px images), batch 1, gradient checkpointing, AdamW, one optimizer step a training step (forward,
loss, backward, clip to norm 1, step, zero_grad). The frozen VAE and text encoder are left out (the same
cost in every variant): latents and text embeddings are random. Variants:

* ``plain bf16``: L_LDM only, default attention processors everywhere, bf16 autocast;
* ``grounding bf16``: the recorder on the mid + up cross-attention layers and L_token + L_pixel on
  mid_8, up_16, up_32, up_64 (two nouns with masks), bf16 autocast;
* ``grounding fp32``: the same in float32, as the authors trained (their script sets no mixed precision).

Median step time over ``--steps`` steps after ``--warmup`` steps, and peak allocated GPU memory
(``torch.cuda.max_memory_allocated``) of each variant.

usage: python benchmarks/gpu_train_step.py [--steps 20] [--warmup 3]
Prints a table and writes benchmarks/results/gpu_train_step.md. Needs a CUDA GPU (exits with status 2
without one).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.metadata
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTPUT = REPO_ROOT / "benchmarks" / "results" / "gpu_train_step.md"
GROUPS = ("mid_8", "up_16", "up_32", "up_64")


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _inputs(device: torch.device) -> dict:
    """Random latents [1, 4, 64, 64], text embeddings [1, 77, 768], two nouns with 512 x 512 masks."""
    generator = torch.Generator().manual_seed(0)
    masks = torch.zeros(2, 512, 512)
    masks[0, 64:256, 64:256] = 1.0  # noun 1: top left
    masks[1, 256:480, 200:500] = 1.0  # noun 2: bottom right
    return {
        "latents": torch.randn(1, 4, 64, 64, generator=generator).to(device),
        "noise": torch.randn(1, 4, 64, 64, generator=generator).to(device),
        "context": torch.randn(1, 77, 768, generator=generator).to(device),
        "masks": [masks.to(device)],
        "positions": [[[5], [8, 9]]],  # "a photo of a cat and a teddy bear": one- and two-token nouns
    }


def run_variant(cpu_unet, grounding: bool, dtype: torch.dtype | None, steps: int, warmup: int) -> dict:
    """Train a copy of ``cpu_unet`` for ``warmup + steps`` steps; median seconds a step and peak memory."""
    from diffusers import DDPMScheduler

    from tokencompose.attention import attach_recorder
    from tokencompose.losses import grounding_losses, total_loss

    device = torch.device("cuda")
    unet = copy.deepcopy(cpu_unet).to(device).train()
    unet.enable_gradient_checkpointing()
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    recorder = attach_recorder(unet, groups=("mid", "up")) if grounding else None
    optimizer = torch.optim.AdamW(unet.parameters(), lr=5e-6, weight_decay=1e-2)
    data = _inputs(device)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times, last = [], {}
    for step in range(warmup + steps):
        torch.cuda.synchronize()
        began = time.perf_counter()
        t = torch.randint(0, 1000, (1,), device=device)
        noisy = scheduler.add_noise(data["latents"], data["noise"], t)
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            prediction = unet(noisy, t, data["context"]).sample
        ldm = F.mse_loss(prediction.float(), data["noise"].float())
        if recorder is not None:
            parts = grounding_losses(recorder.maps(), data["masks"], data["positions"], groups=GROUPS)
            recorder.reset()
            loss = total_loss(ldm, parts, 1e-3, 5e-5)
        else:
            loss = ldm
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - began)
        last = {"loss": float(loss.detach())}
    peak = torch.cuda.max_memory_allocated()
    if recorder is not None:
        recorder.detach()
    del unet, optimizer
    torch.cuda.empty_cache()
    return {"median_s": statistics.median(times), "peak_gib": peak / 2**30, **last}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_train_step.py needs a CUDA GPU (torch.cuda.is_available() is False); nothing measured.\n"
              "Run it on a GPU machine: python benchmarks/gpu_train_step.py", file=sys.stderr)
        return 2

    from tokencompose.models import build_architecture

    cpu_unet, _ = build_architecture("sd14", sample_size=64, text_encoder=False)
    variants = [("plain bf16", False, torch.bfloat16), ("grounding bf16", True, torch.bfloat16),
                ("grounding fp32 (authors')", True, None)]
    rows = []
    for name, grounding, dtype in variants:
        result = run_variant(cpu_unet, grounding, dtype, args.steps, args.warmup)
        rows.append((name, result))
        print(f"{name:<28} median {1000 * result['median_s']:8.1f} ms/step   peak {result['peak_gib']:6.2f} GiB   "
              f"loss {result['loss']:.4f}", flush=True)

    gpu = torch.cuda.get_device_name(0)
    base = rows[0][1]
    table = "\n".join(
        f"| {name} | {1000 * r['median_s']:.1f} | {r['median_s'] / base['median_s']:.2f}x | {r['peak_gib']:.2f} |"
        for name, r in rows)
    text = f"""# Training step of SD 1.4's UNet: plain vs with the grounding losses

Measured by `python benchmarks/gpu_train_step.py --steps {args.steps} --warmup {args.warmup}` on
{datetime.date.today().isoformat()}: **{gpu}**, torch {torch.__version__}, CUDA {torch.version.cuda},
diffusers {_version("diffusers")}.

SD 1.4's UNet architecture with random weights, 64 x 64 latents (512 px), batch 1, gradient
checkpointing, AdamW (float32 weights, gradients and states), clip to norm 1; VAE and text encoder
left out (random latents and text embeddings). Grounding: recorder on the mid + up cross-attention
layers, L_token + L_pixel on {", ".join(GROUPS)}, two nouns with masks. Median of {args.steps} steps after
{args.warmup} warm-up steps; peak = `torch.cuda.max_memory_allocated` (allocated tensors, not the
allocator's reserve or the CUDA context).

| variant | median ms / step | vs plain bf16 | peak GiB |
|---|---|---|---|
{table}

The VAE (fp16/bf16 ~0.2 GB, fp32 ~0.3 GB) and CLIP text encoder (~0.25 / 0.5 GB) of a real run come on top.
"""
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
