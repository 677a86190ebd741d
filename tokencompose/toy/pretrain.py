"""Pre-training the toy base model: L_LDM only, on toy scenes of mostly one or two objects.

Like Stable Diffusion, the base should render single objects well and several badly, so that fine-tuning
with and without token-level supervision has something to improve. Pairs in ``toy.world.EXCLUDED_PAIRS``
never appear together (the "uncommon combinations" evaluated later). Usage::

    python -m tokencompose pretrain-toy --steps 10000 --decay-start 6000 --out outputs/toy_base   # the first base's recipe

The default toy base (``config.TOY_BASE_DIR``, ``tokencompose/assets/toy_base_noun``) took three runs; its model card
lists their commands. A run writes to ``outputs/toy_base`` unless ``--out`` says otherwise: the shipped bases are
replaced only by hand, with their cards.

The denoising objective (paper Eq. 1, Ho et al. 2020): ``L_LDM = E ||eps - eps_theta(x_t, t, c)||^2`` with
``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps``; here x_0 is the image itself (pixel space, values in [0, 1]).
Captions are dropped (replaced by "") 10% of the time so classifier-free guidance works. The shipped weights
are the exponential moving average (EMA) of the trained ones.
"""

from __future__ import annotations

import csv
import json
import logging
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..checkpoints import flatten_optimizer, load_optimizer, publish
from ..cli_args import (
    ArgumentParser,
    InputFileError,
    device,
    input_folder,
    non_negative_int,
    output_folder,
    positive_float,
    positive_int,
    sampling_steps,
)
from ..config import TOY_BASE_DIR
from ..models import PADDING_MODES, Components, build_toy_model, encode_prompts, encode_text, save_toy_model
from ..objective import NonFiniteLossError, all_finite
from ..provenance import OutputFolderError, check_outputs, record_written, remove_written, weights_digest
from ..schedules import cooldown_learning_rate, update_average
from .probes import base_report, gates_markdown
from .world import COLOUR_MODES, EXCLUDED_PAIRS, TOY_CATEGORIES, ToyScenes

logger = logging.getLogger(__name__)


@dataclass
class PretrainSettings:
    """Every knob of the toy pre-training (written into the model card)."""

    steps: int = 10000
    batch_size: int = 32
    learning_rate: float = 1e-3
    #: the learning rate is constant until this step, then falls linearly to 0 at ``steps`` (a cooldown)
    decay_start: int = 6000
    ema_decay: float = 0.999
    seed: int = 0
    #: probabilities of 1, 2, 3, 4 objects in a training scene
    object_weights: tuple[float, ...] = (0.5, 0.35, 0.1, 0.05)
    caption_dropout: float = 0.1
    size: int = 32
    checkpoint_every: int = 500
    #: "identity" (each category its own colour: the first base) or "attribute" (random colours named in the
    #: caption, ``toy.world.COLOUR_MODES``)
    colour_mode: str = "identity"
    #: what the UNet sees after the caption's end token: "encoded" (CLIP's outputs, as SD) or "zero"
    #: (``models.PADDING_MODES``)
    padding: str = "encoded"
    #: "frozen": the random text encoder stays as built (the first base); "joint": it trains with the UNet
    #: on L_LDM, as GLIDE trained its text transformer (Nichol et al. 2022), then is frozen like SD's CLIP
    text_encoder: str = "frozen"
    #: L_LDM's weight per timestep (``LOSS_WEIGHTINGS``): "uniform" (plain epsilon MSE, the first base) or
    #: "min-snr" (Hang et al., ICCV 2023: min(SNR_t, gamma) / SNR_t, which lowers the easy low-noise steps so
    #: that the noisy steps, where the caption must decide what is drawn, count more)
    loss_weighting: str = "uniform"
    snr_gamma: float = 5.0
    #: a curriculum: before this step every training scene holds one object (a noun and its shape with nothing
    #: to confuse them), from it on ``object_weights``; 0 = none (the first bases)
    single_object_until: int = 0


LOSS_WEIGHTINGS = ("uniform", "min-snr")


def timestep_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, weighting: str, gamma: float = 5.0
                     ) -> torch.Tensor:
    """Per-sample weights [B] of the epsilon MSE at timesteps ``t``: 1 ("uniform"), or min(SNR, gamma) / SNR
    ("min-snr"; SNR_t = abar_t / (1 - abar_t)), which is 1 for the noisy steps (SNR <= gamma) and smaller for
    the nearly clean ones."""
    if weighting == "uniform":
        return torch.ones(t.shape, dtype=torch.float32)
    if weighting != "min-snr":
        raise ValueError(f"unknown loss weighting {weighting!r}; choose one of {LOSS_WEIGHTINGS}")
    abar = alphas_cumprod.to(t.device)[t].float()
    snr = abar / (1 - abar)
    return torch.clamp(snr, max=gamma) / snr


def learning_rate_at(step: int, settings: PretrainSettings) -> float:
    """Constant ``learning_rate`` up to ``decay_start``, then a linear cooldown to 0 at ``steps``
    (``schedules.cooldown_learning_rate``)."""
    return cooldown_learning_rate(step, settings.learning_rate, settings.decay_start, settings.steps)


class _EmbeddingCache:
    """Text embeddings of captions, computed once each (the text encoder is frozen)."""

    def __init__(self, components: Components) -> None:
        self.components = components
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = sorted({c for c in captions if c not in self.cache})
        if missing:
            for caption, embedding in zip(missing, encode_prompts(self.components, missing), strict=True):
                self.cache[caption] = embedding
        return torch.stack([self.cache[c] for c in captions])


def _save_checkpoint(folder: Path, unet, ema: dict[str, torch.Tensor], optimizer, step: int,
                     seconds: float = 0.0) -> None:
    """Write then rename: a crash never leaves a half-written checkpoint."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, tmp / "unet.safetensors")
    save_file({k: v.contiguous() for k, v in ema.items()}, tmp / "ema.safetensors")
    optim_tensors, optim_meta = flatten_optimizer(optimizer)
    save_file(optim_tensors, tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps({"step": step, "seconds": seconds, "optimizer": optim_meta}))
    publish(tmp, folder)


def trained_modules(components: Components, settings: PretrainSettings) -> torch.nn.Module:
    """What pre-training updates, checkpoints and averages (EMA): the UNet, and with a jointly trained text
    encoder both (state-dict keys ``unet.*`` / ``text_encoder.*``)."""
    if settings.text_encoder == "joint":
        return torch.nn.ModuleDict({"unet": components.unet, "text_encoder": components.text_encoder})
    return components.unet


#: what a pre-training writes into its model folder (``--out``) and its work folder (``--work-dir``)
MODEL_FILES = ("unet", "text_encoder", "scheduler", "pretrain_settings.json", "gates.json", "README.md")
WORK_FILES = ("checkpoint", "checkpoint.tmp", "log.csv", "run_settings.json")
#: settings a resumed run may change: how long it runs, how often it saves
_RESUMABLE_CHANGES = ("steps", "checkpoint_every")


def check_pretrain_folders(out_dir: str | Path, work_dir: str | Path, settings: PretrainSettings, resume: bool = True,
                           overwrite: bool = False) -> bool:
    """The output-folder rule for a pre-training (``provenance.check_outputs``), changing nothing: files of
    unknown origin under the names of ``MODEL_FILES`` in ``out_dir`` or ``WORK_FILES`` in ``work_dir`` are
    refused; a model this project wrote in ``out_dir`` is replaced only with ``overwrite``; a checkpoint in
    ``work_dir`` is resumed only when its recorded settings are this run's (but for ``steps``), else refused,
    naming the settings that differ; started afresh (``resume=False``) only with ``overwrite``.
    Returns whether the run resumes the checkpoint. ``provenance.OutputFolderError`` otherwise."""
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    check_outputs(out_dir, MODEL_FILES, replace=overwrite, what="a toy model")
    ours = check_outputs(work_dir, WORK_FILES, what="a pre-training's checkpoint and log")
    if "checkpoint" not in ours:
        return False
    if not resume:
        if not overwrite:
            raise OutputFolderError(f"{work_dir} holds the checkpoint of an earlier pre-training; --no-resume would "
                                    "replace it: pass --overwrite as well, or choose another --work-dir")
        return False
    recorded = _read_settings(work_dir / "run_settings.json")
    if recorded is None:
        raise OutputFolderError(f"{work_dir / 'checkpoint'} has no record of the settings that made it "
                                f"({work_dir / 'run_settings.json'} is missing or unreadable), so resuming it could "
                                "continue another run; choose another --work-dir, or start afresh with --no-resume "
                                "--overwrite")
    current = json.loads(json.dumps(asdict(settings)))
    differ = [f"{name} {recorded.get(name)!r} -> {current.get(name)!r}" for name in sorted(set(recorded) | set(current))
              if name not in _RESUMABLE_CHANGES and recorded.get(name) != current.get(name)]
    if differ:
        raise OutputFolderError(f"{work_dir} holds the checkpoint of a pre-training with other settings "
                                f"({', '.join(differ)}); resuming it would continue that run under this run's name. "
                                "Pass the same settings, choose another --work-dir, or start afresh with --no-resume "
                                "--overwrite")
    return True


def _read_settings(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pretrain_toy(out_dir: str | Path = "outputs/toy_base", settings: PretrainSettings | None = None,
                 work_dir: str | Path = "outputs/pretrain_toy", resume: bool = True,
                 device: str = "cpu", init_from: str | Path | None = None,
                 new_world: bool = False, overwrite: bool = False) -> tuple[Components, float]:
    """Train the toy base model, saved in diffusers layout to ``out_dir``.

    ``init_from``: a toy model folder whose ``pretrain_settings.json`` has this run's settings (a model that
    ``export_checkpoint`` or an earlier, shorter run wrote, e.g. a base shipped before its gates were met):
    training continues from its weights at its step (``exported_step``, else ``steps``), with the EMA
    starting at those weights and a fresh optimizer: close to, not bit-identical with, an uninterrupted run.
    Ignored when ``work_dir`` holds a checkpoint (that resumes exactly). ``new_world``: ``init_from`` was
    trained in another world (colours, object counts, batch, seed; the architecture must match): its weights
    start a new run at step 0 of ``settings`` (a warm start, e.g. a probe of whether a base's route carries
    over to another caption world).

    The output-folder rule first (``check_pretrain_folders``): a model or checkpoint this project did not write
    is never replaced; its own model in ``out_dir`` only with ``overwrite``; a checkpoint of other settings is
    refused, not resumed.

    Returns the model with its EMA weights (on ``device``) and the training time in seconds, summed over
    resumed segments.
    """
    settings = settings or PretrainSettings()
    work_dir = Path(work_dir)
    resume = check_pretrain_folders(out_dir, work_dir, settings, resume, overwrite)
    if not resume:  # (a checkpoint there is this project's, and overwrite was given)
        remove_written(work_dir, WORK_FILES)
    work_dir.mkdir(parents=True, exist_ok=True)
    record_written(work_dir, dict.fromkeys(WORK_FILES))
    (work_dir / "run_settings.json").write_text(json.dumps(asdict(settings), indent=1))
    components = build_toy_model(sample_size=settings.size, seed=settings.seed, padding=settings.padding)
    if settings.text_encoder not in ("frozen", "joint"):
        raise ValueError(f"text_encoder must be 'frozen' or 'joint', got {settings.text_encoder!r}")
    joint = settings.text_encoder == "joint"
    components.text_encoder.to(device)
    unet, scheduler = components.unet.to(device), components.scheduler
    unet.train()
    # what the optimizer updates: the UNet, and with a jointly trained text encoder that too
    trained = trained_modules(components, settings)
    if joint:
        components.text_encoder.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(trained.parameters(), lr=settings.learning_rate, weight_decay=0.01)
    ema = {k: v.detach().clone() for k, v in trained.state_dict().items()}
    start, earlier_seconds = 0, 0.0
    checkpoint = work_dir / "checkpoint"
    if resume and (checkpoint / "state.json").is_file():
        trained.load_state_dict(load_file(checkpoint / "unet.safetensors", device=device))
        ema = load_file(checkpoint / "ema.safetensors", device=device)
        state = json.loads((checkpoint / "state.json").read_text())
        load_optimizer(optimizer, load_file(checkpoint / "optimizer.safetensors", device=device),
                        state["optimizer"])
        start, earlier_seconds = state["step"], state.get("seconds", 0.0)
        logger.info("resuming toy pre-training at step %d from %s", start, checkpoint)
    elif init_from is not None:
        start, earlier_seconds = _initialise_from(Path(init_from), components, settings, new_world)
        ema = {k: v.detach().clone() for k, v in trained.state_dict().items()}
        logger.info("continuing toy pre-training at step %d from the weights in %s (fresh optimizer)", start,
                    init_from)
    embed = _EmbeddingCache(components)
    # data order depends on the seed and the step, so a resumed run sees the batches it would have seen
    scenes = ToyScenes(batch_size=settings.batch_size, seed=settings.seed, objects=(1, 4),
                       object_weights=settings.object_weights, size=settings.size,
                       colour_mode=settings.colour_mode)
    single = ToyScenes(batch_size=settings.batch_size, seed=settings.seed, objects=(1, 1), size=settings.size,
                       colour_mode=settings.colour_mode)
    log_path = work_dir / "log.csv"
    log = open(log_path, "a", newline="")  # noqa: SIM115 - kept open for the whole run
    writer = csv.writer(log)
    if start == 0:
        writer.writerow(["step", "loss", "seconds"])
    began = time.time()
    bar = tqdm(range(start, settings.steps), desc="pretrain-toy", initial=start, total=settings.steps)
    for step in bar:
        batch = (single if step < settings.single_object_until else scenes).batch(step)
        # noise, timesteps and caption dropout from a generator seeded by (seed, step): resuming is exact
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
        # the clean images x_0, channels first, in [0, 1] (black background = 0)
        x0 = torch.from_numpy(batch.images).permute(0, 3, 1, 2).to(device)
        # drop some captions so the model also learns the unconditional prediction (classifier-free guidance)
        drop = torch.rand(len(batch.captions), generator=generator) < settings.caption_dropout
        captions = ["" if d else c for c, d in zip(batch.captions, drop.tolist(), strict=True)]
        context = encode_text(components.text_encoder, components.tokenizer(
            captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids.to(device)) if joint else embed(captions)
        # sample noise and a random timestep per image, and noise the images: x_t = sqrt(a) x_0 + sqrt(1-a) eps
        # (drawn on the CPU generator so the noise is the same on every device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=generator).to(device)
        x_t = scheduler.add_noise(x0, noise, t)
        # predict the noise; L_LDM is the mean squared error
        per_sample = F.mse_loss(unet(x_t, t, context).sample, noise, reduction="none").mean(dim=(1, 2, 3))
        weights = timestep_weights(scheduler.alphas_cumprod, t, settings.loss_weighting, settings.snr_gamma)
        loss = (per_sample * weights.to(per_sample.device)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, settings)
        optimizer.step()
        # a diverged run stops before anything non-finite reaches the EMA or a checkpoint
        if not torch.isfinite(loss.detach()) or not all_finite(p.detach() for p in trained.parameters()):
            good = checkpoint if (checkpoint / "state.json").is_file() else None
            raise NonFiniteLossError(
                f"toy pre-training step {step + 1}: the loss ({float(loss):.4g}) or the weights are not finite "
                f"(learning rate {learning_rate_at(step, settings):g}); nothing of this step was saved; "
                + (f"the last good checkpoint is {good} (run again to resume)" if good else "no checkpoint yet"),
                step=step + 1, captions=list(batch.captions), checkpoint=good)
        update_average(ema, trained.state_dict(), settings.ema_decay)
        seconds = earlier_seconds + time.time() - began
        writer.writerow([step + 1, f"{loss.item():.6f}", f"{seconds:.1f}"])
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.steps:
            log.flush()
            _save_checkpoint(checkpoint, trained, ema, optimizer, step + 1, seconds)
    log.close()
    seconds = earlier_seconds + time.time() - began
    trained.load_state_dict(ema)
    unet.eval()
    components.text_encoder.requires_grad_(False).eval()
    _write_model(components, out_dir)
    (Path(out_dir) / "pretrain_settings.json").write_text(json.dumps(dict(asdict(settings), seconds=seconds),
                                                                     indent=1))
    return components, seconds


#: settings that must match between a run and the model it starts from, whatever its world (they build the model)
_SAME_ARCHITECTURE = ("size", "padding", "text_encoder")
#: settings that must match between a run and the model it continues from (``init_from``)
_SAME_WORLD = ("size", "seed", "colour_mode", "padding", "text_encoder", "batch_size", "object_weights",
               "caption_dropout")


def _write_model(components: Components, out_dir: str | Path) -> None:
    """``save_toy_model`` into ``out_dir`` with its ``pretrain_settings.json`` listed as this project's first
    (the caller checked the folder: ``check_pretrain_folders``)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    record_written(out_dir, dict.fromkeys(("unet", "text_encoder", "scheduler", "pretrain_settings.json")))
    save_toy_model(components, out_dir)


def _initialise_from(folder: Path, components: Components, settings: PretrainSettings, new_world: bool = False
                     ) -> tuple[int, float]:
    """Load ``folder``'s weights into ``components`` (UNet; text encoder too when it trains jointly) and
    return (its step, its training seconds); ``ValueError`` when it was trained in another world or setting.
    ``new_world``: only the architecture must match, and the run starts at step 0 (its seconds still count)."""
    from diffusers import UNet2DConditionModel  # lazy: seconds to import
    from transformers import CLIPTextModel  # lazy: seconds to import

    saved_file = folder / "pretrain_settings.json"
    if not saved_file.is_file():
        raise InputFileError(f"--init-from {str(folder)!r} is not a toy model written by pretrain-toy (no "
                             f"{saved_file.name} in it); pass the --out folder of a pretrain-toy run")
    saved = json.loads(saved_file.read_text())
    mine = json.loads(json.dumps(asdict(settings)))
    different = [k for k in (_SAME_ARCHITECTURE if new_world else _SAME_WORLD) if saved.get(k) != mine.get(k)]
    if different:
        listed = ", ".join(f"{k}: {saved.get(k)!r} there, {mine.get(k)!r} here" for k in different)
        raise InputFileError(f"--init-from {folder} was trained with other settings ({listed}); continue it with "
                             "the same ones (or pass --new-world to keep only its architecture)")
    step = 0 if new_world else int(saved.get("exported_step", saved.get("steps", 0)))
    if step >= settings.steps:
        raise InputFileError(f"--init-from {folder} is already at step {step}; ask for more --steps than that")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32)
    components.unet.load_state_dict(unet.state_dict())
    if settings.text_encoder == "joint":
        encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", torch_dtype=torch.float32)
        components.text_encoder.load_state_dict(encoder.state_dict())
    return step, float(saved.get("seconds", 0.0))


def export_checkpoint(work_dir: str | Path, out_dir: str | Path, settings: PretrainSettings,
                      weights: str = "ema") -> Path:
    """The newest checkpoint of a (running) pre-training as a loadable toy model folder: its EMA weights
    (``weights="ema"``, what the finished run ships) or the raw ones (``"raw"``, the model as it is now, for
    probing a run while it trains). ``settings`` must be the run's (they rebuild the architecture)."""
    checkpoint = Path(work_dir) / "checkpoint"
    if not (checkpoint / "state.json").is_file():
        raise FileNotFoundError(f"no checkpoint in {work_dir}; has the run saved one yet?")
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    components = build_toy_model(sample_size=settings.size, seed=settings.seed, padding=settings.padding)
    state = load_file(checkpoint / ("ema.safetensors" if weights == "ema" else "unet.safetensors"))
    trained = trained_modules(components, settings)
    trained.load_state_dict(state)
    check_outputs(out_dir, MODEL_FILES, what="a toy model")  # an earlier export of this project's is replaced
    _write_model(components, out_dir)
    progress = json.loads((checkpoint / "state.json").read_text())
    (Path(out_dir) / "pretrain_settings.json").write_text(json.dumps(dict(
        asdict(settings), exported_step=progress["step"], exported_weights=weights,
        seconds=progress.get("seconds", 0.0)), indent=1))
    return Path(out_dir)


def reproduce_command(settings: PretrainSettings, init_from: str | Path | None = None, new_world: bool = False
                      ) -> str:
    """The ``pretrain-toy`` command line that trains a model with ``settings`` (non-default options only)."""
    defaults = PretrainSettings()
    parts = ["python -m tokencompose pretrain-toy", f"--colours {settings.colour_mode}", f"--padding {settings.padding}",
             f"--text-encoder {settings.text_encoder}", f"--steps {settings.steps}",
             f"--decay-start {settings.decay_start}"]
    for flag, name in (("--lr", "learning_rate"), ("--batch-size", "batch_size"), ("--size", "size"),
                       ("--seed", "seed")):
        if getattr(settings, name) != getattr(defaults, name):
            parts.append(f"{flag} {getattr(settings, name):g}")
    if settings.loss_weighting != defaults.loss_weighting:
        parts.append(f"--loss-weighting {settings.loss_weighting}")
    if settings.single_object_until:
        parts.append(f"--single-object-until {settings.single_object_until}")
    if init_from is not None:
        parts.append(f"--init-from {init_from}" + (" --new-world" if new_world else ""))
    return " ".join(parts)


#: the card's measurements, beside the weights they were made on (``benchmarks/toy_base_gates.py`` reads them)
GATES_FILE = "gates.json"


def save_gates(out_dir: Path, report: dict, minutes: float, device: str = "cpu") -> Path:
    """``probes.base_report``'s measurements of the model in ``out_dir`` as ``gates.json``, with the digest of the
    weights they were measured on (``provenance.weights_digest``: a retrained model's file no longer matches)."""
    record = dict(report, digest=weights_digest(out_dir), minutes=minutes,
                  machine=(f"{torch.cuda.get_device_name(device)} GPU" if device.startswith("cuda") else
                           f"{platform.machine()} CPU, torch threads: {torch.get_num_threads()}, torch {torch.__version__}"))
    path = out_dir / GATES_FILE
    record_written(out_dir, {GATES_FILE: None})
    path.write_text(json.dumps(record, indent=1, default=str))
    return path


def write_model_card(out_dir: Path, settings: PretrainSettings, minutes: float, report: dict,
                     device: str = "cpu", init_from: str | Path | None = None, new_world: bool = False) -> Path:
    """The toy base model's README: world, architecture, data, steps, seed, time, machine, and its gates
    (``probes.base_report``: composition with the paper's MG_k and the error breakdown, per-noun attention,
    routing, interventions), measured on held-out prompts and fresh scenes. ``init_from``: the model this run
    continued (its own card says how it was made), from another world when ``new_world``."""
    if device.startswith("cuda"):
        machine = f"{torch.cuda.get_device_name(device)} GPU"
    else:
        machine = (f"{platform.machine()} CPU, {torch.get_num_threads()} threads "
                   f"({platform.processor() or 'cpu'})")
    world = ("each category drawn in its own colour (a pixel's colour names its category)"
             if settings.colour_mode == "identity" else
             "each object drawn in a random colour named in the caption (\"a photo of a red circle and a blue "
             "star.\"), distinct within a scene: a blob's colour does not say what it is")
    encoder = ("frozen random 2-layer CLIP text encoder (width 32)" if settings.text_encoder == "frozen" else
               "2-layer CLIP text encoder (width 32) trained jointly with the UNet on L_LDM (GLIDE's order), "
               "frozen afterwards")
    padding = ("the encoder's outputs after the end token reach the UNet (as in SD)" if settings.padding == "encoded"
               else "positions after the end token are zero vectors: the UNet can read the caption only from its "
                    "own tokens (a named difference from SD, where the padding is largely ignored)")
    met = [gate for gate, entry in report["gates"].items() if entry["met"]]
    verdict = ("All gates are met: this base may be used to test the method." if len(met) == len(report["gates"])
               else "Gates NOT met: " + ", ".join(g for g in report["gates"] if g not in met)
               + ". Do not run the ablation on it and call it a test of the method.")
    text = f"""# Toy base model (tokencompose)

A tiny pixel-space text-to-image diffusion model of the toy world, the base that the toy experiments
fine-tune. Reproduce with `{reproduce_command(settings, init_from, new_world)}` (seed {settings.seed}){
    (f"; it started from the weights of `{init_from}`, trained in another world (see that model's card)"
     if new_world else f"; it continued `{init_from}` (see that model's card for its first steps)")
    if init_from else ""}.

- World: {world}.
- Architecture: `UNet2DConditionModel` (see `tokencompose/models.py`, `TOY_UNET`),
  {settings.size} x {settings.size} RGB images, cross-attention at {settings.size // 2} (down), {settings.size // 4} (mid), {settings.size // 2} (up);
  {encoder}, fed by the real CLIP tokenizer; {padding}; cosine noise schedule, epsilon prediction, images in [0, 1].
- Data: fresh toy scenes every step ({len(TOY_CATEGORIES)} categories; objects per scene 1/2/3/4 with
  probabilities {settings.object_weights}); the pairs {list(EXCLUDED_PAIRS)} never co-occur.
- Training: {settings.steps} steps, batch {settings.batch_size}, AdamW lr {settings.learning_rate} (constant
  until step {settings.decay_start}, then linearly to 0), EMA {settings.ema_decay} (shipped weights), caption
  dropout {settings.caption_dropout}, seed {settings.seed}{
      f", one-object scenes only before step {settings.single_object_until}" if settings.single_object_until else ""},
  L_LDM weighting {settings.loss_weighting}{
      f" (gamma {settings.snr_gamma})" if settings.loss_weighting != "uniform" else ""}.
- Time: {minutes:.0f} minutes of training (summed over resumed runs) on {machine}, torch {torch.__version__}.
- Stored in float16 (loaded as float32).

## Gates and measurements
DDIM {report['settings']['steps']} steps, CFG {report['settings']['guidance']}, toy detector of this world,
{report['settings']['n']} held-out prompts a row, one image each. {verdict}

{gates_markdown({"this base": report})}"""
    path = Path(out_dir) / "README.md"
    record_written(out_dir, {"README.md": None})
    path.write_text(text)
    return path


def cli(argv: list[str]) -> int:
    """``python -m tokencompose pretrain-toy``: train, evaluate and write the toy base model + model card."""
    parser = ArgumentParser(prog="tokencompose pretrain-toy", description=cli.__doc__)
    defaults = PretrainSettings()
    parser.add_argument("--out", type=output_folder, default="outputs/toy_base",
                        help="folder for the model (diffusers layout); the shipped bases are under "
                             f"{TOY_BASE_DIR.parent} (copy a new one there by hand, with its card)")
    parser.add_argument("--work-dir", type=output_folder, default="outputs/pretrain_toy",
                        help="checkpoints and log.csv")
    parser.add_argument("--steps", type=positive_int, default=defaults.steps)
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size)
    parser.add_argument("--lr", type=positive_float, default=defaults.learning_rate)
    parser.add_argument("--decay-start", type=non_negative_int, default=defaults.decay_start,
                        help="step where the linear learning-rate cooldown to 0 begins")
    parser.add_argument("--device", type=device, default="cpu",
                        help="cpu or cuda (the shipped base was trained on a CPU)")
    parser.add_argument("--seed", type=non_negative_int, default=defaults.seed)
    parser.add_argument("--size", type=positive_int, default=defaults.size,
                        help="image side in pixels (32 = the shipped base; 64 = the larger toy for a GPU)")
    parser.add_argument("--colours", choices=COLOUR_MODES, default=defaults.colour_mode,
                        help="identity: each category its own colour; attribute: random colours named in the caption")
    parser.add_argument("--padding", choices=PADDING_MODES, default=defaults.padding,
                        help="encoded: the UNet sees the text encoder's outputs after the end token (SD); zero: it "
                             "sees zeros there")
    parser.add_argument("--text-encoder", choices=("frozen", "joint"), default=defaults.text_encoder,
                        help="frozen random encoder, or trained jointly with the UNet")
    parser.add_argument("--loss-weighting", choices=LOSS_WEIGHTINGS, default=defaults.loss_weighting,
                        help="uniform: plain epsilon MSE; min-snr: min(SNR, 5) / SNR per timestep (Hang et al. 2023)")
    parser.add_argument("--single-object-until", type=non_negative_int, default=defaults.single_object_until,
                        help="curriculum: one-object scenes only before this step (0 = none)")
    parser.add_argument("--eval-images", type=positive_int, default=128, help="held-out prompts per row of the card")
    parser.add_argument("--eval-steps", type=sampling_steps, default=25, help="DDIM steps of the evaluation samples")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-resume", action="store_true",
                        help="start afresh (with --overwrite, over a checkpoint this project wrote in --work-dir)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a model this project wrote in --out (and, with --no-resume, its checkpoint in "
                             "--work-dir); files it did not write are never replaced")
    parser.add_argument("--init-from", type=input_folder, default=None,
                        help="continue from a toy model folder of the same settings (an exported or shipped base) "
                             "at its step, with a fresh optimizer")
    parser.add_argument("--new-world", action="store_true",
                        help="with --init-from: that model was trained in another world (colours, object counts); "
                             "its weights start this run at step 0 (the architecture must match)")
    args = parser.parse_args(argv)
    if args.new_world and not args.init_from:
        parser.error("--new-world needs --init-from (the model whose weights start the run)")
    if args.size % 4:
        parser.error(f"--size must be a multiple of 4 (the toy UNet halves the image twice), got {args.size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = PretrainSettings(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                                decay_start=args.decay_start, seed=args.seed, size=args.size,
                                colour_mode=args.colours, padding=args.padding, text_encoder=args.text_encoder,
                                loss_weighting=args.loss_weighting, single_object_until=args.single_object_until)
    _, seconds = pretrain_toy(args.out, settings, args.work_dir, resume=not args.no_resume, device=args.device,
                              init_from=args.init_from, new_world=args.new_world, overwrite=args.overwrite)
    n = args.eval_images
    began = time.time()
    report = base_report(args.out, n=n, seg_prompts=min(48, n), intervention_prompts=min(64, n),
                         steps=args.eval_steps)
    save_gates(Path(args.out), report, (time.time() - began) / 60, args.device)
    card = write_model_card(Path(args.out), settings, seconds / 60, report, device=args.device,
                            init_from=args.init_from, new_world=args.new_world)
    logger.info("toy base model in %s; model card %s; gates met: %s", args.out, card,
                {gate: entry["met"] for gate, entry in report["gates"].items()})
    return 0
