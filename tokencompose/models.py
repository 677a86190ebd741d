"""The models TokenCompose fine-tunes: Stable Diffusion's components, their bare architectures, the toy model.

- ``load_components("sd14" | "sd21" | "toy" | folder | hub id)``: tokenizer, text encoder, VAE (``None`` in
  pixel space), UNet and noise scheduler, ``from_pretrained`` of a hub id or a local folder in diffusers'
  layout. Without the weights: ``WeightsNotFoundError`` saying what was tried and how to get them.
- ``build_architecture("sd14" | "sd21", sample_size=...)``: the same UNet and CLIP text encoder built from
  their configs with random weights: the real layer layout and attention resolutions, offline.
- ``build_toy_model()``: the toy world's tiny text-to-image model in pixel space (32 x 32): a
  UNet2DConditionModel with three levels (32, 16, 8) and cross-attention at 16 (encoder and decoder) and in
  the middle block at 8, like SD's mid + decoder layers, fed by a tiny frozen CLIP text encoder through the
  real CLIP tokenizer. The 32 level has no attention: self-attention over 1024 pixels made a training step
  10x slower on a 2-core CPU (measured: 6.1 s vs 0.6 s for batch 32), so the supervised groups of the toy
  are mid_8 and up_16 (SD 1.4: mid_8, up_16, up_32, up_64).

Architecture facts (the published ``config.json`` of each model):
SD 1.4: UNet 320/640/1280/1280 channels, 2 layers a block, 8 heads, cross-attention dim 768 (CLIP ViT-L/14
text: 12 layers, width 768, quick-GELU), latents 4 x 64 x 64 at 512 px.
SD 2.1: head dims 5/10/20/20 (64 channels a head), linear projections, cross-attention dim 1024 (OpenCLIP
ViT-H text: 23 layers used, width 1024, GELU), upcast attention, latents 4 x 96 x 96 at 768 px, v-prediction.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import TOY_BASE_DIR
from .tokens import clip_tokenizer

logger = logging.getLogger(__name__)

HUB_IDS = {"sd14": "CompVis/stable-diffusion-v1-4", "sd21": "stabilityai/stable-diffusion-2-1"}


class WeightsNotFoundError(RuntimeError):
    """A model's weights could not be loaded from the hub or a folder."""


@dataclass
class Components:
    """What a training or sampling run needs; ``vae`` is ``None`` for pixel-space (toy) models."""

    tokenizer: Any
    text_encoder: Any
    vae: Any | None
    unet: Any
    scheduler: Any


def sd_unet_config(preset: str, sample_size: int | None = None) -> dict:
    """UNet2DConditionModel keyword arguments of SD 1.4 or SD 2.1 (see module docstring)."""
    common = dict(
        in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        norm_num_groups=32, flip_sin_to_cos=True, freq_shift=0,
    )
    if preset == "sd14":
        return dict(common, sample_size=sample_size or 64, cross_attention_dim=768, attention_head_dim=8)
    if preset == "sd21":
        return dict(common, sample_size=sample_size or 96, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                    use_linear_projection=True, upcast_attention=True)
    raise ValueError(f"no Stable Diffusion architecture for preset {preset!r}; use 'sd14' or 'sd21'")


def sd_text_config(preset: str) -> dict:
    """CLIPTextConfig keyword arguments of SD 1.4's or SD 2.1's text encoder."""
    ids = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    if preset == "sd14":
        return dict(ids, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                    hidden_act="quick_gelu", projection_dim=768)
    if preset == "sd21":
        return dict(ids, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                    hidden_act="gelu", projection_dim=1024)
    raise ValueError(f"no Stable Diffusion text encoder for preset {preset!r}; use 'sd14' or 'sd21'")


def build_architecture(preset: str, sample_size: int | None = None, text_encoder: bool = True,
                       seed: int = 0) -> tuple[Any, Any | None]:
    """SD's UNet (and text encoder) built from config with random weights: real shapes, no download.

    ``sample_size`` is the latent size (64 for SD 1.4 at 512 px); a small one (e.g. 16) keeps CPU tests fast
    while every layer and resolution ratio stays SD's.
    """
    from diffusers import UNet2DConditionModel  # lazy: seconds to import
    from transformers import CLIPTextConfig, CLIPTextModel  # lazy: seconds to import

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**sd_unet_config(preset, sample_size))
    encoder = CLIPTextModel(CLIPTextConfig(**sd_text_config(preset))) if text_encoder else None
    return unet, encoder


# --------------------------------------------------------------------------------------------------
# the toy model
# --------------------------------------------------------------------------------------------------

TOY_UNET = dict(
    sample_size=32, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32, attention_head_dim=(2, 4, 4), norm_num_groups=16,
)
TOY_TEXT = dict(
    vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
    max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, projection_dim=32,
)
#: cosine schedule, epsilon prediction, images in [0, 1] (black = 0); samplers clamp x0 to [0, 1]
TOY_SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
                     clip_sample=False)


#: how the text positions after the end token reach the UNet (the text encoder's config attribute
#: ``tokencompose_padding``): "encoded" = CLIP's outputs there, as in SD (each has seen the whole caption in
#: the causal encoder, and the first toy base read its caption from them); "zero" = zero vectors, which
#: carry nothing (keys and values 0 in a bias-free attention): the caption can only be read from its own
#: tokens, as Imagen masks its T5 padding.
PADDING_MODES = ("encoded", "zero")


def build_toy_model(sample_size: int = 32, seed: int = 0, padding: str = "encoded") -> Components:
    """A fresh (random) toy model: ~1 M-parameter pixel-space UNet + tiny frozen CLIP text encoder."""
    from diffusers import DDPMScheduler, UNet2DConditionModel  # lazy: seconds to import
    from transformers import CLIPTextConfig, CLIPTextModel  # lazy: seconds to import

    if padding not in PADDING_MODES:
        raise ValueError(f"unknown padding mode {padding!r}; choose one of {PADDING_MODES}")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**dict(TOY_UNET, sample_size=sample_size))
    text_encoder = CLIPTextModel(CLIPTextConfig(**TOY_TEXT, tokencompose_padding=padding))
    text_encoder.requires_grad_(False)
    return Components(clip_tokenizer(), text_encoder.eval(), None, unet, DDPMScheduler(**TOY_SCHEDULER))


def save_toy_model(components: Components, folder: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write a toy model in diffusers' layout (``unet/``, ``text_encoder/``, ``scheduler/``), safetensors only.

    Weights are stored in ``dtype`` (half by default, to keep the shipped model small) and loaded back in float32.
    """
    folder = Path(folder)
    unet = components.unet
    copy = type(unet).from_config(unet.config)
    copy.load_state_dict({k: v.to(dtype).to(torch.float32) for k, v in unet.state_dict().items()})
    torch.nn.Module.to(copy, dtype)  # (diffusers' own .to warns about keeping modules in float32: none here)
    copy.save_pretrained(folder / "unet", safe_serialization=True)
    components.text_encoder.to(dtype).save_pretrained(folder / "text_encoder", safe_serialization=True)
    components.text_encoder.to(torch.float32)
    components.scheduler.save_pretrained(folder / "scheduler")
    return folder


#: a model part's weight files, as diffusers and transformers write them (safetensors first, then pickles)
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin",
                "pytorch_model.bin")
#: the parts of a model folder: subfolder -> its config file (a VAE only in latent-space models)
MODEL_PARTS = {"unet": "config.json", "text_encoder": "config.json", "scheduler": "scheduler_config.json",
               "vae": "config.json"}


def _safetensors_fault(path: Path) -> str | None:
    """Why a ``.safetensors`` file cannot be read whole (too short, a bad header, truncated data), else ``None``."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length < 0 or length > size - 8:
            return f"is {size} bytes, cut short before the end of its safetensors header (truncated?)"
        try:
            header = json.loads(handle.read(length))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"),
                      default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "has no valid safetensors header: it is not a safetensors file, or it is damaged"
    if 8 + length + end > size:
        return f"is truncated: {size:,} bytes of the {8 + length + end:,} its header describes"
    return None


def _pickle_fault(path: Path) -> str | None:
    """Why a pickled ``.bin`` weight file is refused (``torch.load(weights_only=True)``: damaged, or it holds
    code or objects besides tensors), else ``None``."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure is the file's
        return (f"is a pickle file that torch.load(weights_only=True) refuses ({type(error).__name__}): it holds "
                "objects besides tensors, or it is damaged; save the weights as safetensors "
                "(save_pretrained(..., safe_serialization=True))")
    return None


def _part_fault(folder: Path, config_name: str) -> str | None:
    """What is wrong with one model part's folder (a UNet, a text encoder, a scheduler), naming the file."""
    if not (folder / config_name).is_file():
        return f"{folder / config_name} is missing"
    if config_name == "scheduler_config.json":
        return None
    weights = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        if any(folder.glob("*.index.json")):
            return None  # sharded weights: left to diffusers / transformers
        return f"{folder} holds no weights file (expected one of {', '.join(WEIGHT_FILES)})"
    fault = _safetensors_fault(weights[0]) if weights[0].suffix == ".safetensors" else _pickle_fault(weights[0])
    return f"{weights[0]} {fault}" if fault else None


def weights_fault(folder: str | Path) -> str | None:
    """The first thing wrong with the files of a local model folder, naming the file: a missing part, config or
    weights file, a truncated or damaged safetensors file, a pickle ``.bin`` that is not plain weights; ``None``
    when nothing is found (the error is then the loader's). ``folder``: a model folder (``unet/``,
    ``text_encoder/``, ``scheduler/``, maybe ``vae/``) or a bare UNet folder (``config.json``)."""
    folder = Path(folder)
    if (folder / "config.json").is_file() and not (folder / "unet").is_dir():
        return _part_fault(folder, "config.json")
    for part, config_name in MODEL_PARTS.items():
        if part == "vae" and not (folder / part).is_dir():
            continue
        if not (folder / part).is_dir():
            return f"{folder} has no {part}/ folder"
        fault = _part_fault(folder / part, config_name)
        if fault:
            return fault
    return None


def local_load_error(folder: str | Path, error: Exception, what: str = "model") -> WeightsNotFoundError:
    """The error for a local model folder that would not load: the file that is wrong (``weights_fault``), or the
    loader's first line, and what to do; no hub hint, since a local folder is read as it is."""
    fault = weights_fault(folder) or f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
    return WeightsNotFoundError(
        f"cannot load the {what} in folder {str(folder)!r}: {fault}. The folder is read as it is (the hub is not "
        "asked): copy it again whole, or re-save it (save_pretrained, or the command that wrote it)")


def looks_like_a_path(name: str) -> bool:
    """Whether ``name`` can only be a local path, not a hub id ``owner/name``: absolute, ``./``, ``../``, ``~``, or
    more than one ``/``."""
    return name.startswith(("/", ".", "~", "\\")) or name.count("/") > 1 or ":" in name[:3]


def missing_folder_error(name: str) -> WeightsNotFoundError:
    """A model named by a path that does not exist: said so, without the hub's hints."""
    return WeightsNotFoundError(f"no model folder {name!r}: it does not exist (from {Path.cwd()}); check the path, "
                                "or pass a preset (toy, sd14, sd21) or a hub id owner/name")


def _load_error(source: str, error: Exception) -> WeightsNotFoundError:
    if Path(source).is_dir():
        return local_load_error(source, error)
    if looks_like_a_path(source):
        return missing_folder_error(source)
    return WeightsNotFoundError(
        f"could not load model weights from {source!r} ({type(error).__name__}: {str(error).splitlines()[0][:200]}).\n"
        "Tried: a local folder of that name, then the Hugging Face hub. To get them:\n"
        f"  * online: accept the model licence on huggingface.co, run `huggingface-cli login`, and retry; or\n"
        f"  * download once (`huggingface-cli download {source} --local-dir DIR`) and pass DIR; or\n"
        "  * use preset 'toy', which runs offline on the shipped toy base model."
    )


def load_components(preset_or_path: str = "toy", dtype: torch.dtype = torch.float32) -> Components:
    """Tokenizer, text encoder, VAE, UNet and scheduler of a preset ("toy", "sd14", "sd21"), hub id or folder.

    A folder (or hub id) without ``vae/`` is a pixel-space model (the toy layout). Raises
    ``WeightsNotFoundError`` with instructions when the weights cannot be had.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel  # lazy: seconds to import
    from transformers import CLIPTextModel  # lazy: seconds to import

    source = {"toy": str(TOY_BASE_DIR), **HUB_IDS}.get(preset_or_path, preset_or_path)
    try:
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype)
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", torch_dtype=dtype)
        scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler")
    except Exception as error:  # noqa: BLE001 - every failure becomes one actionable message
        if preset_or_path == "toy":
            raise WeightsNotFoundError(
                f"the toy base model is missing from {source}; rebuild it with `python -m tokencompose pretrain-toy`"
            ) from error
        raise _load_error(source, error) from error
    vae = None
    if Path(source).is_dir() and not (Path(source) / "vae").is_dir():
        logger.info("%s has no vae/: a pixel-space model", source)
    else:
        try:
            vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype)
        except Exception as error:  # noqa: BLE001
            raise _load_error(source, error) from error
    text_encoder.requires_grad_(False)
    if vae is not None:
        vae.requires_grad_(False)
    return Components(clip_tokenizer(source), text_encoder.eval(), vae, unet, scheduler)


def encode_prompts(components: Components, prompts: list[str]) -> torch.Tensor:
    """Text embeddings ``[B, 77, dim]`` of ``prompts`` (padded to 77 tokens, truncated), no gradient."""
    tokenizer = components.tokenizer
    ids = tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    encoder = components.text_encoder
    with torch.no_grad():
        return encode_text(encoder, ids.to(encoder.device))


def encode_text(text_encoder, input_ids: torch.Tensor) -> torch.Tensor:
    """The UNet's context ``[B, 77, dim]`` for token ids ``[B, 77]``: the encoder's last hidden states, with
    the positions after the first end token set to 0 when the encoder's ``tokencompose_padding`` is "zero"
    (``PADDING_MODES``; SD's encoders have no such attribute and are used as they are)."""
    hidden = text_encoder(input_ids)[0]
    if getattr(text_encoder.config, "tokencompose_padding", "encoded") != "zero":
        return hidden
    first_end = (input_ids == text_encoder.config.eos_token_id).int().argmax(dim=1)  # [B]
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    return hidden * (positions[None] <= first_end[:, None]).unsqueeze(-1).to(hidden.dtype)
