"""Latency: seconds an image for the base and the fine-tuned model (the paper's "no extra inference cost").

TokenCompose changes only the UNet's weights: same architecture, same scheduler, same number of steps, so a
fine-tuned model should take the same time an image as its base. This module measures it instead of taking
it on faith:

- ``measure_latency(generate_fn, prompts)`` times ``generate_fn(prompts)`` ``runs`` times after ``warmup``
  untimed calls (first calls pay for memory allocation, kernel selection, caches) and reports the median
  seconds an image (robust to a stray slow run on a shared machine) with every run's value;
- ``compare_latency(base, finetuned, prompts)`` does the same for both models on the same device, steps,
  guidance, seeds and batch, **interleaving** the timed runs (base, fine-tuned, fine-tuned, base, ...) so a
  drift in machine load hits both alike, and reports the ratio fine-tuned / base of the medians as a
  markdown table and a JSON-ready dict. On CUDA the clock is read after ``torch.cuda.synchronize()``.

On a busy shared CPU the ratio scatters around 1 by several per cent; compare medians of enough runs.

Usage::

    python -m tokencompose evaluate latency --base toy --finetuned outputs/toy_tokencompose --runs 5 --out lat.json
    python -m tokencompose evaluate latency --base sd14 --finetuned outputs/unet --dtype float16 --steps 50
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from tokencompose.cli_args import (
    ArgumentParser,
    device,
    finite_float,
    non_negative_int,
    positive_int,
    result_file,
    sampling_steps,
)
from tokencompose.models import Components, WeightsNotFoundError
from tokencompose.provenance import check_outputs, record_written, result_and_table
from tokencompose.sample import DTYPES, generate, is_pipeline, load_model, read_prompts

logger = logging.getLogger(__name__)

#: the prompt timed by default (MultiGen's template)
DEFAULT_PROMPTS = ("a photo of a circle, a star and a ring.",)

Clock = Callable[[], float]


def _time_call(generate_fn: Callable[[Sequence[str]], Any], prompts: Sequence[str], clock: Clock,
               synchronize: Callable[[], None] | None) -> float:
    """Seconds of one ``generate_fn(prompts)`` call (device work finished: ``synchronize`` before each read)."""
    if synchronize is not None:
        synchronize()
    start = clock()
    generate_fn(prompts)
    if synchronize is not None:
        synchronize()
    return clock() - start


def summarise(seconds: Sequence[float], images_per_run: int, warmup: int) -> dict:
    """Per-image statistics of timed runs: median (the reported number), min, max, and every run."""
    per_image = [s / images_per_run for s in seconds]
    return {
        "seconds_per_image": statistics.median(per_image),
        "min": min(per_image),
        "max": max(per_image),
        "runs": len(per_image),
        "warmup": warmup,
        "images_per_run": images_per_run,
        "seconds_per_image_runs": per_image,
    }


def _check_counts(runs: int, warmup: int, prompts: Sequence[str]) -> None:
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if isinstance(prompts, str) or not prompts:
        raise ValueError(f"prompts must be a non-empty list of prompts, got {prompts!r}")


def measure_latency(generate_fn: Callable[[Sequence[str]], Any], prompts: Sequence[str], runs: int = 5,
                    warmup: int = 1, clock: Clock = time.perf_counter,
                    synchronize: Callable[[], None] | None = None) -> dict:
    """Median seconds an image of ``generate_fn(prompts)`` over ``runs`` timed calls after ``warmup`` untimed ones.

    Args:
        generate_fn: makes one image per prompt (e.g. ``lambda p: sample.generate(model, p, [0])``).
        clock: seconds as a float (``time.perf_counter``; tests inject a fake one).
        synchronize: called before each clock read (``torch.cuda.synchronize`` on a GPU).

    Returns:
        ``summarise``'s dict: ``seconds_per_image`` (median), ``min``, ``max``, ``runs``, ``warmup``,
        ``images_per_run``, ``seconds_per_image_runs``.
    """
    _check_counts(runs, warmup, prompts)
    for _ in range(warmup):
        _time_call(generate_fn, prompts, clock, synchronize)
    seconds = [_time_call(generate_fn, prompts, clock, synchronize) for _ in range(runs)]
    return summarise(seconds, len(prompts), warmup)


def _device_of(model: Any) -> str:
    unet = getattr(model, "unet", None)
    return str(unet.device) if unet is not None else "unknown"


def _scheduler_name(model: Any) -> str:
    if isinstance(model, Components) and model.vae is None:
        return "DDIM (toy sampler, sample.ddim_sample)"
    return type(getattr(model, "scheduler", None)).__name__


def generate_fn_for(model: Any, steps: int = 50, guidance: float | None = None, seed: int = 0,
                    height: int | None = None, width: int | None = None) -> Callable[[Sequence[str]], Any]:
    """``prompts -> images`` for a model (``sample.generate``, one seed, no files, no progress bar)."""
    def generate_fn(prompts: Sequence[str]) -> Any:
        return generate(model, list(prompts), [seed], steps=steps, guidance=guidance, batch_size=len(prompts),
                        height=height, width=width, progress=False)

    return generate_fn


def compare_latency(base: Any, finetuned: Any, prompts: Sequence[str] = DEFAULT_PROMPTS, steps: int = 50,
                    guidance: float | None = None, runs: int = 5, warmup: int = 1, height: int | None = None,
                    width: int | None = None, clock: Clock = time.perf_counter,
                    synchronize: Callable[[], None] | None = None) -> dict:
    """Seconds an image of ``base`` and ``finetuned``, same settings, interleaved runs; ratio of the medians.

    Args:
        base, finetuned: loaded models (toy ``Components`` or pipelines; see ``sample.load_model``) or
            ``prompts -> images`` callables (then ``steps``/``guidance`` are theirs to honour).
        prompts: one image each per run (one batch).
        synchronize: default ``torch.cuda.synchronize`` when a model is on CUDA.

    Returns:
        ``{"base": summary, "finetuned": summary, "ratio": finetuned / base, "table": markdown,
        "settings": {...}}`` (JSON-serialisable).
    """
    _check_counts(runs, warmup, prompts)

    models = {"base": base, "finetuned": finetuned}
    schedulers = {}
    functions = {}
    for name, model in models.items():
        if is_pipeline(model) or isinstance(model, Components):
            functions[name] = generate_fn_for(model, steps=steps, guidance=guidance, height=height, width=width)
            schedulers[name] = _scheduler_name(model)
        elif callable(model):
            functions[name] = model
            schedulers[name] = "given by the callable"
        else:
            raise TypeError(f"{name} must be toy Components, a pipeline or a prompts -> images callable, "
                            f"got {type(model).__name__}; load a folder with sample.load_model first")
    if schedulers["base"] != schedulers["finetuned"]:
        raise ValueError(f"the models use different schedulers ({schedulers}); latency must be compared with the "
                         "same scheduler and steps (load both with the same --scheduler)")
    devices = {name: _device_of(model) for name, model in models.items()}
    if synchronize is None and any(d.startswith("cuda") for d in devices.values()):
        synchronize = torch.cuda.synchronize
    for _ in range(warmup):
        for name in models:
            _time_call(functions[name], prompts, clock, synchronize)
    seconds: dict[str, list[float]] = {"base": [], "finetuned": []}
    for run in range(runs):
        order = ("base", "finetuned") if run % 2 == 0 else ("finetuned", "base")
        for name in order:
            seconds[name].append(_time_call(functions[name], prompts, clock, synchronize))
    result = {name: summarise(values, len(prompts), warmup) for name, values in seconds.items()}
    base_median = result["base"]["seconds_per_image"]
    result["ratio"] = result["finetuned"]["seconds_per_image"] / base_median if base_median > 0 else float("nan")
    result["settings"] = {
        "steps": steps, "guidance": guidance, "prompts": list(prompts), "devices": devices,
        "scheduler": schedulers["base"], "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    result["table"] = latency_table(result)
    return result


def latency_table(result: dict) -> str:
    """Markdown table of ``compare_latency``'s result."""
    rows = [("base", result["base"]), ("fine-tuned", result["finetuned"])]
    runs = result["base"]["runs"]
    lines = [
        f"| model | s / image (median of {runs}) | min | max |",
        "|---|---|---|---|",
        *(f"| {name} | {r['seconds_per_image']:.4f} | {r['min']:.4f} | {r['max']:.4f} |" for name, r in rows),
        "",
        f"fine-tuned / base: **{result['ratio']:.3f}** ({result['settings']['steps']} steps, "
        f"{result['settings']['scheduler']}, {', '.join(sorted(set(result['settings']['devices'].values())))})",
    ]
    return "\n".join(lines)


def cli(argv: list[str]) -> int:
    """``python -m tokencompose evaluate latency --base MODEL --finetuned MODEL``: seconds an image, both models."""
    parser = ArgumentParser(prog="tokencompose evaluate latency", description=cli.__doc__)
    parser.add_argument("--base", default="toy", help="the base model: toy, sd14, sd21, a folder or a hub id")
    parser.add_argument("--finetuned", required=True, help="the fine-tuned model: a folder (a bare UNet folder "
                        "is put into --base)")
    parser.add_argument("--prompts", default=None, help="file or text (default: one MultiGen-style prompt)")
    parser.add_argument("--batch", type=positive_int, default=1, help="images a timed call (the prompt list repeated)")
    parser.add_argument("--steps", type=sampling_steps, default=50)
    parser.add_argument("--guidance", type=finite_float, default=None)
    parser.add_argument("--runs", type=positive_int, default=5)
    parser.add_argument("--warmup", type=non_negative_int, default=1)
    parser.add_argument("--height", type=positive_int, default=None)
    parser.add_argument("--width", type=positive_int, default=None)
    parser.add_argument("--device", type=device, default="auto")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--scheduler", choices=["default", "ddim"], default="default")
    parser.add_argument("--out", type=result_file, default=None,
                        help="write the result as JSON here (and a .md table beside it)")
    args = parser.parse_args(argv)
    written = result_and_table(args.out)
    if args.out:  # the output-folder rule: both names absent or this project's, before any model loads
        check_outputs(Path(args.out).parent, written)
    try:
        prompts = read_prompts(args.prompts) if args.prompts else list(DEFAULT_PROMPTS)
        prompts = (prompts * args.batch)[: max(args.batch, 1)]
        dtype = DTYPES[args.dtype]
        base = load_model(args.base, dtype=dtype, device=args.device, scheduler=args.scheduler)
        finetuned = load_model(args.finetuned, base=args.base, dtype=dtype, device=args.device,
                               scheduler=args.scheduler)
        result = compare_latency(base, finetuned, prompts, steps=args.steps, guidance=args.guidance, runs=args.runs,
                                 warmup=args.warmup, height=args.height, width=args.width)
    except (ValueError, FileNotFoundError, WeightsNotFoundError) as error:
        parser.error(str(error))
    logger.info("latency:\n%s", result["table"])
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        record_written(out.parent, dict.fromkeys(written))
        out.write_text(json.dumps(dict(result, base_model=args.base, finetuned_model=args.finetuned), indent=1))
        out.with_suffix(".md").write_text(result["table"] + "\n")
    return 0
