r"""The method's training objective (paper Sec. 3.2, Eq. 5): one forward pass, every term.

.. math::

    \mathcal{L} = \mathcal{L}_{LDM} + \lambda \mathcal{L}_{token} + \gamma \mathcal{L}_{pixel}

``noised_prediction`` encodes the image, noises it at a random timestep and predicts (Eq. 1);
``compute_losses`` adds the grounding terms from the recorded cross-attention maps (``losses.py``). The
fine-tuning loop (``train.py``) and every probe of a model (``ablation.py``, ``probes.py``) call these, so
what a probe measures is exactly what training optimises. Usage::

    recorder = attach_recorder(components.unet, groups=("mid", "up"))
    losses = compute_losses(components, recorder, batch, config, torch.Generator().manual_seed(0))
    losses["total"].backward()
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import Config
from .losses import grounding_losses, total_loss
from .models import Components, encode_text


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; ``step``, ``captions`` and ``checkpoint`` (last good one or None)."""

    def __init__(self, message: str, step: int, captions: list[str], checkpoint: Path | None) -> None:
        super().__init__(message)
        self.step = step
        self.captions = captions
        self.checkpoint = checkpoint


def all_finite(tensors) -> bool:
    """Whether every tensor of ``tensors`` is finite (one host sync)."""
    flags = [torch.isfinite(t).all() for t in tensors]
    return bool(torch.stack(flags).all()) if flags else True


def noised_prediction(components: Components, batch: dict, config: Config,
                      generator: torch.Generator, timestep: int | None = None, with_timesteps: bool = False):
    """Steps 1-4 of Eq. (5)'s forward pass: encode, noise at a random timestep, predict (Eq. 1).

    Returns ``(prediction, target)`` (and the timesteps ``[B]`` as a third item with ``with_timesteps``); a recorder attached to the UNet (``attention.attach_recorder``) holds
    this forward's cross-attention maps afterwards. ``generator`` (CPU) draws the noise and the timesteps;
    ``timestep`` fixes the timestep of every image instead (probes of one noise level; training never does).
    """
    unet, vae, scheduler = components.unet, components.vae, components.scheduler
    device = next(unet.parameters()).device
    pixel_values = batch["pixel_values"].to(device)  # [B, 3, R, R] in config.value_range

    # 1. encode the image: the VAE's latents times its scaling factor (SD), or the image itself (toy)
    if vae is None:
        latents = pixel_values
    else:
        with torch.no_grad():
            posterior = vae.encode(pixel_values.to(vae.dtype)).latent_dist  # [B, 4, R/8, R/8]
            eps = torch.randn(posterior.mean.shape, generator=generator).to(device, posterior.mean.dtype)
            latents = (posterior.mean + posterior.std * eps).float() * vae.config.scaling_factor

    # 2. sample the noise and one timestep per image, uniformly in [0, T)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    if timestep is None:
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  generator=generator).to(device)
    elif 0 <= timestep < scheduler.config.num_train_timesteps:
        timesteps = torch.full((latents.shape[0],), int(timestep), device=device)
    else:
        raise ValueError(f"timestep must be in [0, {scheduler.config.num_train_timesteps}), got {timestep}")

    # 3. noise the latents: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise  (Eq. 1)
    noisy_latents = scheduler.add_noise(latents, noise, timesteps)
    if config.prediction_type == "epsilon":
        target = noise
    else:  # v-prediction (SD 2.1): v = sqrt(abar_t) noise - sqrt(1 - abar_t) x_0
        target = scheduler.get_velocity(latents, noise, timesteps)

    # 4. condition on the caption (frozen text encoder) and predict
    with torch.no_grad():
        context = encode_text(components.text_encoder, batch["input_ids"].to(device))  # [B, 77, dim]
    prediction = unet(noisy_latents, timesteps, context).sample
    return (prediction, target, timesteps) if with_timesteps else (prediction, target)


def in_grounding_window(timesteps: torch.Tensor, window: tuple[int, int] | None) -> list[bool]:
    """Which samples carry the grounding terms: ``low <= t < high`` of ``config.grounding_timesteps``
    (every sample when ``window`` is ``None``, the paper's uniform range)."""
    if window is None:
        return [True] * len(timesteps)
    low, high = window
    return [bool(low <= int(t) < high) for t in timesteps.tolist()]


def grounded_samples(batch: dict, keep: list[bool]) -> tuple[list[torch.Tensor], list]:
    """The batch's noun masks and token positions with the nouns of the samples not kept removed: the
    grounding losses average over the samples that have nouns (``losses._mean_over_samples``), so the terms
    reach exactly the kept samples."""
    masks = [m if k else m[:0] for m, k in zip(batch["masks"], keep, strict=True)]
    positions = [p if k else [] for p, k in zip(batch["positions"], keep, strict=True)]
    return masks, positions


def compute_losses(components: Components, recorder, batch: dict, config: Config,
                   generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One forward pass of Eq. (5) on ``batch``: the losses, with the graph for ``total`` to backpropagate.

    ``recorder`` is ``attention.attach_recorder(unet, ...)``; ``generator`` (CPU) draws the noise and the
    timesteps. Returns ``ldm``, ``token``, ``pixel``, ``total`` and ``token/<group>``, ``pixel/<group>``.
    ``config.grounding_timesteps`` (low, high) puts the grounding terms on the samples with low <= t < high
    only (L_LDM stays on all of them); a batch with none in the window has grounding terms of 0.
    When ``token_weight == pixel_weight == 0`` the grounding losses are still computed, without a graph,
    so that an L_LDM-only run logs how grounded its attention is.
    """
    device = next(components.unet.parameters()).device
    # 1-4. encode, noise, predict; the recorder keeps the attention maps
    recorder.reset()
    prediction, target, timesteps = noised_prediction(components, batch, config, generator, with_timesteps=True)

    # 5. the denoising loss L_LDM, in float32 as the authors
    ldm = F.mse_loss(prediction.float(), target.float(), reduction="mean")

    # 6. the grounding losses from the recorded maps, the noun masks and the nouns' token positions, on the
    #    samples whose timestep lies in config.grounding_timesteps (all of them by default, as the paper)
    masks, positions = grounded_samples(batch, in_grounding_window(timesteps, config.grounding_timesteps))
    masks = [m.to(device) for m in masks]
    supervised = config.token_weight > 0 or config.pixel_weight > 0
    with nullcontext() if supervised else torch.no_grad():
        grounding = grounding_losses(recorder.maps(), masks, positions, groups=config.groups)
    recorder.reset()  # the graph keeps what backward needs; the recorder lets go of the maps

    # 7. the total of Eq. (5): L_LDM + lambda L_token + gamma L_pixel
    total = total_loss(ldm, grounding, config.token_weight, config.pixel_weight)
    return {"ldm": ldm, "total": total, **grounding}
