"""Supervision on the model's own samples: CoMat's idea (Jiang et al., NeurIPS 2024) in the toy world.

TokenCompose supervises the cross-attention of *training* images: every noun there is drawn, so the losses can
only sharpen a map whose object is being drawn anyway. CoMat keeps TokenCompose's two losses and weights but
computes them on images the model itself generates (masks from Grounded-SAM on its output) and adds a term that
rewards a named concept the image lacks for appearing. The toy world's detector is exact and cheap, so the idea
fits a laptop. One step of the own-sample fine-tune (``OwnSampleObjective``):

1. **L_LDM on real scenes** (the batch's ``ToySceneBatches`` part): keeps the images right. The real scenes'
   grounding terms are computed without a graph and logged (``token``, ``pixel``), as for L_LDM only.
2. **Own samples**: ``OwnSampleSettings.prompts`` training captions (fresh 2-4-object scenes: the training
   distribution, no excluded pair) are sampled from the current weights (DDIM, ``sample_steps`` steps, no
   gradient); the toy detector says which named objects were drawn, the toy segmenter gives their masks.
3. **L_token, L_pixel on the own samples** (``own_token``, ``own_pixel``): the drawn nouns' masks supervise the
   attention of the own image, noised at a random timestep (Eq. 5's terms with the run's lambda and gamma).
4. **Presence** (``presence``): for each named object the sample lacks, the sampler's first ``grad_steps``
   DDIM steps are run again from the same starting noise *with* gradients, and the predicted clean image
   ``x0`` (the sampler's clamp to the data range, with a straight-through gradient) is scored by the soft
   share of its pixels in the object's colour,
   ``s = mean_u exp(-|x0[u] - c|^2 / (2 w^2))``; the term is ``mean relu(1 - s / a)`` with ``a`` the share an
   object of the world's smallest size covers. Its gradient reaches the weights only through those early steps,
   where a noun's place is decided (``probes.early_place``).

Total: ``L_LDM + lambda own_token + gamma own_pixel + mu presence`` (``mu = presence_weight``). Used by ``train
--toy-scenes --own-samples`` and by the ablation's ``"own"`` variant (``ablation.finetune``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..cli_args import non_negative_float, positive_int, sampling_steps
from ..data import seed_for
from ..losses import grounding_losses
from ..models import encode_text
from ..objective import compute_losses, noised_prediction
from ..sample import generate_toy, initial_noise
from ..tokens import noun_token_positions
from .detector import ToyDetector, ToySegmenter
from .world import (
    EXCLUDED_PAIRS,
    check_colour_mode,
    default_object_size,
    get_category,
    scene_batch,
    toy_nouns,
)


@dataclass(frozen=True)
class OwnSampleSettings:
    """The own-sample fine-tune's settings (``OwnSampleObjective``)."""

    prompts: int = 4  # own samples a micro-batch (beside the 16 real scenes; 8 took 3.3 s a step on one core)
    sample_steps: int = 10  # DDIM steps of the gradient-free generation (the ablation evaluates at 10)
    guidance: float = 3.0
    grad_steps: int = 2  # early DDIM steps the presence term backpropagates through
    #: mu, by the ablation's rule for lambda and gamma (``ablation.loss_scales``: each term 0.3 x L_LDM at the
    #: start): the shipped base's L_LDM 0.0111 and presence 0.41 (mean of its first 6 own-sample steps) give
    #: 0.3 x 0.0111 / 0.41 = 0.008
    presence_weight: float = 0.008
    colour_width: float = 0.15  # w: the soft colour match's width, in the [0, 1] colour range
    objects: tuple[int, int] = (2, 4)

    def __post_init__(self) -> None:
        if self.prompts < 1 or self.sample_steps < 1:
            raise ValueError(f"own samples need prompts >= 1 and sample_steps >= 1, got {self.prompts}, "
                             f"{self.sample_steps}")
        if not 1 <= self.grad_steps <= self.sample_steps:
            raise ValueError(f"grad_steps must be in 1..sample_steps ({self.sample_steps}), got {self.grad_steps}")
        if self.presence_weight < 0 or self.colour_width <= 0:
            raise ValueError("presence_weight must be >= 0 and colour_width > 0")


def own_sample_batches(config: Any, settings: OwnSampleSettings = OwnSampleSettings(), colour_mode: str = "identity"):
    """A ``train.BatchSource``: the toy world's real scenes (``world.scene_batches``) plus, under ``"own"``, the
    captions and sampling seeds of the micro-batch's own samples (a pure function of (step, micro, rank), so a
    resumed run asks for the same samples; what they look like depends on the weights)."""
    from .world import scene_batches

    real = scene_batches(config, (2, 4), colours=colour_mode)

    def source(tokenizer: Any, run_config: Any, rank: int = 0, world: int = 1):
        real_at = real(tokenizer, run_config, rank, world)

        def batch_at(step: int, micro: int) -> dict:
            batch = real_at(step, micro)
            rng = np.random.default_rng(seed_for(run_config.seed, step, micro, rank, 5))
            scenes = scene_batch(rng, settings.prompts, objects=settings.objects, exclude_pairs=EXCLUDED_PAIRS,
                                 size=run_config.resolution, colour_mode=colour_mode)
            seeds = rng.integers(0, 2**31 - 1, settings.prompts).tolist()
            batch["own"] = {"captions": scenes.captions, "seeds": seeds}
            return batch

        return batch_at

    return source


def _colour_share(x0: torch.Tensor, rgb: tuple[int, int, int], width: float, value_range: tuple[float, float]):
    """The soft share of ``x0``'s pixels (``[3, H, W]``, in ``value_range``) that have colour ``rgb``."""
    low, high = value_range
    colour = torch.tensor(rgb, dtype=x0.dtype, device=x0.device).view(3, 1, 1) / 255.0
    image = (x0 - low) / (high - low)
    return torch.exp(-((image - colour) ** 2).sum(0) / (2 * width**2)).mean()


class OwnSampleObjective:
    """A ``train.Objective``: L_LDM on the real scenes + the grounding terms and the presence term on the model's
    own samples (module docstring)."""

    def __init__(self, settings: OwnSampleSettings = OwnSampleSettings(), colour_mode: str = "identity") -> None:
        if check_colour_mode(colour_mode) != "identity":
            raise ValueError("the own-sample fine-tune scores presence by a category's colour: it needs a world "
                             f"where each category has one colour (colour mode 'identity'), not {colour_mode!r}")
        self.settings = settings
        #: per call: the share of the own samples' named objects that were drawn, and the presence term
        self.trace: list[dict[str, float]] = []
        self.detector = ToyDetector(colour_mode=colour_mode)
        self.segmenter = ToySegmenter(colour_mode)

    def own_batch(self, components, captions: list[str], seeds: list[int], config) -> dict:
        """Sample the captions from the current weights and read what was drawn: the drawn nouns' masks and
        token positions (for L_token / L_pixel), each sample's missing named objects, its starting noise."""
        unet = components.unet
        was_training = unet.training
        unet.eval()
        try:
            images = generate_toy(components, captions, seeds, steps=self.settings.sample_steps,
                                  guidance=self.settings.guidance, batch_size=len(captions), progress=False,
                                  value_range=tuple(config.value_range))
        finally:
            unet.train(was_training)
        low, high = config.value_range
        masks, positions, missing, drawn_counts = [], [], [], []
        for caption, image in zip(captions, images, strict=True):
            named = toy_nouns(caption)
            found = {d.name for d in self.detector.detect(image) if d.score > 0.1}
            segmented = self.segmenter(image, named)
            drawn = [n for n in named if n in found and segmented.get(n) is not None and segmented[n].any()]
            size = image.shape[0]
            masks.append(torch.from_numpy(np.stack([segmented[n] for n in drawn]).astype(np.float32))
                         if drawn else torch.zeros(0, size, size))
            positions.append(noun_token_positions(caption, drawn, components.tokenizer) if drawn else [])
            missing.append([n for n in named if n not in drawn])
            drawn_counts.append((len(drawn), len(named)))
        pixel_values = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 * (high - low) + low
        ids = components.tokenizer(captions, padding="max_length", max_length=77, truncation=True,
                                   return_tensors="pt").input_ids
        shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
        return {"pixel_values": pixel_values, "input_ids": ids, "masks": masks, "positions": positions,
                "missing": missing, "noise": initial_noise(seeds, shape), "drawn": drawn_counts}

    def presence(self, components, own: dict, config) -> torch.Tensor:
        """``mean relu(1 - s / a)`` over the missing named objects of the own samples, through the sampler's
        first ``grad_steps`` DDIM steps (classifier-free guidance as in sampling); 0 when nothing is missing."""
        rows = [i for i, names in enumerate(own["missing"]) if names]
        device = next(components.unet.parameters()).device
        if not rows:
            return torch.zeros((), device=device)
        unet, scheduler = components.unet, components.scheduler
        alphas = scheduler.alphas_cumprod.to(device, torch.float32)
        timesteps = np.linspace(len(alphas) - 1, 0, self.settings.sample_steps).round().astype(int)
        with torch.no_grad():
            cond = encode_text(components.text_encoder, own["input_ids"][rows].to(device))
            empty = components.tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
            uncond = encode_text(components.text_encoder, empty.to(device)).expand(len(rows), -1, -1)
        x = own["noise"][rows].to(device)
        low, high = config.value_range
        guidance = self.settings.guidance
        x0 = x
        for i in range(self.settings.grad_steps):
            t = int(timesteps[i])
            a_t = alphas[t]
            a_prev = alphas[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.tensor(1.0, device=device)
            t_batch = torch.full((2 * len(rows),), t, device=device)
            eps_u, eps_c = unet(torch.cat([x, x]), t_batch, torch.cat([uncond, cond])).sample.float().chunk(2)
            eps = eps_u + guidance * (eps_c - eps_u)
            raw = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            # the sampler's clamp, passed straight through by the gradient: a clamped pixel (the black
            # background, where a missing object would go) still tells the weights which way to move
            x0 = raw + (raw.clamp(low, high) - raw).detach()
            eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        side = x0.shape[-1]
        area = default_object_size(side)[0] ** 2 / side**2 / 2  # about the share of the smallest object's shape
        terms = [torch.relu(1 - _colour_share(x0[j], get_category(name).rgb, self.settings.colour_width,
                                              (low, high)) / area)
                 for j, row in enumerate(rows) for name in own["missing"][row]]
        return torch.stack(terms).mean()

    def __call__(self, components, recorder, batch: dict, config, generator: torch.Generator) -> dict:
        real = {k: v for k, v in batch.items() if k != "own"}
        losses = compute_losses(components, recorder, real, dataclasses.replace(config, token_weight=0.0,
                                                                                pixel_weight=0.0), generator)
        with recorder.paused():  # sampling records nothing (the recorder keeps training maps with their graph)
            own = self.own_batch(components, list(batch["own"]["captions"]), list(batch["own"]["seeds"]), config)
        recorder.reset()
        noised_prediction(components, own, config, generator)
        device = next(components.unet.parameters()).device
        grounding = grounding_losses(recorder.maps(), [m.to(device) for m in own["masks"]], own["positions"],
                                     groups=config.groups)
        recorder.reset()
        with recorder.paused():
            presence = self.presence(components, own, config)
        total = (losses["ldm"] + config.token_weight * grounding["token"] + config.pixel_weight * grounding["pixel"]
                 + self.settings.presence_weight * presence)
        drawn = sum(d for d, _ in own["drawn"]) / max(1, sum(n for _, n in own["drawn"]))
        self.trace.append({"own_drawn": drawn, "presence": float(presence.detach())})
        return {**losses, "total": total, "own_token": grounding["token"], "own_pixel": grounding["pixel"],
                "presence": presence, "own_drawn": torch.tensor(drawn)}


def add_own_sample_arguments(parser: Any) -> None:
    """The ``train`` command's own-sample flags (``--own-samples`` and its settings)."""
    defaults = OwnSampleSettings()
    parser.add_argument("--own-samples", action="store_true",
                        help="toy preset: L_LDM on fresh scenes + L_token, L_pixel and a presence term on the model's "
                             "own samples (CoMat's idea; tokencompose.toy.own_samples); implies --toy-scenes")
    parser.add_argument("--own-prompts", type=positive_int, default=defaults.prompts,
                        help=f"own samples a step (default {defaults.prompts})")
    parser.add_argument("--own-sample-steps", type=sampling_steps, default=defaults.sample_steps,
                        help=f"DDIM steps of an own sample (default {defaults.sample_steps})")
    parser.add_argument("--presence-weight", type=non_negative_float, default=defaults.presence_weight,
                        help=f"mu, the presence term's weight (default {defaults.presence_weight})")


def own_samples_from_args(args: Any):
    """For ``train --own-samples``: ``(batches_for, objective_for)``, functions of the run's config (``None``
    without the flag: the loop's defaults)."""
    if not args.own_samples:
        return None, None
    try:
        settings = OwnSampleSettings(prompts=args.own_prompts, sample_steps=args.own_sample_steps,
                                     grad_steps=min(OwnSampleSettings.grad_steps, args.own_sample_steps),
                                     presence_weight=args.presence_weight)
    except ValueError as error:
        raise ValueError(f"--own-samples: {error}") from error

    def batches_for(config: Any):
        from .world import model_colour_mode

        return own_sample_batches(config, settings, colour_mode=model_colour_mode(config.pretrained))

    def objective_for(config: Any):
        from .world import model_colour_mode

        return OwnSampleObjective(settings, colour_mode=model_colour_mode(config.pretrained))

    return batches_for, objective_for
