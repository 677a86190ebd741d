"""Attend-and-Excite (Chefer et al., SIGGRAPH 2023): the paper's strongest inference-time baseline (Table 1).

TokenCompose trains the UNet so that every noun token's cross-attention falls on its object. Attend-and-Excite
leaves the weights alone and moves the *latent* instead: at the first denoising steps it runs the UNet on the
current latent ``z_t`` with the prompt, reads each subject token's cross-attention map ``A_t^s``, and takes a
gradient step on ``z_t`` that raises the maximum attention of the most neglected subject (its Eq. 1-3)::

    A^s     = Gaussian(softmax_{tokens}(100 * A_t)[:, s])      token s's smoothed map, start token removed
    L       = max_s (1 - max_u A^s[u])                           the most neglected subject
    z_t'    = z_t - alpha_t * dL / dz_t                          alpha_t = 20 * sqrt(linspace(1, 0.5)[t])

then denoises ``z_t'`` as usual (classifier-free guidance included). At a few chosen steps ("iterative
refinement", its Sec. 3.3) the update repeats until every subject's maximum reaches a threshold (at most 20
times). The settings are those of the authors' ``config.py`` (yuval-alaluf/Attend-and-Excite, ``RunConfig``) and
of diffusers' ``StableDiffusionAttendAndExcitePipeline``: 50 steps, updates in the first 25, refinement
thresholds 0.05 / 0.5 / 0.8 at steps 0 / 10 / 20, scale factor 20 decaying with ``sqrt`` of 1.0 -> 0.5, maps at
16 x 16 averaged over the down / mid / up cross-attention layers and heads of the conditional pass, Gaussian
smoothing with sigma 0.5 and kernel 3 (reflect-padded). ``ExciteSettings.schedule`` scales the step indices to
another number of sampling steps (25 steps: updates in the first 12, refinement at 0 / 5 / 10).

Two implementations, one recipe:
- **Stable Diffusion**: diffusers' pipeline (``excite_pipeline`` wraps a loaded ``StableDiffusionPipeline``'s
  components); ``sample.generate_batch(..., method="attend-and-excite")`` calls it with each prompt's token
  indices.
- **The toy model** (pixel space, DDIM): ``AttendExcite`` is the same latent update as a hook of
  ``sample.ddim_sample``. The toy UNet's cross-attention lives at 16 x 16 (one down, two up layers) and 8 x 8
  (mid); the 16 x 16 maps are used, as for SD (there they are a quarter of the latent's side, here half the
  image's: the toy has no finer attention).

Neither changes a weight: the UNet's parameters never receive a gradient step (tests check both).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .attention import attach_recorder

#: the names ``sample`` takes for how to sample: the plain sampler, or with Attend-and-Excite's latent updates
SAMPLING_METHODS = ("plain", "attend-and-excite")

#: words of a prompt template that the POS tagger calls nouns but that are no subject ("a photo of ...")
FRAME_NOUNS = frozenset({"photo", "picture", "image", "painting", "rendering", "drawing"})


@dataclass(frozen=True)
class ExciteSettings:
    """Attend-and-Excite's settings, as its ``config.py`` gives them for ``reference_steps`` denoising steps."""

    reference_steps: int = 50
    max_iter_to_alter: int = 25
    #: (step index, threshold) of the iterative refinement
    thresholds: tuple[tuple[int, float], ...] = ((0, 0.05), (10, 0.5), (20, 0.8))
    scale_factor: float = 20.0
    scale_range: tuple[float, float] = (1.0, 0.5)
    resolution: int = 16
    sigma: float = 0.5
    kernel_size: int = 3
    max_refinement_steps: int = 20
    #: the attention maps are multiplied by this before the softmax over the text tokens (the code's ``*= 100``)
    temperature: float = 100.0
    places: tuple[str, ...] = field(default=("down", "mid", "up"))
    #: diffusers' ``attn_res`` of the SD pipeline; ``None``: its default ``ceil(width / 32)``, 16 at 512 px as the
    #: authors (24 at SD 2.1's 768 px). Small test models need the side of one of their attention levels.
    pipeline_attn_res: int | None = None

    def schedule(self, steps: int) -> tuple[int, dict[int, float], np.ndarray]:
        """For ``steps`` sampling steps: how many first steps are updated, ``{step index: threshold}`` of the
        refinement, and the step size of every step (``scale_factor * sqrt(linspace(*scale_range, steps))``).
        Step indices scale with ``steps / reference_steps`` (rounded), so 25 steps update the first 12 and
        refine at 0, 5 and 10."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        ratio = steps / self.reference_steps
        alter = int(round(self.max_iter_to_alter * ratio))
        thresholds = {min(steps - 1, int(round(i * ratio))): float(value) for i, value in self.thresholds}
        sizes = self.scale_factor * np.sqrt(np.linspace(self.scale_range[0], self.scale_range[1], steps))
        return alter, thresholds, sizes

    def pipeline_arguments(self, steps: int) -> dict:
        """The keyword arguments of diffusers' ``StableDiffusionAttendAndExcitePipeline.__call__`` for ``steps``."""
        alter, thresholds, _ = self.schedule(steps)
        arguments = {"max_iter_to_alter": alter, "thresholds": thresholds, "scale_factor": self.scale_factor}
        if self.pipeline_attn_res is not None:
            arguments["attn_res"] = (self.pipeline_attn_res, self.pipeline_attn_res)
        return arguments


def toy_excite_settings(image_size: int, **changes) -> ExciteSettings:
    """The authors' settings with the maps at half the image side: the toy's finest cross-attention level (16 x
    16 for the shipped 32 px bases, as SD's 16 x 16; 8 x 8 for a 16 px test model)."""
    return ExciteSettings(resolution=max(1, image_size // 2), **changes)


def smoothing_kernel(kernel_size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """The 2-D smoothing kernel of Attend-and-Excite's ``GaussianSmoothing`` (``[k, k]``, summing to 1).

    Its code weighs offset ``d`` by ``exp(-((d / (2 sigma))^2))`` (a Gaussian of standard deviation
    ``sqrt(2) sigma``), per axis; this is that kernel, so the smoothed maxima are the ones its settings were
    chosen for."""
    offsets = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
    one = torch.exp(-((offsets / (2 * sigma)) ** 2)) / (sigma * math.sqrt(2 * math.pi))
    kernel = one[:, None] * one[None, :]
    return kernel / kernel.sum()


def smooth(maps: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``[N, H, W]`` maps convolved with ``kernel`` after reflect padding (the same size back)."""
    pad = kernel.shape[-1] // 2
    padded = F.pad(maps[:, None], (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(padded, kernel.to(maps)[None, None])[:, 0]


def aggregate_maps(maps: Mapping[str, Sequence[torch.Tensor]], resolution: int) -> torch.Tensor:
    """The mean over layers and heads of the cross-attention maps at ``resolution`` (keys "<place>_<res>" of
    ``attention.AttentionRecorder.maps()``): ``[B, res*res, T]``."""
    chosen = [probs for key, layers in maps.items() if key.rsplit("_", 1)[-1] == str(resolution)
              for probs in layers]
    if not chosen:
        raise ValueError(f"no cross-attention map at {resolution} x {resolution} (recorded: {sorted(maps)}); "
                         "pass the resolution of one of the UNet's attention levels (ExciteSettings.resolution)")
    return torch.stack([probs.float().mean(dim=1) for probs in chosen]).mean(dim=0)


def token_maxima(maps: torch.Tensor, token_indices: Sequence[Sequence[int]],
                 settings: ExciteSettings = ExciteSettings()) -> list[torch.Tensor]:
    """Per sample, the maximum of each subject token's smoothed map (Attend-and-Excite's
    ``_compute_max_attention_per_index``): ``maps`` ``[B, H*W, T]`` -> ``B`` tensors ``[len(indices)]``.

    The start token and the last position are dropped, the rest re-normalised by a softmax of
    ``temperature * maps`` over the tokens (the start token takes most of the attention mass, so without this
    no subject's maximum could approach 1)."""
    batch, queries, _ = maps.shape
    side = int(round(math.sqrt(queries)))
    if side * side != queries:
        raise ValueError(f"attention maps of {queries} queries are not square")
    if len(token_indices) != batch:
        raise ValueError(f"{len(token_indices)} lists of token indices for {batch} samples")
    text = torch.softmax(maps[:, :, 1:-1] * settings.temperature, dim=-1)
    kernel = smoothing_kernel(settings.kernel_size, settings.sigma)
    maxima = []
    for sample, indices in enumerate(token_indices):
        if not indices:
            raise ValueError(f"sample {sample} names no subject token; Attend-and-Excite needs at least one")
        columns = text[sample, :, [i - 1 for i in indices]].T.reshape(len(indices), side, side)
        maxima.append(smooth(columns, kernel).flatten(1).max(dim=1).values)
    return maxima


def excite_loss(maxima: Sequence[torch.Tensor]) -> torch.Tensor:
    """``max_s max(0, 1 - max A^s)`` per sample (``[B]``): the loss of the most neglected subject."""
    return torch.stack([(1 - values).clamp(min=0).max() for values in maxima])


class AttendExcite:
    """Attend-and-Excite's latent update as a hook of a sampler: ``x = hook(i, t, x)`` before step ``i``.

    Args:
        unet: the UNet (its weights are only read; their gradients are never kept).
        cond: ``[B, 77, dim]`` text embeddings of the batch's prompts (the update uses the conditional pass only).
        token_indices: per sample, the token positions of its subjects (``tokens.noun_token_positions``).
        steps: the sampler's number of steps (``ExciteSettings.schedule``).

    Use as a context manager (or call ``close``): it installs an attention recorder on the UNet, active only
    inside its own forward passes, and removes it on exit.
    """

    def __init__(self, unet, cond: torch.Tensor, token_indices: Sequence[Sequence[int]], steps: int,
                 settings: ExciteSettings = ExciteSettings()) -> None:
        if len(token_indices) != cond.shape[0]:
            raise ValueError(f"{len(token_indices)} lists of token indices for a batch of {cond.shape[0]} prompts")
        self.unet, self.cond, self.settings = unet, cond, settings
        self.token_indices = [list(map(int, indices)) for indices in token_indices]
        self.alter, self.thresholds, self.step_sizes = settings.schedule(steps)
        self.recorder = attach_recorder(unet, groups=settings.places)
        self.recorder.enabled = False
        self.losses: list[list[float]] = []  # per updated step, each sample's loss after the step's update

    def loss(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """Each sample's Attend-and-Excite loss at latent ``x`` (with its graph to ``x``)."""
        self.recorder.reset()
        self.recorder.enabled = True
        try:
            self.unet(x, torch.full((x.shape[0],), int(t), device=x.device), self.cond)
        finally:
            self.recorder.enabled = False
        maps = aggregate_maps(self.recorder.maps(), self.settings.resolution)
        self.recorder.reset()
        return excite_loss(token_maxima(maps, self.token_indices, self.settings))

    def _step(self, x: torch.Tensor, loss: torch.Tensor, size: float, active: torch.Tensor | None = None):
        grad = torch.autograd.grad(loss.sum(), x)[0]  # samples are independent: each gets its own gradient
        if active is not None:
            grad = grad * active.view(-1, *[1] * (x.dim() - 1)).to(grad)
        return (x - size * grad).detach().requires_grad_(True)

    def __call__(self, i: int, t: int, x: torch.Tensor) -> torch.Tensor:
        if i >= self.alter:
            return x
        size = float(self.step_sizes[i])
        dtype = x.dtype
        with torch.enable_grad():
            x = x.detach().float().requires_grad_(True)
            loss = self.loss(x, t)
            if i in self.thresholds:  # iterative refinement (the authors' loop, sample by sample)
                target = max(0.0, 1.0 - self.thresholds[i])
                active = loss.detach() > target
                for _ in range(self.settings.max_refinement_steps):
                    if not bool(active.any()):
                        break
                    current = self.loss(x, t)
                    x = self._step(x, current, size, active)
                    active = active & (current.detach() > target)
                loss = self.loss(x, t)
            x = self._step(x, loss, size)
            self.losses.append(loss.detach().cpu().tolist())
        self.unet.zero_grad(set_to_none=True)
        return x.detach().to(dtype)

    def close(self) -> None:
        self.recorder.detach()

    def __enter__(self) -> AttendExcite:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def subject_nouns(prompt: str, tagger: str = "auto") -> list[str]:
    """The subjects Attend-and-Excite excites in a free-text prompt: the head word of each noun phrase the POS
    tagger finds (``nouns.noun_phrases``), without the template's frame words ("a photo of ..."). MultiGen and
    VISOR name their categories instead."""
    from .nouns import noun_phrases  # lazy: the tagger loads only when free text needs it

    heads = [phrase.split()[-1] for phrase in noun_phrases(prompt, tagger=tagger)]
    return [word for word in heads if word.lower() not in FRAME_NOUNS]


def subject_token_indices(prompts: Sequence[str], nouns: Sequence[Sequence[str]], tokenizer) -> list[list[int]]:
    """Per prompt, the CLIP token positions of every token of its subject nouns (``tokens.token_positions``).

    Raises ``ValueError`` naming the prompt when it has no subject or a noun is not in it."""
    from .tokens import noun_token_positions

    indices = []
    for prompt, names in zip(prompts, nouns, strict=True):
        if not names:
            raise ValueError(f"prompt {prompt!r} names no subject noun for Attend-and-Excite to excite; name its "
                             "objects (MultiGen / VISOR categories) or write them as nouns")
        indices.append([p for positions in noun_token_positions(prompt, list(names), tokenizer) for p in positions])
    return indices


def excite_pipeline(pipe):
    """diffusers' ``StableDiffusionAttendAndExcitePipeline`` around a loaded ``StableDiffusionPipeline``'s
    components (the same weights, scheduler and device; nothing is copied)."""
    from diffusers import StableDiffusionAttendAndExcitePipeline  # lazy: seconds to import

    parts = {k: v for k, v in pipe.components.items() if k not in ("image_encoder",)}
    parts.setdefault("safety_checker", None)
    parts.setdefault("feature_extractor", None)
    return StableDiffusionAttendAndExcitePipeline(**parts, requires_safety_checker=False)
