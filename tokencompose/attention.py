"""Recording the UNet's cross-attention maps (paper Sec. 3.1, the maps A that L_token and L_pixel supervise).

In each cross-attention layer the image features (queries, one per pixel u) attend over the 77 text tokens
(keys): ``A = softmax(Q K^T / sqrt(d))`` of shape ``[batch, heads, H*W, 77]``; column ``A[..., t]`` is where
token t "looks" in the image. PyTorch's fused attention (SDPA) never materialises A, so on the layers we
supervise we install a processor that computes it explicitly, keeps it (with its graph, for the losses) and
returns exactly what the default processor returns. Every other layer keeps its fast processor.

Usage::

    recorder = attach_recorder(unet, groups=("mid", "up"))      # SD 1.4 @512: mid_8, up_16, up_32, up_64
    noise_pred = unet(latents, t, text_embeddings).sample
    maps = recorder.maps()              # {"mid_8": [A, ...], "up_64": [A, A, A], ...}, A: [B, heads, H*W, 77]
    recorder.reset()                    # before the next step
    recorder.detach()                   # original processors back

Places and resolutions: a layer's place (down / mid / up) comes from its name in the UNet, its resolution
from the number of queries it sees relative to the UNet's input (read by a forward pre-hook), so keys are
"mid_8", "up_64"... for SD 1.4 at 512 px (64x64 latents) and 12/24/48/96 for SD 2.1 at 768 px.

Gradient checkpointing: the records are taken only while the UNet's own ``forward`` runs (a pre-hook opens
the window, a post-hook closes it). A checkpointed block recomputed during backward runs outside that window,
so it is not recorded twice; the maps from the first forward keep their graph (diffusers checkpoints
non-reentrantly), so the losses still reach the UNet's weights.

The authors' code replaced *every* attention processor by an explicit one and stored all maps.
``mode="all"`` does the same (self-attention maps under "<place>_<res>_self"), for teaching and for
``benchmarks/attention_overhead.py``, which measures what the targeted default saves.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

PLACES = ("down", "mid", "up")


@dataclass(frozen=True)
class AttentionLayer:
    """One attention layer of a UNet: its processor name, place (down/mid/up) and kind (cross/self)."""

    name: str
    place: str
    cross: bool


def attention_layers(unet) -> list[AttentionLayer]:
    """Every attention layer of a diffusers UNet with its place and kind, in the UNet's order.

    ``attn2`` layers of the transformer blocks are cross-attention (queries: pixels; keys: text tokens),
    ``attn1`` layers self-attention.
    """
    layers = []
    for name in unet.attn_processors:
        prefix = name.split(".")[0]
        place = {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}.get(prefix)
        if place is None:
            raise ValueError(f"attention layer {name!r} is not in a down/mid/up block; is this a UNet2DConditionModel?")
        layers.append(AttentionLayer(name=name, place=place, cross=".attn2." in name))
    return layers


class _Store:
    """Where recorded maps go; open only while the UNet's own forward runs."""

    def __init__(self, keep: str, detach: bool, edit=None) -> None:
        self.keep = keep
        self.detach = detach
        self.edit = edit
        self.enabled = True
        self.window_open = False
        self.input_hw: tuple[int, int] | None = None
        self.records: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.names: dict[str, list[str]] = defaultdict(list)

    def key(self, place: str, cross: bool, queries: int) -> str:
        height, width = self.input_hw
        factor = math.sqrt(height * width / queries)
        h, w = round(height / factor), round(width / factor)
        key = f"{place}_{h}" if h == w else f"{place}_{h}x{w}"
        return key if cross else key + "_self"

    def add(self, key: str, probs: torch.Tensor, name: str) -> None:
        self.names[key].append(name)
        if self.keep == "cond":  # classifier-free guidance batch: [unconditional; conditional]
            probs = probs[probs.shape[0] // 2 :]
        self.records[key].append(probs.detach() if self.detach else probs)


class RecordingAttnProcessor:
    """diffusers attention processor that computes ``softmax(QK^T/sqrt(d))`` explicitly and records it.

    The arithmetic is diffusers' classic ``AttnProcessor`` (same projections, norms, residual and rescale),
    so outputs equal the default SDPA processor's up to float rounding (tests check 1e-5).
    """

    def __init__(self, store: _Store, layer: AttentionLayer) -> None:
        self.store = store
        self.layer = layer

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        batch, queries, _ = hidden_states.shape
        context_length = queries if encoder_hidden_states is None else encoder_hidden_states.shape[1]
        attention_mask = attn.prepare_attention_mask(attention_mask, context_length, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        query = attn.head_to_batch_dim(query)  # [B*heads, H*W, d]
        key = attn.head_to_batch_dim(key)  # [B*heads, T, d]
        value = attn.head_to_batch_dim(value)
        probs = attn.get_attention_scores(query, key, attention_mask)  # [B*heads, H*W, T], softmax over T
        if self.store.enabled and self.store.window_open:
            key_name = self.store.key(self.layer.place, self.layer.cross, queries)
            if self.store.edit is not None:  # an intervention on the maps (probes: oracle, excitation)
                edited = self.store.edit(key_name, probs.view(batch, attn.heads, queries, -1))
                probs = edited.reshape(batch * attn.heads, queries, -1).to(probs.dtype)
            self.store.add(key_name, probs.view(batch, attn.heads, queries, -1), self.layer.name)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class AttentionRecorder:
    """Handle returned by ``attach_recorder``: read, clear, pause, and remove the recording."""

    def __init__(self, unet, store: _Store, layers: list[AttentionLayer], original: dict, hooks: list) -> None:
        self.unet = unet
        self.layers = layers
        self._store = store
        self._original = original
        self._hooks = hooks

    def maps(self) -> dict[str, list[torch.Tensor]]:
        """Recorded maps keyed "<place>_<res>", each a list over layers (and calls) of ``[B, heads, H*W, T]``."""
        return dict(self._store.records)

    def layer_names(self) -> dict[str, list[str]]:
        """Names of the layers behind each entry of ``maps()``, in the same order."""
        return {key: list(names) for key, names in self._store.names.items()}

    def reset(self) -> None:
        """Forget every recorded map (call once per training step, before the forward)."""
        self._store.records.clear()
        self._store.names.clear()

    @property
    def enabled(self) -> bool:
        return self._store.enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._store.enabled = bool(value)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Run the UNet without recording (e.g. plain sampling while the recorder stays attached)."""
        before = self._store.enabled
        self._store.enabled = False
        try:
            yield
        finally:
            self._store.enabled = before

    def detach(self) -> None:
        """Restore the original processors and remove the hooks; the recorder records nothing afterwards.

        Calling it again does nothing (diffusers' ``set_attn_processor`` consumes the dict it is given, so it
        gets a copy).
        """
        if not self._hooks:
            return
        self.unet.set_attn_processor(dict(self._original))
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self.reset()


def attach_recorder(
    unet,
    groups: Sequence[str] = ("mid", "up"),
    mode: str = "cross",
    keep: str = "all",
    detach: bool = False,
    edit=None,
) -> AttentionRecorder:
    """Install recording processors on a diffusers ``UNet2DConditionModel``.

    Args:
        unet: the UNet.
        groups: places to record: any of "down", "mid", "up" (the paper supervises mid + up).
        mode: "cross" records the cross-attention layers of ``groups`` only; "all" records every attention
            layer of the UNet, self and cross, as the authors' code did.
        keep: "all" keeps the whole batch; "cond" keeps the second half (the conditional half of a
            classifier-free-guidance batch ``[uncond; cond]``).
        detach: store maps without their graph (analysis and sampling; saves memory).
        edit: optional ``edit(key, probs) -> probs`` applied to every recorded map (``[B, heads, H*W, T]``,
            rows summing to 1) before it weights the values: an intervention on where tokens attend
            (``probes.AttentionEdit``); what is recorded is the edited map.

    Returns:
        An ``AttentionRecorder``; ``recorder.maps()`` after a forward pass.
    """
    unknown = sorted(set(groups) - set(PLACES))
    if unknown:
        raise ValueError(f"groups must be among {PLACES}, got {unknown}")
    if mode not in ("cross", "all"):
        raise ValueError(f"mode must be 'cross' or 'all', got {mode!r}")
    if keep not in ("all", "cond"):
        raise ValueError(f"keep must be 'all' or 'cond', got {keep!r}")
    layers = attention_layers(unet)
    chosen = [layer for layer in layers if mode == "all" or (layer.cross and layer.place in groups)]
    if not chosen:
        raise ValueError(f"this UNet has no cross-attention layers in {tuple(groups)}")

    store = _Store(keep=keep, detach=detach, edit=edit)
    original = dict(unet.attn_processors)
    processors = dict(original)
    for layer in chosen:
        processors[layer.name] = RecordingAttnProcessor(store, layer)
    unet.set_attn_processor(processors)

    def open_window(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        store.input_hw = tuple(sample.shape[-2:])
        store.window_open = True

    def close_window(module, args, kwargs, output):
        store.window_open = False

    hooks = [
        unet.register_forward_pre_hook(open_window, with_kwargs=True),
        unet.register_forward_hook(close_window, with_kwargs=True, always_call=True),
    ]
    return AttentionRecorder(unet, store, chosen, original, hooks)


def layer_resolutions(unet, sample_size: int | None = None, mode: str = "cross") -> dict[str, list[str]]:
    """Keys ("mid_8", "up_64", ...) -> names of the attention layers there, in call order, by one dry forward.

    Runs the UNet once on zeros at ``sample_size`` (default: its config's); shows where cross-attention lives.
    """
    size = sample_size or unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    recorder = attach_recorder(unet, groups=PLACES, mode=mode, detach=True)
    try:
        sample = torch.zeros(1, unet.config.in_channels, *size, device=unet.device, dtype=unet.dtype)
        context = torch.zeros(1, 77, unet.config.cross_attention_dim, device=unet.device, dtype=unet.dtype)
        with torch.no_grad():
            unet(sample, 0, context)
        return recorder.layer_names()
    finally:
        recorder.detach()
