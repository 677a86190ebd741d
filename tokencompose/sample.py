"""Generating images: DDIM for the toy model (pixel space), a plain diffusers pipeline for Stable Diffusion.

TokenCompose changes only the UNet's weights, so a fine-tuned model samples exactly like its base: same
scheduler, same steps, no extra cost at inference (the paper's latency claim; ``evaluate/latency.py``
measures it). For SD presets ``load_pipeline(base, unet_dir)`` is ``StableDiffusionPipeline.from_pretrained``
with the fine-tuned ``UNet2DConditionModel`` swapped in: nothing else changes.

Toy sampler (DDIM, eta = 0, Song et al. 2021, Eq. 12) with classifier-free guidance: at each step
``eps = eps_u + w (eps_c - eps_u)``, ``x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)``, then ``x0`` is clamped to
the data range and ``eps`` re-derived from it, and ``x_{t-1} = sqrt(a_{t-1}) x0 + sqrt(1 - a_{t-1}) eps``.
The clamp matters: without it an undertrained toy model drifts off the data range (issue 4: 2% vs 96%).
Each image's starting noise comes from its own seed, so an image does not depend on its batch (SD: one
``torch.Generator`` a seed, on the CPU, so a seed gives the same starting latents on every device).

``generate(model, prompts, seeds)`` makes one image per (prompt, seed), named ``{prompt_index}_{seed}.png``
as in the authors' ``multigen/gen_image_dist.py``; files already in ``out_dir`` are skipped (resumable).
The authors' script draws its noise from the pipeline's unseeded generator; here seed ``s`` is explicit.

Two sampling modes (``SAMPLING_MODES``, ``sampling_settings``; ``--mode`` of the command): ``authors`` samples
as their ``gen_image_dist.py`` does (one image a pipeline call, float32), for exact comparisons; ``fast``
(the default) batches 16 images a call in float16 on CUDA with PyTorch SDPA attention (and, with
``--compile``, a ``torch.compile``-d UNet): the same images up to float16 rounding, made faster on a GPU
(``benchmarks/sd_sampling.py`` measures how much). On a CPU both sample in float32.

Usage::

    python -m tokencompose sample --model toy --prompts "a photo of a circle and a star." --seeds 0-3 --out out/
    python -m tokencompose sample --model outputs/unet --base sd14 --prompts prompts.json --seeds 0-9 --out out/
    python -m tokencompose sample --model sd14 --prompts coco_obj_comp_5_1k.json --mode authors --out out/
    python -m tokencompose sample --model toy --prompts "a photo of a circle and a star." --method attend-and-excite --out ae/

``--method attend-and-excite`` samples with Attend-and-Excite (``attend_excite``), the paper's strongest
inference-time baseline: the same weights, the latent moved toward each subject's attention.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .attend_excite import (
    SAMPLING_METHODS,
    AttendExcite,
    ExciteSettings,
    excite_pipeline,
    subject_nouns,
    subject_token_indices,
    toy_excite_settings,
)
from .cli_args import (
    ArgumentParser,
    InputFileError,
    UserError,
    device,
    disk_full_is_named,
    non_negative_float,
    output_folder,
    positive_int,
    read_json_file,
    read_json_lines,
    sampling_steps,
)
from .config import resolve_device
from .models import (
    HUB_IDS,
    Components,
    WeightsNotFoundError,
    encode_prompts,
    load_components,
    local_load_error,
)
from .provenance import check_folder, claim_folder, model_digest, record_written, written_files
from .tokens import warn_long_prompts

logger = logging.getLogger(__name__)

#: classifier-free guidance scale by model kind: the toy base model is trained and scored at 3.0
#: (pretrain.object_accuracy); 7.5 is diffusers' and the authors' default for Stable Diffusion
TOY_GUIDANCE = 3.0
SD_GUIDANCE = 7.5

#: a step callback of the toy sampler: ``callback(step_index, timestep)``, called after each UNet call
StepCallback = Callable[[int, int], None]
#: a latent update of the toy sampler: ``x = update(step_index, timestep, x)`` before each step's UNet call
#: (``attend_excite.AttendExcite``)
LatentUpdate = Callable[[int, int, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------------
# the toy sampler (pixel space DDIM)
# --------------------------------------------------------------------------------------------------

def initial_noise(seeds: Sequence[int], shape: tuple[int, ...]) -> torch.Tensor:
    """``[len(seeds), *shape]`` standard normal noise, one generator per seed (batch-independent)."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def ddim_sample(unet, scheduler, cond: torch.Tensor, uncond: torch.Tensor, noise: torch.Tensor, steps: int = 50,
                guidance: float = 3.0, value_range: tuple[float, float] = (0.0, 1.0),
                callback: StepCallback | None = None, autocast: torch.dtype | None = None,
                latent_update: LatentUpdate | None = None) -> torch.Tensor:
    """DDIM (eta = 0) with classifier-free guidance and x0 clamped to ``value_range`` at every step.

    Args:
        cond, uncond: text embeddings ``[B, 77, dim]`` of the prompts and of the empty prompt.
        noise: ``[B, C, H, W]`` starting noise.
        callback: called as ``callback(i, t)`` right after the UNet's call of step ``i`` (timestep ``t``),
            e.g. to read and sum an attention recorder's maps (``heatmaps.AttentionSum``).
            With guidance != 1 the UNet sees the batch ``[uncond; cond]`` (a recorder keeps the second half
            with ``keep="cond"``); with guidance == 1 only ``cond``.
        autocast: run the UNet under ``torch.autocast`` in this dtype (e.g. ``torch.bfloat16``: matrix units
            of recent CPUs, ``benchmarks/toy_sampling.py``); the DDIM update stays in the noise's dtype.
        latent_update: ``x = latent_update(i, t, x)`` before step ``i``'s UNet call (Attend-and-Excite moves
            ``x_t`` there; it may enable gradients inside, the sampler itself keeps none).
    Returns:
        ``[B, C, H, W]`` samples in ``value_range``.
    """
    alphas = scheduler.alphas_cumprod.to(noise.device, torch.float32)
    timesteps = np.linspace(len(alphas) - 1, 0, steps).round().astype(int)
    x = noise
    low, high = value_range
    x0 = x
    for i, t in enumerate(timesteps):
        a_t = alphas[t]
        a_prev = alphas[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.tensor(1.0, device=x.device)
        t_batch = torch.full((x.shape[0],), int(t), device=x.device)
        if latent_update is not None:
            x = latent_update(i, int(t), x)
        with torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
            if guidance == 1.0:
                eps = unet(x, t_batch, cond).sample.float()
            else:
                both = unet(torch.cat([x, x]), torch.cat([t_batch, t_batch]), torch.cat([uncond, cond])).sample
                eps_u, eps_c = both.float().chunk(2)
                eps = eps_u + guidance * (eps_c - eps_u)
        if callback is not None:
            callback(i, int(t))
        x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(low, high)
        eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        x = (a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps).to(noise.dtype)
    return x0


def generate_toy(components: Components, prompts: Sequence[str], seeds: Sequence[int], steps: int = 50,
                 guidance: float = 3.0, batch_size: int = 64, value_range: tuple[float, float] = (0.0, 1.0),
                 progress: bool = True, callback: StepCallback | None = None,
                 autocast: torch.dtype | None = None, excite: ExciteSettings | None = None,
                 token_indices: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Images ``[N, H, W, 3]`` uint8 for ``prompts[i]`` with ``seeds[i]`` from a pixel-space toy model.

    ``callback`` and ``autocast`` are passed to ``ddim_sample`` for every batch (see there). With ``excite``
    (``attend_excite.ExciteSettings``) every batch is sampled with Attend-and-Excite's latent updates on the
    subjects ``token_indices[i]`` of prompt ``i`` (``attend_excite.subject_token_indices``).
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds; pass one seed per prompt")
    if excite is not None and (token_indices is None or len(token_indices) != len(prompts)):
        raise ValueError("Attend-and-Excite needs the subject token indices of every prompt (token_indices)")
    unet = components.unet
    size = unet.config.sample_size
    shape = (unet.config.in_channels, size, size)
    uncond_one = encode_prompts(components, [""]).to(unet.device, unet.dtype)
    images = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="sampling", disable=not progress or len(starts) < 2):
        chunk = list(prompts[start:start + batch_size])
        cond = encode_prompts(components, chunk).to(unet.device, unet.dtype)
        noise = initial_noise(seeds[start:start + batch_size], shape).to(unet.device, unet.dtype)
        hook = (AttendExcite(unet, cond, token_indices[start:start + batch_size], steps, excite)
                if excite is not None else nullcontext())
        with hook:
            x = ddim_sample(unet, components.scheduler, cond, uncond_one.expand(len(chunk), -1, -1), noise,
                            steps=steps, guidance=guidance, value_range=value_range, callback=callback,
                            autocast=autocast, latent_update=hook if excite is not None else None)
        low, high = value_range
        x = (x.float() - low) / (high - low)
        images.append((x.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
    return np.concatenate(images)


# --------------------------------------------------------------------------------------------------
# Stable Diffusion: a plain diffusers pipeline
# --------------------------------------------------------------------------------------------------


def _unet_folder(unet_dir: Path) -> tuple[Path, str | None]:
    """A fine-tuned UNet is either a UNet folder (``config.json``) or a run folder holding ``unet/``."""
    if (unet_dir / "config.json").is_file():
        return unet_dir, None
    if (unet_dir / "unet" / "config.json").is_file():
        return unet_dir, "unet"
    raise WeightsNotFoundError(
        f"no UNet in {str(unet_dir)!r}: expected {str(unet_dir / 'config.json')!r} (a folder written by "
        "UNet2DConditionModel.save_pretrained, as `python -m tokencompose train` does) or a 'unet/' subfolder"
    )


def load_pipeline(base: str = "sd14", unet_dir: str | Path | None = None, dtype: torch.dtype = torch.float32,
                  device: str = "auto", scheduler: str | None = None):
    """``StableDiffusionPipeline.from_pretrained(base, unet=UNet2DConditionModel.from_pretrained(unet_dir))``.

    Args:
        base: preset ("sd14", "sd21"), hub id or local folder of the base model (diffusers layout).
        unet_dir: the fine-tuned UNet (a UNet folder or a folder with ``unet/``); ``None`` = the base's own.
        dtype: weights' dtype (``torch.float16`` on a GPU halves memory and time).
        device: "auto", "cuda", "cpu", ...
        scheduler: ``None`` keeps the base model's scheduler (what the authors' evaluation used: PNDM for
            SD 1.4); ``"ddim"`` swaps in ``DDIMScheduler`` with the same configuration.

    Raises:
        WeightsNotFoundError: the base model or the UNet cannot be loaded (the message says how to get them).
    """
    from diffusers import (  # lazy: seconds to import
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    source = HUB_IDS.get(base, base)
    kwargs: dict[str, Any] = {}
    if unet_dir is not None:
        folder, subfolder = _unet_folder(Path(unet_dir))
        try:
            kwargs["unet"] = UNet2DConditionModel.from_pretrained(folder, subfolder=subfolder, torch_dtype=dtype)
        except Exception as error:  # noqa: BLE001 - one actionable message
            raise local_load_error(folder / (subfolder or ""), error, "fine-tuned UNet") from error
    try:
        pipe = StableDiffusionPipeline.from_pretrained(source, torch_dtype=dtype, **kwargs)
    except Exception as error:  # noqa: BLE001
        if Path(source).is_dir():
            raise local_load_error(source, error, "Stable Diffusion pipeline") from error
        raise WeightsNotFoundError(
            f"could not load the Stable Diffusion pipeline {source!r} ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200] if str(error) else ''}).\n"
            + (f"It was read as a hub id: there is no folder {source!r} here (from {Path.cwd()}); if you meant a "
               "folder, check the path.\n" if base not in HUB_IDS else "") +
            "To get the weights: accept the model licence on huggingface.co and run `huggingface-cli login`, or "
            f"download once (`huggingface-cli download {source} --local-dir DIR`) and pass DIR as the base.\n"
            "Offline, use the toy preset (`--model toy`)."
        ) from error
    text_width = pipe.text_encoder.config.hidden_size
    if pipe.unet.config.cross_attention_dim != text_width:
        raise ValueError(
            f"the UNet from {str(unet_dir)!r} expects text embeddings of width {pipe.unet.config.cross_attention_dim} "
            f"but the text encoder of {source!r} gives {text_width}: was it fine-tuned from another base? "
            "(SD 1.4: 768, SD 2.1: 1024)"
        )
    if scheduler == "ddim":
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    elif scheduler not in (None, "default"):
        raise ValueError(f"scheduler must be None/'default' (the base's own) or 'ddim', got {scheduler!r}")
    return pipe.to(resolve_device(device))


def pipeline_from_components(components: Components):
    """A ``StableDiffusionPipeline`` around latent-space ``Components`` (DDIM with the training schedule)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline  # lazy: seconds to import

    if components.vae is None:
        raise ValueError("these components are a pixel-space (toy) model: sample them with generate_toy")
    return StableDiffusionPipeline(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
        unet=components.unet, scheduler=DDIMScheduler.from_config(components.scheduler.config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def is_pipeline(model: Any) -> bool:
    """True for a diffusers text-to-image pipeline (anything with a UNet, a text encoder and ``__call__``)."""
    return callable(model) and hasattr(model, "unet") and hasattr(model, "text_encoder") and hasattr(model, "vae")


def load_model(model: Any, base: str | None = None, dtype: torch.dtype = torch.float32, device: str = "auto",
               scheduler: str | None = None) -> Any:
    """``Components`` (pixel-space toy model) or a ``StableDiffusionPipeline`` from what a user names.

    ``model``: "toy", "sd14", "sd21", a hub id, a pipeline folder (``model_index.json``), a toy-layout folder
    (``unet/`` + ``text_encoder/``), or a fine-tuned UNet folder (then ``base`` names the model it was
    fine-tuned from). Objects already loaded (``Components``, a pipeline) are returned as they are.
    """
    if isinstance(model, Components):
        return model
    if is_pipeline(model):
        return model
    if not isinstance(model, (str, Path)):
        raise TypeError(
            f"cannot sample from a {type(model).__name__}: pass toy Components (models.load_components), a "
            "diffusers pipeline (sample.load_pipeline(base, unet_dir) for a fine-tuned UNet), or a model name"
        )
    name = str(model)
    folder = Path(name)
    device = resolve_device(device)
    if name in HUB_IDS:
        return load_pipeline(name, dtype=dtype, device=device, scheduler=scheduler)
    if name == "toy":
        return _to(load_components("toy", dtype=dtype), device)
    if folder.is_dir():
        if (folder / "model_index.json").is_file():
            return load_pipeline(name, dtype=dtype, device=device, scheduler=scheduler)
        if (folder / "unet").is_dir() and (folder / "text_encoder").is_dir():
            components = load_components(name, dtype=dtype)
            return _to(components, device) if components.vae is None else pipeline_from_components(
                components).to(device)
        _unet_folder(folder)  # raises when there is no UNet at all
        base = base_of_finetune(folder, base)
        if base == "toy" or _is_toy_layout(base):
            from diffusers import UNet2DConditionModel  # lazy: seconds to import

            components = load_components(base, dtype=dtype)
            unet_folder, subfolder = _unet_folder(folder)
            try:
                components.unet = UNet2DConditionModel.from_pretrained(unet_folder, subfolder=subfolder,
                                                                       torch_dtype=dtype)
            except Exception as error:  # noqa: BLE001 - one message naming the file
                raise local_load_error(unet_folder / (subfolder or ""), error, "fine-tuned UNet") from error
            return _to(components, device)
        return load_pipeline(base, unet_dir=folder, dtype=dtype, device=device, scheduler=scheduler)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name):  # looks like a hub id
        return load_pipeline(name, dtype=dtype, device=device, scheduler=scheduler)
    raise FileNotFoundError(
        f"model {name!r} is neither a preset (toy, sd14, sd21), nor a folder, nor a hub id (owner/name)"
    )


def _model_key(name: str) -> str:
    """What names one model: a preset's hub id or folder, a folder resolved, a hub id as it is."""
    from .config import TOY_BASE_DIR

    name = {"toy": str(TOY_BASE_DIR), **HUB_IDS}.get(name, name)
    return str(Path(name).resolve()) if Path(name).exists() else name


def _may_load(name: str) -> bool:
    """Whether a base model named in a ``training_config.json`` can be looked for: a preset, an existing folder or
    a hub id (owner/name), not a folder path that is gone."""
    return name == "toy" or name in HUB_IDS or Path(name).exists() or (
        re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None and not name.startswith((".", "/")))


def recorded_base(unet_folder: Path) -> tuple[str | None, Path | None]:
    """``(pretrained, file)``: the base model the ``training_config.json`` of a fine-tuned UNet's run names (in
    the UNet folder or the run folder above it), or ``(None, None)`` when there is none to read."""
    for config in (unet_folder / "training_config.json", unet_folder.parent / "training_config.json"):
        try:
            saved = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else None
        except (OSError, ValueError):
            continue
        if isinstance(saved, dict) and isinstance(saved.get("pretrained"), str) and saved["pretrained"].strip():
            return saved["pretrained"], config
    return None, None


def base_of_finetune(unet_folder: Path, base: str | None) -> str:
    """The base model whose text encoder, VAE and scheduler a bare fine-tuned UNet samples with.

    The base its run's ``training_config.json`` names (``recorded_base``) when ``base`` is None; ``base`` when it
    names the same model, or when the recorded one is a folder that is no longer here (with a warning). A UNet
    fine-tuned on one base's text encoder reads another's embeddings as noise, so another base is refused.

    Raises:
        ValueError: no base given and none recorded (or the recorded folder is gone), or ``base`` differs from the
            recorded one; the message names both and what to pass.
    """
    recorded, config = recorded_base(unet_folder)
    if recorded is None:
        if base is None:
            raise ValueError(f"{str(unet_folder)!r} holds only a UNet and no training_config.json names its base: say "
                             "which model it was fine-tuned from with base= (--base toy, sd14, sd21, a hub id or a folder)")
        return base
    available = _may_load(recorded)
    if base is None:
        if not available:
            raise ValueError(f"{config} says the UNet in {str(unet_folder)!r} was fine-tuned from {recorded!r}, which "
                             "is not here; pass that model (or a copy of it) with --base")
        logger.info("sampling %s with the base its %s names: %s", unet_folder, config.name, recorded)
        return recorded
    if _model_key(base) == _model_key(recorded):
        return base
    if not available:
        logger.warning("%s names the base %r, which is not here; sampling with --base %r as given", config, recorded,
                       base)
        return base
    raise ValueError(f"the UNet in {str(unet_folder)!r} was fine-tuned from {recorded!r} ({config}), but base "
                     f"{base!r} was given: its text encoder is not the one the UNet learned to read; leave --base out "
                     f"(the recorded base is used) or pass {recorded!r}")


#: the authors' released fine-tuned models (full diffusers pipelines on the Hugging Face Hub; "_A"/"_B" are their
#: two released runs)
AUTHORS_CHECKPOINTS = {"sd14": "mlpc-lab/TokenCompose_SD14_A", "sd21": "mlpc-lab/TokenCompose_SD21_A"}


def load_finetuned(source: str | Path, base: str, dtype: torch.dtype = torch.float32, device: str = "auto",
                   scheduler: str | None = None) -> Any:
    """A fine-tuned model from what a user has: a full diffusers pipeline (a hub id such as the authors'
    ``mlpc-lab/TokenCompose_SD14_A``, or a folder with ``model_index.json``), a run folder of ``train`` (its
    ``unet/`` goes into ``base``), or a UNet folder alone (into ``base``); toy folders load as toy models.

    Raises ``WeightsNotFoundError`` (what was tried, how to get the weights) when nothing loads."""
    name = str(source)
    folder = Path(name)
    if folder.is_dir():
        if (folder / "model_index.json").is_file() or _is_toy_layout(name) and (folder / "text_encoder").is_dir():
            return load_model(name, dtype=dtype, device=device, scheduler=scheduler)
        if (folder / "unet" / "config.json").is_file():
            return load_model(str(folder / "unet"), base=base, dtype=dtype, device=device, scheduler=scheduler)
        return load_model(name, base=base, dtype=dtype, device=device, scheduler=scheduler)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name):  # a hub id: the authors release full pipelines
        return load_pipeline(name, dtype=dtype, device=device, scheduler=scheduler)
    raise WeightsNotFoundError(
        f"no fine-tuned model at {name!r}: pass a folder (a pipeline with model_index.json, a train run folder "
        f"with unet/, or a UNet folder) or a hub id such as the authors' {AUTHORS_CHECKPOINTS['sd14']!r}")


def _is_toy_layout(name: str) -> bool:
    folder = Path(name)
    return folder.is_dir() and (folder / "unet").is_dir() and not (folder / "vae").is_dir()


def _to(components: Components, device: str) -> Components:
    components.unet.to(device)
    components.text_encoder.to(device)
    if components.vae is not None:
        components.vae.to(device)
    return components


# --------------------------------------------------------------------------------------------------
# sampling modes: the authors' exact way, or fast
# --------------------------------------------------------------------------------------------------

#: weights' dtypes by name (the ``--dtype`` flags)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

#: how to sample Stable Diffusion (``sampling_settings``). "authors": as the authors' ``multigen/gen_image_dist.py``
#: (``pipe(prompt=[text])`` one image at a time, float32 weights): for exact comparisons. "fast": batched,
#: float16 on CUDA, PyTorch SDPA attention, optionally a compiled UNet: for throughput (10,000 images a
#: MultiGen prompt set). Both use the same scheduler, steps, guidance and per-image seeds: the images differ
#: only by float16 rounding and batch-dependent float order.
SAMPLING_MODES = ("fast", "authors")

#: the fast mode's images a batch, by device type: 16 on CUDA (with guidance the UNet sees 32 latents a call;
#: pass a smaller batch size on a small GPU); elsewhere the former default, 8
FAST_BATCH_SIZE = {"cuda": 16}
CPU_BATCH_SIZE = 8


@dataclass(frozen=True)
class SamplingSettings:
    """What a sampling mode fixes: the weights' dtype (pass to ``load_model``), images a batch (pass to
    ``generate``), whether ``prepare_for_sampling`` compiles the UNet, and the device they were chosen for."""

    mode: str
    device: str
    dtype: torch.dtype
    batch_size: int
    compile_unet: bool


def sampling_settings(mode: str = "fast", device: str = "auto", dtype: torch.dtype | str | None = None,
                      batch_size: int | None = None, compile_unet: bool = False) -> SamplingSettings:
    """The dtype, batch size and compile setting of a sampling mode (``SAMPLING_MODES``) on ``device``.

    - ``"authors"``: float32, batch 1, no compile, on any device: the authors' ``gen_image_dist.py`` loads
      ``StableDiffusionPipeline.from_pretrained(name, torch_dtype=torch.float32)`` and calls
      ``pipe(prompt=[text])`` once an image. Asking it for another dtype, batch size or compile is an error.
    - ``"fast"``: float16 on CUDA (``dtype`` may say bfloat16 or float32 instead), float32 elsewhere (CPUs gain
      little or nothing from half precision); ``batch_size`` images a call (default 16 on CUDA, 8 elsewhere);
      ``compile_unet`` (off by default) only on CUDA, where the compile time of ``torch.compile`` can pay
      back over a MultiGen run's thousands of UNet calls (elsewhere it is turned off, with a warning).
      The settings apply to any model; the toy model on CUDA samples in float16 too.

    Raises:
        ValueError: an unknown mode or dtype, a batch size < 1, or a setting the authors' mode does not allow.
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}: use 'fast' (batched, float16 on CUDA) or 'authors' "
                         "(batch 1, float32, as the authors' multigen/gen_image_dist.py)")
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}: use one of {', '.join(sorted(DTYPES))}")
        dtype = DTYPES[dtype]
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = resolve_device(device)
    on_cuda = torch.device(device).type == "cuda"
    if mode == "authors":
        asked = [f"dtype {str(dtype).removeprefix('torch.')}" if dtype not in (None, torch.float32) else "",
                 f"batch size {batch_size}" if batch_size not in (None, 1) else "",
                 "compile" if compile_unet else ""]
        if any(asked):
            raise ValueError(f"the 'authors' sampling mode is fixed at batch 1, float32, no compile (as the "
                             f"authors' multigen/gen_image_dist.py), but {', '.join(filter(None, asked))} was "
                             "asked: drop it, or use the 'fast' mode")
        return SamplingSettings("authors", device, torch.float32, 1, False)
    if compile_unet and not on_cuda:
        logger.warning("torch.compile of the UNet is only used on CUDA (on %s its compile time does not pay): "
                       "sampling uncompiled", device)
        compile_unet = False
    if dtype is None:
        dtype = torch.float16 if on_cuda else torch.float32
    if batch_size is None:
        batch_size = FAST_BATCH_SIZE.get(torch.device(device).type, CPU_BATCH_SIZE)
    return SamplingSettings("fast", device, dtype, batch_size, bool(compile_unet))


def attention_processor_names(unet) -> dict[str, int]:
    """``{processor class name: number of attention layers using it}`` of a UNet (SD 1.4: 32 layers)."""
    names: dict[str, int] = {}
    for processor in unet.attn_processors.values():
        names[type(processor).__name__] = names.get(type(processor).__name__, 0) + 1
    return names


def prepare_for_sampling(model: Any, settings: SamplingSettings) -> Any:
    """A diffusers pipeline made ready for ``settings``: moved to its device and dtype; in the fast mode the
    eager attention processors (diffusers' ``AttnProcessor``) replaced by PyTorch SDPA (``AttnProcessor2_0``,
    diffusers' default since torch 2: a freshly loaded pipeline has it already), and the UNet compiled in
    place (``nn.Module.compile``: parameter names, hence ``provenance.model_digest``, unchanged) when
    ``settings.compile_unet``. Other processors (an attention recorder, attached for heat maps) are left as
    they are. The authors' mode changes nothing but device and dtype. Toy ``Components`` are returned as they
    are (load them with ``settings.dtype``).

    The VAE decodes each batch in one call (diffusers' default; ``vae.enable_slicing()`` would decode one image
    at a time), so batching speeds up the decoder as well as the UNet.
    """
    if not is_pipeline(model):
        return model
    from diffusers.models.attention_processor import (  # lazy: seconds to import
        AttnProcessor,
        AttnProcessor2_0,
    )

    model = model.to(settings.device)
    if any(part is not None and part.dtype != settings.dtype for part in (model.unet, model.text_encoder, model.vae)):
        model = model.to(dtype=settings.dtype)  # (a model loaded with ``settings.dtype`` needs no cast)
    if settings.mode == "fast":
        processors = model.unet.attn_processors
        if any(type(p) is AttnProcessor for p in processors.values()):
            model.unet.set_attn_processor({name: AttnProcessor2_0() if type(p) is AttnProcessor else p
                                           for name, p in processors.items()})
        if settings.compile_unet:
            model.unet.compile()
    return model


# --------------------------------------------------------------------------------------------------
# one entry point for every model
# --------------------------------------------------------------------------------------------------

def image_name(prompt_index: int, seed: int) -> str:
    """``{prompt_index}_{seed}.png``: the authors' naming of generated images."""
    return f"{prompt_index}_{seed}.png"


def default_guidance(model: Any) -> float:
    """3.0 for a pixel-space toy model, 7.5 for Stable Diffusion."""
    return TOY_GUIDANCE if isinstance(model, Components) and model.vae is None else SD_GUIDANCE


def check_method(method: str) -> str:
    """``method`` if it is one of ``SAMPLING_METHODS``, else ``ValueError`` saying which there are."""
    if method not in SAMPLING_METHODS:
        raise ValueError(f"unknown sampling method {method!r}: use 'plain' (the pipeline as it is) or "
                         "'attend-and-excite' (Chefer et al. 2023: latent updates toward each subject's attention)")
    return method


def generate_batch(model: Any, prompts: Sequence[str], seeds: Sequence[int], steps: int = 50,
                   guidance: float | None = None, height: int | None = None, width: int | None = None,
                   callback: Callable[..., Any] | None = None, method: str = "plain",
                   nouns: Sequence[Sequence[str]] | None = None, excite: ExciteSettings | None = None) -> np.ndarray:
    """Images ``[N, H, W, 3]`` uint8 for ``prompts[i]`` with ``seeds[i]``, in one batch.

    ``model``: toy ``Components`` (DDIM, ``callback(i, t)`` as in ``ddim_sample``) or a pipeline (its own
    scheduler; ``callback(i, t)`` is called from the pipeline's ``callback_on_step_end``). Latent-space
    ``Components`` are wrapped in a pipeline (``pipeline_from_components``).

    ``method="attend-and-excite"`` samples with Attend-and-Excite (``attend_excite``; ``excite`` its settings,
    default the authors'): the toy model with ``attend_excite.AttendExcite``, SD with diffusers'
    ``StableDiffusionAttendAndExcitePipeline`` on the same components. Its subjects are ``nouns[i]`` (e.g. a
    MultiGen prompt's categories), or, when ``nouns`` is None, the POS tagger's nouns of each prompt
    (``attend_excite.subject_nouns``).
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds; pass one seed per prompt")
    check_method(method)
    guidance = default_guidance(model) if guidance is None else guidance
    excited = method == "attend-and-excite"
    if excited:
        excite = excite or ExciteSettings()
        nouns = [subject_nouns(p) for p in prompts] if nouns is None else nouns
        if len(nouns) != len(prompts):
            raise ValueError(f"got {len(nouns)} noun lists for {len(prompts)} prompts")
    if isinstance(model, Components) and model.vae is None:
        size = model.unet.config.sample_size
        if (height or size) != size or (width or size) != size:
            raise ValueError(f"the toy model samples {size} x {size} images; got height={height}, width={width}")
        indices = subject_token_indices(prompts, nouns, model.tokenizer) if excited else None
        if excited and excite == ExciteSettings():  # the defaults: the maps at the toy's finest attention level
            excite = toy_excite_settings(size)
        return generate_toy(model, list(prompts), list(seeds), steps=steps, guidance=guidance,
                            batch_size=max(1, len(prompts)), progress=False, callback=callback,
                            excite=excite if excited else None, token_indices=indices)
    if isinstance(model, Components):
        model = pipeline_from_components(model)
    if not is_pipeline(model):
        raise TypeError(
            f"cannot sample from a {type(model).__name__}: pass toy Components (models.load_components) or a "
            "diffusers pipeline (sample.load_pipeline(base, unet_dir) for a fine-tuned UNet)"
        )
    model.set_progress_bar_config(disable=True)
    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    step_end = None
    if callback is not None:
        def step_end(pipe, i, t, kwargs):  # diffusers' callback_on_step_end signature
            callback(i, int(t))
            return {}
    if excited:
        if callback is not None:
            raise ValueError("a step callback is not supported with Attend-and-Excite on Stable Diffusion")
        indices = subject_token_indices(prompts, nouns, model.tokenizer)
        pipe = excite_pipeline(model)
        pipe.set_progress_bar_config(disable=True)
        output = pipe(prompt=list(prompts), token_indices=indices, height=height, width=width,
                      num_inference_steps=steps, guidance_scale=guidance, generator=generators, output_type="np",
                      **excite.pipeline_arguments(steps))
    else:
        output = model(prompt=list(prompts), height=height, width=width, num_inference_steps=steps,
                       guidance_scale=guidance, generator=generators, output_type="np",
                       callback_on_step_end=step_end)
    images = np.asarray(output.images, dtype=np.float32)  # [N, H, W, 3] in [0, 1]
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


class Generator:
    """``generator(prompts, seeds) -> [N, H, W, 3]`` uint8 images of one loaded model with fixed sampling
    settings, and ``provenance``: what makes its images (the weights' ``provenance.model_digest`` and the
    settings), which the folders that keep images check (``evaluate.multigen.run_multigen``, ``run_visor``)
    so that images of another model or setting are never reused."""

    def __init__(self, model: Any, steps: int = 50, guidance: float | None = None, height: int | None = None,
                 width: int | None = None, mode: str = "fast", method: str = "plain",
                 nouns_of: Callable[[str], Sequence[str]] | None = None, excite: ExciteSettings | None = None) -> None:
        if mode not in SAMPLING_MODES:
            raise ValueError(f"unknown sampling mode {mode!r}: use one of {', '.join(SAMPLING_MODES)}")
        self.model = load_model(model)
        self.steps, self.height, self.width, self.mode = steps, height, width, mode
        self.method = check_method(method)
        self.nouns_of = nouns_of or subject_nouns
        self.excite = (excite or ExciteSettings()) if method == "attend-and-excite" else None
        self.guidance = default_guidance(self.model) if guidance is None else guidance
        self._provenance: dict[str, Any] | None = None

    @property
    def provenance(self) -> dict[str, Any]:
        """``{"model": weights digest, "steps", "guidance", "height", "width", "mode"}``, hashed on first use
        only (a digest reads every weight: SD's take seconds, wasted when no folder keeps the images). The
        digest covers the weights' dtype; ``mode`` (``SAMPLING_MODES``) keeps the authors' batch-1 images apart
        from batched ones, which can differ in the last bits (batched kernels, SDPA vs eager attention)."""
        if self._provenance is None:
            self._provenance = {"model": model_digest(self.model), "steps": self.steps, "guidance": self.guidance,
                                "height": self.height, "width": self.width, "mode": self.mode}
            if self.excite is not None:  # (plain sampling keeps the record it always had: its folders stay valid)
                self._provenance.update(method=self.method, excite=json.loads(json.dumps(asdict(self.excite))))
        return self._provenance

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        nouns = [list(self.nouns_of(p)) for p in prompts] if self.excite is not None else None
        return generate_batch(self.model, prompts, seeds, steps=self.steps, guidance=self.guidance,
                              height=self.height, width=self.width, method=self.method, nouns=nouns,
                              excite=self.excite)


#: the names ``generate`` writes into an output folder (``provenance.claim_folder`` guards them)
IMAGE_PATTERNS = ("*_*.png", "prompts.json")


def _check_prompt_record(out_dir: Path, prompts: Sequence[str], overwrite: bool = False) -> bool:
    """``out_dir/prompts.json`` keeps the prompts behind the indices of the file names; a resumed run must match
    (``ValueError`` otherwise, before anything is changed), unless ``overwrite``: then the record is replaced and
    the images this project made for the old prompts are regenerated (their written tags name the old prompt).
    Returns whether the record must be (re)written."""
    record = out_dir / "prompts.json"
    if not record.is_file():
        return True
    try:
        old = json.loads(record.read_text()).get("prompts", [])
    except (ValueError, AttributeError) as error:
        raise ValueError(f"{record} is not the prompt record sample writes ({error}); write to another --out "
                         "folder") from error
    common = min(len(old), len(prompts))
    for index in range(common):
        if old[index] != prompts[index]:
            if overwrite:
                return True
            raise ValueError(
                f"{record} says image {index}_*.png is of prompt {old[index]!r}, but prompt {index} is now "
                f"{prompts[index]!r}; write to another --out folder, or pass --overwrite to replace this project's images "
                "of the old list"
            )
    return len(prompts) > len(old)


def _save_batch(folder: Path, batch: Sequence[tuple[int, int]], array: np.ndarray, prompts: Sequence[str]) -> None:
    """A batch's images under their names, all or none: each is written to a ``.partial.png`` file, then the
    folder's manifest records them, then they are renamed into place. A failed write (a full disk) removes the
    batch's partial files and records nothing, so the folder holds only whole images that its manifest names."""
    partials = []
    try:
        for (index, seed), image in zip(batch, array, strict=True):
            partials.append(folder / f"{index}_{seed}.partial.png")
            try:
                Image.fromarray(image).save(partials[-1])
            except OSError as error:  # name the image (a failed write() names no file)
                error.filename = error.filename or str(folder / image_name(index, seed))
                raise
        record_written(folder, {image_name(i, s): prompts[i] for i, s in batch})
    except BaseException:
        for partial in partials:
            partial.unlink(missing_ok=True)
        raise
    for (index, seed), partial in zip(batch, partials, strict=True):
        partial.replace(folder / image_name(index, seed))  # renames need no space: they cannot fail half-way


def generate(model: Any, prompts: Sequence[str], seeds: Sequence[int], steps: int = 50,
             guidance: float | None = None, out_dir: str | Path | None = None, batch_size: int = 8,
             height: int | None = None, width: int | None = None, progress: bool = True, mode: str = "fast",
             overwrite: bool = False, method: str = "plain", nouns_of: Callable[[str], Sequence[str]] | None = None
             ) -> list[Path] | np.ndarray:
    """One image per (prompt, seed): ``len(prompts) * len(seeds)`` images, prompt-major.

    Args:
        model: toy ``Components``, a diffusers pipeline (``load_pipeline``), or anything ``load_model`` takes
            (a preset name, folder or hub id).
        seeds: the seeds of every prompt (the paper: 10 images a prompt, seeds 0-9).
        guidance: classifier-free guidance scale; ``None``: 3.0 for the toy model, 7.5 for SD.
        out_dir: where to write ``{prompt_index}_{seed}.png``; existing files are skipped (resume) when the
            folder's ``manifest.json`` says the same weights and settings made them, and removed otherwise
            (``provenance.claim_folder``); ``prompts.json`` there records the prompt list (a resumed run with
            other prompts is refused, unless ``overwrite``: then this project's images of the old prompts are
            replaced). Files under those names that this project did not write are refused
            (``provenance.OutputFolderError``), never deleted or overwritten, ``overwrite`` included.
        batch_size: images a forward pass.
        mode: the sampling mode the model was prepared for (``prepare_for_sampling``); recorded in the folder's
            manifest, so images of the other mode are not reused.
        method: "plain" or "attend-and-excite" (``generate_batch``; recorded in the manifest too), with the
            subjects of each prompt from ``nouns_of(prompt)`` (default: the POS tagger's nouns).

    Returns:
        With ``out_dir``: the paths of all images in (prompt, seed) order. Without: ``[N, H, W, 3]`` uint8.
    """
    if isinstance(prompts, str):
        raise TypeError(f"prompts must be a list of prompts, not the string {prompts!r}")
    if not prompts or not seeds:
        raise ValueError(f"nothing to generate: {len(prompts)} prompts, {len(seeds)} seeds")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = Generator(model, steps, guidance, height, width, mode, method=method,  # its provenance keys out_dir
                          nouns_of=nouns_of)
    warn_long_prompts(prompts, getattr(generator.model, "tokenizer", None))  # as validate reports for captions
    jobs = [(index, int(seed)) for index in range(len(prompts)) for seed in seeds]
    todo = jobs
    folder = None
    if out_dir is not None:
        folder = Path(out_dir)
        # check everything before changing anything: the prompt record, then the folder (provenance's rule:
        # only files this project wrote are replaced; others under result names are refused)
        write_record = _check_prompt_record(folder, list(prompts), overwrite) if folder.is_dir() else True
        claim_folder(folder, generator.provenance, patterns=IMAGE_PATTERNS)
        if write_record or not (folder / "prompts.json").is_file():  # (another model's run: it was removed)
            (folder / "prompts.json").write_text(json.dumps({"prompts": list(prompts)}, indent=1))
            record_written(folder, {"prompts.json": None})
        written = written_files(folder) or {}
        # an image is reused only when this project wrote it for the same prompt (and the manifest's weights)
        todo = [job for job in jobs if not (folder / image_name(*job)).is_file()
                or written.get(image_name(*job), prompts[job[0]]) != prompts[job[0]]]
        if len(todo) < len(jobs):
            logger.info("%d of %d images already in %s: skipped", len(jobs) - len(todo), len(jobs), folder)
    images = []
    with tqdm(total=len(todo), desc="generating", unit="img", disable=not progress or not todo) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            array = generator([prompts[i] for i, _ in batch], [s for _, s in batch])
            if folder is None:
                images.append(array)
            else:
                _save_batch(folder, batch, array, prompts)
            bar.update(len(batch))
    if folder is None:
        return np.concatenate(images)
    return [folder / image_name(*job) for job in jobs]


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------

#: the most seeds (images a prompt) one ``--seeds`` may name: a typo such as 0-99999999 is refused, not run
MAX_SEEDS = 100_000
#: the largest seed: torch's generators and NumPy take 64-bit seeds, and a larger one fails only once the model is
#: loaded ("Overflow when unpacking long long")
MAX_SEED_VALUE = 2**63 - 1


def _check_seed_value(seed: int, text: str) -> int:
    """``seed``, refused (``ValueError`` naming it and ``text``) when it is larger than ``MAX_SEED_VALUE``."""
    if seed > MAX_SEED_VALUE:
        raise ValueError(f"seed {seed} in --seeds {text!r} is larger than the largest seed, {MAX_SEED_VALUE} "
                         "(2**63 - 1); use smaller seeds, e.g. 0-9")
    return seed


def parse_seeds(text: str) -> list[int]:
    """``"0-9"`` -> 0..9, ``"0,3,5"`` -> [0, 3, 5], ``"0-2,7"`` -> [0, 1, 2, 7] (duplicates dropped)."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if match:
            low, high = int(match.group(1)), _check_seed_value(int(match.group(2)), text)
            if high < low:
                raise ValueError(f"seed range {part!r} runs backwards; write LOW-HIGH, e.g. 0-9")
            if high - low + 1 + len(seeds) > MAX_SEEDS:
                raise ValueError(f"seeds {text!r} ask for more than {MAX_SEEDS:,} images a prompt; "
                                 "split the run into smaller ranges")
            seeds.extend(range(low, high + 1))
        elif re.fullmatch(r"\d+", part):
            seeds.append(_check_seed_value(int(part), text))
        else:
            raise ValueError(f"cannot read seeds {text!r}: use a range '0-9', a list '0,3,5', or both '0-2,7'")
    return list(dict.fromkeys(seeds))


#: suffixes of prompt files (compared in lower case: ``UP.JSON`` is a JSON file)
PROMPT_SUFFIXES = (".json", ".jsonl", ".txt", ".csv", ".tsv")
#: CSV columns that hold the prompt, by header name (lower case)
PROMPT_COLUMNS = ("text", "prompt", "caption")


def looks_like_path(text: str) -> bool:
    """Whether a ``--prompts`` value names a file rather than being the prompt: it ends in a prompt-file suffix
    (any case), or it has no spaces and holds a ``/`` or ``\\`` or ends in a file extension (``x.csv``,
    ``prompts.dat``). A prompt has words separated by spaces."""
    text = text.strip()
    if Path(text).suffix.lower() in PROMPT_SUFFIXES:
        return True
    if any(char.isspace() for char in text):
        return False
    return "/" in text or "\\" in text or re.fullmatch(r".+\.[A-Za-z][A-Za-z0-9]{0,4}", text) is not None


def _prompt_file_text(path: Path) -> str:
    """The UTF-8 text of a prompt file (a leading BOM dropped); ``InputFileError`` when it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputFileError(f"prompt file {path} is not UTF-8 text ({error.reason} at byte {error.start}); save it "
                             "as UTF-8") from None


def _csv_prompts(path: Path, text: str) -> list[str]:
    """Prompts of a CSV/TSV file: the column headed text/prompt/caption, or the one column of a headerless file."""
    import csv  # the only reader that needs it

    rows = [row for row in csv.reader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            if any(cell.strip() for cell in row)]
    if not rows:
        raise InputFileError(f"prompt file {path} holds no prompts; write one prompt a row")
    header = [cell.strip().lower() for cell in rows[0]]
    column = next((header.index(name) for name in PROMPT_COLUMNS if name in header), None)
    if column is not None:
        return [row[column].strip() for row in rows[1:] if len(row) > column and row[column].strip()]
    if all(len(row) == 1 for row in rows):
        return [row[0].strip() for row in rows]
    raise InputFileError(f"prompt file {path}: a table of {len(rows[0])} columns with no column headed "
                         f"{' / '.join(PROMPT_COLUMNS)}; name the prompt column in a header row, or write one prompt a "
                         "line in a .txt file")


def _file_format(path: Path, text: str) -> str:
    """``json``, ``jsonl``, ``csv`` or ``lines``: by suffix (any case), else by content (a ``[`` first: a JSON list;
    a ``{`` first: JSON Lines; else one prompt a line)."""
    suffix = path.suffix.lower()
    if suffix in (".json", ".jsonl"):
        return suffix[1:]
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix == ".txt":
        return "lines"
    start = text.lstrip()[:1]
    return "json" if start == "[" else "jsonl" if start == "{" else "lines"


def read_prompts(source: str | Path) -> list[str]:
    """Prompts from a file or the text itself.

    Files, by suffix (any case) or, for other names, by content: ``.json`` (or a file that starts with ``[``): a
    list of strings or of objects with ``"text"`` (the authors' MultiGen prompt sets); ``.jsonl`` (or a first
    ``{``): one object a line with ``"text"`` (the dataset's ``metadata.jsonl``); ``.csv`` / ``.tsv``: the column
    headed text, prompt or caption, or the only column; any other file: one prompt a line (blank lines skipped).
    A string that is not a file is the prompt, unless it looks like a path (``looks_like_path``).

    Raises:
        FileNotFoundError: a missing file (a path-like argument: a prompt-file suffix in any case, or no spaces
            and a ``/`` or a file extension).
        InputFileError: a folder, blank text, a file that is not UTF-8, malformed or that holds no prompts.
    """
    text = str(source)
    if not text.strip():
        raise InputFileError("the prompt is blank; pass a prompt text or a prompt file")
    path = Path(text)
    if path.is_dir():
        raise InputFileError(f"prompt file {text!r} is a folder; pass a .json/.jsonl/.txt file of prompts, or the "
                             "prompt itself")
    if not path.is_file():
        if looks_like_path(text):
            raise FileNotFoundError(f"prompt file {text!r} does not exist; check the path (a prompt given as "
                                    "text has words separated by spaces)")
        return [text]
    content = _prompt_file_text(path)
    kind = _file_format(path, content)
    if kind == "json":
        data = read_json_file(path, "prompt file")
        if not isinstance(data, list):
            raise InputFileError(f"{path}: expected a JSON list of prompts or of objects with 'text', got a JSON "
                                 f"{type(data).__name__}")
        items = [(f"entry {number}", item) for number, item in enumerate(data)]
    elif kind == "jsonl":
        items = [(f"line {number}", item) for number, item in read_json_lines(path, "prompt file")]
    else:
        lines = (_csv_prompts(path, content) if kind == "csv"
                 else [line.strip() for line in content.splitlines() if line.strip()])
        if not lines:
            raise InputFileError(f"prompt file {path} holds no prompts; write one prompt a line")
        return lines
    prompts = []
    for where, item in items:
        text = item if isinstance(item, str) else item.get("text") if isinstance(item, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise InputFileError(f"{path}: {where} has no 'text' prompt: {str(item)[:100]}; write a string or an "
                                 'object {"text": "a photo of ..."}')
        prompts.append(text)
    if not prompts:
        raise InputFileError(f"prompt file {path} holds no prompts")
    return prompts


def sampling_mode_arg(text: str) -> str:
    """argparse type of ``--mode``: one of ``SAMPLING_MODES``, with a message saying what each is."""
    if text not in SAMPLING_MODES:
        raise argparse.ArgumentTypeError(
            f"unknown sampling mode {text!r}: use 'fast' (batched, float16 on CUDA, SDPA attention) or 'authors' "
            "(batch 1, float32, as the authors' multigen/gen_image_dist.py)")
    return text


def cli(argv: list[str]) -> int:
    """``python -m tokencompose sample --model DIR_OR_PRESET --prompts FILE_OR_TEXT --seeds 0-9 --out DIR``."""
    parser = ArgumentParser(prog="tokencompose sample", description=cli.__doc__)
    parser.add_argument("--model", default="toy", help="toy, sd14, sd21, a hub id, a pipeline/toy folder, or a "
                        "fine-tuned UNet folder (with --base)")
    parser.add_argument("--base", default=None, help="the model a bare UNet folder was fine-tuned from")
    parser.add_argument("--prompts", required=True, help="a .json/.jsonl/.txt file of prompts, or one prompt")
    parser.add_argument("--seeds", default="0-9", help="seeds of every prompt: '0-9', '0,3,5' (default 0-9)")
    parser.add_argument("--out", required=True, type=output_folder,
                        help="folder for {prompt_index}_{seed}.png (resumable)")
    parser.add_argument("--steps", type=sampling_steps, default=50)
    parser.add_argument("--guidance", type=non_negative_float, default=None, help="default: 3.0 toy, 7.5 SD")
    parser.add_argument("--mode", type=sampling_mode_arg, default="fast", metavar="{fast,authors}",
                        help="fast (default): batched, float16 on CUDA (float32 on CPU), SDPA attention; authors: "
                        "batch 1, float32, as the authors' multigen/gen_image_dist.py (exact comparisons)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="images a batch (fast mode; default 16 on CUDA, 8 on CPU; the authors' mode: 1)")
    parser.add_argument("--height", type=positive_int, default=None)
    parser.add_argument("--width", type=positive_int, default=None)
    parser.add_argument("--device", type=device, default="auto")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="weights' dtype (fast mode; default float16 on CUDA, float32 on CPU; authors: float32)")
    parser.add_argument("--compile", action="store_true",
                        help="fast mode on CUDA: torch.compile the UNet (pays back over many batches)")
    parser.add_argument("--scheduler", choices=["default", "ddim"], default="default",
                        help="SD only: the base's own scheduler (the authors') or DDIM")
    parser.add_argument("--limit", type=positive_int, default=None, help="only the first N prompts")
    parser.add_argument("--method", choices=SAMPLING_METHODS, default="plain",
                        help="plain (default) or attend-and-excite (Chefer et al. 2023: latent updates toward each "
                        "subject's attention in the first half of the steps; subjects: the POS tagger's nouns of "
                        "each prompt, less frame words such as 'photo')")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace this project's images in --out made for another prompt list (files this "
                        "project did not write are never replaced)")
    args = parser.parse_args(argv)
    try:
        settings = sampling_settings(args.mode, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                                     compile_unet=args.compile)
    except ValueError as error:  # the authors' mode with --batch-size 8, --dtype float16 or --compile
        parser.error(str(error))
    try:  # the arguments first, then the model: a bad prompt file fails before any weights are read
        seeds = parse_seeds(args.seeds)
        prompts = read_prompts(args.prompts)[: args.limit]
        if Path(args.out).is_dir():  # the folder's files and prompt record, before any weights are read
            check_folder(args.out, IMAGE_PATTERNS)
            _check_prompt_record(Path(args.out), prompts, args.overwrite)
        model = load_model(args.model, base=args.base, dtype=settings.dtype, device=settings.device,
                           scheduler=args.scheduler)
        model = prepare_for_sampling(model, settings)
        with disk_full_is_named(args.out, kept=f"every image already in {args.out} is whole and recorded (a batch "
                                "is written all or none)", again="run the same command again: finished images "
                                "are skipped"):
            paths = generate(model, prompts, seeds, steps=args.steps, guidance=args.guidance, out_dir=args.out,
                             batch_size=settings.batch_size, height=args.height, width=args.width,
                             mode=settings.mode, overwrite=args.overwrite, method=args.method)
    except (ValueError, FileNotFoundError) as error:  # seeds, prompts, sizes, another run's prompts in --out
        if isinstance(error, UserError):
            raise
        raise UserError(f"tokencompose sample: {error}") from error
    logger.info("%d images in %s (%s mode: %s, batch %d)", len(paths), args.out, settings.mode,
                str(settings.dtype).removeprefix("torch."), settings.batch_size)
    return 0
