"""Segmentation transfer: do a model's cross-attention maps segment the nouns of the images it generates?

The paper's knowledge-transfer check. TokenCompose trains the cross-attention map of each noun token to
cover that noun's mask (L_token, L_pixel); if that grounding transfers to new prompts, the attention of a
generated image should segment the generated objects. Measured DAAM-style (Tang et al. 2023, "What the
DAAM"), for each generated image and each noun of its prompt:

1. record the cross-attention probabilities ``A = softmax(QK^T / sqrt(d))`` of the conditional half of the
   classifier-free-guidance batch (``attention.attach_recorder(keep="cond", detach=True)``) at every
   denoising step, and **sum over timesteps** (summed as the sampler goes, never stored step by step);
2. **average heads**, upsample each layer's ``h x w`` map to the latent size (**bicubic**), **average
   layers**: ``D[t] = mean_layers upsample(mean_heads sum_steps A[..., t])``, one map per token ``t``;
3. a noun's map is the **sum of its tokens' maps** (``tokens.token_positions``: "teddy bear" = 2 tokens);
4. **min-max normalise** to [0, 1], **threshold** (> 0.4, DAAM's value) and compute the **IoU** with a
   reference mask of the same image;
5. report the **mean IoU** over (image, noun) pairs with a 95% interval.

Choices (documented because they change the number):

- Bicubic upsampling and averaging are linear, so averaging layers and heads before or after summing over
  steps gives the same map; we reduce heads at record time to keep memory at ``[B, 1, h*w, 77]`` a layer.
- The reference mask is resized to the heat map's size by area averaging, then ``>= 0.5`` (a latent
  pixel belongs to the object when most of its 8 x 8 image pixels do; the toy model is pixel-space: 1:1).
- A noun whose reference mask is empty (the object was not generated) is **skipped and counted** as
  ``missing``: its IoU would measure generation (MultiGen's job), not grounding.
- The interval is the normal approximation ``mean +- z s / sqrt(n)`` (``s``: sample standard deviation,
  ``z = 1.96`` for 95%), or a percentile bootstrap over pairs (``interval="bootstrap"``). Pairs of one image
  are not independent, so both intervals are somewhat optimistic.

Reference masks: on the toy world, the colour segmentation of the generated image
(``evaluate.toy_detector.colour_segmentation``, exact up to the model's colours); for Stable Diffusion a mask folder
(``{masks}/{prompt_index}_{seed}/mask_{noun}.png``, written e.g. by ``masks.GroundedSAM`` on the generated
images) or a segmenter callable ``(PIL image, nouns) -> {noun: mask or None}`` (``GroundedSAM`` is one).

Steps 1-3 (recording over the sampling steps, per-token and per-noun heat maps) live in
``tokencompose.heatmaps`` beside ``attention.py``; this module scores them.

Usage::

    python -m tokencompose evaluate segmentation --model toy --n-prompts 20 --seeds 0-1 --out seg.json
    python -m tokencompose evaluate segmentation --model sd14 --prompts p.json --seeds 0 --masks DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tokencompose.heatmaps import generate_with_attention, heat_maps
from tokencompose.stats import mean_interval

logger = logging.getLogger(__name__)

#: DAAM's threshold on the normalised heat map
DEFAULT_THRESHOLD = 0.4

#: a segmenter for reference masks: (PIL image, nouns) -> {noun: [H, W] bool mask, or None when absent}
Segmenter = Callable[[Any, Sequence[str]], Mapping[str, Any]]


def _as_mask(mask: Any) -> torch.Tensor:
    array = np.asarray(mask)
    if array.ndim == 3:  # an RGB / RGBA mask image: any channel set
        array = array[..., :3].max(axis=-1)
    if array.ndim != 2:
        raise ValueError(f"a mask must be [H, W], got shape {array.shape}")
    if array.dtype != bool:
        array = array > (127 if array.dtype == np.uint8 else 0.5)
    return torch.from_numpy(np.ascontiguousarray(array))


def resize_reference(mask: Any, size: tuple[int, int]) -> torch.Tensor:
    """A reference mask at the heat map's ``size``: area average, then ``>= 0.5`` (majority of its pixels)."""
    mask = _as_mask(mask)
    if tuple(mask.shape) == tuple(size):
        return mask
    area = F.interpolate(mask[None, None].float(), size=tuple(size), mode="area")[0, 0]
    return area >= 0.5


def iou(heat_map: Any, mask: Any, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Intersection over union of ``heat_map > threshold`` and ``mask`` (resized to the map: ``resize_reference``).

    ``heat_map``: ``[H, W]`` normalised to [0, 1] (``heat_maps``). Two empty regions count as IoU 1.
    """
    heat = torch.as_tensor(np.asarray(heat_map) if not isinstance(heat_map, torch.Tensor) else heat_map)
    if heat.ndim != 2:
        raise ValueError(f"heat_map must be [H, W], got shape {tuple(heat.shape)}")
    predicted = heat.float() > threshold
    reference = resize_reference(mask, tuple(heat.shape))
    union = (predicted | reference).sum().item()
    if union == 0:
        return 1.0
    return (predicted & reference).sum().item() / union


# --------------------------------------------------------------------------------------------------
# the evaluation
# --------------------------------------------------------------------------------------------------

def toy_nouns(prompt: str) -> list[str]:
    """The toy categories named in a toy caption, in caption order."""
    from tokencompose.toyworld import TOY_CATEGORIES

    words = re.findall(r"[a-z]+", prompt.lower())
    names = {c.name for c in TOY_CATEGORIES}
    return list(dict.fromkeys(w for w in words if w in names))


def _reference_masks(reference: Any, image: np.ndarray, nouns: Sequence[str], prompt_index: int,
                     seed: int, colour_mode: str = "identity") -> dict[str, Any]:
    """``{noun: mask or None}`` for one generated image from the chosen reference."""
    from PIL import Image

    if reference == "toy":
        from tokencompose.evaluate.toy_detector import colour_segmentation

        segmentation = colour_segmentation(image, colour_mode=colour_mode)
        return {noun: segmentation.get(noun) for noun in nouns}
    if isinstance(reference, (str, Path)):
        from tokencompose.masks import mask_file_name

        folder = Path(reference) / f"{prompt_index}_{seed}"
        result = {}
        for noun in nouns:
            path = folder / mask_file_name(noun)
            result[noun] = np.asarray(Image.open(path).convert("L")) if path.is_file() else None
        return result
    if callable(reference):
        masks = reference(Image.fromarray(image), list(nouns))
        return {noun: masks.get(noun) for noun in nouns}
    raise TypeError(f"reference must be 'toy', a mask folder or a segmenter callable, got {type(reference).__name__}")


def segmentation_transfer(model, prompts: Sequence[str], seeds: Sequence[int] = (0,),
                          nouns: Sequence[Sequence[str]] | None = None, reference: Any = None, steps: int = 50,
                          guidance: float | None = None, threshold: float = DEFAULT_THRESHOLD,
                          groups: Sequence[str] = ("mid", "up"), batch_size: int = 8, interval: str = "normal",
                          height: int | None = None, width: int | None = None, progress: bool = True) -> dict:
    """Mean IoU between nouns' attention heat maps and reference masks of the generated images.

    Args:
        model: toy ``Components``, a pipeline, or a name ``sample.load_model`` takes.
        prompts, seeds: every prompt is sampled with every seed (``{prompt_index}_{seed}`` as in ``sample``).
        nouns: nouns of each prompt; default: the toy categories named (toy) or the perceptron tagger's
            noun phrases (``nouns.noun_phrases``).
        reference: ``None``/"toy" (colour segmentation, toy world only), a mask folder
            (``{folder}/{prompt_index}_{seed}/mask_{noun}.png``), or a segmenter callable.
        threshold: on the normalised heat map (DAAM: 0.4).
        interval: "normal" or "bootstrap" (``mean_interval``).

    Returns:
        ``{"miou", "interval", "per_noun", "pairs", "missing", "records", "settings"}``; ``records`` has one
        entry per (image, noun) with its IoU (``None`` when the reference mask was empty/absent: missing).
    """
    from tokencompose.models import Components
    from tokencompose.sample import default_guidance, load_model
    from tokencompose.toyworld import model_colour_mode

    # the toy world a toy model folder was trained in (the attribute world segments by shape, not colour)
    colour_mode = model_colour_mode(model)
    model = load_model(model)
    pixel_space = isinstance(model, Components) and model.vae is None
    guidance = default_guidance(model) if guidance is None else guidance
    if reference is None or reference == "toy":
        if not pixel_space:
            raise ValueError("reference masks for Stable Diffusion images: pass a mask folder or a segmenter "
                             "(e.g. masks.GroundedSAM.from_pretrained()); the colour segmentation is toy-only")
        reference = "toy"
    if nouns is None:
        if pixel_space:
            nouns = [toy_nouns(p) for p in prompts]
        else:
            from tokencompose.nouns import noun_phrases

            nouns = [noun_phrases(p, tagger="perceptron") for p in prompts]
    if len(nouns) != len(prompts):
        raise ValueError(f"got nouns for {len(nouns)} prompts but {len(prompts)} prompts")
    from tokencompose.tokens import noun_token_positions

    tokenizer = model.tokenizer
    positions = [noun_token_positions(p, list(n), tokenizer) for p, n in zip(prompts, nouns, strict=True)]
    jobs = [(index, int(seed)) for index in range(len(prompts)) for seed in seeds]
    records = []
    starts = range(0, len(jobs), batch_size)
    for start in tqdm(starts, desc="segmentation", disable=not progress):
        batch = jobs[start:start + batch_size]
        images, attention = generate_with_attention(
            model, [prompts[i] for i, _ in batch], [s for _, s in batch], steps=steps, guidance=guidance,
            groups=groups, batch_size=len(batch), height=height, width=width, progress=False)
        for (index, seed), image, image_attention in zip(batch, images, attention, strict=True):
            if not nouns[index]:
                continue
            maps = heat_maps(image_attention, positions[index])
            masks = _reference_masks(reference, image, nouns[index], index, seed, colour_mode)
            for noun, heat in zip(nouns[index], maps, strict=True):
                mask = masks.get(noun)
                present = mask is not None and bool(_as_mask(mask).any())
                value = iou(heat, mask, threshold) if present else None
                records.append({"prompt_index": index, "seed": seed, "noun": noun, "iou": value})
    scored = [r["iou"] for r in records if r["iou"] is not None]
    per_noun: dict[str, list[float]] = {}
    for record in records:
        if record["iou"] is not None:
            per_noun.setdefault(record["noun"], []).append(record["iou"])
    summary = mean_interval(scored, method=interval).to_dict() if scored else None
    return {
        "miou": summary["mean"] if summary else None,
        "interval": summary,
        "per_noun": {noun: {"miou": float(np.mean(v)), "n": len(v)} for noun, v in sorted(per_noun.items())},
        "pairs": len(scored),
        "missing": len(records) - len(scored),
        "records": records,
        "settings": {"steps": steps, "guidance": guidance, "threshold": threshold, "groups": list(groups),
                     "images": len(jobs), "reference": reference if isinstance(reference, str) else
                     type(reference).__name__ if not isinstance(reference, Path) else str(reference)},
    }


def segmentation_table(result: Mapping[str, Any]) -> str:
    """A markdown table of ``segmentation_transfer``'s result."""
    interval = result["interval"]
    if interval is None:
        return "no (image, noun) pair had a reference mask: nothing to score"
    level = round(interval["level"] * 100)
    lines = [
        f"| mIoU | {level}% interval | pairs | missing | threshold |",
        "|---|---|---|---|---|",
        f"| {interval['mean']:.3f} | [{interval['low']:.3f}, {interval['high']:.3f}] | {result['pairs']} | "
        f"{result['missing']} | {result['settings']['threshold']} |",
    ]
    return "\n".join(lines)


def cli(argv: list[str]) -> int:
    """``python -m tokencompose evaluate segmentation``: attention heat maps vs masks of generated images (mIoU)."""
    from tokencompose.models import WeightsNotFoundError
    from tokencompose.sample import DTYPES, load_model, parse_seeds, read_prompts

    parser = argparse.ArgumentParser(prog="tokencompose evaluate segmentation", description=cli.__doc__)
    parser.add_argument("--model", default="toy", help="toy, sd14, sd21, a folder or hub id (sample.load_model)")
    parser.add_argument("--base", default=None, help="the base model of a bare fine-tuned UNet folder")
    parser.add_argument("--prompts", default=None, help="file or text; toy default: --n-prompts random scenes")
    parser.add_argument("--n-prompts", type=int, default=20, help="toy: random 2-3 object prompts to draw")
    parser.add_argument("--prompt-seed", type=int, default=0, help="toy: seed of the random prompts")
    parser.add_argument("--seeds", default="0", help="seeds of every prompt, e.g. 0-4")
    parser.add_argument("--masks", default=None, help="SD: folder of {prompt_index}_{seed}/mask_{noun}.png")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--interval", choices=["normal", "bootstrap"], default="normal")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--out", default=None, help="write the result as JSON here (and a .md table beside it)")
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model, base=args.base, dtype=DTYPES[args.dtype], device=args.device)
        seeds = parse_seeds(args.seeds)
        if args.prompts is not None:
            prompts = read_prompts(args.prompts)
        else:
            prompts = random_toy_prompts(args.n_prompts, seed=args.prompt_seed)
        result = segmentation_transfer(model, prompts, seeds, reference=args.masks, steps=args.steps,
                                       guidance=args.guidance, threshold=args.threshold, batch_size=args.batch_size,
                                       interval=args.interval)
    except (ValueError, FileNotFoundError, WeightsNotFoundError) as error:
        parser.error(str(error))
    table = segmentation_table(result)
    logger.info("segmentation transfer of %s:\n%s", args.model, table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(dict(result, model=str(args.model), prompts=prompts), indent=1))
        out.with_suffix(".md").write_text(table + "\n")
    return 0


def random_toy_prompts(n: int, seed: int = 0, objects: tuple[int, int] = (2, 3)) -> list[str]:
    """``n`` toy captions of ``objects[0]..objects[1]`` categories (no excluded pair), reproducible by ``seed``."""
    from tokencompose.toyworld import caption_for, sample_categories

    rng = np.random.default_rng(seed)
    return [caption_for(sample_categories(rng, int(rng.integers(objects[0], objects[1] + 1)))) for _ in range(n)]
