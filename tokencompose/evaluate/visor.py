"""VISOR object accuracy (paper Sec. 4.1, Table 1 "Object Accuracy"): are BOTH objects of a pair drawn?

VISOR (Gokhale et al. 2022, ``microsoft/VISOR``) prompts "a {A} {relation} a {B}" for every pair of COCO's
80 categories, in both orders, with four relations ("to the left of", "to the right of", "above",
"below"); "an" before a vowel sound ("an apple to the left of a car"). Four images a prompt; OWL-ViT
(``google/owlvit-base-patch32``) looks for "a photo of a {A}" and "a photo of a {B}" (one label per box, the
better query) and keeps scores > 0.1;

    OA = 100 * (# images in which A and B are both detected) / # images

as ``visor.py``'s ``objacc_both``. Also reported: OA_A, OA_B (each object alone) and, because the boxes are
there, VISOR's spatial scores: ``VISOR_uncond`` = % of images with both objects AND some (A box, B box) pair
whose centroids satisfy the relation; ``VISOR_cond`` = the same among images with both objects.

Differences from VISOR's files: prompt ids count only the spatial prompts (VISOR's list also holds "A and B"
and single-object prompts, excluded from OA anyway), so ids differ from ``text_spatial_rel_phrases.json``;
articles come from the first letter (VISOR uses ``inflect``; the two agree on COCO's 80 names).
The full set is 80*79/2 * 2 * 4 = 25,280 prompts (101,120 images): ``limit`` scores a seeded random subset,
and the output says so.

Usage::

    python -m tokencompose evaluate visor --model sd14 --limit 500 --out runs/visor
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tokencompose.evaluate.multigen import (
    RESULT_FILES,
    GenerateFn,
    check_result_files,
    generate_and_detect,
    process_state,
    write_json,
)
from tokencompose.provenance import record_written

logger = logging.getLogger(__name__)

#: VISOR's four spatial relations, in its order
RELATIONS = ("to the left of", "to the right of", "above", "below")


def article(noun: str) -> str:
    """"an" before a vowel letter, else "a" (``article("apple") == "an"``)."""
    if not isinstance(noun, str) or not noun:
        raise ValueError(f"article needs a non-empty noun, got {noun!r}")
    return "an" if noun[0].lower() in "aeiou" else "a"


def visor_prompts(categories: Sequence[str], limit: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """VISOR's spatial prompts over all pairs of ``categories``, or a seeded random ``limit`` of them.

    Order (as VISOR's ``create_spatial_phrases.py``): for each pair (A, B) of ``itertools.combinations``,
    for each relation, "A rel B" then "B rel A". Each prompt is ``{"unique_id", "num_objects": 2,
    "obj_1_attributes": [A], "obj_2_attributes": [B], "rel_type", "text"}``; ``unique_id`` is the position
    in the full list, kept in a subset (sorted by id).
    """
    categories = list(categories)
    if len(categories) < 2 or len(set(categories)) != len(categories):
        raise ValueError(f"VISOR needs two or more distinct category names, got {categories!r}")
    prompts = []
    for first, second in itertools.combinations(categories, 2):
        for relation in RELATIONS:
            for a, b in ((first, second), (second, first)):
                prompts.append({"unique_id": len(prompts), "num_objects": 2, "obj_1_attributes": [a],
                                "obj_2_attributes": [b], "rel_type": relation,
                                "text": f"{article(a)} {a} {relation} {article(b)} {b}"})
    return subsample(prompts, limit, seed)


def subsample(prompts: list[dict[str, Any]], limit: int | None, seed: int = 0) -> list[dict[str, Any]]:
    """A seeded random ``limit`` of ``prompts`` in their order (all of them when ``limit`` is None or larger)."""
    if limit is not None:
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive number of prompts, got {limit!r}")
        if limit < len(prompts):
            chosen = np.random.default_rng(seed).choice(len(prompts), size=limit, replace=False)
            prompts = [prompts[i] for i in sorted(chosen.tolist())]
    return prompts


def _satisfies(relation: str, box_a: Sequence[float], box_b: Sequence[float]) -> bool:
    """VISOR's test on box centroids (x right, y down): is A ``relation`` B?"""
    dx = (box_a[0] + box_a[2]) / 2 - (box_b[0] + box_b[2]) / 2
    dy = (box_a[1] + box_a[3]) / 2 - (box_b[1] + box_b[3]) / 2
    return {"to the left of": dx < 0, "to the right of": dx > 0, "above": dy < 0, "below": dy > 0}[relation]


def object_accuracy(detections: Mapping[str, Mapping[str, Any]], prompts: Sequence[Mapping[str, Any]],
                    threshold: float = 0.1) -> dict[str, float]:
    """``{"OA", "OA_A", "OA_B", "num_images"}`` (+ ``VISOR_uncond``, ``VISOR_cond`` when boxes are saved).

    ``detections`` are keyed "<unique_id>_<j>" with "classes", "scores" (and "boxes"); a class counts when
    its score is > ``threshold``.
    """
    by_id = {int(p["unique_id"]): p for p in prompts}
    if not detections:
        raise ValueError("no detections to score; run the detector first")
    both = only_a = only_b = spatial = 0
    with_boxes = all("boxes" in entry for entry in detections.values())
    for key, entry in detections.items():
        head = str(key).split("_")[0]
        if not head.isdigit() or int(head) not in by_id:
            raise ValueError(f"detection key {key!r} names no prompt of this VISOR prompt set")
        prompt = by_id[int(head)]
        a, b = prompt["obj_1_attributes"][0], prompt["obj_2_attributes"][0]
        kept = [i for i, s in enumerate(entry["scores"]) if s > threshold]
        classes = [entry["classes"][i] for i in kept]
        has_a, has_b = a in classes, b in classes
        only_a += has_a
        only_b += has_b
        both += has_a and has_b
        if with_boxes and has_a and has_b:
            boxes_a = [entry["boxes"][i] for i in kept if entry["classes"][i] == a]
            boxes_b = [entry["boxes"][i] for i in kept if entry["classes"][i] == b]
            spatial += any(_satisfies(prompt["rel_type"], p, q) for p in boxes_a for q in boxes_b)
    n = len(detections)
    result = {"OA": 100.0 * both / n, "OA_A": 100.0 * only_a / n, "OA_B": 100.0 * only_b / n, "num_images": n}
    if with_boxes:
        result["VISOR_uncond"] = 100.0 * spatial / n
        result["VISOR_cond"] = 100.0 * spatial / both if both else 0.0
    return result


def run_visor(prompts: Sequence[Mapping[str, Any]], detector: Any, out_dir: str | Path,
              generate_fn: GenerateFn | None = None, images_dir: str | Path | None = None,
              images_per_prompt: int = 4, model_name: str = "model", threshold: float = 0.1,
              subset_note: str = "", generate_batch_size: int = 16, progress: bool = True,
              state: Any = None, provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Generate (or read) ``images_per_prompt`` images a prompt, detect A and B, score; write JSON + markdown.

    Resumable like ``multigen.run_multigen`` (images ``{unique_id}_{j}.png``, seed j; detections in
    ``out_dir/detections``; ``provenance`` as there: another model's images are never reused). ``subset_note`` (e.g. "500 of 25280 prompts, seed 0") goes into the outputs.
    """
    state = state or process_state()
    check_result_files(out_dir, RESULT_FILES["visor"])  # a visor.json of unknown origin: refused, nothing changed
    items = [(int(p["unique_id"]), p["text"], (p["obj_1_attributes"][0], p["obj_2_attributes"][0]))
             for p in prompts]
    detections = generate_and_detect(items, detector, out_dir, images_per_prompt, generate_fn, images_dir,
                                     save_threshold=0.01, generate_batch_size=generate_batch_size,
                                     progress=progress, state=state, desc="VISOR", provenance=provenance)
    wanted = {f"{pid}_{j}" for pid, _, _ in items for j in range(images_per_prompt)}
    detections = {k: v for k, v in detections.items() if k in wanted}
    result: dict[str, Any] = {"model": model_name, **object_accuracy(detections, prompts, threshold),
                              "num_prompts": len(prompts), "images_per_prompt": images_per_prompt,
                              "det_threshold": threshold, "detector": type(detector).__name__,
                              "prompt_set": subset_note or f"all {len(prompts)} prompts"}
    if state.is_main_process:
        out_dir = Path(out_dir)
        record_written(out_dir, dict.fromkeys(RESULT_FILES["visor"]))
        write_json(result, out_dir / "visor.json")
        (out_dir / "visor.md").write_text(visor_table([result]) + "\n", encoding="utf-8")
        (out_dir / "visor_prompts.json").write_text(json.dumps(list(prompts), indent=1), encoding="utf-8")
    return result


def visor_table(results: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: ``Model | OA | OA_A | OA_B | VISOR_uncond | VISOR_cond | Num_Imgs | det_threshold | prompts``."""
    header = ["Model", "OA", "OA_A", "OA_B", "VISOR_uncond", "VISOR_cond", "Num_Imgs", "det_threshold", "prompts"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        numbers = [f"{r[k]:.2f}" if k in r else "-" for k in ("OA", "OA_A", "OA_B", "VISOR_uncond", "VISOR_cond")]
        cells = [str(r["model"]), *numbers, str(r["num_images"]), str(r["det_threshold"]), str(r.get("prompt_set", ""))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
