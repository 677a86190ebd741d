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

``heat_maps`` works on its own, on any recorder output (notebooks 03 and 06 draw per-token maps).

Usage::

    python -m tokencompose evaluate segmentation --model toy --n-prompts 20 --seeds 0-1 --out seg.json
    python -m tokencompose evaluate segmentation --model sd14 --prompts p.json --seeds 0 --masks DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tokencompose.attention import attach_recorder
from tokencompose.stats import mean_interval

logger = logging.getLogger(__name__)

#: DAAM's threshold on the normalised heat map
DEFAULT_THRESHOLD = 0.4

#: a segmenter for reference masks: (PIL image, nouns) -> {noun: [H, W] bool mask, or None when absent}
Segmenter = Callable[[Any, Sequence[str]], Mapping[str, Any]]


# --------------------------------------------------------------------------------------------------
# heat maps from recorded attention
# --------------------------------------------------------------------------------------------------

def map_size(key: str, pixels: int) -> tuple[int, int]:
    """``(h, w)`` of a map keyed "up_16" or "up_16x24" (attention.py's keys) with ``pixels = h * w`` queries."""
    match = re.search(r"_(\d+)(?:x(\d+))?$", key)
    if match:
        height = int(match.group(1))
        width = int(match.group(2) or match.group(1))
        if height * width == pixels:
            return height, width
    side = math.isqrt(pixels)
    if side * side != pixels:
        raise ValueError(f"cannot tell the shape of map {key!r} with {pixels} pixels: name it '<place>_<H>x<W>'")
    return side, side


def aggregate_attention(maps: Mapping[str, Sequence[torch.Tensor]], size: tuple[int, int]) -> torch.Tensor:
    """Average of every layer's cross-attention, upsampled to ``size``: ``[B, T, H, W]`` (steps 2 of the recipe).

    Args:
        maps: ``{"mid_8": [A, ...], "up_16": [...]}`` as ``AttentionRecorder.maps()`` or ``AttentionSum.maps()``
            give them; each ``A`` is ``[B, heads, h*w, T]`` (``heads`` may be 1). Self-attention entries
            (keys ending in "_self") are ignored.
        size: ``(H, W)`` to upsample to (the latent size), bicubic (``align_corners=False``).

    Returns:
        ``[B, T, H, W]`` float32: mean over heads, then mean over layers of the upsampled maps.
    """
    total = None
    layers = 0
    for key, layer_maps in maps.items():
        if key.endswith("_self"):
            continue
        for layer_map in layer_maps:
            if layer_map.ndim != 4:
                raise ValueError(f"map of {key!r} must be [batch, heads, H*W, tokens], got {tuple(layer_map.shape)}")
            batch, _, pixels, tokens = layer_map.shape
            height, width = map_size(key, pixels)
            mean = layer_map.float().mean(dim=1)  # [B, h*w, T]
            spatial = mean.transpose(1, 2).reshape(batch, tokens, height, width)  # [B, T, h, w]
            if (height, width) != tuple(size):
                spatial = F.interpolate(spatial, size=tuple(size), mode="bicubic", align_corners=False)
            total = spatial if total is None else total + spatial
            layers += 1
    if total is None:
        raise ValueError(f"no cross-attention maps to aggregate (keys: {sorted(maps)}); was a recorder attached?")
    return total / layers


def normalise(heat: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map (last two dims) to [0, 1]; a constant map becomes all zeros."""
    low = heat.amin(dim=(-2, -1), keepdim=True)
    high = heat.amax(dim=(-2, -1), keepdim=True)
    span = high - low
    return torch.where(span > 0, (heat - low) / span.clamp_min(torch.finfo(heat.dtype).tiny), torch.zeros_like(heat))


def heat_maps(attention: Mapping[str, Sequence[torch.Tensor]] | torch.Tensor, positions: Sequence[Sequence[int]],
              size: tuple[int, int] | None = None, sample: int = 0, normalised: bool = True) -> torch.Tensor:
    """One heat map per noun: the sum of its tokens' maps, min-max normalised: ``[N, H, W]``.

    Args:
        attention: recorder maps (``{key: [A, ...]}``, aggregated here with ``aggregate_attention``), or an
            aggregated ``[B, T, H, W]`` / ``[T, H, W]`` tensor (``generate_with_attention``'s output).
        positions: one list of token positions per noun (``tokens.noun_token_positions(prompt, nouns, tok)``).
        size: ``(H, W)`` to upsample recorder maps to; default: the largest map's size (pass the latent size).
        sample: which batch element.
        normalised: min-max normalise each noun's map (``False``: raw sums, e.g. to compare magnitudes).
    """
    if isinstance(attention, Mapping):
        if size is None:
            sizes = [map_size(k, m.shape[2]) for k, ms in attention.items() if not k.endswith("_self") for m in ms]
            if not sizes:
                raise ValueError("no cross-attention maps given; was a recorder attached during the forward?")
            size = max(sizes, key=lambda hw: hw[0] * hw[1])
        attention = aggregate_attention(attention, size)
    if attention.ndim == 4:
        attention = attention[sample]
    if attention.ndim != 3:
        raise ValueError(f"aggregated attention must be [B, T, H, W] or [T, H, W], got {tuple(attention.shape)}")
    tokens = attention.shape[0]
    maps = []
    for number, noun_positions in enumerate(positions):
        if isinstance(noun_positions, (int, np.integer)):
            raise TypeError(f"positions[{number}] is {noun_positions!r}: give one list of token positions per noun")
        if not noun_positions:
            raise ValueError(f"noun {number} has no token positions")
        bad = [p for p in noun_positions if not 0 <= p < tokens]
        if bad:
            raise ValueError(f"token positions {bad} of noun {number} are outside 0..{tokens - 1}")
        maps.append(attention[list(noun_positions)].sum(dim=0))
    if not maps:
        return attention.new_zeros((0, *attention.shape[1:]))
    stacked = torch.stack(maps)  # [N, H, W]
    return normalise(stacked) if normalised else stacked


def noun_heat_maps(attention: Mapping[str, Sequence[torch.Tensor]] | torch.Tensor, prompt: str, nouns: Sequence[str],
                   tokenizer, size: tuple[int, int] | None = None, sample: int = 0) -> dict[str, torch.Tensor]:
    """``{noun: [H, W] normalised heat map}`` for the nouns of ``prompt`` (token positions looked up here)."""
    from tokencompose.tokens import noun_token_positions

    positions = noun_token_positions(prompt, list(nouns), tokenizer)
    maps = heat_maps(attention, positions, size=size, sample=sample)
    return dict(zip(nouns, maps, strict=True))


# --------------------------------------------------------------------------------------------------
# recording while sampling
# --------------------------------------------------------------------------------------------------

class AttentionSum:
    """Sums a recorder's maps over denoising steps, one running sum per layer: ``[B, 1, h*w, T]`` (heads averaged).

    Call ``step()`` after each UNet call (it is the sampler's step callback: ``step(i, t)``); it adds the
    maps recorded since the last call and clears the recorder, so memory does not grow with the steps.
    """

    def __init__(self, recorder) -> None:
        self.recorder = recorder
        self.steps = 0
        self._sums: dict[str, list[torch.Tensor]] = {}

    def step(self, index: int | None = None, timestep: int | None = None) -> None:
        """Add this step's maps to the sums and reset the recorder."""
        for key, layer_maps in self.recorder.maps().items():
            means = [m.detach().float().mean(dim=1, keepdim=True) for m in layer_maps]  # [B, 1, h*w, T]
            if key not in self._sums:
                self._sums[key] = means
            elif len(self._sums[key]) != len(means):
                raise RuntimeError(f"step {self.steps} recorded {len(means)} maps at {key!r}, earlier steps "
                                   f"{len(self._sums[key])}: call step() once after every UNet call")
            else:
                self._sums[key] = [total + m for total, m in zip(self._sums[key], means, strict=True)]
        self.recorder.reset()
        self.steps += 1

    __call__ = step

    def maps(self) -> dict[str, list[torch.Tensor]]:
        """The sums, in the recorder's format: ``{key: [[B, 1, h*w, T] per layer]}``."""
        return {key: list(sums) for key, sums in self._sums.items()}


@contextmanager
def recording(unet, classifier_free: bool = True, groups: Sequence[str] = ("mid", "up")) -> Iterator[AttentionSum]:
    """Attach a recorder for sampling (``keep="cond"`` under guidance, ``detach=True``), yield its ``AttentionSum``.

    The recorder is removed on exit (the UNet's processors are restored), so nothing is recorded afterwards.
    """
    recorder = attach_recorder(unet, groups=groups, mode="cross", keep="cond" if classifier_free else "all",
                               detach=True)
    try:
        yield AttentionSum(recorder)
    finally:
        recorder.detach()


def _latent_size(model, height: int | None, width: int | None) -> tuple[int, int]:
    from tokencompose.models import Components

    if isinstance(model, Components) and model.vae is None:
        size = model.unet.config.sample_size
        return size, size
    factor = getattr(model, "vae_scale_factor", 8)
    default = model.unet.config.sample_size * factor
    return (height or default) // factor, (width or default) // factor


def generate_with_attention(model, prompts: Sequence[str], seeds: Sequence[int], steps: int = 50,
                            guidance: float | None = None, groups: Sequence[str] = ("mid", "up"),
                            batch_size: int = 8, height: int | None = None, width: int | None = None,
                            progress: bool = True) -> tuple[np.ndarray, torch.Tensor]:
    """Sample ``prompts[i]`` with ``seeds[i]`` while recording cross-attention (paired, one image each).

    Args:
        model: toy ``Components`` or a diffusers pipeline (``sample.load_model`` names).
    Returns:
        ``(images [N, H, W, 3] uint8, attention [N, 77, h, w])``: per image, every token's map summed over
        steps, heads and layers averaged, at the latent size ``h x w`` (feed to ``heat_maps``).
    """
    from tokencompose.models import Components
    from tokencompose.sample import default_guidance, generate_batch, load_model

    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds; pass one seed per prompt")
    model = load_model(model)
    guidance = default_guidance(model) if guidance is None else guidance
    pixel_space = isinstance(model, Components) and model.vae is None
    # the toy sampler doubles the batch unless guidance == 1; diffusers' pipelines when guidance > 1
    classifier_free = guidance != 1.0 if pixel_space else guidance > 1.0
    size = _latent_size(model, height, width)
    images, attention = [], []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="sampling + attention", disable=not progress or len(starts) < 2):
        chunk, chunk_seeds = list(prompts[start:start + batch_size]), list(seeds[start:start + batch_size])
        with recording(model.unet, classifier_free=classifier_free, groups=groups) as summed:
            images.append(generate_batch(model, chunk, chunk_seeds, steps=steps, guidance=guidance, height=height,
                                         width=width, callback=summed.step))
            attention.append(aggregate_attention(summed.maps(), size).cpu())
    return np.concatenate(images), torch.cat(attention)


# --------------------------------------------------------------------------------------------------
# the metric
# --------------------------------------------------------------------------------------------------

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
    from tokencompose.config import TOY_BASE_DIR
    from tokencompose.models import Components
    from tokencompose.sample import default_guidance, load_model
    from tokencompose.toyworld import model_colour_mode

    # the toy world a toy model folder was trained in (the attribute world segments by shape, not colour)
    folder = TOY_BASE_DIR if model == "toy" else model
    colour_mode = model_colour_mode(folder) if isinstance(folder, (str, Path)) and Path(folder).is_dir() else "identity"
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
