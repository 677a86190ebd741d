"""Segmentation transfer: do a model's cross-attention maps segment the nouns of the images it generates?

The paper's knowledge-transfer check (Table 4: mIoU of the nouns' attention maps, DAAM's protocol). TokenCompose
trains the cross-attention map of each noun token to cover that noun's mask (L_token, L_pixel); if that
grounding transfers to new prompts, the attention of a generated image should segment the generated objects.
For each generated image and each noun of its prompt: a heat map from the attention (``tokencompose.heatmaps``),
min-max normalised, thresholded (> 0.4, DAAM's value), and its **IoU** with a reference mask of the same
image; the **mean IoU** over (image, noun) pairs with a 95% interval.

Protocols (``protocol=``, ``--protocol``)
-----------------------------------------
``"daam"`` (default) follows DAAM's code (Tang et al. 2023, "What the DAAM", ``castorini/daam``:
``daam/trace.py``, ``daam/heatmap.py``), the protocol the paper names. ``"layer-mean"`` is this package's first
variant, kept so numbers measured with it stay comparable (the toy ablation's and the toy-base gates').

=========================  ==============================================  =============================================
step                       ``"daam"`` (DAAM's code; default)               ``"layer-mean"`` (earlier here)
=========================  ==============================================  =============================================
layers recorded            down + up cross-attention (DAAM's locator       mid + up (the places the paper supervises)
                           skips the mid block); maps at 1/8 of the
                           latent side dropped (``factor != 8``)
over steps                 per-(layer, head) sums (conditional half)       per-layer sums of the head mean
heads and layers           each (layer, head) map upsampled (bicubic) to   heads averaged, each layer upsampled
                           the latent size, **clamped at 0**, then the     (bicubic) to the latent size, then the
                           mean over every (layer, head) map               mean over layers (each layer weighs 1)
a noun's tokens            **mean** of its tokens' maps, over every        **sum** of its tokens' maps (one
                           occurrence of the word in the prompt            occurrence a listed noun)
resolution of the score    the word map upsampled (bicubic) to the         the latent size (SD 1.4: 64 x 64); the
                           **image** size (SD 1.4: 512 x 512); the         reference mask area-averaged to it, then
                           reference mask as it is                         ``>= 0.5``
normalisation              ``(x - min) / (max - min + 1e-8)``              ``(x - min) / (max - min)`` (constant: 0)
=========================  ==============================================  =============================================

Both threshold the normalised map at 0.4 (``> 0.4``) and sum over the sampling steps (DAAM sums, so means
over steps would give the same normalised map). For the toy model (pixel space, 32 x 32, cross-attention at
down_16, mid_8 and up_16) DAAM's rules keep down_16 + up_16, and the latent size is the image size.
Why the order of the steps matters: bicubic upsampling undershoots below 0 beside sharp peaks and DAAM clamps
each (layer, head) map after upsampling it, so its per-head sums cannot be averaged first; and a layer
with more heads weighs more under DAAM than under the layer mean.
Not reproduced from DAAM: its ``expand_as`` passes ``(width, height)`` where ``interpolate`` wants
``(height, width)`` (same for square images); its word matching is on BPE tokens (here
``tokens.token_positions``: also singular / plural); it runs one prompt at a time (here batches, per image).

Choices common to both (documented because they change the number):

- A noun whose reference mask is empty (the object was not generated) is **skipped and counted** as
  ``missing``: its IoU would measure generation (MultiGen's job), not grounding.
- The interval is the normal approximation ``mean +- z s / sqrt(n)`` (``s``: sample standard deviation,
  ``z = 1.96`` for 95%), or a percentile bootstrap over pairs (``interval="bootstrap"``). Pairs of one image
  are not independent, so both intervals are somewhat optimistic.

Reference masks: on the toy world, the colour segmentation of the generated image
(``toy.detector.colour_segmentation``, exact up to the model's colours); for Stable Diffusion a mask folder
(``{masks}/{prompt_index}_{seed}/mask_{noun}.png``, written e.g. by ``masks.GroundedSAM`` on the generated
images) or a segmenter callable ``(PIL image, nouns) -> {noun: mask or None}`` (``GroundedSAM`` is one).

Recording over the sampling steps and the per-token and per-noun heat maps live in ``tokencompose.heatmaps``
beside ``attention.py``; this module scores them.

Usage::

    python -m tokencompose evaluate segmentation --model toy --n-prompts 20 --seeds 0-1 --out seg.json
    python -m tokencompose evaluate segmentation --model sd14 --prompts p.json --seeds 0 --masks DIR
    python -m tokencompose evaluate segmentation --model toy --protocol layer-mean   # the earlier variant
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from tokencompose.heatmaps import (
    PROTOCOLS,
    generate_with_attention,
    heat_maps,
    protocol_groups,
    word_token_positions,
)
from tokencompose.masks import mask_file_name
from tokencompose.nouns import noun_phrases
from tokencompose.sample import default_guidance, load_model
from tokencompose.stats import mean_interval
from tokencompose.tokens import noun_token_positions

logger = logging.getLogger(__name__)

#: DAAM's threshold on the normalised heat map
DEFAULT_THRESHOLD = 0.4
#: the heat-map protocol of segmentation transfer: DAAM's (module docstring)
DEFAULT_PROTOCOL = "daam"

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

    ``heat_map``: ``[H, W]`` normalised to [0, 1] (``heat_maps``); under DAAM's protocol it has the image's
    size, so the mask is compared as it is. Two empty regions count as IoU 1 (DAAM: 0; a scored pair always
    has a non-empty mask, so this never decides a reported number).
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

def _reference_masks(reference: Any, image: np.ndarray, nouns: Sequence[str], prompt_index: int,
                     seed: int) -> dict[str, Any]:
    """``{noun: mask or None}`` for one generated image from the chosen reference."""
    if isinstance(reference, (str, Path)):
        folder = Path(reference) / f"{prompt_index}_{seed}"
        result = {}
        for noun in nouns:
            path = folder / mask_file_name(noun)
            result[noun] = np.asarray(Image.open(path).convert("L")) if path.is_file() else None
        return result
    if callable(reference):
        masks = reference(Image.fromarray(image), list(nouns))
        return {noun: masks.get(noun) for noun in nouns}
    raise TypeError(f"reference must be a mask folder or a segmenter callable, got {type(reference).__name__}")


def segmentation_transfer(model, prompts: Sequence[str], seeds: Sequence[int] = (0,),
                          nouns: Sequence[Sequence[str]] | None = None, reference: Any = None, steps: int = 50,
                          guidance: float | None = None, threshold: float = DEFAULT_THRESHOLD,
                          groups: Sequence[str] | None = None, batch_size: int = 8, interval: str = "normal",
                          height: int | None = None, width: int | None = None, progress: bool = True,
                          protocol: str = DEFAULT_PROTOCOL) -> dict:
    """Mean IoU between nouns' attention heat maps and reference masks of the generated images.

    Args:
        model: toy ``Components``, a pipeline, or a name ``sample.load_model`` takes.
        prompts, seeds: every prompt is sampled with every seed (``{prompt_index}_{seed}`` as in ``sample``).
        nouns: nouns of each prompt; default: the reference's own ``nouns_of(prompt)`` if it has one (the toy
            world's segmenter names the categories of a toy caption), else the perceptron tagger's noun
            phrases (``nouns.noun_phrases``).
        reference: a mask folder (``{folder}/{prompt_index}_{seed}/mask_{noun}.png``) or a ``Segmenter``
            callable: ``masks.GroundedSAM`` for real images, ``tokencompose.toy.detector.ToySegmenter`` (the
            colour segmentation) for the toy world. Its ``name`` attribute, if any, is recorded in ``settings``.
        threshold: on the normalised heat map (DAAM: 0.4).
        groups: UNet places to record; default: the protocol's (DAAM: down + up; layer-mean: mid + up).
        interval: "normal" or "bootstrap" (``mean_interval``).
        protocol: ``"daam"`` (default; DAAM's code) or ``"layer-mean"`` (the earlier variant); the module
            docstring's table gives the differences.

    Returns:
        ``{"miou", "interval", "per_noun", "pairs", "missing", "records", "settings"}``; ``records`` has one
        entry per (image, noun) with its IoU (``None`` when the reference mask was empty/absent: missing).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS} ('daam': DAAM's code, the default), got {protocol!r}")
    groups = protocol_groups(protocol) if groups is None else tuple(groups)
    if reference is None:
        raise ValueError("segmentation transfer needs reference masks of the generated images: pass a mask folder "
                         "or a segmenter (Stable Diffusion: masks.GroundedSAM.from_pretrained(); the toy world: "
                         "tokencompose.toy.detector.ToySegmenter.for_model(model))")
    model = load_model(model)
    guidance = default_guidance(model) if guidance is None else guidance
    if nouns is None:
        nouns_of = getattr(reference, "nouns_of", None) or (lambda p: noun_phrases(p, tagger="perceptron"))
        nouns = [nouns_of(p) for p in prompts]
    if len(nouns) != len(prompts):
        raise ValueError(f"got nouns for {len(nouns)} prompts but {len(prompts)} prompts")

    tokenizer = model.tokenizer
    # DAAM merges every occurrence of a word; the layer-mean variant takes one occurrence a listed noun
    find_positions = word_token_positions if protocol == "daam" else noun_token_positions
    positions = [find_positions(p, list(n), tokenizer) for p, n in zip(prompts, nouns, strict=True)]
    jobs = [(index, int(seed)) for index in range(len(prompts)) for seed in seeds]
    records = []
    starts = range(0, len(jobs), batch_size)
    for start in tqdm(starts, desc="segmentation", disable=not progress):
        batch = jobs[start:start + batch_size]
        images, attention = generate_with_attention(
            model, [prompts[i] for i, _ in batch], [s for _, s in batch], steps=steps, guidance=guidance,
            groups=groups, batch_size=len(batch), height=height, width=width, progress=False, protocol=protocol)
        for (index, seed), image, image_attention in zip(batch, images, attention, strict=True):
            if not nouns[index]:
                continue
            # DAAM: word maps at the image's size; layer-mean: at the latent size
            maps = heat_maps(image_attention, positions[index], protocol=protocol, image_size=image.shape[:2])
            masks = _reference_masks(reference, image, nouns[index], index, seed)
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
        "settings": {"protocol": protocol, "steps": steps, "guidance": guidance, "threshold": threshold,
                     "groups": list(groups),
                     "images": len(jobs), "reference": str(reference) if isinstance(reference, (str, Path)) else
                     getattr(reference, "name", type(reference).__name__)},
    }


def segmentation_table(result: Mapping[str, Any]) -> str:
    """A markdown table of ``segmentation_transfer``'s result."""
    interval = result["interval"]
    if interval is None:
        return "no (image, noun) pair had a reference mask: nothing to score"
    level = round(interval["level"] * 100)
    protocol = result["settings"].get("protocol", "layer-mean")  # results written before protocols existed
    lines = [
        f"| mIoU | {level}% interval | pairs | missing | threshold | protocol |",
        "|---|---|---|---|---|---|",
        f"| {interval['mean']:.3f} | [{interval['low']:.3f}, {interval['high']:.3f}] | {result['pairs']} | "
        f"{result['missing']} | {result['settings']['threshold']} | {protocol} |",
    ]
    return "\n".join(lines)
