"""Stable Diffusion sampling speed: the fast mode vs the authors' mode, and what one MultiGen run costs.

The paper's MultiGen (Sec. 4.1, Table 1) draws 10 images of each of 1000 prompts a prompt set: 10,000
images of 50 steps a model. The authors' ``multigen/gen_image_dist.py`` makes them one at a time in float32
(``sample.sampling_settings("authors")``); the fast mode (``sampling_settings("fast")``) batches them, in
float16 on CUDA, with PyTorch SDPA attention and optionally a compiled UNet. Both run here side by side, in
one process on one device, through ``sample.generate_batch`` (the path ``sample.generate`` takes; writing
PNGs is not timed) on SD 1.4's architecture built from its configs with random weights (UNet and CLIP
ViT-L/14 text encoder: ``models.build_architecture("sd14")``; the VAE from SD 1.4's VAE config; the PNDM
scheduler SD 1.4 ships, which the authors' evaluation used; guidance 7.5). The safety checker that SD 1.4
ships is left out (one CLIP image pass an image, the same in both modes). Speed does not depend on the
weights' values, so random weights time what the real ones would.

Each mode: one warm-up batch (and the compile, with ``--compile``), then ``--images`` images rounded up to
whole batches, timed between ``torch.cuda.synchronize()`` calls on CUDA. From images/s the time of one
MultiGen prompt set (10,000 images at 50 steps) is extrapolated, scaled by 50 / ``--steps``.

usage: python benchmarks/sd_sampling.py [--device auto] [--steps 50] [--images 32] [--batch-size 16] [--compile]
       python benchmarks/sd_sampling.py --smoke   # a tiny model with SD 1.4's layout, 64 px, 2 steps: seconds on a CPU
Prints a markdown table and writes benchmarks/results/sd_sampling.md (``--out`` elsewhere). Without CUDA the
file says plainly that it was not measured on a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

from tokencompose.cli_args import output_file, positive_int
from tokencompose.sample import (
    DTYPES,
    SamplingSettings,
    attention_processor_names,
    generate_batch,
    prepare_for_sampling,
    sampling_settings,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results" / "sd_sampling.md"

#: one MultiGen prompt set (COCO or ADE20K): 1000 prompts x 10 images, 50 steps (the authors' default)
MULTIGEN_IMAGES = 1000 * 10
MULTIGEN_STEPS = 50

#: MultiGen-like prompts (five COCO categories each); every prompt pads to CLIP's 77 tokens, so which prompts
#: does not change the cost
PROMPTS = (
    "a photo of a book, a cup, a kite, a mouse, and a surfboard.",
    "a photo of a bench, a clock, a dog, a pizza, and a vase.",
    "a photo of a bicycle, a bowl, a cat, a laptop, and an umbrella.",
    "a photo of a banana, a chair, a horse, a remote, and a train.",
)

#: SD 1.4's VAE (``vae/config.json`` of CompVis/stable-diffusion-v1-4): 8x downsampling, 4 latent channels
SD14_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    sample_size=512,
)
#: SD 1.4's scheduler (``scheduler/scheduler_config.json``): PNDM, what ``from_pretrained`` gives and the
#: authors' evaluation sampled with
SD14_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)

#: the smoke model: SD 1.4's four-level layout (3 cross-attention down blocks + 1 plain, mirrored), 8 heads,
#: a VAE with 8x downsampling, but a few channels each and a 2-layer text encoder of width 32
SMOKE_UNET = dict(
    in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 32, 64, 64),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    norm_num_groups=32, cross_attention_dim=32, attention_head_dim=8,
)
SMOKE_VAE = dict(SD14_VAE, layers_per_block=1, block_out_channels=(8, 8, 16, 16), norm_num_groups=8, sample_size=64)


def build_pipeline(smoke: bool = False, image_size: int = 512, seed: int = 0):
    """A ``StableDiffusionPipeline`` with random weights on the CPU in float32: SD 1.4's architecture, or
    (``smoke``) the tiny model of the same layout."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tokencompose.models import TOY_TEXT, build_architecture
    from tokencompose.tokens import clip_tokenizer

    latent_size = image_size // 8
    if smoke:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(sample_size=latent_size, **SMOKE_UNET)
        text_encoder = CLIPTextModel(CLIPTextConfig(**TOY_TEXT))
        vae = AutoencoderKL(**SMOKE_VAE)
    else:
        unet, text_encoder = build_architecture("sd14", sample_size=latent_size, seed=seed)
        vae = AutoencoderKL(**SD14_VAE)
    return StableDiffusionPipeline(
        vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=clip_tokenizer(), unet=unet.eval(),
        scheduler=PNDMScheduler(**SD14_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_mode(pipe, settings: SamplingSettings, images: int, steps: int, image_size: int) -> dict:
    """Images/s of ``pipe`` sampled with ``settings``: one warm-up batch, then ``images`` rounded up to whole
    batches. ``pipe`` is moved, cast (and compiled) in place by ``sample.prepare_for_sampling``."""
    pipe = prepare_for_sampling(pipe, settings)
    batch = settings.batch_size
    count = math.ceil(images / batch) * batch
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(count)]

    def run(start: int) -> None:
        generate_batch(pipe, prompts[start:start + batch], list(range(start, start + batch)), steps=steps,
                       height=image_size, width=image_size)

    run(0)  # warm-up: kernels chosen, memory allocated, the UNet compiled (--compile)
    _synchronize(settings.device)
    began = time.perf_counter()
    for start in range(0, count, batch):
        run(start)
    _synchronize(settings.device)
    seconds = time.perf_counter() - began
    processors = attention_processor_names(pipe.unet)
    return {"mode": settings.mode + (" + compile" if settings.compile_unet else ""), "settings": settings,
            "images": count, "seconds": seconds, "images_per_s": count / seconds,
            "attention": ", ".join(f"{name} x{n}" for name, n in sorted(processors.items()))}


def multigen_hours(images_per_second: float, steps: int) -> float:
    """Hours for one MultiGen prompt set (10,000 images at 50 steps) at ``images_per_second`` measured with
    ``steps`` steps an image (scaled linearly in steps: the UNet's calls dominate)."""
    return MULTIGEN_IMAGES / images_per_second * (MULTIGEN_STEPS / steps) / 3600


def describe_machine(device: str) -> str:
    """The device the numbers were measured on, in words."""
    if torch.device(device).type == "cuda":
        index = torch.device(device).index or 0
        return f"**{torch.cuda.get_device_name(index)}** (CUDA {torch.version.cuda}), host with {os.cpu_count()} CPU cores"
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
             if line.startswith("model name")]
    name = names[0] if names else platform.processor() or platform.machine()
    return f"a CPU, no GPU ({name}, {os.cpu_count()} cores, torch threads: {torch.get_num_threads()})"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def report(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    """The results file: where and how it was measured, the table, and what it means."""
    on_gpu = torch.device(args.device).type == "cuda"
    model = ("A tiny random model with SD 1.4's layout (UNet channels 32/32/64/64, text width 32)" if args.smoke
             else "SD 1.4's architecture with random weights")
    lines = [
        "# Stable Diffusion sampling: the fast mode vs the authors' mode",
        "",
        f"Measured {datetime.date.today()} by `{command}` on {describe_machine(args.device)}; "
        f"torch {torch.__version__}, diffusers {_version('diffusers')}. {model}, {args.size} x {args.size} "
        f"images, {args.steps} steps, PNDM, guidance 7.5; one warm-up batch, then {args.images} images a mode "
        "(rounded up to whole batches).",
        "",
    ]
    lines.append("<!-- readme:begin -->")  # what the README's results section copies (scripts/readme_results.py)
    if not on_gpu:
        lines += [
            f"**Not measured on a GPU.** This run is on a CPU{' (a smoke run)' if args.smoke else ''}: it shows "
            "that both modes run and how the table reads; its times say nothing about a GPU (on a CPU both modes "
            "are float32) and vary from run to run on a shared machine. On a CUDA machine: `python "
            "benchmarks/sd_sampling.py --compile` (SD 1.4's architecture, 512 px, 50 steps).",
            "",
        ]
    authors = next((row for row in rows if row["mode"] == "authors"), None)
    lines += [
        "| mode | dtype | images a batch | attention processors | images timed | s / image | images / s "
        "| vs authors | one MultiGen set (10,000 images, 50 steps) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        settings = row["settings"]
        speedup = f"{row['images_per_s'] / authors['images_per_s']:.2f}x" if authors else "-"
        hours = ("not extrapolated (smoke model)" if args.smoke
                 else f"{multigen_hours(row['images_per_s'], args.steps):.1f} h")
        lines.append(
            f"| {row['mode']} | {str(settings.dtype).removeprefix('torch.')} | {settings.batch_size} | "
            f"{row['attention']} | {row['images']} | {row['seconds'] / row['images']:.3f} | "
            f"{row['images_per_s']:.2f} | {speedup} | {hours} |")
    lines += [
        "<!-- readme:end -->",
        "",
        "The authors' mode is their `multigen/gen_image_dist.py`: `pipe(prompt=[text])` one image at a time, float32 "
        "weights, diffusers' default attention. The fast mode samples the same images (same scheduler, steps, "
        "guidance and per-image seeds) up to float16 rounding. Not timed: loading the weights, writing PNGs, the "
        "safety checker SD 1.4 ships (one CLIP image pass an image in both modes). A MultiGen evaluation of one "
        "model on both prompt sets (COCO and ADE20K) is twice the last column; the detector's pass comes on top.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when there is one), cuda, cuda:1, cpu")
    parser.add_argument("--steps", type=positive_int, default=None, help="denoising steps (default 50; smoke 2)")
    parser.add_argument("--images", type=positive_int, default=None,
                        help="images timed a mode, rounded up to whole batches (default 32; smoke 4)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="the fast mode's images a batch (default: the mode's, 16 on CUDA; smoke 2)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="the fast mode's dtype (default: float16 on CUDA, float32 on CPU)")
    parser.add_argument("--compile", action="store_true", help="also time the fast mode with a compiled UNet")
    parser.add_argument("--size", type=positive_int, default=None, help="image side in pixels (default 512; smoke 64)")
    parser.add_argument("--smoke", action="store_true", help="a tiny SD-shaped model, 64 px, 2 steps: seconds on a CPU")
    parser.add_argument("--out", type=output_file, default=str(RESULTS), help=f"results file (default {RESULTS})")
    args = parser.parse_args(argv)
    args.steps = args.steps or (2 if args.smoke else MULTIGEN_STEPS)
    args.images = args.images or (4 if args.smoke else 32)
    args.size = args.size or (64 if args.smoke else 512)
    if args.batch_size is None and args.smoke:
        args.batch_size = 2
    if args.size % 8:
        parser.error(f"--size must be a multiple of 8 (the VAE downsamples 8x), got {args.size}")
    from tokencompose.config import resolve_device

    args.device = resolve_device(args.device)
    try:
        modes = [sampling_settings("authors", args.device),
                 sampling_settings("fast", args.device, dtype=args.dtype, batch_size=args.batch_size)]
        compiled = sampling_settings("fast", args.device, dtype=args.dtype, batch_size=args.batch_size,
                                     compile_unet=args.compile)
        if compiled.compile_unet:  # only on CUDA (sampling_settings warns otherwise)
            modes.append(compiled)
    except ValueError as error:
        parser.error(str(error))
    # one pipeline for every mode, in this order: float32 first, then cast to the fast mode's dtype in place
    pipe = build_pipeline(smoke=args.smoke, image_size=args.size)
    rows = []
    for settings in modes:
        rows.append(time_mode(pipe, settings, args.images, args.steps, args.size))
        print(f"{rows[-1]['mode']}: {rows[-1]['images_per_s']:.3f} images/s", file=sys.stderr)
    flags = " ".join(sys.argv[1:] if argv is None else argv)
    text = report(rows, args, f"python benchmarks/sd_sampling.py {flags}".strip())
    print(text, end="")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
