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
(``evaluate.toy_detector.colour_segmentation``, exact up to the model's colours); for Stable Diffusion a mask folder
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

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from tokencompose.cli_args import (
    ArgumentParser,
    device,
    finite_float,
    non_negative_int,
    positive_int,
    probability,
    result_file,
)
from tokencompose.evaluate.toy_detector import colour_segmentation
from tokencompose.heatmaps import (
    PROTOCOLS,
    generate_with_attention,
    heat_maps,
    protocol_groups,
    word_token_positions,
)
from tokencompose.masks import mask_file_name
from tokencompose.models import Components, WeightsNotFoundError
from tokencompose.nouns import noun_phrases
from tokencompose.sample import DTYPES, default_guidance, load_model, parse_seeds, read_prompts
from tokencompose.stats import mean_interval
from tokencompose.tokens import noun_token_positions
from tokencompose.toyworld import TOY_CATEGORIES, caption_for, model_colour_mode, sample_categories

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

def toy_nouns(prompt: str) -> list[str]:
    """The toy categories named in a toy caption, in caption order."""
    words = re.findall(r"[a-z]+", prompt.lower())
    names = {c.name for c in TOY_CATEGORIES}
    return list(dict.fromkeys(w for w in words if w in names))


def _reference_masks(reference: Any, image: np.ndarray, nouns: Sequence[str], prompt_index: int,
                     seed: int, colour_mode: str = "identity") -> dict[str, Any]:
    """``{noun: mask or None}`` for one generated image from the chosen reference."""
    if reference == "toy":
        segmentation = colour_segmentation(image, colour_mode=colour_mode)
        return {noun: segmentation.get(noun) for noun in nouns}
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
    raise TypeError(f"reference must be 'toy', a mask folder or a segmenter callable, got {type(reference).__name__}")


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
        nouns: nouns of each prompt; default: the toy categories named (toy) or the perceptron tagger's
            noun phrases (``nouns.noun_phrases``).
        reference: ``None``/"toy" (colour segmentation, toy world only), a mask folder
            (``{folder}/{prompt_index}_{seed}/mask_{noun}.png``), or a segmenter callable.
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
            nouns = [noun_phrases(p, tagger="perceptron") for p in prompts]
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
        "settings": {"protocol": protocol, "steps": steps, "guidance": guidance, "threshold": threshold,
                     "groups": list(groups),
                     "images": len(jobs), "reference": reference if isinstance(reference, str) else
                     type(reference).__name__ if not isinstance(reference, Path) else str(reference)},
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


def cli(argv: list[str]) -> int:
    """``python -m tokencompose evaluate segmentation``: attention heat maps vs masks of generated images (mIoU)."""
    parser = ArgumentParser(prog="tokencompose evaluate segmentation", description=cli.__doc__)
    parser.add_argument("--model", default="toy", help="toy, sd14, sd21, a folder or hub id (sample.load_model)")
    parser.add_argument("--base", default=None, help="the base model of a bare fine-tuned UNet folder")
    parser.add_argument("--prompts", default=None, help="file or text; toy default: --n-prompts random scenes")
    parser.add_argument("--n-prompts", type=positive_int, default=20, help="toy: random 2-3 object prompts to draw")
    parser.add_argument("--prompt-seed", type=non_negative_int, default=0, help="toy: seed of the random prompts")
    parser.add_argument("--seeds", default="0", help="seeds of every prompt, e.g. 0-4")
    parser.add_argument("--masks", default=None, help="SD: folder of {prompt_index}_{seed}/mask_{noun}.png")
    parser.add_argument("--threshold", type=probability, default=DEFAULT_THRESHOLD)
    parser.add_argument("--protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL,
                        help="heat maps as DAAM's code makes them (daam: down + up layers, each head upsampled and "
                             "clamped, scored at image size; the default) or the earlier variant (layer-mean: mid + "
                             "up layers, heads then layers averaged, scored at latent size)")
    parser.add_argument("--steps", type=positive_int, default=50)
    parser.add_argument("--guidance", type=finite_float, default=None)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--interval", choices=["normal", "bootstrap"], default="normal")
    parser.add_argument("--device", type=device, default="auto")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--out", type=result_file, default=None,
                        help="write the result as JSON here (and a .md table beside it)")
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
                                       interval=args.interval, protocol=args.protocol)
    except (ValueError, FileNotFoundError, WeightsNotFoundError) as error:
        parser.error(str(error))
    table = segmentation_table(result)
    logger.info("segmentation transfer of %s:\n%s", args.model, table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(dict(result, model=str(args.model), prompts=prompts), indent=1))
        out.with_suffix(".md").write_text(table + "\n")
    if result["interval"] is None:  # written (the missing counts say why), but not a score: say so in the status
        logger.error("nothing was scored: no generated image had a reference mask for its nouns (%d missing); "
                     "more --steps or other prompts give the model a chance to draw the objects", result["missing"])
        return 1
    return 0


def random_toy_prompts(n: int, seed: int = 0, objects: tuple[int, int] = (2, 3)) -> list[str]:
    """``n`` toy captions of ``objects[0]..objects[1]`` categories (no excluded pair), reproducible by ``seed``."""
    rng = np.random.default_rng(seed)
    return [caption_for(sample_categories(rng, int(rng.integers(objects[0], objects[1] + 1)))) for _ in range(n)]
