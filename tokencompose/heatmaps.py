"""Heat maps of a generated image's cross-attention (DAAM, Tang et al. 2023, "What the DAAM"): each token's
attention summed over the sampling steps, upsampled (bicubic) and averaged over layers; a noun's map is made
from its tokens' maps. Used by the segmentation transfer (``evaluate.segmentation``), the notebooks (03, 05,
06) and the probes.

Two protocols (``PROTOCOLS``; the table of differences is in ``evaluate.segmentation``'s docstring):

- ``"daam"``, DAAM's own code (``daam/trace.py``, ``daam/heatmap.py``): record the **down and up**
  cross-attention layers (DAAM's locator skips the mid block) and drop maps at 1/8 of the latent side
  (``factor != 8``: 8 x 8 in SD 1.4 at 512 px); sum each (layer, head) map over the steps, upsample it to the
  latent size (bicubic), **clamp at 0**, average **every (layer, head) map**; a word's map is the **mean** of
  its tokens over all its occurrences, upsampled (bicubic) to the **image** size, min-max normalised
  (``(x - min) / (max - min + 1e-8)``). The default of the segmentation transfer.
- ``"layer-mean"``, this package's first variant: record **mid and up**; average heads at record time, upsample
  each layer's head-mean to the latent size, average layers; a noun's map is the **sum** of its tokens (one
  occurrence), min-max normalised at the **latent** size. The default of the functions here, so figures
  and probes made with them keep their meaning; pass ``protocol="daam"`` for DAAM's maps.

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
from tokencompose.models import Components
from tokencompose.sample import default_guidance, generate_batch, load_model
from tokencompose.tokens import PhraseNotFoundError, noun_token_positions, token_positions

#: heat-map protocols: DAAM's, and the mid + up layer mean this package used first
PROTOCOLS = ("daam", "layer-mean")
#: the protocol of the functions in this module when none is named (segmentation transfer defaults to "daam")
DEFAULT_PROTOCOL = "layer-mean"
#: places each protocol records (DAAM's ``UNetCrossAttentionLocator`` skips the mid block by default)
PROTOCOL_GROUPS: dict[str, tuple[str, ...]] = {"daam": ("down", "up"), "layer-mean": ("mid", "up")}
#: DAAM keeps a map unless ``int(sqrt(latent pixels // map pixels)) == 8`` (``trace.py``: ``factor != 8``)
DAAM_DROPPED_FACTOR = 8
#: DAAM's ``expand_as``: ``(x - min) / (max - min + 1e-8)``
DAAM_EPSILON = 1e-8


def check_protocol(protocol: str) -> str:
    """``protocol`` if it is one of ``PROTOCOLS``, else a ``ValueError`` naming them."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown heat-map protocol {protocol!r}; choose among {PROTOCOLS} ('daam': DAAM's code, "
                         "the segmentation-transfer default; 'layer-mean': mid + up layers, this package's first)")
    return protocol


def protocol_groups(protocol: str) -> tuple[str, ...]:
    """The UNet places (``attention.attach_recorder``'s ``groups``) a protocol records."""
    return PROTOCOL_GROUPS[check_protocol(protocol)]


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


def daam_keeps(key: str, map_hw: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether DAAM aggregates a map keyed ``key`` of ``map_hw`` for a latent of ``size``.

    Not the mid block (DAAM does not hook it), not self-attention, and not a map at 1/8 of the latent side
    (``int(sqrt(latent pixels // map pixels)) == 8``: 8 x 8 of SD 1.4's 64 x 64 latent, 12 x 12 of SD 2.1's 96).
    In SD only the mid block works at that size, so both rules drop the same maps; in the toy UNet (32 x 32,
    attention at down_16, mid_8, up_16) the mid rule drops mid_8 and down_16 + up_16 are kept.
    """
    if key.endswith("_self") or key.split("_")[0] not in ("down", "up"):
        return False
    factor = math.isqrt((size[0] * size[1]) // (map_hw[0] * map_hw[1]))
    return factor != DAAM_DROPPED_FACTOR


def _spatial(key: str, layer_map: torch.Tensor) -> torch.Tensor:
    """``[B, heads, h*w, T]`` -> ``[B, heads, T, h, w]`` float32."""
    if layer_map.ndim != 4:
        raise ValueError(f"map of {key!r} must be [batch, heads, H*W, tokens], got {tuple(layer_map.shape)}")
    batch, heads, pixels, tokens = layer_map.shape
    height, width = map_size(key, pixels)
    return layer_map.float().transpose(2, 3).reshape(batch, heads, tokens, height, width)


def aggregate_attention(maps: Mapping[str, Sequence[torch.Tensor]], size: tuple[int, int],
                        protocol: str = DEFAULT_PROTOCOL) -> torch.Tensor:
    """Every token's map over the recorded layers at the latent ``size``: ``[B, T, H, W]`` float32.

    Args:
        maps: ``{"mid_8": [A, ...], "up_16": [...]}`` as ``AttentionRecorder.maps()`` or ``AttentionSum.maps()``
            give them; each ``A`` is ``[B, heads, h*w, T]`` (``heads`` may be 1, e.g. already averaged).
            Self-attention entries (keys ending in "_self") are ignored.
        size: ``(H, W)`` to upsample to (the latent size), bicubic (``align_corners=False``).
        protocol: ``"layer-mean"``: mean over heads, upsample, mean over layers (every place given).
            ``"daam"``: the places and sizes DAAM keeps (``daam_keeps``), each (layer, head) map upsampled and
            clamped at 0, then the mean over all (layer, head) maps (a layer with more heads weighs more).
            The clamp makes the order matter: pass DAAM per-head sums over steps (``AttentionSum(keep_heads=True)``).
    """
    check_protocol(protocol)
    size = tuple(size)
    total = None
    count = 0
    for key, layer_maps in maps.items():
        if key.endswith("_self"):
            continue
        for layer_map in layer_maps:
            spatial = _spatial(key, layer_map)  # [B, heads, T, h, w]
            batch, heads, tokens, height, width = spatial.shape
            if protocol == "daam":
                if not daam_keeps(key, (height, width), size):
                    continue
                flat = spatial.reshape(batch * heads, tokens, height, width)
                if (height, width) != size:
                    flat = F.interpolate(flat, size=size, mode="bicubic", align_corners=False).clamp(min=0)
                contribution = flat.reshape(batch, heads, tokens, *size).sum(dim=1)  # summed over heads
                count += heads
            else:
                mean = spatial.mean(dim=1)  # [B, T, h, w]
                if (height, width) != size:
                    mean = F.interpolate(mean, size=size, mode="bicubic", align_corners=False)
                contribution = mean
                count += 1
            total = contribution if total is None else total + contribution
    if total is None:
        kept = " that DAAM keeps (down / up, not 1/8 of the latent side)" if protocol == "daam" else ""
        raise ValueError(f"no cross-attention maps{kept} to aggregate (keys: {sorted(maps)}); was a recorder "
                         f"attached to the places {protocol_groups(protocol)}?")
    return total / count


def normalise(heat: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map (last two dims) to [0, 1]; a constant map becomes all zeros."""
    low = heat.amin(dim=(-2, -1), keepdim=True)
    high = heat.amax(dim=(-2, -1), keepdim=True)
    span = high - low
    return torch.where(span > 0, (heat - low) / span.clamp_min(torch.finfo(heat.dtype).tiny), torch.zeros_like(heat))


def daam_normalise(heat: torch.Tensor) -> torch.Tensor:
    """DAAM's min-max normalisation (``expand_as``): ``(x - min) / (max - min + 1e-8)`` per map."""
    low = heat.amin(dim=(-2, -1), keepdim=True)
    high = heat.amax(dim=(-2, -1), keepdim=True)
    return (heat - low) / (high - low + DAAM_EPSILON)


def heat_maps(attention: Mapping[str, Sequence[torch.Tensor]] | torch.Tensor, positions: Sequence[Sequence[int]],
              size: tuple[int, int] | None = None, sample: int = 0, normalised: bool = True,
              protocol: str = DEFAULT_PROTOCOL, image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """One heat map per noun, min-max normalised: ``[N, H, W]``.

    Args:
        attention: recorder maps (``{key: [A, ...]}``, aggregated here with ``aggregate_attention``), or an
            aggregated ``[B, T, H, W]`` / ``[T, H, W]`` tensor (``generate_with_attention``'s output, made
            with the same ``protocol``).
        positions: one list of token positions per noun (``tokens.noun_token_positions(prompt, nouns, tok)``;
            for DAAM every occurrence of the word: ``word_token_positions``).
        size: ``(H, W)`` to upsample recorder maps to (the latent size); default: the largest map's size.
            Pass it for a UNet with no attention at the latent size (the toy: 32 x 32, attention at 16 and 8).
        sample: which batch element.
        normalised: min-max normalise each noun's map (``False``: raw maps, e.g. to compare magnitudes).
        protocol: ``"layer-mean"``: a noun's map is the **sum** of its tokens' maps, at the latent size.
            ``"daam"``: the **mean** of its tokens' maps, upsampled (bicubic) to ``image_size`` (DAAM's
            ``compute_word_heat_map`` then ``expand_as``), normalised with DAAM's ``+ 1e-8``.
        image_size: ``(H, W)`` of the generated image (``"daam"`` only; default: the latent size, as for the
            pixel-space toy model).
    """
    check_protocol(protocol)
    if isinstance(attention, Mapping):
        if size is None:
            sizes = [map_size(k, m.shape[2]) for k, ms in attention.items() if not k.endswith("_self") for m in ms]
            if not sizes:
                raise ValueError("no cross-attention maps given; was a recorder attached during the forward?")
            size = max(sizes, key=lambda hw: hw[0] * hw[1])
        attention = aggregate_attention(attention, size, protocol=protocol)
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
        chosen = attention[list(noun_positions)]
        maps.append(chosen.mean(dim=0) if protocol == "daam" else chosen.sum(dim=0))
    if not maps:
        out_size = tuple(image_size) if protocol == "daam" and image_size is not None else attention.shape[1:]
        return attention.new_zeros((0, *out_size))
    stacked = torch.stack(maps)  # [N, h, w]
    if protocol == "daam":
        if image_size is not None and tuple(image_size) != tuple(stacked.shape[-2:]):
            stacked = F.interpolate(stacked[None].float(), size=tuple(image_size), mode="bicubic",
                                    align_corners=False)[0]  # [N, H, W] at the image size
        return daam_normalise(stacked) if normalised else stacked
    return normalise(stacked) if normalised else stacked


def word_token_positions(prompt: str, nouns: Sequence[str], tokenizer) -> list[list[int]]:
    """Every occurrence's token positions of each noun, in one list a noun (DAAM's
    ``compute_token_merge_indices``: "a star, a circle and a star" gives "star" both occurrences' tokens).

    Matching is ``tokens.token_positions``' (case-insensitive, singular / plural alike); an occurrence past
    the 77-token truncation is left out (DAAM's maps end there too).
    """
    result = []
    for noun in nouns:
        positions = token_positions(prompt, noun, tokenizer, occurrence=0)
        occurrence = 1
        while True:
            try:
                positions = positions + token_positions(prompt, noun, tokenizer, occurrence=occurrence)
            except PhraseNotFoundError:
                break
            occurrence += 1
        result.append(positions)
    return result


def noun_heat_maps(attention: Mapping[str, Sequence[torch.Tensor]] | torch.Tensor, prompt: str, nouns: Sequence[str],
                   tokenizer, size: tuple[int, int] | None = None, sample: int = 0,
                   protocol: str = DEFAULT_PROTOCOL, image_size: tuple[int, int] | None = None
                   ) -> dict[str, torch.Tensor]:
    """``{noun: [H, W] normalised heat map}`` for the nouns of ``prompt`` (token positions looked up here:
    one occurrence a listed noun for "layer-mean", every occurrence for "daam")."""
    if check_protocol(protocol) == "daam":
        positions = word_token_positions(prompt, list(nouns), tokenizer)
    else:
        positions = noun_token_positions(prompt, list(nouns), tokenizer)
    maps = heat_maps(attention, positions, size=size, sample=sample, protocol=protocol, image_size=image_size)
    return dict(zip(nouns, maps, strict=True))


# --------------------------------------------------------------------------------------------------
# recording while sampling
# --------------------------------------------------------------------------------------------------

class AttentionSum:
    """Sums a recorder's maps over denoising steps, one running sum per layer.

    ``keep_heads=False``: ``[B, 1, h*w, T]`` (heads averaged as they come; the "layer-mean" protocol, where
    that order does not matter). ``keep_heads=True``: ``[B, heads, h*w, T]``, one sum per (layer, head) as DAAM
    keeps them (its clamp after upsampling needs the per-head sums).

    Call ``step()`` after each UNet call (it is the sampler's step callback: ``step(i, t)``); it adds the
    maps recorded since the last call and clears the recorder, so memory does not grow with the steps.
    """

    def __init__(self, recorder, keep_heads: bool = False) -> None:
        self.recorder = recorder
        self.keep_heads = keep_heads
        self.steps = 0
        self._sums: dict[str, list[torch.Tensor]] = {}

    def step(self, index: int | None = None, timestep: int | None = None) -> None:
        """Add this step's maps to the sums and reset the recorder."""
        for key, layer_maps in self.recorder.maps().items():
            if self.keep_heads:
                means = [m.detach().float() for m in layer_maps]  # [B, heads, h*w, T]
            else:
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
        """The sums, in the recorder's format: ``{key: [[B, heads or 1, h*w, T] per layer]}``."""
        return {key: list(sums) for key, sums in self._sums.items()}


@contextmanager
def recording(unet, classifier_free: bool = True, groups: Sequence[str] | None = None, keep_heads: bool | None = None,
              protocol: str = DEFAULT_PROTOCOL) -> Iterator[AttentionSum]:
    """Attach a recorder for sampling (``keep="cond"`` under guidance, ``detach=True``), yield its ``AttentionSum``.

    What is recorded follows ``protocol`` unless given: ``groups`` (its places: mid + up for "layer-mean",
    down + up for "daam") and ``keep_heads`` (per-head sums for "daam"). The recorder is removed on exit (the
    UNet's processors are restored), so nothing is recorded afterwards.
    """
    groups = protocol_groups(protocol) if groups is None else tuple(groups)
    keep_heads = protocol == "daam" if keep_heads is None else keep_heads
    recorder = attach_recorder(unet, groups=groups, mode="cross", keep="cond" if classifier_free else "all",
                               detach=True)
    try:
        yield AttentionSum(recorder, keep_heads=keep_heads)
    finally:
        recorder.detach()


def _latent_size(model, height: int | None, width: int | None) -> tuple[int, int]:
    if isinstance(model, Components) and model.vae is None:
        size = model.unet.config.sample_size
        return size, size
    factor = getattr(model, "vae_scale_factor", 8)
    default = model.unet.config.sample_size * factor
    return (height or default) // factor, (width or default) // factor


def generate_with_attention(model, prompts: Sequence[str], seeds: Sequence[int], steps: int = 50,
                            guidance: float | None = None, groups: Sequence[str] | None = None,
                            batch_size: int = 8, height: int | None = None, width: int | None = None,
                            progress: bool = True, protocol: str = DEFAULT_PROTOCOL) -> tuple[np.ndarray, torch.Tensor]:
    """Sample ``prompts[i]`` with ``seeds[i]`` while recording cross-attention (paired, one image each).

    Args:
        model: toy ``Components`` or a diffusers pipeline (``sample.load_model`` names).
        groups: UNet places to record; default: the protocol's (``PROTOCOL_GROUPS``).
        protocol: how layers and heads are combined (``aggregate_attention``); feed the result to
            ``heat_maps`` with the same protocol.
    Returns:
        ``(images [N, H, W, 3] uint8, attention [N, 77, h, w])``: per image, every token's map summed over
        steps and combined over layers and heads by ``protocol``, at the latent size ``h x w``.
    """
    check_protocol(protocol)
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
        with recording(model.unet, classifier_free=classifier_free, groups=groups, protocol=protocol) as summed:
            images.append(generate_batch(model, chunk, chunk_seeds, steps=steps, guidance=guidance, height=height,
                                         width=width, callback=summed.step))
            attention.append(aggregate_attention(summed.maps(), size, protocol=protocol).cpu())
    return np.concatenate(images), torch.cat(attention)


# --------------------------------------------------------------------------------------------------
# the metric
# --------------------------------------------------------------------------------------------------
