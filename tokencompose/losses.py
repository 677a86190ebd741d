r"""The grounding losses of TokenCompose: :math:`\mathcal{L}_{token}` and :math:`\mathcal{L}_{pixel}`.

Usage::

    from tokencompose.losses import grounding_losses, total_loss
    grounding = grounding_losses(recorder_maps, noun_masks, token_positions)   # dict of tensors
    loss = total_loss(ldm_loss, grounding, token_weight=1e-3, pixel_weight=5e-5)

Notation. For one cross-attention layer, :math:`\mathcal{A} \in [0, 1]^{|U| \times 77}` holds the
attention probabilities of every latent pixel :math:`u \in U` over the 77 text tokens (a softmax over
tokens, so every row sums to 1). Noun :math:`i` of the caption has the CLIP token positions
:math:`T_i` and the binary segmentation mask :math:`\mathcal{M}_i`, resized to the layer's
:math:`H \times W`. :math:`N` is the number of nouns with a mask.

The paper's equations (Sec. 3.2, "Grounding objectives"), Eq. (3), the token loss: attention of a noun
token should fall inside its object,

.. math::

    \mathcal{L}_{token} = \frac{1}{N} \sum_{i=1}^{N}
        \left( 1 - \frac{\sum_{u} \mathcal{A}_{i,u} \, \mathcal{M}_{i,u}}{\sum_{u} \mathcal{A}_{i,u}} \right)^2

Eq. (4), the pixel loss: every pixel of the attention map is a binary classifier of "this pixel belongs
to the noun's object",

.. math::

    \mathcal{L}_{pixel} = -\frac{1}{N} \sum_{i=1}^{N} \frac{1}{|U|} \sum_{u \in U}
        \Big[ \mathcal{M}_{i,u} \log \mathcal{A}_{i,u} + (1 - \mathcal{M}_{i,u}) \log (1 - \mathcal{A}_{i,u}) \Big]

Eq. (5), the training objective, summed over the supervised cross-attention layers :math:`m`,

.. math::

    \mathcal{L} = \mathcal{L}_{LDM} + \lambda \sum_{m} \mathcal{L}^{(m)}_{token}
                                    + \gamma \sum_{m} \mathcal{L}^{(m)}_{pixel},
    \qquad \lambda = 10^{-3}, \ \gamma = 5 \cdot 10^{-5}.

Where the authors' code (``train/src/loss_utils.py``, ``get_grounding_loss_by_layer``) differs from
the paper -- this module follows the code:

* **Heads.** The ratio inside the square of Eq. (3) is computed per attention head, and the heads are
  averaged *before* squaring: :math:`(1 - \mathrm{mean}_h\, a_h)^2`, not :math:`\mathrm{mean}_h (1 - a_h)^2`.
* **Multi-token nouns.** A noun split into several BPE tokens ("teddy bear", "surfboard" ->
  "surf", "board") gets one token-loss term per token, averaged over its tokens; the pixel loss
  instead *sums* the tokens' attention probabilities into one map before the BCE.
* **Layers.** Layers are handled by *group* (place and resolution: ``mid_8``, ``up_16``,
  ``up_32``, ``up_64`` for SD 1.4 at 512 px). Within a group, the token loss is *summed* over the
  layers (then divided by :math:`N`); the pixel loss is computed once, on the attention map averaged
  over the group's layers and heads. The groups are then summed in Eq. (5). So the paper's
  :math:`\sum_m` runs over layers for :math:`\mathcal{L}_{token}` but over groups for
  :math:`\mathcal{L}_{pixel}`.
* **BCE.** ``torch.nn.BCELoss`` on probabilities, mean over pixels: it clamps each log term at
  -100, so a pixel with probability exactly 0 inside the mask costs 100, not infinity.
* **Masks.** Resized to :math:`H \times W` with bilinear interpolation (``align_corners=False``, no
  anti-aliasing: the tensor default of the authors' torchvision 0.14) and then binarised with
  ``> 0``. Downsampling 512 -> 8 therefore samples the mask near the centre of each 64-pixel cell; an
  object that covers no such sample point vanishes at that resolution.
* **Batch.** The authors' script asserts a batch of one. Here a batch is allowed: each sample's loss
  is computed as theirs, then averaged over the samples that have at least one noun.

Batch-of-one results equal the authors' implementation (``tests/test_losses.py`` checks this against a
loop written like theirs).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DEFAULT_GROUPS",
    "grounding_losses",
    "pixel_loss",
    "resize_masks",
    "token_loss",
    "total_loss",
]

#: The layer groups the authors supervise for SD 1.4 (``--train_mid 8 --train_up 16 32 64``).
DEFAULT_GROUPS: tuple[str, ...] = ("mid_8", "up_16", "up_32", "up_64")

MapsLike = Sequence[Tensor] | Tensor
MasksLike = Sequence[Tensor | Sequence[Tensor]]
PositionsLike = Sequence[Sequence[Sequence[int]]]


# --------------------------------------------------------------------------------------------------
# input checks and preparation
# --------------------------------------------------------------------------------------------------
def _stack_maps(maps: MapsLike, size: tuple[int, int] | None) -> tuple[Tensor, int, int]:
    """Check a group's layer maps and stack them: ``[layers, batch, heads, H*W, tokens]`` float32."""
    if isinstance(maps, Tensor):
        maps = [maps]  # a single layer
    if not isinstance(maps, Sequence) or len(maps) == 0:
        raise ValueError("maps must be a non-empty list of layer attention maps [batch, heads, H*W, tokens]")
    for index, layer_map in enumerate(maps):
        if not isinstance(layer_map, Tensor) or layer_map.ndim != 4:
            shape = tuple(layer_map.shape) if isinstance(layer_map, Tensor) else type(layer_map).__name__
            raise ValueError(
                f"maps[{index}] must be a 4-D tensor [batch, heads, H*W, tokens], got {shape}; "
                "pass the list of layer maps of one group as recorded by the attention recorder"
            )
    first_shape = tuple(maps[0].shape)
    for index, layer_map in enumerate(maps[1:], start=1):
        if tuple(layer_map.shape) != first_shape:
            raise ValueError(
                f"the layers of a group must have the same shape: maps[0] is {first_shape}, "
                f"maps[{index}] is {tuple(layer_map.shape)}; group layers by place and resolution"
            )
    pixels = first_shape[2]
    if size is None:
        side = math.isqrt(pixels)
        if side * side != pixels:
            raise ValueError(
                f"cannot infer the map size: H*W = {pixels} is not a perfect square; pass size=(H, W)"
            )
        height = width = side
    else:
        height, width = (int(s) for s in size)
        if height * width != pixels:
            raise ValueError(
                f"size={tuple(size)} gives H*W = {height * width}, but the maps have {pixels} pixels"
            )
    stacked = torch.stack([layer_map.float() for layer_map in maps])  # [L, B, heads, H*W, T]
    return stacked, height, width


def resize_masks(masks: Tensor | Sequence[Tensor], size: tuple[int, int]) -> Tensor:
    """Resize noun masks to an attention map's ``size = (H, W)`` as the authors do: bilinear, then ``> 0``.

    Args:
        masks: ``[N, H0, W0]`` (bool or float in [0, 1], any resolution), or a list of ``N`` 2-D masks.
        size: ``(H, W)`` of the attention map.

    Returns:
        ``[N, H, W]`` bool. Bilinear with ``align_corners=False`` and no anti-aliasing (torchvision 0.14's
        ``transforms.Resize`` on a tensor, used by the authors), so each output pixel looks at the 2 x 2
        input pixels nearest its centre; any positive value there makes it ``True``.
    """
    if not isinstance(masks, Tensor):
        masks = torch.stack([torch.as_tensor(mask) for mask in masks]) if len(masks) else torch.zeros(0, 1, 1)
    if masks.ndim != 3:
        raise ValueError(
            f"masks must be [N, H0, W0] (one binary mask per noun), got shape {tuple(masks.shape)}"
        )
    if masks.shape[0] == 0:
        return torch.zeros(0, *size, dtype=torch.bool, device=masks.device)
    resized = F.interpolate(masks[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)
    return resized[:, 0] > 0.0


def _num_masks(masks: Tensor | Sequence[Tensor]) -> int:
    if isinstance(masks, Tensor):
        return masks.shape[0] if masks.ndim >= 1 else 1
    return len(masks)


def _as_index(position: object) -> int | None:
    """An int, a NumPy integer or a one-element integer tensor as an int; ``None`` for anything else."""
    if isinstance(position, bool):
        return None
    try:
        return operator.index(position)
    except TypeError:
        return None


def _prepare_sample(
    sample: int,
    masks: Tensor | Sequence[Tensor],
    positions: Sequence[Sequence[int]],
    height: int,
    width: int,
    num_tokens: int,
    device: torch.device,
) -> tuple[Tensor, Tensor, Tensor]:
    """One sample's nouns, flattened over tokens.

    Returns:
        ``noun_masks`` ``[N, H*W]`` float (0/1), ``token_index`` ``[K]`` (every token of every noun) and
        ``token_noun`` ``[K]`` (which noun each of those tokens belongs to).
    """
    num_masks = _num_masks(masks)
    if num_masks != len(positions):
        raise ValueError(
            f"sample {sample}: {num_masks} masks but {len(positions)} nouns (token position lists); "
            "give exactly one mask per noun, in the same order (drop nouns without a mask)"
        )
    token_index: list[int] = []
    token_noun: list[int] = []
    for noun, noun_positions in enumerate(positions):
        if len(noun_positions) == 0:
            raise ValueError(
                f"sample {sample}, noun {noun}: empty token position list; every noun needs at least one "
                "token position (see tokens.py), or drop the noun and its mask"
            )
        for position in noun_positions:
            index = _as_index(position)
            if index is None or not 0 <= index < num_tokens:
                raise ValueError(
                    f"sample {sample}, noun {noun}: token position {position!r} is out of range: "
                    f"positions are ints in [0, {num_tokens}) (the maps have {num_tokens} tokens)"
                )
            token_index.append(index)
            token_noun.append(noun)
    try:
        noun_masks = resize_masks(masks, (height, width))
    except ValueError as error:
        raise ValueError(f"sample {sample}: {error}") from None
    noun_masks = noun_masks.to(device=device, dtype=torch.float32).flatten(1)  # [N, H*W]
    return (
        noun_masks,
        torch.tensor(token_index, dtype=torch.long, device=device),
        torch.tensor(token_noun, dtype=torch.long, device=device),
    )


def _check_batch(stacked: Tensor, masks: MasksLike, positions: PositionsLike) -> None:
    batch = stacked.shape[1]
    if len(masks) != batch or len(positions) != batch:
        raise ValueError(
            f"batch size mismatch: the maps hold {batch} samples, masks {len(masks)} and positions "
            f"{len(positions)}; give one entry per sample (an empty one for a sample without nouns)"
        )


def prepare_samples(maps: MapsLike, masks: MasksLike, positions: PositionsLike, size: tuple[int, int] | None):
    """Stacked maps ``[L, B, heads, H*W, T]`` and, for each sample with nouns, its prepared masks and tokens.

    The shared front of ``token_loss`` and ``pixel_loss``: checks the batch, skips samples without nouns,
    and yields ``(sample, noun_masks [N, H*W], token_index [K], token_noun [K])``.
    """
    stacked, height, width = _stack_maps(maps, size)
    _check_batch(stacked, masks, positions)

    def prepared():
        for sample in range(stacked.shape[1]):
            if len(positions[sample]) == 0 and _num_masks(masks[sample]) == 0:
                continue
            yield (sample, *_prepare_sample(sample, masks[sample], positions[sample], height, width,
                                            stacked.shape[-1], stacked.device))

    return stacked, prepared()


def _by_sample(stacked: Tensor) -> tuple[Tensor, ...]:
    """The stacked maps split by sample, ``B x [L, heads, H*W, T]``, as views.

    One ``unbind`` instead of ``stacked[:, b]`` per sample: the backward of each separate index allocates and
    fills a zero tensor of the whole batch's maps, B times per loss (13% of a toy fine-tuning step, measured
    with ``torch.profiler``); unbind's backward is a single stack.
    """
    return stacked.unbind(dim=1)


def _mean_over_samples(per_sample: list[Tensor], stacked: Tensor) -> Tensor:
    """Mean over the samples that have nouns; a zero still attached to the maps' graph if there are none."""
    if not per_sample:
        return stacked.sum() * 0.0
    return torch.stack(per_sample).mean()


def _per_noun_mean(values: Tensor, token_noun: Tensor, num_nouns: int) -> Tensor:
    """Average ``values`` ``[..., K]`` over the tokens of each noun -> ``[..., N]``."""
    sums = values.new_zeros(*values.shape[:-1], num_nouns).index_add(-1, token_noun, values)
    counts = torch.bincount(token_noun, minlength=num_nouns).to(values.dtype)
    return sums / counts


def _bce(probabilities: Tensor, target: Tensor) -> Tensor:
    """``nn.BCELoss(reduction="none")`` in float32, also inside an autocast region (where it is refused).

    Probabilities are clamped to [0, 1] first: a sum of softmax entries can exceed 1 by rounding only.
    Non-finite probabilities (a diverged run) give NaN, never an exception: the loop's divergence guard then
    names the step (``F.binary_cross_entropy`` itself raises on NaN inputs).
    """
    device_type = probabilities.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        probabilities = probabilities.float()
        poison = probabilities - probabilities  # 0 where finite, NaN where not (propagates without a host sync)
        safe = torch.nan_to_num(probabilities, nan=0.5).clamp(0.0, 1.0)
        return F.binary_cross_entropy(safe, target.float(), reduction="none") + poison


# --------------------------------------------------------------------------------------------------
# the losses
# --------------------------------------------------------------------------------------------------
def token_loss(
    maps: MapsLike, masks: MasksLike, positions: PositionsLike, size: tuple[int, int] | None = None
) -> Tensor:
    r"""Token loss, Eq. (3), for ONE layer group, as the authors' code computes it.

    For each layer :math:`l` of the group, head :math:`h`, noun :math:`i` and token :math:`t \in T_i`:
    :math:`a_{l,h,t} = \sum_u \mathcal{M}_{i,u} \mathcal{A}_{l,h,u,t} / \sum_u \mathcal{A}_{l,h,u,t}`
    (the share of the token's attention inside the object). The loss of one sample is

    .. math::

        \frac{1}{N} \sum_{i=1}^{N} \sum_{l} \frac{1}{|T_i|} \sum_{t \in T_i}
            \Big(1 - \frac{1}{n_h} \sum_h a_{l,h,t}\Big)^2

    Differs from the paper's Eq. (3) in the head mean inside the square, the mean over a noun's tokens,
    and the *sum* over the group's layers (see the module docstring). A batch is averaged over the
    samples that have nouns.

    Args:
        maps: list over the group's layers of ``[B, heads, H*W, T]`` attention probabilities (softmax over
            T); a single 4-D tensor counts as a one-layer group.
        masks: list over the batch of ``[N_b, H0, W0]`` binary masks (bool or 0/1 float, any resolution),
            one per noun; resized to ``H x W`` with :func:`resize_masks`.
        positions: list over the batch of lists over nouns of token positions (ints in ``[0, T)``).
        size: ``(H, W)`` of the maps; inferred as square when omitted.

    Returns:
        A scalar tensor (float32). A batch without any noun gives 0, still attached to the maps' graph.

    Raises:
        ValueError: mismatched counts or shapes, empty or out-of-range token positions.
    """
    stacked, samples = prepare_samples(maps, masks, positions, size)  # stacked: [L, B, heads, H*W, T]
    by_sample = _by_sample(stacked)
    per_sample: list[Tensor] = []
    for sample, noun_masks, token_index, token_noun in samples:
        selected = by_sample[sample][..., token_index]  # [L, heads, H*W, K]: every token of every noun
        inside = torch.einsum("lhuk,ku->lhk", selected, noun_masks[token_noun])  # attention inside the mask
        share = inside / selected.sum(dim=2)  # [L, heads, K]
        per_token = (1.0 - share.mean(dim=1)) ** 2  # mean over heads BEFORE the square -> [L, K]
        per_noun = _per_noun_mean(per_token, token_noun, noun_masks.shape[0])  # [L, N]
        per_sample.append(per_noun.sum(dim=0).mean())  # sum over layers, mean over nouns
    return _mean_over_samples(per_sample, stacked)


def pixel_loss(
    maps: MapsLike, masks: MasksLike, positions: PositionsLike, size: tuple[int, int] | None = None
) -> Tensor:
    r"""Pixel loss, Eq. (4), for ONE layer group, as the authors' code computes it.

    The group's maps are averaged over layers and heads, :math:`\bar{\mathcal{A}}`; a noun's map is the
    sum over its tokens, :math:`p_{i,u} = \sum_{t \in T_i} \bar{\mathcal{A}}_{u,t}`; the loss of one sample
    is the binary cross-entropy with the mask, mean over pixels, mean over nouns:

    .. math::

        -\frac{1}{N} \sum_{i=1}^{N} \frac{1}{|U|} \sum_{u}
            \Big[\mathcal{M}_{i,u} \log p_{i,u} + (1 - \mathcal{M}_{i,u}) \log (1 - p_{i,u})\Big]

    with each log clamped at -100 (``torch.nn.BCELoss``). Differs from the paper's Eq. (4) in the
    averaging over layers and heads and the sum over a noun's tokens (see the module docstring). A batch
    is averaged over the samples that have nouns.

    Args:
        maps, masks, positions, size: as for :func:`token_loss`.

    Returns:
        A scalar tensor (float32). A batch without any noun gives 0, still attached to the maps' graph.

    Raises:
        ValueError: mismatched counts or shapes, empty or out-of-range token positions.
    """
    stacked, samples = prepare_samples(maps, masks, positions, size)  # stacked: [L, B, heads, H*W, T]
    per_sample: list[Tensor] = []
    by_sample = _by_sample(stacked)
    for sample, noun_masks, token_index, token_noun in samples:
        # the nouns' tokens, averaged over heads, then layers -> [H*W, K]
        selected = by_sample[sample][..., token_index].mean(dim=1).mean(dim=0)
        noun_maps = selected.new_zeros(selected.shape[0], noun_masks.shape[0]).index_add(
            1, token_noun, selected
        )
        bce = _bce(noun_maps.T, noun_masks)  # [N, H*W]
        per_sample.append(bce.mean(dim=1).mean())  # mean over pixels, then over nouns
    return _mean_over_samples(per_sample, stacked)


def grounding_losses(
    recorder_maps: Mapping[str, MapsLike],
    masks: MasksLike,
    positions: PositionsLike,
    groups: Sequence[str] = DEFAULT_GROUPS,
) -> dict[str, Tensor]:
    r"""Token and pixel losses of each supervised layer group, and their sums over groups (Eq. (5)).

    Args:
        recorder_maps: ``"<place>_<resolution>"`` -> list of layer maps ``[B, heads, H*W, T]``, as returned
            by the attention recorder (attention.py). Maps are taken as square (``H = W``).
        masks, positions: as for :func:`token_loss`.
        groups: the groups to supervise; SD 1.4's defaults are the authors' (for SD 2.1 at 768 px use
            ``mid_12``, ``up_24``, ``up_48``, ``up_96``).

    Returns:
        ``{"token/<group>": ..., "pixel/<group>": ..., "token": sum over groups, "pixel": sum over groups}``,
        the same names the authors log.

    Raises:
        ValueError: a requested group is not in ``recorder_maps`` (the message lists the recorded ones),
            or any input error of :func:`token_loss` / :func:`pixel_loss`.
    """
    if len(groups) == 0:
        raise ValueError("groups is empty: name at least one layer group, e.g. ('mid_8', 'up_16')")
    missing = [group for group in groups if group not in recorder_maps]
    if missing:
        raise ValueError(
            f"layer group(s) {missing} not in the recorded attention maps; recorded: {sorted(recorder_maps)}. "
            "Record these groups (attention.py) or choose groups among the recorded ones"
        )
    losses: dict[str, Tensor] = {}
    for group in groups:
        losses[f"token/{group}"] = token_loss(recorder_maps[group], masks, positions)
        losses[f"pixel/{group}"] = pixel_loss(recorder_maps[group], masks, positions)
    losses["token"] = torch.stack([losses[f"token/{group}"] for group in groups]).sum()
    losses["pixel"] = torch.stack([losses[f"pixel/{group}"] for group in groups]).sum()
    return losses


def total_loss(
    ldm: Tensor, grounding: Mapping[str, Tensor], token_weight: float = 1e-3, pixel_weight: float = 5e-5
) -> Tensor:
    r"""The training objective, Eq. (5): :math:`\mathcal{L}_{LDM} + \lambda \mathcal{L}_{token} + \gamma \mathcal{L}_{pixel}`.

    Args:
        ldm: the denoising loss (MSE between predicted and true noise / velocity).
        grounding: the output of :func:`grounding_losses` (its ``"token"`` and ``"pixel"`` entries, already
            summed over the layer groups).
        token_weight: :math:`\lambda` (authors: 1e-3).
        pixel_weight: :math:`\gamma` (authors: 5e-5).
    """
    for key in ("token", "pixel"):
        if key not in grounding:
            raise ValueError(
                f"grounding has no {key!r} entry (keys: {sorted(grounding)}); pass the dict returned by "
                "grounding_losses"
            )
    return ldm + token_weight * grounding["token"] + pixel_weight * grounding["pixel"]
