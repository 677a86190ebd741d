"""The paper's ablation (Table 2) in the toy world: fine-tune the toy base with L_LDM only, + L_pixel,
+ L_token, + both, on identical data, seeds and steps, then score MultiGen with the toy detector on held-out
prompts of seen and unseen category combinations, and the segmentation transfer of the attention maps.

``make demo`` runs two variants (L_LDM only vs both) with few steps; ``benchmarks/toy_ablation.py`` runs all
four over three seeds. Usage from Python::

    results = run_ablation(["ldm", "both"], seeds=[0], steps=300, out_dir="outputs/demo")

Unseen combinations: prompts that contain one of ``toy.world.EXCLUDED_PAIRS``, which no training scene (base
or fine-tuning) ever shows together: the toy version of SD's failure on uncommon combinations.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..attention import attach_recorder
from ..config import TOY_BASE_DIR, get_config
from ..evaluate.multigen import (
    RESULT_FILES,
    MultiGenPrompt,
    at_least,
    check_result_files,
    detected_names,
    image_outcome,
    load_detections,
    run_multigen,
)
from ..evaluate.segmentation import segmentation_transfer
from ..heatmaps import generate_with_attention, heat_maps
from ..losses import prepare_samples
from ..models import load_components
from ..objective import compute_losses, noised_prediction
from ..provenance import check_folder, check_outputs, record_written, written_files
from ..results import readme_blocks, title
from ..sample import Generator, load_model
from ..stats import cluster_interval, paired_interval
from ..tokens import noun_token_positions
from ..train import RUN_FILES, TrainOptions, earlier_run_files, train
from ..viz import attention_comparison, score_bars
from .detector import ToyDetector, ToySegmenter
from .world import (
    EXCLUDED_PAIRS,
    TOY_CATEGORIES,
    TOY_COLOURS,
    caption_for,
    check_colour_mode,
    model_colour_mode,
    sample_categories,
    sample_colours,
    scene_batches,
)

logger = logging.getLogger(__name__)

#: variant -> (uses L_token, uses L_pixel), the rows of the paper's Table 2
VARIANTS: dict[str, tuple[bool, bool]] = {
    "ldm": (False, False), "pixel": (False, True), "token": (True, False), "both": (True, True)}
LABELS = {"ldm": "L_LDM only", "pixel": "+ L_pixel", "token": "+ L_token", "both": "+ L_token + L_pixel",
          "own": "own samples (CoMat's idea)"}
#: variants beyond the paper's Table 2 (not run by default): "own" = L_LDM on real scenes + L_token, L_pixel and
#: a presence term on the model's own samples (``own_samples``), at the same lambda and gamma as "both"
EXTRA_VARIANTS: dict[str, tuple[bool, bool]] = {"own": (True, True)}


@dataclass(frozen=True)
class AblationSettings:
    """Fine-tuning and evaluation sizes shared by every variant (identical data order, seeds and steps)."""
    steps: int = 300
    batch_size: int = 16
    learning_rate: float = 1e-4
    token_weight: float = get_config("toy").token_weight
    pixel_weight: float = get_config("toy").pixel_weight
    prompts_per_count: int = 32
    images_per_prompt: int = 4
    #: objects a held-out prompt names; MG_k (k = 1..count) as in the paper, whose prompts name 5
    counts: tuple[int, ...] = (4,)
    guidance: float = 3.0
    sample_steps: int = 50
    prompt_seed: int = 2024
    #: images generated a batch while evaluating (64 suits a 2-core CPU; larger is faster on a GPU)
    generate_batch_size: int = 64
    #: prompts (3 objects, unseen, one image each) for the segmentation-transfer mIoU; 0 skips it
    seg_prompts: int = 0
    #: its protocol (``evaluate.segmentation``): "daam" (the paper's) or "layer-mean" (the first toy runs')
    seg_protocol: str = "daam"
    #: the timesteps [low, high) whose samples carry the grounding terms (``Config.grounding_timesteps``);
    #: ``None``: every timestep, the paper's uniform window
    grounding_timesteps: tuple[int, int] | None = None


def held_out_prompts(n: int, num_objects: int, unseen: bool, seed: int = 2024,
                     colour_mode: str = "identity") -> list[MultiGenPrompt]:
    """``n`` toy prompts of ``num_objects`` categories: each containing one excluded pair (``unseen``) or none.

    In the attribute world (``colour_mode="attribute"``) each noun gets a distinct random colour word."""
    check_colour_mode(colour_mode)
    rng = np.random.default_rng([seed, num_objects, int(unseen)])
    names = [c.name for c in TOY_CATEGORIES]
    prompts = []
    for index in range(n):
        if unseen:
            pair = list(EXCLUDED_PAIRS[rng.integers(len(EXCLUDED_PAIRS))])
            others = [name for name in names if name not in pair]
            # the other objects must not form a second excluded pair: draw among sets that avoid the pairs
            while True:
                extra = [str(x) for x in rng.choice(others, num_objects - 2, replace=False)]
                if not any(set(p) <= set(extra + pair) and set(p) != set(pair) for p in EXCLUDED_PAIRS):
                    break
            chosen = [str(x) for x in rng.permutation(pair + extra)]
        else:
            chosen = [c.name for c in sample_categories(rng, num_objects)]
        colours = sample_colours(rng, num_objects) if colour_mode == "attribute" else None
        prompts.append(MultiGenPrompt(index, tuple(chosen), caption_for(chosen, colours)))
    return prompts


def toy_geometry(model_dir: str | Path = str(TOY_BASE_DIR)) -> dict[str, Any]:
    """The image size of a toy model (its UNet's ``sample_size``) and the layer groups the toy preset supervises
    at that size: the middle block (1/4 of the side) and the decoder's attention level (1/2), i.e.
    ``mid_8`` + ``up_16`` at 32 x 32 and ``mid_16`` + ``up_32`` at 64 x 64 (the toy UNet has no attention at
    full size). ``unsupervised`` names the encoder's attention level (``down_16`` at 32 x 32)."""
    config_file = Path(model_dir) / "unet" / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: {model_dir} is not a toy model folder in diffusers "
                                "layout (unet/, text_encoder/, scheduler/); train one with `python -m tokencompose "
                                "pretrain-toy` or pass a shipped base, e.g. tokencompose/assets/toy_base_noun")
    size = int(json.loads(config_file.read_text())["sample_size"])
    if size % 4:
        raise ValueError(f"{model_dir}: toy sample_size {size} is not a multiple of 4 (the UNet halves it twice)")
    return {"resolution": size, "groups": (f"mid_{size // 4}", f"up_{size // 2}"), "unsupervised": (f"down_{size // 2}",)}


def finetune(variant: str, seed: int, settings: AblationSettings, out_dir: Path, base: str = str(TOY_BASE_DIR),
             own: dict | None = None):
    """Fine-tune the toy base with ``variant``'s losses on fresh 2-4-object scenes at the base's image size;
    returns the TrainResult. ``variant="own"``: the own-sample fine-tune (``own_samples``; ``own`` its
    ``OwnSampleSettings`` fields), lambda and gamma as "both"."""
    use_token, use_pixel = {**VARIANTS, **EXTRA_VARIANTS}[variant]
    geometry = toy_geometry(base)
    config = get_config(
        "toy", pretrained=base, seed=seed, resolution=geometry["resolution"], groups=geometry["groups"],
        max_train_steps=settings.steps, train_batch_size=settings.batch_size,
        gradient_accumulation_steps=1, learning_rate=settings.learning_rate, checkpointing_steps=settings.steps,
        token_weight=settings.token_weight if use_token else 0.0,
        pixel_weight=settings.pixel_weight if use_pixel else 0.0, output_dir=str(out_dir),
        grounding_timesteps=None if settings.grounding_timesteps is None else tuple(settings.grounding_timesteps))
    if variant == "own":
        from .own_samples import OwnSampleObjective, OwnSampleSettings, own_sample_batches

        own_settings = OwnSampleSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in (own or {}).items()})
        objective = OwnSampleObjective(own_settings)
        result = train(config, TrainOptions(resume="latest", tensorboard=False),
                       batches=own_sample_batches(config, own_settings), objective=objective)
        # what the own samples looked like during the run (share of named objects drawn, presence term)
        (Path(out_dir) / "own_trace.json").write_text(json.dumps(objective.trace))
        return result
    return train(config, TrainOptions(resume="latest", tensorboard=False), batches=scene_batches(config, (2, 4)))


def image_outcomes(detections: dict[str, dict[str, Any]], prompts: Sequence[MultiGenPrompt],
                   images_per_prompt: int, threshold: float = 0.1) -> dict[str, list[list[int]]]:
    """Per prompt and image (``multigen.image_outcome``): ``hits`` (named categories detected: MG_k counts the
    images with hits >= k, ``multigen.at_least``), ``all_named`` and ``exact``; one row per prompt, the raw
    material of intervals clustered by prompt (``stats.cluster_interval``) and of paired differences."""
    outcomes: dict[str, list[list[int]]] = {"hits": [], "all_named": [], "exact": []}
    for index, prompt in enumerate(prompts):
        rows: dict[str, list[int]] = {key: [] for key in outcomes}
        for j in range(images_per_prompt):
            key = f"{index}_{j}"
            entry = detections.get(key)
            if entry is None:
                raise KeyError(f"no detections for image {key} ({prompt.text!r}); was it generated?")
            for name, value in image_outcome(prompt.objects, detected_names(entry, threshold, key)).items():
                rows[name].append(value)
        for name, row in rows.items():
            outcomes[name].append(row)
    return outcomes


def outcome_rows(record: dict[str, Any], guidance: str, split: str, k: int | None = None, key: str = "mg",
                 count: int | None = None) -> list[list[int]]:
    """One job record's per-prompt rows of 0/1 outcomes (``record["scores"][guidance][split][count]``, as
    ``benchmarks/toy_ablation.py`` stores ``evaluate_model``'s results): ``key="mg"`` = MG_k (>= ``k`` named
    detected, the paper's definition), or ``"all_named"`` / ``"exact"``. ``count`` (objects a prompt) defaults
    to the largest evaluated."""
    return split_rows(record["scores"][str(guidance)][split], k, key, count)


def split_rows(cells: dict[Any, Any], k: int | None = None, key: str = "mg", count: int | None = None
               ) -> list[list[int]]:
    """``outcome_rows`` of one split of ``evaluate_model``'s result (``{count: run_multigen result}``)."""
    count = count if count is not None else max(int(c) for c in cells)
    outcomes = cells[str(count)]["outcomes"] if str(count) in cells else cells[count]["outcomes"]
    if key != "mg":
        return outcomes[key]
    if k is None or not 1 <= k <= count:
        raise ValueError(f"MG_k on {count}-object prompts needs 1 <= k <= {count}, got {k}")
    return at_least(outcomes["hits"], k)


def mg_table(scores: dict[str, dict[str, Any]], columns: dict[str, str] | None = None,
             rows: dict[str, list[str]] | None = None) -> str:
    """Markdown table of ``evaluate_model`` results, one row per model (``scores``: name -> result): MG_1..MG_n
    on the n-object prompts of each split, mean with its 95% interval clustered by prompt
    (``stats.cluster_interval``). ``columns`` + ``rows`` add leading cells (header -> per model values)."""
    columns, rows = columns or {}, rows or {}
    first = next(iter(scores.values()))
    count = max(int(c) for c in first["seen"])
    ks = range(1, count + 1)
    header = ["model", *columns] + [f"{split} MG{k}" for split in ("seen", "unseen") for k in ks]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, result in scores.items():
        cells = [interval_cell(cluster_interval(split_rows(result[split], k, count=count)))
                 for split in ("seen", "unseen") for k in ks]
        lines.append(f"| {name} | " + " | ".join([*rows.get(name, [""] * len(columns)), *cells]) + " |")
    return "\n".join(lines)


def mg_comparison(scores: dict[str, dict[str, Any]], a: str, b: str, split: str = "unseen", k: int = 3) -> str:
    """A sentence comparing MG_k of two ``evaluate_model`` results ``scores[a]`` and ``scores[b]`` on ``split``:
    both with their 95% intervals (clustered by prompt) and whether the intervals are apart. Unpaired and
    one seed: a lesson's check, not the measured comparison (``paired_difference`` over seeds is)."""
    x, y = (cluster_interval(split_rows(scores[name][split], k)) for name in (a, b))
    if x["low"] > y["high"]:
        verdict = f"{a} is higher, with intervals apart"
    elif y["low"] > x["high"]:
        verdict = f"{b} is higher, with intervals apart"
    else:
        verdict = "the intervals overlap: this run cannot tell them apart"
    return (f"{split.capitalize()} MG{k}: {a} {interval_cell(x)}, {b} {interval_cell(y)}; {verdict}.")


def mg_figure(scores: dict[str, dict[str, Any]], title: str | None = None):
    """Bars of MG_1..MG_n per model (``evaluate_model`` results), seen and unseen side by side, with 95%
    intervals clustered by prompt (``viz.score_bars``)."""
    count = max(int(c) for c in next(iter(scores.values()))["seen"])
    ks = range(1, count + 1)
    panels = {f"{split} combinations": {
        name: [(stat["mean"], stat["low"], stat["high"])
               for stat in (cluster_interval(split_rows(result[split], k, count=count)) for k in ks)]
        for name, result in scores.items()} for split in ("seen", "unseen")}
    return score_bars(panels, [f"MG{k}" for k in ks], ylabel=f"% of images with >= k of the {count} named",
                      title=title)


def pooled(records: Sequence[dict[str, Any]], guidance: str, split: str, k: int | None = None, key: str = "mg",
           count: int | None = None) -> dict[str, float]:
    """Mean (%) and 95% interval of an outcome (``outcome_rows``) pooling the seeds of ``records``: each (seed,
    prompt) is a cluster (``stats.cluster_interval``)."""
    rows = [row for record in records for row in outcome_rows(record, guidance, split, k, key, count)]
    return cluster_interval(rows)


def paired_difference(a: dict[str, Any], b: dict[str, Any], guidance: str, split: str, k: int,
                      count: int | None = None) -> dict[str, float]:
    """Mean per-prompt difference of MG_k, ``a`` - ``b`` (same prompts and sampling seeds), with a 95% interval
    (``stats.paired_interval``)."""
    return paired_interval(outcome_rows(a, guidance, split, k, "mg", count),
                           outcome_rows(b, guidance, split, k, "mg", count))


def interval_cell(stat: dict[str, float]) -> str:
    """``mean [low, high]`` of a ``pooled`` / ``paired_difference`` result, one decimal: a table cell."""
    return f"{stat['mean']:.1f} [{stat['low']:.1f}, {stat['high']:.1f}]"


def evaluate_model(model_dir: str | Path, settings: AblationSettings, out_dir: Path, name: str) -> dict[str, Any]:
    """MultiGen (toy detector) on seen and unseen prompts of each count; returns {"seen": {k: result}, ...}.

    Each result is ``run_multigen``'s, plus ``outcomes`` (``image_outcomes``) for intervals and paired tests.
    """
    generate_fn = Generator(str(model_dir), steps=settings.sample_steps, guidance=settings.guidance)
    colour_mode = model_colour_mode(model_dir)
    detector = ToyDetector(colour_mode=colour_mode)
    results: dict[str, Any] = {}
    for split in ("seen", "unseen"):
        results[split] = {}
        for count in settings.counts:
            prompts = held_out_prompts(settings.prompts_per_count, count, unseen=split == "unseen",
                                       seed=settings.prompt_seed, colour_mode=colour_mode)
            folder = out_dir / f"{split}_{count}"
            result = run_multigen(
                prompts, detector, folder, generate_fn=generate_fn, images_per_prompt=settings.images_per_prompt,
                model_name=name, progress=False, generate_batch_size=settings.generate_batch_size)
            result["outcomes"] = image_outcomes(load_detections(folder / "detections"), prompts, settings.images_per_prompt)
            results[split][count] = result
    return results


def attention_miou(model_dir: str | Path, settings: AblationSettings) -> dict[str, Any] | None:
    """Segmentation transfer (mIoU of the nouns' attention maps against the toy detector's segmentation of the
    generated image, ``settings.seg_protocol``) on ``settings.seg_prompts`` unseen 3-object prompts, one image
    each."""
    if settings.seg_prompts <= 0:
        return None

    prompts = held_out_prompts(settings.seg_prompts, SEG_OBJECTS, unseen=True, seed=settings.prompt_seed + 1,
                               colour_mode=model_colour_mode(model_dir))
    result = segmentation_transfer(str(model_dir), [p.text for p in prompts], seeds=(0,),
                                   nouns=[list(p.objects) for p in prompts], steps=settings.sample_steps,
                                   guidance=settings.guidance, batch_size=settings.generate_batch_size,
                                   progress=False, protocol=settings.seg_protocol,
                                   reference=ToySegmenter.for_model(model_dir))
    return {"miou": result["miou"], "interval": result["interval"], "pairs": result["pairs"],
            "missing": result["missing"], "protocol": settings.seg_protocol}


#: the file ``run_ablation`` writes beside its runs' folders
ABLATION_RESULTS = "results.json"


def earlier_ablation_results(out_dir: str | Path) -> list[str]:
    """``[ABLATION_RESULTS]`` when ``out_dir`` holds one an earlier version wrote (no written list; the
    ``settings`` and ``runs`` of a ``run_ablation`` result): it counts as this project's."""
    path = Path(out_dir) / ABLATION_RESULTS
    if written_files(out_dir) is not None or not path.is_file():
        return []
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [ABLATION_RESULTS] if isinstance(saved, dict) and {"settings", "runs"} <= set(saved) else []


def check_ablation_folders(out_dir: Path, variants: Sequence[str], seeds: Sequence[int],
                           settings: AblationSettings) -> None:
    """The output-folder rule for every folder an ablation writes, before the first run starts (a refusal
    changes nothing): ``results.json``, each run's folder (``train.RUN_FILES``) and its evaluations' images,
    detections and result files: absent or this project's (``provenance.OutputFolderError`` names the rest)."""
    check_outputs(out_dir, [ABLATION_RESULTS], what="ablation results", also_ours=earlier_ablation_results(out_dir))
    for seed in seeds:
        for variant in variants:
            run_dir = out_dir / f"{variant}_seed{seed}"
            check_outputs(run_dir, RUN_FILES, what="a training run", also_ours=earlier_run_files(run_dir))
            for split in ("seen", "unseen"):
                for count in settings.counts:
                    folder = run_dir / "eval" / f"{split}_{count}"
                    check_folder(folder / "images", ("*_*.png",))
                    check_folder(folder / "detections", ("[0-9]*.json",))
                    check_result_files(folder, RESULT_FILES["multigen"])


def run_ablation(variants: Sequence[str] = ("ldm", "both"), seeds: Sequence[int] = (0,),
                 settings: AblationSettings | None = None, out_dir: str | Path = "outputs/ablation",
                 base: str = str(TOY_BASE_DIR)) -> dict[str, Any]:
    """Fine-tune and evaluate every (variant, seed); writes ``results.json`` and returns it. A ``results.json``
    there that this project did not write is refused before anything is written (the output-folder rule)."""
    settings = settings or AblationSettings()
    out_dir = Path(out_dir)
    check_ablation_folders(out_dir, variants, seeds, settings)
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose among {list(VARIANTS)}")
    runs: dict[str, Any] = {"settings": settings.__dict__, "runs": []}
    for seed in seeds:
        for variant in variants:
            run_dir = out_dir / f"{variant}_seed{seed}"
            began = time.time()
            result = finetune(variant, seed, settings, run_dir, base)
            train_minutes = (time.time() - began) / 60
            began = time.time()
            scores = evaluate_model(result.unet_dir.parent, settings, run_dir / "eval", LABELS[variant])
            runs["runs"].append({
                "variant": variant, "seed": seed, "model_dir": str(result.unet_dir.parent),
                "train_minutes": train_minutes, "eval_minutes": (time.time() - began) / 60,
                "final_losses": result.history[-1] if result.history else {}, "scores": scores})
            logger.info("%s seed %d done (%.1f min training)", variant, seed, train_minutes)
    record_written(out_dir, {ABLATION_RESULTS: None})
    (out_dir / ABLATION_RESULTS).write_text(json.dumps(runs, indent=1, default=str))
    return runs


def loss_profile(model_dir: str | Path = str(TOY_BASE_DIR), batches: int = 8, batch_size: int = 16,
                 seed: int = 0, groups: Sequence[str] | None = None) -> dict[str, float]:
    """Mean L_LDM and the grounding losses of each layer group in ``groups`` (Eq. (3), (4)) of a model on fresh
    2-4-object toy scenes, without any update: ``{"ldm", "token", "pixel", "token/<group>", "pixel/<group>"}``
    (``token`` and ``pixel`` are sums over ``groups``, as in training).

    Scenes and noise come from ``seed`` (training draws scenes with the run's own seed: pass another seed to
    measure on scenes the model was not fine-tuned on). ``groups`` (default: the supervised ones,
    ``toy_geometry``) may name unsupervised groups too (the toy UNet also has ``down_16``) to see where the
    attention is grounded. Scenes are drawn at the model's image size."""
    groups = tuple(groups) if groups is not None else toy_geometry(model_dir)["groups"]
    components, config, recorder, scenes, generator = _probe(model_dir, batch_size, seed, groups)
    totals: dict[str, float] = {}
    try:
        with torch.no_grad():
            for step in range(batches):
                losses = compute_losses(components, recorder, scenes(step, 0), config, generator)
                for key, value in losses.items():
                    if key != "total":
                        totals[key] = totals.get(key, 0.0) + float(value) / batches
    finally:
        recorder.detach()
    return totals


def _probe(model_dir: str | Path, batch_size: int, seed: int, groups: Sequence[str]):
    """What measuring a toy model on fresh 2-4-object training-like scenes needs (no update): its components,
    a toy config at the model's size with ``groups`` and no grounding weights, a recorder of those groups'
    cross-attention, the scene batches (``scenes(step, 0)``) and the noise generator, all seeded by ``seed``."""
    config = get_config("toy", pretrained=str(model_dir), seed=seed, train_batch_size=batch_size,
                        token_weight=0.0, pixel_weight=0.0, resolution=toy_geometry(model_dir)["resolution"],
                        groups=tuple(groups))
    components = load_components(str(model_dir))
    recorder = attach_recorder(components.unet, groups=sorted({g.partition("_")[0] for g in config.groups}))
    scenes = scene_batches(config, (2, 4))(components.tokenizer, config)
    return components, config, recorder, scenes, torch.Generator().manual_seed(seed)


#: which tokens of each named object ``attention_specificity`` follows: the noun's own tokens (what
#: TokenCompose supervises), the attribute word just before it (the attribute world's colour: "a *red*
#: circle"), or both together (the noun phrase)
TOKEN_ROLES = ("noun", "attribute", "phrase")


def role_positions(positions: Sequence[Sequence[Sequence[int]]], input_ids, role: str, attribute_ids: set[int]
                   ) -> list[list[list[int]]]:
    """Token positions of each object's ``role`` (``TOKEN_ROLES``) from its noun's ``positions`` (per sample, per
    noun): "attribute" is the one token just before the noun, which must be one of ``attribute_ids`` (else
    ``ValueError``: e.g. the identity world's captions name no attribute)."""
    if role not in TOKEN_ROLES:
        raise ValueError(f"unknown token role {role!r}; choose one of {TOKEN_ROLES}")
    if role == "noun":
        return [[list(noun) for noun in sample] for sample in positions]
    result = []
    for index, sample in enumerate(positions):
        nouns = []
        for noun in sample:
            before = min(noun) - 1
            if int(input_ids[index][before]) not in attribute_ids:
                raise ValueError(f"sample {index}: the token before the noun at {list(noun)} is not an attribute "
                                 "word; only the attribute world's captions put a colour before each noun")
            nouns.append([before] if role == "attribute" else [before, *noun])
        result.append(nouns)
    return result


def attention_specificity(model_dir: str | Path = str(TOY_BASE_DIR), batches: int = 4, batch_size: int = 16,
                          seed: int = 0, groups: Sequence[str] | None = None, role: str = "noun",
                          timestep: int | None = None) -> dict[str, dict[str, float]]:
    """Where each noun token's cross-attention goes, per layer group, on fresh 2-4-object toy scenes (noised
    at random timesteps as in training, or all at ``timestep``; no update): the share on the noun's own object
    (the quantity inside Eq. (3)), on the *other* named objects, and on the background. ``role`` follows
    other tokens of each object instead (``TOKEN_ROLES``: its attribute word, or the whole phrase).

    L_token can fall in two ways: each noun attends to its own object (grounding), or every noun attends to
    all objects alike (an "objectness" map, which also moves mass off the background). ``specificity`` tells
    them apart: (own share / own area) / (others' share / others' area), the attention density on the own
    object relative to the other objects; 1 = no preference, larger = the token picks its own object.

    Returns ``{group: {"own", "others", "background", "specificity", "tokens"}}`` (means over noun tokens).
    """
    geometry = toy_geometry(model_dir)
    groups = tuple(groups) if groups is not None else (*geometry["unsupervised"], *geometry["groups"])
    components, config, recorder, scenes, generator = _probe(model_dir, batch_size, seed, groups)
    attribute_ids = {int(i) for colour in TOY_COLOURS
                     for i in components.tokenizer(colour.name, add_special_tokens=False).input_ids}
    values: dict[str, dict[str, list[torch.Tensor]]] = {g: {"own": [], "others": [], "own_density": [],
                                                              "others_density": []} for g in groups}
    try:
        with torch.no_grad():
            for step in range(batches):
                batch = scenes(step, 0)
                recorder.reset()
                noised_prediction(components, batch, config, generator, timestep=timestep)
                maps = recorder.maps()
                positions = role_positions(batch["positions"], batch["input_ids"], role, attribute_ids)
                for group in groups:
                    if group not in maps:
                        raise ValueError(f"layer group {group!r} not recorded; recorded: {sorted(maps)}")
                    stacked, prepared = prepare_samples(maps[group], batch["masks"], positions, None)
                    for sample, noun_masks, token_index, token_noun in prepared:
                        attention = stacked[:, sample][..., token_index].mean(dim=(0, 1))  # [H*W, K]
                        share = attention / attention.sum(0, keepdim=True).clamp_min(1e-12)
                        own_mask = noun_masks[token_noun].T  # [H*W, K]
                        others_mask = (noun_masks.amax(0, keepdim=True).T - own_mask).clamp(0, 1)
                        own, others = (own_mask * share).sum(0), (others_mask * share).sum(0)
                        pixels = float(noun_masks.shape[1])
                        own_area, others_area = own_mask.sum(0) / pixels, others_mask.sum(0) / pixels
                        keep = (own_area > 0) & (others_area > 0)
                        values[group]["own"].append(own)
                        values[group]["others"].append(others)
                        values[group]["own_density"].append((own / own_area.clamp_min(1e-12))[keep])
                        values[group]["others_density"].append((others / others_area.clamp_min(1e-12))[keep])
                recorder.reset()
    finally:
        recorder.detach()
    result = {}
    for group, parts in values.items():
        own, others = torch.cat(parts["own"]), torch.cat(parts["others"])
        density_own, density_others = torch.cat(parts["own_density"]), torch.cat(parts["others_density"])
        result[group] = {"own": float(own.mean()), "others": float(others.mean()),
                         "background": float(1 - own.mean() - others.mean()),
                         "specificity": float(density_own.mean() / density_others.mean().clamp_min(1e-12)),
                         "tokens": int(own.numel())}
    return result


def loss_scales(base: str | Path = str(TOY_BASE_DIR), batches: int = 8, batch_size: int = 16,
                seed: int = 0) -> dict[str, float]:
    """Mean L_LDM, L_token and L_pixel of the base model on fine-tuning scenes (no update): the scale each
    term starts at, from which ``weights_for_ratio`` sets lambda and gamma (the paper's 1e-3 and 5e-5 were
    chosen for SD 1.4's scale, where L_LDM ~ 0.1). Summed over the supervised groups (``toy_geometry``)."""
    profile = loss_profile(base, batches, batch_size, seed)
    return {key: profile[key] for key in ("ldm", "token", "pixel")}


def weights_for_ratio(scales: dict[str, float], ratio: float) -> tuple[float, float]:
    """(lambda, gamma) such that lambda L_token = gamma L_pixel = ``ratio`` L_LDM at the start of fine-tuning."""
    if ratio < 0:
        raise ValueError(f"ratio must be >= 0, got {ratio}")
    return ratio * scales["ldm"] / scales["token"], ratio * scales["ldm"] / scales["pixel"]


def attention_before_after(models: dict[str, str | Path], prompts: Sequence[MultiGenPrompt], seed: int = 0,
                           steps: int = 10, guidance: float = 3.0):
    """A figure of each model's generated image and per-noun attention heat maps for the same ``prompts`` and
    sampling ``seed`` (rows = models, e.g. the base, L_LDM only and + L_token + L_pixel): the "attention maps
    before and after" of the investigation. Heat maps are DAAM-style (``heatmaps.heat_maps``: summed over
    steps, averaged over heads and the mid and up layers, min-max normalised)."""
    rows: dict[str, list] = {}
    for label, model_dir in models.items():
        model = load_model(str(model_dir))
        images, attention = generate_with_attention(model, [p.text for p in prompts], [seed] * len(prompts),
                                                    steps=steps, guidance=guidance, progress=False)
        rows[label] = []
        for index, prompt in enumerate(prompts):
            positions = noun_token_positions(prompt.text, list(prompt.objects), model.tokenizer)
            maps = heat_maps(attention[index], positions)
            rows[label].append((images[index], {noun: maps[i] for i, noun in enumerate(prompt.objects)}))
    return attention_comparison(rows, title=f"attention before and after fine-tuning (DDIM {steps}, CFG {guidance}, "
                                            f"sampling seed {seed})")


def measured_results(folder: str | Path | None = None,
                     patterns: Sequence[str] = ("toy_ablation_*.md", "toy_investigation_*.md")) -> list[dict[str, Any]]:
    """The committed results of ``benchmarks/toy_ablation.py`` and ``benchmarks/toy_investigation.py`` (for
    notebook 07), in that order: one entry per results file matching ``patterns``,
    ``{"name", "summary"}`` (its main table and verdicts, markdown) and ``"figure"`` (the PNG, or None).

    ``folder`` defaults to ``benchmarks/results`` of the checkout this package lives in; an installed package
    without the repository has none (returns ``[]``).
    """
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    entries = []
    for path in [path for pattern in patterns for path in sorted(folder.glob(pattern))]:
        text = path.read_text(encoding="utf-8")
        blocks = readme_blocks(text)
        measured = next((line for line in text.splitlines() if line.startswith("Measured")), "")
        figure = path.with_suffix(".png")
        entries.append({"name": path.stem, "summary": "\n\n".join([f"**{title(text, path.stem)}**", measured, *blocks]),
                        "figure": figure if figure.is_file() else None})
    return entries


# --------------------------------------------------------------------------------------------------
# the experiment's plan (``benchmarks/toy_ablation.py`` runs it, ``benchmarks/toy_investigation.py`` reuses it)
# --------------------------------------------------------------------------------------------------

#: prompt seeds: held-out test prompts (``AblationSettings`` default) and validation prompts (sweep)
TEST_PROMPT_SEED = 2024
VALIDATION_PROMPT_SEED = 7

ABLATION_PRESETS: dict[str, dict[str, Any]] = {
    # sized for one seed of the four variants under 30 minutes on a 2-core CPU (sampling there runs at about
    # 50 image-steps a second: 512 images a number of objects at 10 DDIM steps take ~5 minutes a model)
    "cpu": dict(steps=400, batch_size=16, prompts_per_count=128, images_per_prompt=2, sample_steps=10,
                generate_batch_size=64, seg_prompts=32, guidances=(3.0,), base_row=False,
                sweep_steps=400, sweep_prompts=8, sweep_images=4),
    # larger sizes for a GPU: 1200 steps, 1024 images a number of objects, a CFG sweep, the base as a row
    "gpu": dict(steps=1200, batch_size=16, prompts_per_count=128, images_per_prompt=4, sample_steps=25,
                generate_batch_size=512, seg_prompts=128, guidances=(1.0, 3.0, 7.5), base_row=True,
                sweep_steps=1200, sweep_prompts=64, sweep_images=4),
    # a few seconds a job: checks the plumbing
    "smoke": dict(steps=2, batch_size=2, prompts_per_count=2, images_per_prompt=2, sample_steps=2,
                  generate_batch_size=8, seg_prompts=2, guidances=(3.0,), base_row=True,
                  sweep_steps=2, sweep_prompts=2, sweep_images=1),
}
RATIOS = (0.01, 0.03, 0.1, 0.3)
#: objects a held-out prompt names (AblationSettings.counts) and the MG_k reported on them (k = 1..4)
PROMPT_OBJECTS = 4
MG_KS = tuple(range(1, PROMPT_OBJECTS + 1))
#: objects a prompt of the segmentation-transfer check names (``segmentation_mIoU``'s prompts)
SEG_OBJECTS = 3
#: the MG_k the ratio sweep averages to choose the loss weights
SWEEP_KS = (2, 3, 4)
#: the paper's VISOR Object Accuracy of the same rows on SD 1.4 (Wang et al., CVPR 2024: base from Table 1,
#: the four fine-tunings from Table 2), printed beside the toy numbers for the layout, not compared with them
PAPER_OBJECT_ACCURACY = {"base": 29.86, "ldm": 38.02, "pixel": 37.46, "token": 49.85, "both": 52.15}


def sweep_row(record: dict[str, Any], ratio: float, scales: dict[str, float], ks: Sequence[int] = SWEEP_KS
              ) -> dict[str, Any]:
    """One row of the ratio sweep: the loss weights of ``ratio`` (``weights_for_ratio``) and the record's MG_k
    for k in ``ks`` (CFG 3, mean of seen and unseen), whose mean ``score`` chooses the ratio."""
    mg = {str(k): float(np.mean([pooled([record], "3.0", split, k)["mean"] for split in ("seen", "unseen")]))
          for k in ks}
    lam, gam = weights_for_ratio(scales, ratio)
    return {"ratio": ratio, "lambda": lam, "gamma": gam, "mg": mg, "score": float(np.mean(list(mg.values())))}


def verdicts(by_variant: dict[str, list[dict]], guidance: str, seeds: list[int]) -> list[str]:
    """What counts as reproduced, decided by the numbers at CFG ``guidance``: unseen MG3 / MG4 of both vs L_LDM
    only with intervals apart (pooled over ``seeds`` and per seed), Table 2's ordering on MG3, and the attention
    mIoU after token-level supervision."""
    lines = []
    both, ldm = by_variant["both"], by_variant["ldm"]
    for k in (3, 4):
        a, b = pooled(both, guidance, "unseen", k), pooled(ldm, guidance, "unseen", k)
        per_seed = []
        for s_both, s_ldm in zip(both, ldm, strict=True):
            x, y = pooled([s_both], guidance, "unseen", k), pooled([s_ldm], guidance, "unseen", k)
            per_seed.append(x["low"] > y["high"])
        pooled_win = a["low"] > b["high"]
        lines.append(
            f"- Unseen MG{k}, both vs L_LDM only: {a['mean']:.1f} vs {b['mean']:.1f}; intervals "
            f"{'do not overlap (both higher)' if pooled_win else 'overlap or favour L_LDM only'} pooled over seeds "
            f"{seeds}; non-overlapping and higher in {sum(per_seed)} of {len(per_seed)} seeds. "
            f"**{'Reproduced' if pooled_win else 'Not reproduced'}** (pooled).")
    if not all(by_variant.get(v) for v in VARIANTS):
        lines.append("- Table 2 ordering and attention mIoU: not judged (not every variant was run).")
        return lines
    means = {v: pooled(by_variant[v], guidance, "unseen", 3)["mean"] for v in VARIANTS}
    means_seen = {v: pooled(by_variant[v], guidance, "seen", 3)["mean"] for v in VARIANTS}
    for split, m in (("unseen", means), ("seen", means_seen)):
        holds_both = m["both"] >= m["token"]
        holds_token = m["token"] > max(m["pixel"], m["ldm"])
        order = " > ".join(f"{LABELS[v]} {m[v]:.1f}" for v in sorted(m, key=m.get, reverse=True))
        broken = [] if holds_both else ["both < token only"]
        broken += [] if holds_token else ["token only is not above both pixel only and L_LDM only"]
        lines.append(f"- Table 2 ordering on MG3 ({split}): {order}. "
                     + ("**Holds** (both >= token > pixel, ldm)." if not broken
                        else f"**Does not hold**: {'; '.join(broken)}."))
    mious = {v: [r["miou"]["miou"] for r in by_variant[v] if r.get("miou") and r["miou"]["miou"] is not None]
             for v in VARIANTS}
    if all(mious.values()):
        m = {v: float(np.mean(x)) for v, x in mious.items()}
        higher = min(m["token"], m["both"]) > max(m["ldm"], m["pixel"])
        lines.append("- Attention mIoU: " + ", ".join(f"{LABELS[v]} {m[v]:.3f}" for v in VARIANTS)
                     + f". **{'Higher' if higher else 'Not higher'}** after token-level supervision "
                     "(token and both vs ldm and pixel, mean over seeds).")
    return lines
