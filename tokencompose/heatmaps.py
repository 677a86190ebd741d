"""Heat maps of a generated image's cross-attention (DAAM-style, Tang et al. 2023): the attention of each
token summed over the sampling steps, heads averaged, layers upsampled (bicubic) to the latent size and
averaged; a noun's map is the sum of its tokens' maps. Used by the segmentation transfer
(``evaluate.segmentation``), the notebooks (03, 05, 06) and the probes.

``recording(unet)`` sums a recorder's maps as the sampler goes (``AttentionSum``); ``generate_with_attention``
samples images with it; ``heat_maps`` / ``noun_heat_maps`` turn the sums into one map a token / noun.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tokencompose.attention import attach_recorder

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
