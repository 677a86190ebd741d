"""Probes of a toy model: where the caption reaches the UNet, measured without any update.

``routing(model_dir)``: L_LDM of the model on fresh 2-4-object toy scenes when parts of the 77-token context
are replaced by the empty prompt's vectors at the same positions (nouns, end token, padding), or when every
noun is swapped for another category's noun. A part the UNet reads costs L_LDM when it is taken away.

Stable Diffusion reads its caption from the noun tokens (prompt-to-prompt edits swap a noun's attention;
DAAM segments by noun; Toker et al., NAACL 2025: the padding is largely ignored), so in a toy that teaches
TokenCompose replacing the nouns must cost more than replacing the padding. The first toy base read its
caption from the padding (issue 12's table).

Usage (Python)::

    from tokencompose.toy.probes import routing
    routing("tokencompose/assets/toy_base")   # {"caption": 0.0042, "nouns replaced": ..., ...}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..attend_excite import toy_excite_settings
from ..attention import attach_recorder
from ..evaluate.multigen import image_outcome
from ..evaluate.segmentation import segmentation_transfer
from ..losses import resize_masks
from ..models import encode_prompts, load_components
from ..sample import generate_toy
from ..tokens import noun_token_positions
from .ablation import attention_specificity, held_out_prompts, toy_geometry
from .detector import ToyDetector, ToySegmenter
from .world import (
    TOY_CATEGORIES,
    TOY_COLOURS,
    ToyScenes,
    caption_colours,
    caption_for,
    get_category,
    model_colour_mode,
    render_scene,
)

#: the rows of the routing table, in order
ROUTING_ROWS = ("caption", "nouns replaced", "nouns swapped", "end replaced", "padding replaced",
                "end + padding replaced", "empty prompt")


def _end_positions(ids: torch.Tensor, eos: int) -> torch.Tensor:
    """[B] position of the first end token of each row of ``ids`` [B, 77]."""
    return (ids == eos).int().argmax(dim=1)


def routing(model_dir: str | Path, batches: int = 6, batch_size: int = 16, seed: int = 0,
            timesteps: tuple[int, int] = (100, 700)) -> dict[str, float]:
    """Mean L_LDM per ``ROUTING_ROWS`` context on the same noised scenes (the model's own colour mode).

    Scenes: ``batches`` x ``batch_size`` fresh 2-4-object scenes from ``ToyScenes(seed=seed + 7919)`` (not
    the training stream of seed ``seed``); timesteps uniform in ``timesteps``; the same noise for every row,
    so differences between rows are paired. "nouns swapped": each noun replaced by another category's noun
    absent from the scene (colour words kept), the caption then re-encoded.
    """
    components = load_components(str(model_dir))
    unet = components.unet.eval()
    size = unet.config.sample_size
    scenes = ToyScenes(batch_size=batch_size, seed=seed + 7919, objects=(2, 4), size=size,
                       colour_mode=model_colour_mode(model_dir))
    tokenizer = components.tokenizer
    eos = components.text_encoder.config.eos_token_id
    empty = encode_prompts(components, [""])[0]  # [77, dim]
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    names = [c.name for c in TOY_CATEGORIES]
    totals = dict.fromkeys(ROUTING_ROWS, 0.0)
    for index in range(batches):
        batch = scenes.batch(index)
        captions = batch.captions
        x0 = torch.from_numpy(batch.images).permute(0, 3, 1, 2)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(timesteps[0], timesteps[1], (x0.shape[0],), generator=generator)
        x_t = components.scheduler.add_noise(x0, noise, t)
        ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True,
                        return_tensors="pt").input_ids
        context = encode_prompts(components, captions)  # [B, 77, dim]
        positions = torch.arange(77)[None]
        end = _end_positions(ids, eos)[:, None]
        nouns = torch.zeros_like(ids, dtype=torch.bool)
        swapped = []
        for row, (caption, masks) in enumerate(zip(captions, batch.masks, strict=True)):
            scene_nouns = [name for name, _ in masks]
            for token_list in noun_token_positions(caption, scene_nouns, tokenizer):
                nouns[row, token_list] = True
            others = [n for n in names if n not in scene_nouns]
            replacement = [str(n) for n in rng.choice(others, len(scene_nouns), replace=False)]
            swapped.append(_swap(caption, scene_nouns, replacement))
        parts = {"nouns replaced": nouns, "end replaced": positions == end, "padding replaced": positions > end,
                 "end + padding replaced": positions >= end}
        contexts = {"caption": context, "nouns swapped": encode_prompts(components, swapped),
                    "empty prompt": empty.expand_as(context)}
        for row_name, where in parts.items():
            contexts[row_name] = torch.where(where[..., None], empty[None], context)
        with torch.no_grad():
            for row_name in ROUTING_ROWS:
                prediction = unet(x_t, t, contexts[row_name]).sample
                totals[row_name] += float(F.mse_loss(prediction, noise)) / batches
    return totals


def _swap(caption: str, nouns: Sequence[str], replacement: Sequence[str]) -> str:
    """The toy caption of ``replacement`` in place of ``nouns``, each keeping the colour word ``caption`` gave
    its noun (``toy.world.caption_for``; no colours in the identity world)."""
    colours = caption_colours(caption, list(nouns))
    return caption_for(replacement, None if None in colours else colours)


def noun_feature_cosine(model_dir: str | Path, template: str = "a photo of a {noun}.") -> dict[str, float]:
    """Mean and min pairwise cosine between the text encoder's outputs at the noun token of ``template`` for
    the toy categories (and between their raw token embeddings): how much of a noun's identity survives the
    encoder. The first toy base's random encoder: raw 0.039, encoded 0.945 (issue 12)."""
    components = load_components(str(model_dir))
    tokenizer, encoder = components.tokenizer, components.text_encoder
    captions = [template.format(noun=c.name) for c in TOY_CATEGORIES]
    ids = tokenizer(captions, padding="max_length", max_length=77, return_tensors="pt").input_ids
    positions = [p[0][0] for p in (noun_token_positions(cap, [c.name], tokenizer)
                                   for cap, c in zip(captions, TOY_CATEGORIES, strict=True))]
    rows = torch.arange(len(captions))
    with torch.no_grad():
        encoded = encoder(ids)[0][rows, positions]  # [K, dim]
        raw = encoder.get_input_embeddings()(ids)[rows, positions]

    def cosines(features: torch.Tensor) -> torch.Tensor:
        unit = F.normalize(features.float(), dim=1)
        similarity = unit @ unit.T
        return similarity[~torch.eye(len(features), dtype=torch.bool)]

    return {"encoded mean": float(cosines(encoded).mean()), "encoded min": float(cosines(encoded).min()),
            "raw mean": float(cosines(raw).mean())}


def image_errors(named: Sequence[str], found: Sequence[str]) -> dict[str, int]:
    """How a generated image departs from its prompt: ``missing`` named categories not detected, ``extra``
    detected categories nobody named, ``wrong`` = substitutions (a missing named object and an extra one in
    the same image count once as a wrong category, ``min(missing, extra)`` of them), the rest plain missing /
    extra. Neglect (Attend-and-Excite) is the ``missing`` kind."""
    missing = len(set(named) - set(found))
    extra = len(set(found) - set(named))
    wrong = min(missing, extra)
    return {"missing": missing - wrong, "extra": extra - wrong, "wrong": wrong}


def composition(model_dir: str | Path, counts: Sequence[int] = (1, 2, 3, 4), n: int = 128, unseen: bool = False,
                seed: int = 1234, steps: int = 25, guidance: float = 3.0, progress: bool = False) -> dict[int, dict]:
    """Composition of a toy model on ``n`` held-out prompts per object count (seen or ``unseen`` combinations,
    ``ablation.held_out_prompts`` in the model's colour mode), one image each (seeds 0..n-1), scored by
    ``composition_scores`` with the toy detector of that world."""

    components = load_components(str(model_dir))
    mode = model_colour_mode(model_dir)
    results: dict[int, dict] = {}
    for count in counts:
        prompts = held_out_prompts(n, count, unseen=unseen, seed=seed, colour_mode=mode)
        images = generate_toy(components, [p.text for p in prompts], list(range(n)), steps=steps,
                              guidance=guidance, progress=progress)
        results[count] = composition_scores(prompts, images, mode)
    return results


def composition_scores(prompts: Sequence, images: Sequence[np.ndarray], colour_mode: str = "identity",
                       threshold: float = 0.1) -> dict:
    """Scores of generated toy ``images`` against their ``prompts`` (``MultiGenPrompt``: ``objects``, ``text``),
    all with the same number of objects.

    ``all_named`` (every named category detected), ``exact`` (those and nothing else), ``mg``
    (``{k: share of images with >= k named categories detected}``: the paper's MG_k), ``errors`` (shares of
    all errors that are missing / wrong / extra, ``image_errors``), ``recall_by_position`` (share of images
    whose i-th named object was detected: first-mention bias) and, in the attribute world,
    ``colour_correct`` (share of detected named objects drawn in the colour the caption gave them) and ``hits``
    (per image, in prompt order: how many named categories were detected), for intervals over prompts and
    paired comparisons (``stats.cluster_interval``, ``stats.paired_interval``).
    """
    detector = ToyDetector(colour_mode=colour_mode)
    count = len(prompts[0].objects)
    if any(len(p.objects) != count for p in prompts) or len(prompts) != len(images):
        raise ValueError("composition_scores needs one image per prompt and prompts of one object count")
    n = len(prompts)
    all_named = exact = 0
    at_least = np.zeros(count + 1)
    errors = {"missing": 0, "wrong": 0, "extra": 0}
    recall = np.zeros(count)
    hits = []
    colour_right = colour_total = 0
    for prompt, image in zip(prompts, images, strict=True):
        detections = [d for d in detector.detect(image) if d.score > threshold]
        found = {d.name for d in detections}
        named = list(prompt.objects)
        outcome = image_outcome(named, found)
        all_named += outcome["all_named"]
        exact += outcome["exact"]
        at_least[:outcome["hits"] + 1] += 1
        hits.append(int(outcome["hits"]))
        for kind, value in image_errors(named, found).items():
            errors[kind] += value
        recall += [name in found for name in named]
        if colour_mode == "attribute":
            wanted = dict(zip(named, caption_colours(prompt.text, named), strict=True))
            for detection in detections:
                if detection.name in wanted:
                    colour_total += 1
                    colour_right += detection.attribute == wanted[detection.name]
    total_errors = sum(errors.values())
    return {
        "n": n, "all_named": all_named / n, "exact": exact / n,
        "mg": {k: float(at_least[k] / n) for k in range(1, count + 1)},
        "errors": {kind: value / total_errors if total_errors else 0.0 for kind, value in errors.items()},
        "error_count": total_errors,
        "recall_by_position": [float(r / n) for r in recall],
        "colour_correct": colour_right / colour_total if colour_total else None,
        "hits": hits,
    }


class AttentionEdit:
    """An intervention on the nouns' cross-attention during sampling (``attention.attach_recorder(edit=...)``).

    - ``"oracle"``: each noun token's map is replaced by its object's exact mask of a layout (a rendered
      scene for the prompt), keeping the attention mass the token had (``A'[:, t] = M / |M| * sum_u A[u, t]``),
      then each pixel's row is renormalised over the tokens. It tells *where* for free: if composition does
      not improve, where the nouns attend is not what limits it, and losses that move it cannot help.
    - ``"excite"``: each noun token's attention is multiplied by ``factor`` at every pixel, then rows are
      renormalised (prompt-to-prompt's re-weighting applied to the nouns; Attend-and-Excite's idea of raising
      a neglected token's attention, without its latent optimisation).

    Active while ``active`` is true (the sampler's step callback switches it off after the first ``fraction``
    of the steps); edits the conditional half of a classifier-free-guidance batch ``[uncond; cond]``.
    """

    def __init__(self, mode: str, positions: Sequence[Sequence[Sequence[int]]],
                 masks: Sequence[torch.Tensor] | None = None, factor: float = 3.0, guided: bool = True,
                 overlap: float = 0.0) -> None:
        if mode not in ("oracle", "excite"):
            raise ValueError(f"mode must be 'oracle' or 'excite', got {mode!r}")
        if mode == "oracle" and masks is None:
            raise ValueError("the oracle needs the layout's masks: one [nouns, H, W] tensor per prompt")
        if not 0.0 <= overlap <= 1.0:
            raise ValueError(f"overlap must lie in [0, 1], got {overlap}")
        self.mode, self.positions, self.masks, self.factor, self.guided = mode, positions, masks, factor, guided
        self.overlap = overlap
        self.active = True

    def layout_maps(self, sample: int, side: int) -> torch.Tensor:
        """The oracle's target maps of prompt ``sample`` at ``side x side``: ``[nouns, H*W]``, each summing to 1
        (an empty mask stays all zero). With ``overlap`` = a, each noun's normalised mask is mixed with the
        normalised union of the prompt's masks, ``(1 - a) M_i / |M_i| + a U / |U|``: two disjoint objects' maps
        then share a fraction a of their mass (histogram intersection ``sum_u min(p, q)`` = a), so the layout
        keeps each noun's place but loses its exclusivity as a grows."""
        masks = resize_masks(self.masks[sample].float(), (side, side)).flatten(1).float()  # [N, H*W]
        sizes = masks.sum(-1, keepdim=True)
        maps = masks / sizes.clamp_min(1.0)
        if self.overlap > 0:
            union = masks.amax(0, keepdim=True)
            maps = torch.where(sizes > 0, (1 - self.overlap) * maps + self.overlap * union / union.sum().clamp_min(1.0),
                               maps)
        return maps

    def __call__(self, key: str, probs: torch.Tensor) -> torch.Tensor:
        """``probs`` [B, heads, H*W, T] -> edited ``probs`` (rows sum to 1)."""
        if not self.active:
            return probs
        probs = probs.clone()
        start = probs.shape[0] // 2 if self.guided else 0
        side = int(round(probs.shape[2] ** 0.5))
        for sample, noun_positions in enumerate(self.positions):
            row = probs[start + sample]  # [heads, H*W, T]
            if self.mode == "oracle":
                maps = self.layout_maps(sample, side).to(row.dtype)  # [N, H*W], each sums to 1
            for noun, token_list in enumerate(noun_positions):
                for token in token_list:
                    if self.mode == "excite":
                        row[..., token] *= self.factor
                    elif maps[noun].sum() > 0:
                        mass = row[..., token].sum(-1, keepdim=True)  # [heads, 1]
                        row[..., token] = maps[noun] * mass
            probs[start + sample] = row / row.sum(-1, keepdim=True).clamp_min(1e-12)
        return probs


def oracle_layouts(prompts: Sequence, start: int, seed: int, size: int, colour_mode: str) -> list[torch.Tensor]:
    """The oracle's layout of each prompt: ``[nouns, size, size]`` masks of a scene rendered for prompt
    ``start + i`` with ``numpy.random.default_rng([seed, start + i])`` (the same layout in every probe)."""
    layouts = []
    for offset, prompt in enumerate(prompts):
        layout_rng = np.random.default_rng([seed, start + offset])
        colours = None
        if colour_mode == "attribute":
            palette = {c.name: c for c in TOY_COLOURS}
            colours = [palette[w] for w in caption_colours(prompt.text, list(prompt.objects))]
        scene = render_scene([get_category(o) for o in prompt.objects], layout_rng, size=size, colours=colours)
        layouts.append(torch.from_numpy(np.stack([scene.masks[o] for o in prompt.objects])))
    return layouts


def intervention(model_dir: str | Path, mode: str = "none", n: int = 64, count: int = 4, unseen: bool = False,
                 fraction: float = 0.4, factor: float = 3.0, seed: int = 1234, steps: int = 25,
                 guidance: float = 3.0, batch_size: int = 32, band: tuple[int, int] | None = None,
                 overlap: float = 0.0) -> dict:
    """Composition (``composition_scores``) of a toy model on ``n`` held-out ``count``-object prompts, sampled
    with an ``AttentionEdit`` (``mode`` "oracle" or "excite", or "none" for the plain sampler) on every
    cross-attention layer for the first ``fraction`` of the DDIM steps, or with Attend-and-Excite's latent
    updates (``mode="attend-and-excite"``, ``attend_excite.ExciteSettings``: its own schedule, the first half
    of the steps; ``fraction`` and ``factor`` do not apply). The same prompts and seeds for every mode, so modes
    compare image by image. The oracle's layout for prompt ``i`` is a scene rendered for it with
    ``numpy.random.default_rng([seed, i])``.

    ``band = (first, stop)`` makes the edit act on DDIM steps ``first .. stop - 1`` instead of the first
    ``fraction`` (step 0 is the noisiest); ``overlap`` blends the oracle's masks (``AttentionEdit.layout_maps``)."""

    components = load_components(str(model_dir))
    colour_mode = model_colour_mode(model_dir)
    prompts = held_out_prompts(n, count, unseen=unseen, seed=seed, colour_mode=colour_mode)
    size = components.unet.config.sample_size
    first, cutoff = band if band is not None else (0, int(round(fraction * steps)))  # edited: steps first..cutoff-1
    if band is not None and not 0 <= first < cutoff <= steps:  # (a fraction of very few steps may edit none)
        raise ValueError(f"band ({first}, {cutoff}) must satisfy 0 <= first < stop <= steps ({steps})")
    images = []
    for start in range(0, n, batch_size):
        chunk = prompts[start:start + batch_size]
        texts = [p.text for p in chunk]
        if mode == "none":
            images.append(generate_toy(components, texts, list(range(start, start + len(chunk))), steps=steps,
                                       guidance=guidance, progress=False))
            continue
        positions = [noun_token_positions(p.text, list(p.objects), components.tokenizer) for p in chunk]
        if mode == "attend-and-excite":
            indices = [[t for noun in noun_positions for t in noun] for noun_positions in positions]
            images.append(generate_toy(components, texts, list(range(start, start + len(chunk))), steps=steps,
                                       guidance=guidance, progress=False, excite=toy_excite_settings(size),
                                       token_indices=indices))
            continue
        masks = oracle_layouts(chunk, start, seed, size, colour_mode) if mode == "oracle" else None
        edit = AttentionEdit(mode, positions, masks, factor=factor, guided=guidance != 1.0, overlap=overlap)
        edit.active = first == 0 < cutoff
        recorder = attach_recorder(components.unet, groups=("down", "mid", "up"), detach=True, edit=edit)

        def step_end(i: int, t: int, edit: AttentionEdit = edit, recorder=recorder) -> None:
            recorder.reset()  # the records are not needed, only the edit
            edit.active = first <= i + 1 < cutoff

        try:
            images.append(generate_toy(components, texts, list(range(start, start + len(chunk))), steps=steps,
                                       guidance=guidance, progress=False, callback=step_end))
        finally:
            recorder.detach()
    return composition_scores(prompts, np.concatenate(images), colour_mode)


# --------------------------------------------------------------------------------------------------
# the gates a toy base must pass before the ablation tests the method on it (issue 12, DESIGN.md)
# --------------------------------------------------------------------------------------------------

#: gate thresholds: one-object prompts exact; per-noun attention (specificity at one or more supervised
#: levels, noun-map mIoU); composition weak by neglect on 4-object prompts
GATES = {"one_object_exact": 0.95, "specificity": 2.0, "noun_miou": 0.35, "four_all_named_below": 0.60,
         "missing_share": 0.5}


def base_report(model_dir: str | Path, n: int = 128, seg_prompts: int = 48, intervention_prompts: int = 64,
                steps: int = 25, guidance: float = 3.0, progress: bool = False, protocol: str = "daam") -> dict:
    """Every measurement of a toy base that the gates and the discriminating experiments need (validation
    prompts and fresh scenes only): composition on seen (1-4 objects) and unseen (2-4) prompts, attention
    specificity per group, the noun maps' segmentation-transfer mIoU on 2-4-object prompts, the routing table,
    the noun-feature cosine, and composition of 4-object prompts under the oracle and excitation edits.
    ``protocol``: the segmentation-transfer protocol of the noun-map mIoU (``evaluate.segmentation``; "daam" =
    DAAM's, the paper's; "layer-mean" = the one the first measurements used)."""
    geometry = toy_geometry(model_dir)
    colour_mode = model_colour_mode(model_dir)
    seg = held_out_prompts(seg_prompts, 3, unseen=False, seed=4321, colour_mode=colour_mode)
    seg += held_out_prompts(seg_prompts // 2, 2, unseen=False, seed=4321, colour_mode=colour_mode)
    seg += held_out_prompts(seg_prompts // 2, 4, unseen=False, seed=4321, colour_mode=colour_mode)
    transfer = segmentation_transfer(str(model_dir), [p.text for p in seg], seeds=(0,),
                                     nouns=[list(p.objects) for p in seg], steps=steps, guidance=guidance,
                                     progress=progress, protocol=protocol,
                                     reference=ToySegmenter(colour_mode))
    report = {
        "model": str(model_dir), "colour_mode": colour_mode,
        "supervised_groups": list(geometry["groups"]),
        "seen": composition(model_dir, (1, 2, 3, 4), n, unseen=False, steps=steps, guidance=guidance),
        "unseen": composition(model_dir, (2, 3, 4), n, unseen=True, steps=steps, guidance=guidance),
        "specificity": attention_specificity(model_dir, batches=4, batch_size=16, seed=1,
                                             groups=(*geometry["unsupervised"], *geometry["groups"])),
        "noun_miou": {"miou": transfer["miou"], "interval": transfer["interval"], "pairs": transfer["pairs"],
                      "missing": transfer["missing"], "protocol": protocol},
        "routing": routing(model_dir, batches=6, batch_size=16, seed=1),
        "cosine": noun_feature_cosine(model_dir),
        "intervention": {mode: intervention(model_dir, mode, n=intervention_prompts, count=4, steps=steps,
                                            guidance=guidance) for mode in ("none", "oracle", "excite")},
        "settings": {"n": n, "seg_prompts": len(seg), "intervention_prompts": intervention_prompts,
                     "steps": steps, "guidance": guidance},
    }
    report["gates"] = gate_verdicts(report)
    return report


def gate_verdicts(report: dict) -> dict[str, dict]:
    """``{gate: {"value", "bar", "met"}}`` of a ``base_report`` (``GATES``); the specificity gate takes the best
    supervised group and names it (``"group"``)."""
    supervised = {g: report["specificity"][g]["specificity"] for g in report["supervised_groups"]}
    best_group = max(supervised, key=supervised.get)
    four = report["seen"][4] if 4 in report["seen"] else report["seen"][str(4)]
    one = report["seen"][1] if 1 in report["seen"] else report["seen"]["1"]
    miou = report["noun_miou"]["miou"] or 0.0
    return {
        "one-object exact": {"value": one["exact"], "bar": f">= {GATES['one_object_exact']}",
                             "met": one["exact"] >= GATES["one_object_exact"]},
        "specificity": {"value": supervised[best_group], "bar": f">= {GATES['specificity']}",
                        "met": supervised[best_group] >= GATES["specificity"], "group": best_group},
        "noun-map mIoU": {"value": miou, "bar": f">= {GATES['noun_miou']}", "met": miou >= GATES["noun_miou"]},
        "4 objects: all named": {"value": four["all_named"], "bar": f"< {GATES['four_all_named_below']}",
                                 "met": four["all_named"] < GATES["four_all_named_below"]},
        "4 objects: missing share of errors": {"value": four["errors"]["missing"],
                                               "bar": f">= {GATES['missing_share']}",
                                               "met": four["errors"]["missing"] >= GATES["missing_share"]},
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def gates_markdown(reports: dict[str, dict]) -> str:
    """Side-by-side tables of ``base_report``s (``{label: report}``): the gates, composition with the paper's
    MG_k and the error breakdown, specificity per group, the routing table, the interventions."""
    names = list(reports)
    head = "| | " + " | ".join(names) + " |\n|---|" + "---|" * len(names)
    lines = ["### Gates", "", "| gate | bar | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    verdicts = {name: gate_verdicts(report) for name, report in reports.items()}  # derived, never stored
    for gate, first in next(iter(verdicts.values())).items():
        cells = [f"{v[gate]['value']:.3f}" + (f" ({v[gate]['group']})" if "group" in v[gate] else "")
                 + (" met" if v[gate]["met"] else " NOT met") for v in verdicts.values()]
        lines.append(f"| {gate} | {first['bar']} | " + " | ".join(cells) + " |")
    lines += ["", "### Composition (one image a prompt, toy detector; MG_k = % of images with >= k of the "
              "named categories detected, the paper's definition)", ""]
    lines += ["| model | split | objects | all named % | exact % | MG_1..MG_k % | missing / wrong / extra "
              "(% of errors) | recall by mention position % | colour right % |", "|---|---|---|---|---|---|---|---|---|"]
    for name, report in reports.items():
        for split in ("seen", "unseen"):
            for count, row in report[split].items():
                mg = " / ".join(_pct(v) for v in row["mg"].values())
                errors = " / ".join(_pct(row["errors"][k]) for k in ("missing", "wrong", "extra"))
                recall = " / ".join(_pct(v) for v in row["recall_by_position"])
                lines.append(f"| {name} | {split} | {count} | {_pct(row['all_named'])} | {_pct(row['exact'])} | "
                             f"{mg} | {errors} | {recall} | {_pct(row['colour_correct'])} |")
    groups = list(next(iter(reports.values()))["specificity"])
    lines += ["", "### Where a noun's attention goes (fresh 2-4-object scenes, noised as in training)", "",
              "specificity = attention density on the noun's own object / on the other named objects (1 = none)",
              "", head]
    for group in groups:
        lines.append(f"| {group} specificity (own / others / background share) | " + " | ".join(
            f"{r['specificity'][group]['specificity']:.2f} ({r['specificity'][group]['own']:.2f} / "
            f"{r['specificity'][group]['others']:.2f} / {r['specificity'][group]['background']:.2f})"
            if group in r["specificity"] else "-" for r in reports.values()) + " |")
    lines.append("| noun-map mIoU (segmentation transfer, generated 2-4-object images; protocol) | " + " | ".join(
        f"{r['noun_miou']['miou']:.3f} [{r['noun_miou']['interval']['low']:.3f}, "
        f"{r['noun_miou']['interval']['high']:.3f}]; {r['noun_miou'].get('protocol', 'layer-mean')}"
        if r["noun_miou"]["interval"] else "-" for r in reports.values()) + " |")
    lines.append("| noun-feature cosine (encoder outputs; raw embeddings 0.04) | " + " | ".join(
        f"{r['cosine']['encoded mean']:.3f} (min {r['cosine']['encoded min']:.3f})" for r in reports.values()) + " |")
    lines += ["", "### Routing: L_LDM when a part of the context is replaced by the empty prompt's vectors "
              "(timesteps 100-700)", "", head]
    for row in ROUTING_ROWS:
        lines.append(f"| {row} | " + " | ".join(
            f"{r['routing'][row]:.5f} ({100 * (r['routing'][row] / r['routing']['caption'] - 1):+.1f}%)"
            for r in reports.values()) + " |")
    lines += ["", "### Interventions at sampling (4-object seen prompts, first 40% of the DDIM steps)", "",
              "| model | sampler | all named % | MG_1..MG_4 % | missing share of errors % |", "|---|---|---|---|---|"]
    for name, report in reports.items():
        for mode, row in report["intervention"].items():
            label = {"none": "plain", "oracle": "oracle attention (layout masks)",
                     "excite": "excitation (nouns x3)"}[mode]
            lines.append(f"| {name} | {label} | {_pct(row['all_named'])} | "
                         + " / ".join(_pct(v) for v in row["mg"].values()) + f" | {_pct(row['errors']['missing'])} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# early place: does a noun's map know where its object will be before the object is drawn?
# --------------------------------------------------------------------------------------------------

#: the bands of sampling steps the early-place probe reads: the first 2, 5 and 10 steps, and all of them
EARLY_BANDS: tuple[int | None, ...] = (2, 5, 10, None)
#: a noun map's peak: the share of its mass on its top ``PEAK_FRACTION`` of pixels (a flat map: that fraction)
PEAK_FRACTION = 0.10


def place_measures(noun_maps: torch.Tensor, regions: Sequence[np.ndarray | None]) -> list[dict[str, float | None]]:
    """The early-place measures of one image's noun maps ``[N, H, W]`` (non-negative, any scale).

    For noun i, with p_i its map normalised to sum 1:
    - ``peak``: sum of p_i over its top ``PEAK_FRACTION`` of pixels (a flat map gives ``PEAK_FRACTION``);
    - ``overlap``: max over the other nouns j of the histogram intersection sum_u min(p_i, p_j) (1: the same map;
      ``None`` for a one-noun image);
    - ``density``: with ``regions[i]`` the object's final region ([H, W] bool at the map's size, or None when the
      object was not drawn), mean p_i inside the region / mean p_i outside (1: no preference; ``None`` when not
      drawn or the region fills the image).
    """
    count, height, width = noun_maps.shape
    flat = noun_maps.reshape(count, -1).double().clamp_min(0)
    p = flat / flat.sum(dim=1, keepdim=True).clamp_min(1e-30)
    top = max(1, int(round(PEAK_FRACTION * p.shape[1])))
    peaks = p.sort(dim=1, descending=True).values[:, :top].sum(dim=1)
    rows = []
    for i in range(count):
        others = [float(torch.minimum(p[i], p[j]).sum()) for j in range(count) if j != i]
        density = None
        region = regions[i]
        if region is not None:
            inside = torch.as_tensor(np.asarray(region, dtype=bool).reshape(-1))
            if 0 < int(inside.sum()) < inside.numel():
                density = float(p[i][inside].mean() / p[i][~inside].mean().clamp_min(1e-30))
        rows.append({"peak": float(peaks[i]), "overlap": max(others) if others else None, "density": density})
    return rows


def _region_at(mask: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    """An object's final region at the attention maps' size (area-resized, > 0.5), or None."""
    if mask is None or not np.asarray(mask).any():
        return None
    tensor = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
    return (F.interpolate(tensor, size=size, mode="area")[0, 0] > 0.5).numpy()


def _band_summary(rows: Sequence[dict], key: str) -> dict | None:
    """Mean of ``key`` over nouns with a 95% interval clustered by prompt: per-prompt means, then their mean."""
    from ..stats import mean_interval

    by_prompt: dict[int, list[float]] = {}
    for row in rows:
        if row[key] is not None:
            by_prompt.setdefault(row["prompt"], []).append(row[key])
    if not by_prompt:
        return None
    summary = mean_interval([float(np.mean(v)) for v in by_prompt.values()]).to_dict()
    summary["nouns"] = sum(len(v) for v in by_prompt.values())
    return summary


def early_place(model_dir: str | Path, n: int = 128, count: int = 4, unseen: bool = False, seed: int = 1234,
                steps: int = 25, guidance: float = 3.0, bands: Sequence[int | None] = EARLY_BANDS,
                batch_size: int = 32, progress: bool = False) -> dict:
    """Early-place probe: for ``n`` held-out ``count``-object prompts (one image each, seeds 0..n-1, DDIM
    ``steps``), each noun's cross-attention map (mid + up layers, heads and layers averaged: the layer-mean
    protocol) summed over the first k steps of each band, measured by ``place_measures`` and split by whether the
    toy detector finds the noun's object in the final image (drawn) or not (missing).

    Returns ``{"settings", "bands": {"first 2": {"drawn": {"peak", "overlap", "density"}, "missing": {...}}, ...},
    "drawn_share"}``; each entry a mean with its 95% interval clustered by prompt (``None`` where no noun of the
    split exists; ``density`` exists for drawn nouns only).
    """
    from ..heatmaps import aggregate_attention, recording

    components = load_components(str(model_dir))
    mode = model_colour_mode(model_dir)
    prompts = held_out_prompts(n, count, unseen=unseen, seed=seed, colour_mode=mode)
    wanted = sorted({b if b is not None else steps for b in bands})
    if any(b < 1 or b > steps for b in wanted):
        raise ValueError(f"bands must be step counts in 1..{steps} (or None: all steps), got {list(bands)}")
    size = (components.unet.config.sample_size,) * 2
    detector = ToyDetector(colour_mode=mode)
    rows: list[dict] = []
    for start in range(0, n, batch_size):
        chunk = prompts[start:start + batch_size]
        snapshots: dict[int, torch.Tensor] = {}
        with recording(components.unet, classifier_free=guidance != 1.0, groups=("mid", "up"),
                       protocol="layer-mean") as summed:
            def step(index: int, timestep: int, summed=summed, snapshots=snapshots) -> None:
                summed.step(index, timestep)
                if summed.steps in wanted:  # the maps summed over the first `steps` steps: [B, 77, H, W]
                    snapshots[summed.steps] = aggregate_attention(summed.maps(), size, protocol="layer-mean")

            images = generate_toy(components, [p.text for p in chunk], list(range(start, start + len(chunk))),
                                  steps=steps, guidance=guidance, progress=False, callback=step)
        for offset, (prompt, image) in enumerate(zip(chunk, images, strict=True)):
            nouns = list(prompt.objects)
            positions = noun_token_positions(prompt.text, nouns, components.tokenizer)
            segmentation = detector.segment(image)
            found = {d.name for d in detector.detect(image, [c.name for c in detector.categories])}
            regions = [_region_at(segmentation.get(noun), size) if noun in found else None for noun in nouns]
            for k in wanted:
                maps = snapshots[k][offset]  # [77, H, W]
                noun_maps = torch.stack([maps[list(tokens)].sum(dim=0) for tokens in positions])
                for noun, measures in zip(nouns, place_measures(noun_maps, regions), strict=True):
                    rows.append({"prompt": start + offset, "noun": noun, "band": k, "drawn": noun in found,
                                 **measures})
    label = {b: "all" if b is None else f"first {b}" for b in bands}  # "first 25" of 25 is all steps too
    result_bands = {}
    for b in bands:
        k = steps if b is None else b
        in_band = [r for r in rows if r["band"] == k]
        result_bands[label[b]] = {
            split: {key: _band_summary([r for r in in_band if r["drawn"] == (split == "drawn")], key)
                    for key in ("peak", "overlap", "density")}
            for split in ("drawn", "missing")}
    last = [r for r in rows if r["band"] == wanted[-1]]
    return {"settings": {"model": str(model_dir), "n": n, "count": count, "unseen": unseen, "seed": seed,
                         "steps": steps, "guidance": guidance, "groups": ["mid", "up"], "protocol": "layer-mean",
                         "peak_fraction": PEAK_FRACTION, "flat_peak": PEAK_FRACTION},
            "bands": result_bands,
            "drawn_share": float(np.mean([r["drawn"] for r in last])) if last else None}


def early_place_markdown(result: dict) -> str:
    """``early_place``'s result as a table: a row per band and split, mean [95% interval] of each measure."""
    def cell(stat: dict | None, digits: int = 2) -> str:
        if stat is None:
            return "-"
        return f"{stat['mean']:.{digits}f} [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}] (n={stat['nouns']})"

    lines = [f"| steps | noun's object | peak share (flat: {result['settings']['flat_peak']:.2f}) | "
             "overlap with the most similar other noun | density on its final region (1: none) |",
             "|---|---|---|---|---|"]
    for band, splits in result["bands"].items():
        for split, stats in splits.items():
            lines.append(f"| {band} | {split} | {cell(stats['peak'])} | {cell(stats['overlap'])} | "
                         f"{cell(stats['density'])} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# where a missing noun's early attention goes: examples for figures, and the share of its mass on each object
# --------------------------------------------------------------------------------------------------


def mass_on_regions(noun_map: np.ndarray | torch.Tensor, regions: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of a (non-negative) map's mass on each named region ``[H, W]`` bool and on the rest, "background".

    Regions may overlap (each share counts its whole region), so the shares of the regions and the background
    sum to 1 only when the regions are disjoint."""
    values = np.clip(np.asarray(noun_map, dtype=np.float64), 0, None)
    total = values.sum()
    if total <= 0:
        raise ValueError("the map has no mass to share out")
    shares = {name: float(values[np.asarray(region, dtype=bool)].sum() / total) for name, region in regions.items()}
    union = np.zeros(values.shape, dtype=bool)
    for region in regions.values():
        union |= np.asarray(region, dtype=bool)
    shares["background"] = float(values[~union].sum() / total)
    return shares


def _shown(summed) -> dict[str, list[torch.Tensor]]:
    """The summed maps of the places a figure shows (mid + up; down is recorded only so an edit acts there)."""
    return {key: maps for key, maps in summed.maps().items() if not key.startswith("down")}


def _noun_maps(maps: torch.Tensor, positions: Sequence[Sequence[int]]) -> np.ndarray:
    """``[77, H, W]`` token maps -> ``[nouns, H, W]``: each noun's tokens summed."""
    return torch.stack([maps[list(tokens)].sum(dim=0) for tokens in positions]).numpy()


def place_examples(model_dir: str | Path, n: int = 8, count: int = 4, unseen: bool = True, seed: int = 1234,
                   steps: int = 25, early: int = 5, guidance: float = 3.0, oracle_steps: int = 0,
                   batch_size: int = 32) -> list[dict]:
    """Sample ``n`` held-out ``count``-object prompts (seeds 0..n-1, DDIM ``steps``) while recording each noun's
    cross-attention (mid + up layers, heads and layers averaged), and return, per image: ``text``, ``nouns``,
    ``image`` ``[H, W, 3]`` uint8, ``drawn`` (the toy detector's verdict per noun), ``early`` and ``final``
    ``[nouns, H, W]`` maps (summed over the first ``early`` steps / all steps), ``regions`` (each drawn object's
    final region, ``[H, W]`` bool) and ``missing_mass`` (for each missing noun, ``mass_on_regions`` of its early
    map over the drawn objects' regions: does its attention sit on another object, or on the background?) with
    ``area``, the shares a flat map would give (each region's share of the image).

    With ``oracle_steps`` > 0 every noun's map is replaced by its object's mask of the oracle's layout
    (``oracle_layouts``, as ``intervention(mode="oracle")``) on every cross-attention layer for the first
    ``oracle_steps`` steps; the recorded maps are the edited ones. Same prompts and seeds as ``intervention``."""
    from ..heatmaps import AttentionSum, aggregate_attention

    if not 1 <= early <= steps:
        raise ValueError(f"early must be a step count in 1..{steps}, got {early}")
    components = load_components(str(model_dir))
    colour_mode = model_colour_mode(model_dir)
    prompts = held_out_prompts(n, count, unseen=unseen, seed=seed, colour_mode=colour_mode)
    size = components.unet.config.sample_size
    detector = ToyDetector(colour_mode=colour_mode)
    guided = guidance != 1.0
    examples = []
    for start in range(0, n, batch_size):
        chunk = prompts[start:start + batch_size]
        positions = [noun_token_positions(p.text, list(p.objects), components.tokenizer) for p in chunk]
        edit = None
        if oracle_steps > 0:
            edit = AttentionEdit("oracle", positions, oracle_layouts(chunk, start, seed, size, colour_mode),
                                 guided=guided)
        # every place is recorded (an edit acts only where a recorder is); mid + up are shown
        recorder = attach_recorder(components.unet, groups=("down", "mid", "up"), mode="cross",
                                   keep="cond" if guided else "all", detach=True, edit=edit)
        summed = AttentionSum(recorder, keep_heads=False)
        snapshot: dict[str, torch.Tensor] = {}

        def step(index: int, timestep: int, summed=summed, snapshot=snapshot, edit=edit) -> None:
            summed.step(index, timestep)
            if summed.steps == early:
                snapshot["early"] = aggregate_attention(_shown(summed), (size, size), protocol="layer-mean")
            if edit is not None:
                edit.active = index + 1 < oracle_steps

        try:
            images = generate_toy(components, [p.text for p in chunk], list(range(start, start + len(chunk))),
                                  steps=steps, guidance=guidance, progress=False, callback=step)
        finally:
            recorder.detach()
        final = aggregate_attention(_shown(summed), (size, size), protocol="layer-mean")
        for offset, (prompt, image) in enumerate(zip(chunk, images, strict=True)):
            nouns = list(prompt.objects)
            found = {d.name for d in detector.detect(image, [c.name for c in detector.categories])}
            segmentation = detector.segment(image)
            regions = {noun: np.asarray(segmentation[noun], dtype=bool) for noun in nouns
                       if noun in found and segmentation.get(noun) is not None and np.asarray(segmentation[noun]).any()}
            early_maps = _noun_maps(snapshot["early"][offset], positions[offset])
            examples.append({
                "text": prompt.text, "nouns": nouns, "image": image, "drawn": [noun in found for noun in nouns],
                "early": early_maps, "final": _noun_maps(final[offset], positions[offset]), "regions": regions,
                "missing_mass": {noun: mass_on_regions(early_maps[i], regions)
                                 for i, noun in enumerate(nouns) if noun not in found},
                # the same shares of a flat map: each region's share of the image (what "no preference" gives)
                "area": mass_on_regions(np.ones(early_maps.shape[1:]), regions)})
    return examples
