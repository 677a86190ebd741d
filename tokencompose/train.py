r"""Fine-tuning a text-to-image UNet with TokenCompose's objective (paper Sec. 3.2, Eq. 5).

.. math::

    \mathcal{L} = \mathcal{L}_{LDM} + \lambda \mathcal{L}_{token} + \gamma \mathcal{L}_{pixel}

Usage::

    python -m tokencompose train --preset toy --toy-scenes --max-train-steps 500 --output-dir outputs/toy_tc
    python -m tokencompose train --preset sd14 --train-data-dir data/coco_gsam_img --output-dir outputs/sd14
    python -m tokencompose train --preset sd14 --profile t4 --train-data-dir ...      # 16 GB Colab T4
    accelerate launch -m tokencompose train --preset sd14 ...                         # several GPUs
    accelerate launch --multi_gpu --num_processes 2 -m tokencompose train --device cpu ...  # 2 CPU processes
    python -m tokencompose train ... --resume latest                                  # continue a run

or from Python / a notebook, with the batches the caller chooses (the loop knows no world)::

    config = get_config("toy", max_train_steps=200)
    train(config, TrainOptions(), batches=tokencompose.toy.world.scene_batches(config))   # toy scenes
    train(get_config("sd14", train_data_dir="data/coco_gsam_img"))                        # a dataset folder


One training step, as in the authors' ``train/src/train_token_compose.py`` (mlpc-ucsd/TokenCompose):
encode the image (VAE latents times ``scaling_factor`` = 0.18215 for SD 1.4, the image itself for the toy
model), sample Gaussian noise (no noise offset) and a timestep uniformly in [0, 1000), noise the latents
with the scheduler (Eq. 1), predict noise (SD 1.4, toy) or velocity (SD 2.1, ``scheduler.get_velocity``),
L_LDM = mean squared error in float32, read the recorded cross-attention maps, L_token and L_pixel of the
supervised groups (losses.py), total of Eq. (5), backward, clip the gradient norm to 1, AdamW step
(betas 0.9 / 0.999, weight decay 1e-2, eps 1e-8), constant learning rate (diffusers' scheduler,
``schedules.py``). The text encoder and the VAE are frozen; only the UNet trains. The authors' defaults (``train.sh``) are the ``sd14`` preset: lr 5e-6, batch
1 x 4 gradient accumulation, 24k optimizer steps (their script runs 24.5k "to be safe"), lambda 1e-3,
gamma 5e-5, groups mid_8 + up_16/32/64, gradient checkpointing, full float32 (no mixed precision).

Where this loop differs from the authors' script:

* batches larger than 1 (theirs asserts batch 1): nouns per sample vary, losses.py handles it;
* data order and noise depend only on (seed, optimizer step, micro-step, process), so a resumed run
  continues exactly (theirs reshuffles with the dataloader's RNG and skips batches);
* checkpoints are safetensors + JSON (no pickle), written to a temporary folder and renamed;
* optional mixed precision, 8-bit Adam and EMA (the authors' script has EMA and gradient checkpointing);
  with EMA the final ``unet/`` holds the EMA weights of diffusers' ``EMAModel`` (as its
  ``train_text_to_image.py``: decay ``min(ema_decay, (1 + n) / (10 + n))`` at the (n + 1)-th update).

SD 2.1: where we differ from the authors' code. Their public script cannot train SD 2.1 as written: for SD 2.1
``attn_utils.get_cross_attn_map_from_unet`` already multiplies the map resolutions by 1.5 (keys ``mid_12``,
``up_24``, ``up_48``, ``up_96``), and ``loss_utils.get_grounding_loss_by_layer`` multiplies the resolution it is
given by 1.5 again, while the loop passes the key's own number and looks the maps up under it: keys named after
SD 1.4's 8/16/32/64 are missing from the dictionary, and keys named 12/24/48/96 are reshaped to 18/36/72/144.
Our ``sd21`` preset supervises ``mid_12`` + ``up_24/48/96`` and resizes masks to each map's own size once
(``config.py``); that is our fix, not a setting of theirs.

Which GPU each profile needs (memory at batch 1). Measured (``benchmarks/results/gpu_train_step.md``, H200):
the UNet's training step alone, float32 AdamW + gradient checkpointing, peaks at 16.2 GiB allocated with
fp32 or bf16 autocast alike (weights 3.2 + gradients 3.2 + Adam states 6.4 GiB dominate); the grounding
losses add ~7% time and no measurable memory. Everything else below is an **estimate**:

| profile | settings | memory | runs on |
|---|---|---|---|
| ``toy`` | float32, CPU | < 1 GB RAM (estimate) | any CPU |
| ``sd14`` (authors') | float32, gradient checkpointing, AdamW | ~17 GB: 16.2 GiB measured for the UNet + VAE and text encoder in fp32 (~0.8 GB) + CUDA context | A100 40/80 GB, H100, RTX 3090/4090/A5000 24 GB |
| ``sd14 --profile t4`` | fp16 autocast, gradient checkpointing, 8-bit AdamW, no EMA | ~12 GB (estimate: 16.2 minus 4.8 GiB saved by 8-bit Adam states, + VAE/CLIP in fp16 + CUDA context) | Colab T4 16 GB, any 16 GB GPU |
| ``sd21`` | float32, gradient checkpointing, 768 px | ~18-20 GB (estimate: same parameter count, 2.25x the activations) | A100 40/80 GB, H100, 24 GB cards (tight) |
| ``sd21 --profile t4`` | as the ``t4`` row, 768 px | ~12-13 GB (estimate) | 16 GB GPU (tight) |

A T4 has no bfloat16: use fp16 there (the ``t4`` profile does). At batch 1 mixed precision saves little memory
(the optimizer state dominates) and bf16 autocast measured slower than float32 on an H200 (benchmark above).
``--use-ema`` adds a float32 copy of the UNet (3.4 GB). 8-bit Adam needs ``pip install bitsandbytes``.

Outputs in ``output_dir``: ``unet/`` (diffusers format: ``UNet2DConditionModel.from_pretrained(out,
subfolder="unet")``, or ``StableDiffusionPipeline.from_pretrained(base, unet=...)``), for pixel-space (toy)
models also ``text_encoder/`` and ``scheduler/`` so that ``models.load_components(out)`` loads it;
``checkpoints/checkpoint-<step>/``, ``log.csv`` (one row an optimizer step: step, ldm, token, pixel, total,
lr, seconds of that step), ``training_config.json``, and ``tensorboard/`` when TensorBoard is installed.
A non-finite loss stops the run (``NonFiniteLossError``) naming the step and the batch's captions; the last
good checkpoint is left as it was.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .attention import attach_recorder
from .checkpoints import ema_state, flatten_optimizer, load_ema, load_optimizer, publish
from .cli_args import (
    NOISE_LEVELS,
    ArgumentParser,
    UserError,
    device,
    disk_full_is_named,
    input_folder,
    non_negative_float,
    non_negative_int,
    output_folder,
    positive_float,
    positive_int,
    probability,
)
from .config import ASSETS_DIR, PRESETS, Config, get_config
from .data import DatasetBatches, DatasetError, TokenComposeDataset, seed_for
from .models import Components, load_components
from .objective import NonFiniteLossError, all_finite, compute_losses
from .provenance import check_outputs, record_written, remove_written, written_files
from .schedules import fine_tuning_ema, fine_tuning_schedule

logger = logging.getLogger(__name__)

#: columns of ``log.csv``
CSV_COLUMNS = ("step", "ldm", "token", "pixel", "total", "lr", "seconds")
CHECKPOINT_PREFIX = "checkpoint-"
#: the loss-spike guard (``TrainOptions.loss_spike_factor``): its window of recent steps, and the steps after which
#: their median is the running level (before that a step is judged against the largest loss since the start)
SPIKE_WINDOW, SPIKE_WARMUP = 50, 20
#: the factor by which a jump is recognised when the guard is off (``loss_spike_factor`` 0): a checkpoint written
#: after such a jump is never named "the last good checkpoint"
DEFAULT_SPIKE_FACTOR = 100.0

#: what a run trains on: called once as ``source(tokenizer, config, rank, world)``, it returns a callable
#: ``(step, micro) -> batch`` (a collated dict: ``data.collate``) that depends on its arguments only, so a resumed
#: run sees the batches it would have seen. ``dataset_batches`` reads a dataset folder; the toy world's
#: ``tokencompose.toy.world.scene_batches`` draws fresh scenes.
BatchSource = Callable[[Any, "Config", int, int], Callable[[int, int], dict]]
#: what a step minimises: ``objective(components, recorder, batch, config, generator) -> losses`` with at least
#: ``ldm``, ``token``, ``pixel`` and ``total`` (the one backpropagated). Default ``objective.compute_losses``
#: (Eq. 5); the toy world's own-sample fine-tune (``tokencompose.toy.own_samples``) adds terms on the model's
#: own samples. Extra entries are logged in the history (and TensorBoard) beside the columns of ``log.csv``.
Objective = Callable[[Components, Any, dict, "Config", torch.Generator], dict]

#: memory-lean settings, applied on top of a preset by ``--profile`` (see the module docstring's table)
PROFILES: dict[str, dict[str, Any]] = {
    "t4": dict(mixed_precision="fp16", gradient_checkpointing=True, use_8bit_adam=True, use_ema=False),
}


class RunFolderError(ValueError):
    """``output_dir`` holds another run (or only unreadable checkpoints): say how to continue or replace it."""


@dataclass(frozen=True)
class TrainOptions:
    """How this process runs a training: resume or overwrite, logs (the batches come from ``train``'s caller).

    What is trained (the recipe: model, losses, optimizer, schedule, EMA) is ``Config``, which every checkpoint
    and ``training_config.json`` record; these options are not part of a run's identity.
    """

    #: train on the good records of a dataset that fails validation (else it is refused)
    skip_bad: bool = False
    #: ``None`` (start afresh), ``"latest"`` (newest checkpoint of ``output_dir``, if any) or a checkpoint folder
    resume: str | None = None
    #: start afresh in an ``output_dir`` that holds another run's checkpoints, deleting them and its log
    #: (without it, such a folder is refused: a new run mixed into an old one's folder loses both)
    overwrite: bool = False
    #: the divergence guard's loss test: stop when a step's loss exceeds this factor times the median of the
    #: last ``SPIKE_WINDOW`` steps (from the second step on: before ``SPIKE_WARMUP`` steps, times the largest loss
    #: since the start); ``None`` or 0: only non-finite losses stop a run
    loss_spike_factor: float | None = 100.0
    #: write TensorBoard logs when ``torch.utils.tensorboard`` can be imported
    tensorboard: bool = True
    progress: bool = True

    def replace(self, **changes: Any) -> TrainOptions:
        return dataclasses.replace(self, **changes)


@dataclass
class TrainResult:
    """What a run returns: where things are and the loss history (one dict an optimizer step)."""

    output_dir: Path
    unet_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)
    final_step: int = 0
    resumed_from: Path | None = None
    checkpoints: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------------

def _model_input_size(config: Config) -> int:
    """Side of the UNet's input: the image for pixel-space models, the VAE latents (1/8) for SD."""
    return config.resolution if config.pixel_space else config.resolution // 8


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_output_is_not_an_input(config: Config) -> None:
    """``output_dir`` must not be, hold or lie inside the base model or the training data: a run writes its
    UNet and checkpoints there, and would overwrite what it reads (refused before anything is written)."""
    output = Path(config.output_dir).expanduser().resolve()
    if _inside(output, ASSETS_DIR.resolve()):
        raise ValueError(f"output_dir {config.output_dir!r} lies in the package's shipped models ({ASSETS_DIR}); "
                         "a fine-tune never writes there: choose another --output-dir")
    for name in ("pretrained", "train_data_dir"):
        value = getattr(config, name)
        if not value or not Path(value).expanduser().exists():
            continue  # a hub id, or no dataset
        source = Path(value).expanduser().resolve()
        if _inside(output, source) or _inside(source, output):
            raise ValueError(f"output_dir {config.output_dir!r} {'is' if output == source else 'overlaps'} "
                             f"{name} {value!r}: the run would write its UNet and checkpoints over what it reads; "
                             "choose another --output-dir")


def check_config(config: Config, options: TrainOptions, has_batches: bool = False) -> None:
    """Raise ``ValueError`` naming the first field of ``config`` / ``options`` a run cannot use
    (``has_batches``: the caller passes its own batches, so ``train_data_dir`` is not needed)."""
    config.validate()
    if not config.max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be > 0 (the authors: 1.0), got {config.max_grad_norm!r}")
    if not isinstance(config.checkpoints_total_limit, int) or config.checkpoints_total_limit < 1:
        raise ValueError(f"checkpoints_total_limit must be a positive integer, got {config.checkpoints_total_limit!r}")
    if config.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {config.device!r}; to pick one GPU set "
                         "CUDA_VISIBLE_DEVICES, for several use `accelerate launch`")
    if config.mixed_precision == "fp16" and (config.device == "cpu" or not torch.cuda.is_available()):
        raise ValueError("mixed_precision='fp16' needs a CUDA GPU; on CPU use 'no' (or 'bf16')")
    if not config.pixel_space and config.resolution % 8:
        raise ValueError(f"resolution must be a multiple of 8 for a latent (VAE) model, got {config.resolution}")
    _check_output_is_not_an_input(config)
    if not has_batches and not config.train_data_dir:
        raise ValueError("no training data: set train_data_dir (a dataset folder in the authors' format, see "
                         "data.py and `python -m tokencompose validate DIR`) or pass batches= (for the toy "
                         "world: tokencompose.toy.world.scene_batches(config); command line: --toy-scenes)")
    if not has_batches and not Path(config.train_data_dir).is_dir():
        raise ValueError(f"train_data_dir {config.train_data_dir!r} is not a folder; make one with "
                         "`python -m tokencompose toy-data` or `prepare`")
    size = _model_input_size(config)
    sizes = [size >> k for k in range(4) if size >> k >= 1]
    for group in config.groups:
        res = int(group.partition("_")[2])
        if res not in sizes:
            raise ValueError(
                f"group {group!r} does not exist at resolution {config.resolution}: the UNet's input is "
                f"{size}x{size}, so its attention maps are {'/'.join(map(str, sizes))}; choose groups among "
                f"those (e.g. 'mid_{sizes[-1]}', 'up_{sizes[min(1, len(sizes) - 1)]}')")
    if options.resume not in (None, "latest") and not (Path(options.resume) / "state.json").is_file():
        raise ValueError(f"resume={options.resume!r} is not a checkpoint folder (no state.json); pass 'latest' "
                         f"or a folder like {Path(config.output_dir) / 'checkpoints' / 'checkpoint-1000'}")


# --------------------------------------------------------------------------------------------------
# seeding: everything random depends on (seed, step, micro-step, process) only
# --------------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------------
# checkpoints (safetensors + JSON, written then renamed)
# --------------------------------------------------------------------------------------------------

#: what a run writes into ``output_dir`` (the output-folder rule guards these names)
RUN_FILES = ("unet", "unet.tmp", "text_encoder", "scheduler", "pretrain_settings.json", "training_config.json",
             "log.csv", "tensorboard", "checkpoints")
#: what shows that a run finished there
_FINISHED = ("unet", "training_config.json")


def earlier_run_files(output_dir: Path) -> list[str]:
    """``RUN_FILES`` present in a run folder an earlier version wrote (no written list, but a
    ``training_config.json`` that is a run's config): those count as this project's."""
    config = output_dir / "training_config.json"
    if written_files(output_dir) is not None or not config.is_file():
        return []
    try:
        saved = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(saved, dict) or not {"pretrained", "output_dir"} <= set(saved):
        return []
    return [name for name in RUN_FILES if os.path.lexists(output_dir / name)]


def check_run_folder(config: Config, options: TrainOptions) -> list[str]:
    """The output-folder rule for a run (``provenance.check_outputs``), before any model loads and changing
    nothing: files of unknown origin under ``RUN_FILES`` in ``output_dir`` are refused, naming them
    (``OutputFolderError``); an earlier run of this project there is continued only with ``options.resume`` from
    its checkpoints, and replaced only with ``options.overwrite`` (``RunFolderError`` otherwise), so a finished run
    whose checkpoints are gone is never overwritten by a new one. Returns this project's files there."""
    output_dir = Path(config.output_dir)
    ours = check_outputs(output_dir, RUN_FILES, what="a training run", also_ours=earlier_run_files(output_dir))
    if options.overwrite:
        return ours
    earlier = _checkpoint_dirs(output_dir)
    if options.resume is None and earlier:
        raise RunFolderError(
            f"{output_dir} holds another run's checkpoints ({', '.join(p.name for p in earlier[-3:])}); "
            "continue it with --resume latest, replace it with --overwrite, or choose another --output-dir")
    finished = [name for name in _FINISHED if name in ours]
    if finished and not earlier:
        raise RunFolderError(
            f"{output_dir} holds a finished run ({', '.join(finished)}) whose checkpoints are gone, so it cannot be "
            "resumed and a new run would overwrite it; replace it with --overwrite, or choose another --output-dir")
    return ours


def _checkpoint_dirs(output_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = output_dir / "checkpoints"
    found = []
    for path in folder.glob(f"{CHECKPOINT_PREFIX}*") if folder.is_dir() else []:
        suffix = path.name[len(CHECKPOINT_PREFIX):]
        if suffix.isdigit() and (path / "state.json").is_file():
            found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


def _save_checkpoint(output_dir: Path, step: int, unet, optimizer, ema, scaler, config: Config,
                     limit: int) -> Path:
    """Write ``checkpoints/checkpoint-<step>`` via a temporary folder, then drop the oldest beyond ``limit``.

    ``ema``: the run's ``EMAModel`` or None."""
    if not all_finite(unet.state_dict().values()) or (ema is not None and not all_finite(ema.shadow_params)):
        raise NonFiniteLossError(f"step {step}: refusing to write a checkpoint with non-finite weights",
                                 step=step, captions=[], checkpoint=None)
    final = output_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{step}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in unet.state_dict().items()}, tmp / "unet.safetensors")
        optimizer_tensors, optimizer_meta = flatten_optimizer(optimizer)
        save_file({k: v.cpu() for k, v in optimizer_tensors.items()}, tmp / "optimizer.safetensors")
        ema_meta = None
        if ema is not None:
            ema_tensors, ema_meta = ema_state(ema, [name for name, _ in unet.named_parameters()])
            save_file(ema_tensors, tmp / "ema.safetensors")
        state = {"step": step, "optimizer": optimizer_meta, "scaler": scaler.state_dict() if scaler else None,
                 "ema": ema_meta, "config": _config_dict(config)}
        (tmp / "state.json").write_text(json.dumps(state))
    except OSError as error:  # a full disk: the half-written folder goes, the checkpoints before it stay whole
        shutil.rmtree(tmp, ignore_errors=True)
        error.filename = error.filename or str(final)
        raise
    publish(tmp, final)
    for old in _checkpoint_dirs(output_dir)[:-limit]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _config_dict(config: Config) -> dict:
    data = dataclasses.asdict(config)
    return json.loads(json.dumps(data, default=str))


# --------------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------------

def _make_accelerator(config: Config):
    from accelerate import Accelerator  # lazy: 0.4 s, needed only once training starts
    from accelerate.state import AcceleratorState  # lazy: as above

    if int(os.environ.get("WORLD_SIZE", "1")) == 1 and AcceleratorState._shared_state:
        # one process (a notebook running several trainings): accelerate keeps its state per process and
        # refuses a second Accelerator with other settings; start it afresh (never under `accelerate launch`)
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=config.mixed_precision, cpu=config.device == "cpu")


def _make_optimizer(unet, config: Config) -> torch.optim.Optimizer:
    kwargs = dict(lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                  weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)
    if config.use_8bit_adam:
        try:
            import bitsandbytes  # lazy: optional, only with the t4 profile (8-bit Adam)
        except ImportError as error:
            raise ImportError("use_8bit_adam=True (--use-8bit-adam, profile 't4') needs bitsandbytes: "
                              "`pip install bitsandbytes` (CUDA GPUs), or turn 8-bit Adam off") from error
        return bitsandbytes.optim.AdamW8bit(unet.parameters(), **kwargs)
    return torch.optim.AdamW(unet.parameters(), **kwargs)


def _tensorboard(output_dir: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter  # lazy: optional (needs the tensorboard package)
    except ImportError:
        logger.info("TensorBoard is not installed (pip install tensorboard): logging to log.csv only")
        return None
    return SummaryWriter(str(output_dir / "tensorboard"))


def _open_csv(path: Path, start: int):
    """``log.csv`` for appending, keeping only the rows up to ``start`` (a resumed run rewrites the rest)."""
    rows = []
    if start > 0 and path.is_file():
        with open(path, newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= start]
    handle = open(path, "w", newline="")  # noqa: SIM115 - kept open for the run, closed in train()
    writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    handle.flush()
    return handle, writer


def _save_final(output_dir: Path, unet, ema, components: Components, config: Config) -> Path:
    """``output_dir/unet`` in diffusers format (the ``EMAModel``'s weights if any); text encoder + scheduler for
    pixel models."""
    if ema is not None:
        averaged = type(unet).from_config(unet.config)
        averaged.load_state_dict(unet.state_dict())  # buffers, if any, as trained
        ema.copy_to(averaged.parameters())
        unet = averaged
    target = output_dir / "unet"
    tmp = output_dir / "unet.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        unet.save_pretrained(tmp, safe_serialization=True)
    except OSError as error:  # a full disk: the half-written folder goes; the run's checkpoints stay whole
        shutil.rmtree(tmp, ignore_errors=True)
        error.filename = error.filename or str(target)
        raise
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    if components.vae is None:  # a pixel-space (toy) model: make the folder a whole loadable model
        components.text_encoder.save_pretrained(output_dir / "text_encoder", safe_serialization=True)
        components.scheduler.save_pretrained(output_dir / "scheduler")
        world = Path(config.pretrained) / "pretrain_settings.json"  # the toy world it lives in travels with it
        if world.is_file():
            shutil.copyfile(world, output_dir / "pretrain_settings.json")
    (output_dir / "training_config.json").write_text(json.dumps(_config_dict(config), indent=1))
    return target


def dataset_batches(tokenizer, config: Config, rank: int = 0, world: int = 1, skip_bad: bool = False
                    ) -> DatasetBatches:
    """The default ``BatchSource``: the validated dataset folder ``config.train_data_dir`` (``data.py``)."""
    dataset = TokenComposeDataset(config.train_data_dir, tokenizer, config.resolution, config.value_range,
                                  skip_bad=skip_bad)
    return DatasetBatches(dataset, config, rank, world)


def train(config: Config, options: TrainOptions | None = None, components: Components | None = None,
          on_step: Callable[[dict[str, float]], None] | None = None, batches: BatchSource | None = None,
          objective: Objective | None = None) -> TrainResult:
    """Fine-tune ``config.pretrained``'s UNet with Eq. (5); returns where the UNet is and the loss history.

    Args:
        config: the run (preset fields, see config.py); ``output_dir`` receives everything.
        options: how this process runs it (data source, resume, logs; ``TrainOptions``).
        components: already loaded models (tests, notebooks); default ``models.load_components(pretrained)``.
            The UNet is trained in place.
        on_step: called with each step's log row (e.g. a live plot in a notebook).
        batches: what the run trains on, a ``BatchSource`` called once with (tokenizer, config, rank, world);
            default ``dataset_batches`` (``config.train_data_dir``). The toy world's fresh scenes:
            ``tokencompose.toy.world.scene_batches(config)``; the loop itself knows no world.
        objective: what each micro-batch's step minimises (``Objective``); default Eq. (5)
            (``objective.compute_losses``).

    Raises:
        ValueError: a bad config / option value (message names the field).
        NonFiniteLossError: the loss became NaN or infinite (step and captions named; checkpoints intact).
    """
    options = options or TrainOptions()
    check_config(config, options, has_batches=batches is not None)
    ours = check_run_folder(config, options)  # before any model loads; nothing is changed by a refusal
    output_dir = Path(config.output_dir)
    accelerator = _make_accelerator(config)
    if components is None:
        components = load_components(config.pretrained)
    unet = components.unet
    steps_of_schedule = components.scheduler.config.num_train_timesteps
    if config.grounding_timesteps is not None and config.grounding_timesteps[0] >= steps_of_schedule:
        raise ValueError(f"grounding_timesteps {config.grounding_timesteps} starts at or after the schedule's "
                         f"{steps_of_schedule} timesteps (t in [0, {steps_of_schedule})): no sample would carry the "
                         "grounding terms")
    scheduler_prediction = components.scheduler.config.get("prediction_type", "epsilon")
    if scheduler_prediction != config.prediction_type:
        raise ValueError(f"prediction_type {config.prediction_type!r} does not match the base model's scheduler "
                         f"({scheduler_prediction!r} in {config.pretrained}); set prediction_type to match")
    if (components.vae is None) != config.pixel_space:
        raise ValueError(f"pixel_space={config.pixel_space} but the model {'has no' if components.vae is None else 'has a'}"
                         f" VAE; use the preset that matches {config.pretrained}")

    # data: the caller's source (a validated dataset folder by default); a pure function of (step, micro)
    rank, world = accelerator.process_index, accelerator.num_processes
    source = batches or functools.partial(dataset_batches, skip_bad=options.skip_bad)
    batch_at = source(components.tokenizer, config, rank, world)

    # models: frozen text encoder and VAE (in the mixed-precision dtype), trainable UNet in float32
    frozen_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision, torch.float32)
    components.text_encoder.requires_grad_(False).eval().to(accelerator.device, frozen_dtype)
    if components.vae is not None:
        components.vae.requires_grad_(False).eval().to(accelerator.device, frozen_dtype)
    unet.requires_grad_(True).train()
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    places = sorted({group.partition("_")[0] for group in config.groups})
    recorder = attach_recorder(unet, groups=places)

    optimizer = _make_optimizer(unet, config)
    ema = fine_tuning_ema(unet.parameters(), config.ema_decay) if config.use_ema else None

    # a new run never mixes into another run's folder (check_run_folder refused it without --overwrite)
    earlier = _checkpoint_dirs(output_dir)
    if options.resume is None and ours:
        if accelerator.is_main_process:
            logger.warning("starting afresh: removing the earlier run's checkpoints and log in %s", output_dir)
            record_written(output_dir, dict.fromkeys(ours))  # (an earlier version's run: listed as ours first)
            remove_written(output_dir, ["checkpoints", "log.csv"])
        accelerator.wait_for_everyone()
        earlier = []

    # resume: weights, optimizer, EMA and step from a checkpoint (before the log is opened); a checkpoint that
    # cannot be read (a corrupt newest one) falls back to the one before it, with a warning
    start, resumed_from, resume_state = 0, None, None
    if options.resume is not None:
        candidates = earlier if options.resume == "latest" else [Path(options.resume)]
        for candidate in reversed(candidates):
            try:
                state = json.loads((candidate / "state.json").read_text())
                weights = load_file(candidate / "unet.safetensors")
                ema_weights = load_file(candidate / "ema.safetensors") if (
                    ema is not None and (candidate / "ema.safetensors").is_file()) else None
                optimizer_tensors = load_file(candidate / "optimizer.safetensors")
                unet.load_state_dict(weights)
                if ema_weights is not None:  # EMAModel's counters; a checkpoint without them: its step
                    load_ema(ema, ema_weights, state.get("ema") or {"optimization_step": int(state["step"])},
                             [name for name, _ in unet.named_parameters()])
            except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is skipped, and said so
                reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
                if options.resume != "latest":
                    raise RunFolderError(
                        f"checkpoint {candidate} cannot be read ({reason}); pass another checkpoint folder, or "
                        "--resume latest to fall back to the newest readable checkpoint of --output-dir") from error
                logger.warning("checkpoint %s cannot be read (%s); trying the one before it", candidate, reason)
                continue
            resumed_from, resume_state = candidate, dict(state, optimizer_tensors=optimizer_tensors)
            start = int(state["step"])
            _warn_config_changes(state.get("config", {}), config)
            logger.info("resuming at step %d from %s", start, resumed_from)
            break
        else:
            if candidates:
                raise RunFolderError(f"no checkpoint of {output_dir} can be read ({', '.join(map(str, candidates))}); "
                                     "start afresh with --overwrite")
            logger.info("resume='latest' but %s has no checkpoint yet: starting afresh", output_dir / "checkpoints")

    # accelerate moves the UNet to its device, wraps it for several processes and mixed precision (autocast)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    base_unet = accelerator.unwrap_model(unet)
    step_components = dataclasses.replace(components, unet=unet)  # the forward goes through the wrapper
    if resume_state is not None:
        load_optimizer(optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer,
                        resume_state["optimizer_tensors"], resume_state["optimizer"])
        if accelerator.scaler is not None and resume_state.get("scaler"):
            accelerator.scaler.load_state_dict(resume_state["scaler"])
    if ema is not None:
        ema.to(accelerator.device)
    # the learning rate of each step (constant, after an optional warm-up), positioned at the resumed step
    lr_schedule = fine_tuning_schedule(optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer,
                                       config.learning_rate, config.lr_warmup_steps, start)

    result = TrainResult(output_dir=output_dir, unet_dir=output_dir / "unet", resumed_from=resumed_from,
                         final_step=start)
    main = accelerator.is_main_process
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        record_written(output_dir, dict.fromkeys(RUN_FILES))  # checked: absent or this project's
        csv_handle, csv_writer = _open_csv(output_dir / "log.csv", start)
        board = _tensorboard(output_dir, options.tensorboard)
    last_checkpoint = resumed_from

    def good_checkpoint(newest: int, last: Path | None, row: dict[str, float] | None = None) -> Path | None:
        """The checkpoint a guard names as good (``last_good_checkpoint``) when it stops at this step."""
        return last_good_checkpoint(output_dir, newest, last, [*result.history, *([row] if row else [])],
                                    options.loss_spike_factor)

    weight_norm: float | None = None  # of the UNet's weights after the previous step (divergence guard)
    start_norm = weight_norm_of(base_unet)  # of the weights this run starts from (the guard's other reference)
    accumulation = config.gradient_accumulation_steps
    bar = tqdm(range(start, config.max_train_steps), initial=start, total=config.max_train_steps, desc="train",
               disable=not (options.progress and accelerator.is_local_main_process))
    try:
        for step in bar:  # ``step`` optimizer steps are done; this one is number step + 1
            began = time.perf_counter()
            lr = lr_schedule.get_last_lr()[0]
            sums: dict[str, float] = {}
            for micro in range(accumulation):
                batch = batch_at(step, micro)
                generator = torch.Generator().manual_seed(seed_for(config.seed, step, micro, rank, 3))
                last = micro == accumulation - 1
                # gradients are averaged across processes only on the last micro-step
                with nullcontext() if last else accelerator.no_sync(unet):
                    losses = (objective or compute_losses)(step_components, recorder, batch, config, generator)
                    _stop_if_not_finite(losses, step + 1, micro, accumulation, batch,
                                        good_checkpoint(step, last_checkpoint), accelerator)
                    # backward the mean over the accumulated micro-batches
                    accelerator.backward(losses["total"] / accumulation)
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach()) / accumulation
            # clip the gradient norm, step, zero the gradients (the recorder was reset in compute_losses)
            accelerator.clip_grad_norm_(unet.parameters(), config.max_grad_norm)
            optimizer.step()
            lr_schedule.step()
            optimizer.zero_grad(set_to_none=True)
            # a finite loss can still leave exploded or non-finite weights (a huge learning rate): stop before
            # anything is saved
            weight_norm = _stop_if_weights_diverged(base_unet, step + 1, lr, good_checkpoint(step, last_checkpoint),
                                                    weight_norm, start_norm)
            if ema is not None:
                ema.step(base_unet.parameters())

            if world > 1:
                names = sorted(sums)
                reduced = accelerator.reduce(torch.tensor([sums[n] for n in names], device=accelerator.device),
                                             reduction="mean")
                sums = dict(zip(names, reduced.tolist(), strict=True))
            row = {"step": step + 1, **sums, "lr": lr, "seconds": time.perf_counter() - began}
            _stop_if_loss_spiked(row, result.history, options.loss_spike_factor,
                                 good_checkpoint(step - 1, last_checkpoint, row))
            result.history.append(row)
            result.final_step = step + 1
            if main:
                csv_writer.writerow({k: (f"{row[k]:.6g}" if k != "step" else row[k]) for k in CSV_COLUMNS})
                if board is not None:
                    for name, value in row.items():
                        if name != "step":
                            board.add_scalar(f"train/{name}", value, step + 1)
            bar.set_postfix(denoise=f"{sums['ldm']:.4f}", token=f"{sums['token']:.3f}", pixel=f"{sums['pixel']:.3f}")
            if on_step is not None:
                on_step(row)

            if (step + 1) % config.checkpointing_steps == 0 or step + 1 == config.max_train_steps:
                accelerator.wait_for_everyone()
                if main:
                    csv_handle.flush()
                    last_checkpoint = _save_checkpoint(output_dir, step + 1, base_unet, optimizer, ema,
                                                       accelerator.scaler, config, config.checkpoints_total_limit)
                    logger.info("saved %s", last_checkpoint)
        accelerator.wait_for_everyone()
        recorder.detach()  # the saved UNet carries the default attention processors
        recorder = None
        if main:
            result.unet_dir = _save_final(output_dir, base_unet, ema, components, config)
            result.checkpoints = _checkpoint_dirs(output_dir)
    finally:
        if recorder is not None:
            recorder.detach()
        if main:
            csv_handle.close()
            if board is not None:
                board.close()
        if config.gradient_checkpointing:
            base_unet.disable_gradient_checkpointing()
        base_unet.eval()
    return result


def spike_level(totals: Sequence[float]) -> tuple[float, str] | None:
    """The level a step's total loss is judged against, from the totals of the run's steps before it, and what it
    is: the median of the last ``SPIKE_WINDOW`` steps once there are ``SPIKE_WARMUP``; before that (no running
    level yet) the largest loss since the start, at the second step the starting loss itself. ``None`` at the
    first step."""
    if not totals:
        return None
    if len(totals) < SPIKE_WARMUP:
        return float(max(totals)), f"the largest loss of the {len(totals)} step(s) since the start"
    recent = list(totals[-SPIKE_WINDOW:])
    return float(np.median(recent)), f"the median of the last {len(recent)} steps"


def first_jump(history: Sequence[dict[str, float]], factor: float | None) -> int | None:
    """The first step of ``history`` whose total loss is more than ``factor`` (``DEFAULT_SPIKE_FACTOR`` when 0 or
    None) times ``spike_level`` of the steps before it; ``None`` when none jumped."""
    factor = factor or DEFAULT_SPIKE_FACTOR
    totals = [float(row["total"]) for row in history]
    for index, total in enumerate(totals):
        level = spike_level(totals[:index])
        if level is not None and total > factor * level[0]:
            return int(history[index]["step"])
    return None


def _checkpoint_step(path: Path) -> int | None:
    suffix = path.name[len(CHECKPOINT_PREFIX):]
    return int(suffix) if path.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit() else None


def last_good_checkpoint(output_dir: Path, newest: int, last: Path | None, history: Sequence[dict[str, float]],
                         factor: float | None) -> Path | None:
    """The checkpoint a guard names as good: the newest of ``output_dir``'s checkpoints and ``last`` (the last one
    written or resumed from) at step ``newest`` or before, and written before the weights of any jump of the loss
    in ``history`` (``first_jump``: the loss of step j is that of the weights after step j - 1, so a checkpoint of
    step j - 1 or later holds weights that jumped). ``None`` when there is no such checkpoint."""
    jump = first_jump(history, factor)
    limit = newest if jump is None else min(newest, jump - 2)
    candidates = [*_checkpoint_dirs(output_dir), *([last] if last is not None else [])]
    good = [(_checkpoint_step(c), c) for c in candidates if (_checkpoint_step(c) or limit + 1) <= limit]
    return max(good, key=lambda pair: pair[0])[1] if good else None


def _stop_if_loss_spiked(row: dict[str, float], history: list[dict[str, float]], factor: float | None,
                         checkpoint: Path | None) -> None:
    """The divergence guard's loss test: ``NonFiniteLossError`` when this step's total loss is more than ``factor``
    times ``spike_level`` of the steps before it, from the second step on (finite, but diverging: a loss going
    0.004 -> 313 at step 2 was saved and named 'the last good checkpoint' while the guard waited 20 steps). The
    weights that gave the jump are those of the step before, so ``checkpoint`` (``last_good_checkpoint``) is one
    written before them; nothing of this step is saved."""
    level = spike_level([h["total"] for h in history])
    if not factor or level is None or not row["total"] > factor * level[0]:
        return
    step = int(row["step"])
    where = (f"the last good checkpoint is {checkpoint} (resume from it with --resume {checkpoint})" if checkpoint
             else "no checkpoint before the jump was written")
    raise NonFiniteLossError(
        f"step {step}: the loss jumped to {row['total']:.4g}, {row['total'] / level[0]:.3g} times {level[1]} "
        f"({level[0]:.4g}; the guard stops above {factor:g}x, TrainOptions.loss_spike_factor / --loss-spike-factor, "
        f"0 turns it off); nothing of this step was saved; {where}. Lower the learning rate.",
        step=step, captions=[], checkpoint=checkpoint)


def _stop_if_not_finite(losses: dict[str, torch.Tensor], step: int, micro: int, accumulation: int, batch: dict,
                        checkpoint: Path | None, accelerator) -> None:
    finite = torch.tensor(float(torch.isfinite(losses["total"].detach()).item()), device=accelerator.device)
    if accelerator.num_processes > 1:  # every process stops together, or the others would hang
        finite = accelerator.reduce(finite, reduction="sum") / accelerator.num_processes
    if finite.item() == 1.0:
        return
    values = ", ".join(f"{name}={float(losses[name].detach()):.4g}" for name in ("ldm", "token", "pixel"))
    captions = list(batch["text"])
    where = f"the last good checkpoint is {checkpoint} (resume with --resume latest)" if checkpoint else \
        "no good checkpoint was written (none yet, or none from before the loss jumped)"
    raise NonFiniteLossError(
        f"step {step} (micro-batch {micro + 1} of {accumulation}): the loss is not finite ({values}) on the "
        f"batch with captions {captions}. Training stopped before this step changed any weight; {where}. "
        "Try a lower learning rate, bf16 instead of fp16, or check these images and masks.",
        step=step, captions=captions, checkpoint=checkpoint)


#: a step that multiplies the norm of all UNet weights by more than this has diverged (training moves it by
#: a fraction of a percent a step; a learning rate of 1e30 moves it by 1e30)
MAX_WEIGHT_GROWTH = 100.0
#: a run whose weights' norm drifts more than this many times from where the run started has diverged too, even
#: when no single step jumped (a learning rate of 1e4 grows the norm ~10x a step: finite, but far past any use; a
#: checkpoint of such weights would be "good" only in name, and resuming from it diverges again)
MAX_WEIGHT_DRIFT = 10.0


def weight_norm_of(module: torch.nn.Module) -> float:
    """The L2 norm of all of ``module``'s parameters together."""
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.detach().float())
                                                       for p in module.parameters()])))


def _stop_if_weights_diverged(unet, step: int, lr: float, checkpoint: Path | None, previous: float | None,
                              start: float | None = None) -> float:
    """The norm of the UNet's weights after this step; ``NonFiniteLossError`` (before anything is saved) when it
    is not finite, grew more than ``MAX_WEIGHT_GROWTH`` times in one step, or drifted more than
    ``MAX_WEIGHT_DRIFT`` times from ``start`` (the norm the run began with)."""
    norm = weight_norm_of(unet)
    if math.isfinite(norm) and (previous is None or norm <= MAX_WEIGHT_GROWTH * previous) and (
            start is None or norm <= MAX_WEIGHT_DRIFT * start):
        return norm
    where = f"the last good checkpoint is {checkpoint} (resume with --resume latest)" if checkpoint else \
        "no good checkpoint was written (none yet, or none from before the loss jumped)"
    raise NonFiniteLossError(
        f"step {step}: the UNet's weights diverged in the optimizer step (learning rate {lr:g}; weight norm "
        f"{previous if previous is not None else float('nan'):.4g} -> {norm:.4g}, "
        f"{norm / start if start else float('nan'):.3g} times the run's start); nothing of this step was saved; "
        f"{where}. Lower the learning rate.", step=step, captions=[], checkpoint=checkpoint)


def _warn_config_changes(saved: dict, config: Config) -> None:
    """Log the fields that differ from the checkpoint's run (a resumed run is exact only if none do)."""
    current = _config_dict(config)
    ignored = {"max_train_steps", "output_dir", "checkpointing_steps", "checkpoints_total_limit", "device"}
    for name, value in saved.items():
        if name not in ignored and current.get(name) != value:
            logger.warning("resuming with %s=%r, the checkpoint's run had %r", name, current.get(name), value)


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def timestep_window(text: str) -> tuple[int, int]:
    """``--grounding-timesteps LOW:HIGH`` -> ``(LOW, HIGH)``: whole numbers with 0 <= LOW < HIGH."""
    low, sep, high = text.partition(":")
    try:
        window = (int(low), int(high))
    except ValueError:
        window = None
    if not sep or window is None or not 0 <= window[0] < window[1]:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH, whole numbers with 0 <= LOW < HIGH (e.g. 600:1000 "
                                         f"for the high-noise steps of a 1000-step schedule), got {text!r}")
    if window[1] > NOISE_LEVELS:  # a window past the schedule would ground fewer steps than it says, or none
        raise argparse.ArgumentTypeError(f"HIGH must be at most {NOISE_LEVELS}, the timesteps of the schedule, got "
                                         f"{text!r}; e.g. 600:1000 for the high-noise steps")
    return window


def spike_factor(text: str) -> float:
    """``--loss-spike-factor``: 0 (off) or a factor above 1 (a loss no larger than the level is no jump)."""
    value = non_negative_float(text)
    if 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or larger than 1 (a jump is a loss this many times the "
                                         f"usual level; at {text} every ordinary step would stop the run), got "
                                         f"{text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``train`` command's parser: a flag for every ``Config`` field a run uses, and ``TrainOptions``."""
    parser = ArgumentParser(prog="tokencompose train", description="Fine-tune a UNet with L_LDM + lambda L_token + "
                                     "gamma L_pixel (TokenCompose, Eq. 5).")
    parser.add_argument("--preset", choices=PRESETS, default="toy")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="memory-lean settings: t4 = fp16 + gradient "
                        "checkpointing + 8-bit Adam (16 GB GPUs)")
    for name, kind in (("pretrained", str), ("resolution", positive_int), ("learning_rate", positive_float),
                       ("train_batch_size", positive_int), ("gradient_accumulation_steps", positive_int),
                       ("max_train_steps", positive_int), ("max_grad_norm", positive_float),
                       ("checkpointing_steps", positive_int), ("checkpoints_total_limit", positive_int),
                       ("seed", non_negative_int), ("train_data_dir", input_folder), ("output_dir", output_folder),
                       ("adam_beta1", probability), ("adam_beta2", probability),
                       ("adam_weight_decay", non_negative_float), ("adam_epsilon", positive_float),
                       ("lr_warmup_steps", non_negative_int), ("ema_decay", probability)):
        parser.add_argument(_flag(name), type=kind, default=None, help=f"Config.{name} (default: the preset's)")
    parser.add_argument("--token-weight", "--lambda", dest="token_weight", type=non_negative_float,
                        help="lambda of Eq. (5)")
    parser.add_argument("--pixel-weight", "--gamma", dest="pixel_weight", type=non_negative_float,
                        help="gamma of Eq. (5)")
    parser.add_argument("--groups", nargs="+", help="supervised groups, e.g. mid_8 up_16 up_32 up_64")
    parser.add_argument("--grounding-timesteps", type=timestep_window, metavar="LOW:HIGH",
                        help="put L_token and L_pixel on the samples with LOW <= t < HIGH only, e.g. 600:1000 (high "
                             "noise); L_LDM stays on every sample (default: every timestep, as the paper)")
    parser.add_argument("--prediction-type", choices=("epsilon", "v_prediction"))
    parser.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"))
    parser.add_argument("--device", type=device, choices=("auto", "cpu", "cuda"))
    for name in ("gradient_checkpointing", "use_8bit_adam", "use_ema"):
        parser.add_argument(_flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--skip-bad", action="store_true", help="skip dataset records that fail validation")
    parser.add_argument("--resume", nargs="?", const="latest", default=None,
                        help="continue from the newest checkpoint of --output-dir, or from the folder given")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an --output-dir that holds an earlier run of this project's, replacing "
                             "it (files this project did not write are never replaced)")
    parser.add_argument("--loss-spike-factor", type=spike_factor, default=100.0,
                        help="stop when a step's loss exceeds this many times the median of the last steps "
                             "(default 100; 0: only non-finite losses stop a run)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def config_from_args(args: argparse.Namespace) -> tuple[Config, TrainOptions]:
    """The ``Config`` and ``TrainOptions`` a parsed command line asks for (preset, then profile, then flags)."""
    overrides = dict(PROFILES[args.profile]) if args.profile else {}
    for name in (f.name for f in dataclasses.fields(Config)):
        value = getattr(args, name, None)
        if value is not None and name != "preset":
            overrides[name] = tuple(value) if name == "groups" else value
    config = get_config(args.preset, **overrides)
    options = TrainOptions(skip_bad=args.skip_bad, resume=args.resume, overwrite=args.overwrite,
                           progress=not args.no_progress, loss_spike_factor=args.loss_spike_factor)
    return config, options


def _kept_checkpoint(output_dir: Path) -> str:
    """What a full disk leaves of a run in ``output_dir``: its latest whole checkpoint, if any (for the message)."""
    found = _checkpoint_dirs(output_dir) if output_dir.is_dir() else []
    if not found:
        return "no checkpoint had been written yet, so the run starts again from its first step"
    return f"nothing else was lost: the run's checkpoints are whole, the latest is {found[-1]}"


def run_from_args(args: argparse.Namespace,
                  batches_for: Callable[[Config], BatchSource | None] | None = None,
                  objective_for: Callable[[Config], Objective | None] | None = None) -> int:
    """The ``train`` command on parsed flags (``build_parser``): fine-tune, print where the UNet is.

    ``batches_for(config)``: the data source the command line chose for the run's config (``train
    --toy-scenes``: the toy world's scenes, ``__main__.train_cli``); ``None`` or no function: the dataset
    folder ``--train-data-dir``. ``objective_for(config)``: the objective it chose (``train --own-samples``);
    ``None``: Eq. (5).
    Exit status 2 with one line on stderr (``__main__.main``) for a bad flag, a setting the run cannot use, a
    dataset that fails validation, another run's folder, missing weights or a run that diverged (the divergence
    guard names the last good checkpoint).
    """
    try:
        config, options = config_from_args(args)
        with disk_full_is_named(config.output_dir, kept=lambda: _kept_checkpoint(Path(config.output_dir)),
                                again="run the same command with --resume latest"):
            result = train(config, options, batches=batches_for(config) if batches_for else None,
                           objective=objective_for(config) if objective_for else None)
    except (ValueError, ImportError) as error:  # check_config, the base model's settings, an optional package
        if isinstance(error, (DatasetError, RunFolderError)):
            raise
        raise UserError(f"tokencompose train: {error}") from error
    last = result.history[-1] if result.history else {}
    summary = ", ".join(f"{k}={last[k]:.4g}" for k in ("ldm", "token", "pixel") if k in last)
    print(f"trained to step {result.final_step} ({summary}); UNet in {result.unet_dir}")
    return 0
