"""Presets: one dataclass shared by the notebooks, the CLI and the tests.

``get_config("toy")`` is the offline default (the project's own tiny base model, CPU, minutes);
``get_config("sd14")`` is the paper's recipe for Stable Diffusion 1.4 (the authors' ``train.sh``:
lr 5e-6 constant, batch 1 x 4 accumulation, 24,000 steps (the paper's; ``train.sh`` sets 24,500 "to be safe",
and its last checkpoint, every 8,000 steps, is at 24,000), lambda = 1e-3, gamma = 5e-5, supervised
groups mid_8 + up_16/32/64, gradient checkpointing, a checkpoint every 8000 steps, at most 10); ``get_config("sd21")`` is SD 2.1 at 768 px with v-prediction, whose
attention resolutions are SD 1.4's times 1.5 (12/24/48/96).

Every notebook parameter maps to a field here; ``get_config(preset, **overrides)`` rejects unknown
fields and bad values with a message that names the field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

PRESETS = ("toy", "sd14", "sd21")

#: Where the shipped toy base models live (inside the package, so ``pip install`` carries them).
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
#: The toy base whose nouns carry their objects, as Stable Diffusion's do (issue 12; its card shows every gate
#: met): the default toy base.
TOY_NOUN_BASE_DIR = ASSETS_DIR / "toy_base_noun"
TOY_BASE_DIR = TOY_NOUN_BASE_DIR
#: The authors' reference files, carried in the repository (``data/reference/``, under the authors' licence:
#: its README): MultiGen's prompt sets and their COCO training metadata. Present in a clone, not in a wheel.
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "data" / "reference"
#: The first toy base, kept as the named negative control "caption read from the padding": it reads the caption
#: from the positions after the end token and its noun attention does not prefer its own object (its card).
TOY_CONTROL_BASE_DIR = ASSETS_DIR / "toy_base"


@dataclass(frozen=True)
class Config:
    """Everything a run needs: the recipe. Field names follow the authors' ``train.py`` flags where one exists.

    Saved with every checkpoint and as ``training_config.json``: it identifies a run. How this process runs it
    (data source, resume, logs) is ``train.TrainOptions``."""

    preset: str = "toy"
    #: hub id or local folder of the base model (diffusers layout); for ``toy`` the shipped base
    pretrained: str = str(TOY_BASE_DIR)
    resolution: int = 32
    #: ``epsilon`` (SD 1.4, toy) or ``v_prediction`` (SD 2.1)
    prediction_type: str = "epsilon"
    #: toy models work in pixel space; SD in the VAE's latent space (1/8 of the resolution)
    pixel_space: bool = True
    #: range of image values fed to the model: toy [0, 1] (black = 0 is easy), SD [-1, 1]
    value_range: tuple[float, float] = (0.0, 1.0)
    #: supervised cross-attention groups, keyed "<place>_<resolution>" (attention.py)
    groups: tuple[str, ...] = ("mid_8", "up_16")
    #: lambda (L_token) and gamma (L_pixel) of Eq. (5)
    token_weight: float = 1e-3
    pixel_weight: float = 5e-5
    #: the timesteps [low, high) whose samples carry the grounding terms (L_LDM stays on every sample);
    #: ``None``: the paper's whole range, every sample (the authors draw t uniformly in [0, 1000) for both)
    grounding_timesteps: tuple[int, int] | None = None
    learning_rate: float = 5e-6
    train_batch_size: int = 1
    gradient_accumulation_steps: int = 4
    max_train_steps: int = 24_000
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    use_8bit_adam: bool = False
    #: AdamW's betas, weight decay and epsilon (the authors' flags and values)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    #: optimizer steps of linear warm-up from 0, then constant (diffusers' ``constant_with_warmup``; the authors: 0)
    lr_warmup_steps: int = 0
    #: keep an exponential moving average of the UNet and ship it (diffusers' ``EMAModel``)
    use_ema: bool = False
    #: the EMA's largest decay; ``EMAModel`` warms up to it as (1 + n) / (10 + n)
    ema_decay: float = 0.9999
    checkpointing_steps: int = 1_000
    checkpoints_total_limit: int = 2
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    seed: int = 0
    device: str = "auto"
    train_data_dir: str = ""
    output_dir: str = "outputs"

    def replace(self, **overrides) -> Config:
        """A copy with ``overrides`` applied and validated (unknown fields raise ``ValueError``)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; known fields: {sorted(known)}")
        new = dataclasses.replace(self, **overrides)
        new.validate()
        return new

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {self.prediction_type!r}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}")
        for name in ("resolution", "train_batch_size", "gradient_accumulation_steps", "max_train_steps",
                     "checkpointing_steps", "num_inference_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        window = self.grounding_timesteps
        if window is not None and not (
                isinstance(window, (tuple, list)) and len(window) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in window)
                and 0 <= window[0] < window[1]):
            raise ValueError(f"grounding_timesteps must be None (every timestep) or (low, high) integers with "
                             f"0 <= low < high, e.g. (600, 1000); got {window!r}")
        for name in ("token_weight", "pixel_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not isinstance(self.learning_rate, (int, float)) or not math.isfinite(self.learning_rate) \
                or not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate!r}")
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
        if not isinstance(self.adam_weight_decay, (int, float)) or not math.isfinite(self.adam_weight_decay) \
                or self.adam_weight_decay < 0:
            raise ValueError(f"adam_weight_decay must be a finite number >= 0, got {self.adam_weight_decay!r}")
        if not isinstance(self.adam_epsilon, (int, float)) or not math.isfinite(self.adam_epsilon) \
                or not self.adam_epsilon > 0:
            raise ValueError(f"adam_epsilon must be a finite number > 0, got {self.adam_epsilon!r}")
        if not isinstance(self.lr_warmup_steps, int) or self.lr_warmup_steps < 0:
            raise ValueError(f"lr_warmup_steps must be an integer >= 0, got {self.lr_warmup_steps!r}")
        if not isinstance(self.ema_decay, (int, float)) or not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay!r}")
        low, high = self.value_range
        if not low < high:
            raise ValueError(f"value_range must be (low, high) with low < high, got {self.value_range!r}")
        for group in self.groups:
            place, _, res = group.partition("_")
            if place not in ("down", "mid", "up") or not res.isdigit():
                raise ValueError(f"groups entries look like 'mid_8' or 'up_64', got {group!r}")


_PRESET_FIELDS: dict[str, dict] = {
    # the toy model is tiny and trains on fresh scenes: larger batches, a larger learning rate, few steps
    # lambda, gamma: the paper's 1e-3 / 5e-5 were tuned for SD's loss scale; for the toy they are set by the
    # ratio of each term to L_LDM at the start of fine-tuning, so that lambda L_token ~9% and gamma L_pixel ~3%
    # (measured on the default base, toy_base_noun: L_LDM 0.011, L_token 2.0 and L_pixel 0.68 summed over
    # mid_8 + up_16, ``ablation.loss_scales``; on the first base 0.014, 2.4, 0.8: the same ratios).
    "toy": dict(learning_rate=1e-4, train_batch_size=16, gradient_accumulation_steps=1, max_train_steps=300,
                checkpointing_steps=100, num_inference_steps=50, guidance_scale=3.0,
                token_weight=5e-4, pixel_weight=5e-4),
    "sd14": dict(
        preset="sd14", pretrained="CompVis/stable-diffusion-v1-4", resolution=512, pixel_space=False,
        value_range=(-1.0, 1.0), groups=("mid_8", "up_16", "up_32", "up_64"),
        gradient_checkpointing=True, checkpointing_steps=8000, checkpoints_total_limit=10,
    ),
    "sd21": dict(
        preset="sd21", pretrained="stabilityai/stable-diffusion-2-1", resolution=768, pixel_space=False,
        value_range=(-1.0, 1.0), prediction_type="v_prediction", groups=("mid_12", "up_24", "up_48", "up_96"),
        gradient_checkpointing=True, checkpointing_steps=8000, checkpoints_total_limit=10,
    ),
}


def get_config(preset: str = "toy", **overrides) -> Config:
    """The preset's config with ``overrides`` applied, e.g. ``get_config("sd14", mixed_precision="fp16")``."""
    if preset not in _PRESET_FIELDS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    return Config().replace(**_PRESET_FIELDS[preset]).replace(**overrides)


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"mps"`` when available, else ``"cpu"``; else unchanged."""
    if device != "auto":
        return device
    import torch  # lazy: the settings are read without torch (scripts/readme_results.py)

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
