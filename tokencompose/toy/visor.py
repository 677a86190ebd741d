"""VISOR object accuracy in the toy world: are BOTH objects of "a {A} {relation} a {B}" drawn?

VISOR's prompts (``evaluate.visor.visor_prompts``) over the toy's 10 categories: 45 pairs x 4 relations x 2
orders = 360 prompts. The toy detector (``toy.detector.ToyDetector``) plays OWL-ViT's part and
``evaluate.visor.run_visor`` scores them as on Stable Diffusion: OA = % of images in which both named objects
are detected. Two things only the toy has:

- ``split``: a pair of categories in ``world.EXCLUDED_PAIRS`` never appears together in a training scene
  ("unseen" prompts), every other pair does ("seen");
- ``object_accuracy_rows``: each prompt's images as one row of 0/1 outcomes, so that OA gets an interval
  clustered by prompt (``stats.cluster_interval``) and two models scored on the same prompts and seeds a
  paired difference (``stats.paired_interval``).

The toy's captions list objects ("a photo of a star and a ring."); its text encoder never saw a relation
word, so the relation scores (``VISOR_uncond`` / ``VISOR_cond``) of a toy model measure chance, not
understanding. OA, which asks only for the two objects, is meaningful.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tokencompose.evaluate.multigen import detected_names
from tokencompose.evaluate.visor import subsample, visor_prompts
from tokencompose.toy.world import EXCLUDED_PAIRS, category_names

#: which prompts ``toy_visor_prompts`` keeps: every pair, pairs seen together in training, or excluded pairs
SPLITS = ("all", "seen", "unseen")


def is_unseen(prompt: Mapping[str, Any], excluded: Sequence[Sequence[str]] = EXCLUDED_PAIRS) -> bool:
    """True when the prompt's two objects are a pair that no training scene shows together."""
    pair = {prompt["obj_1_attributes"][0], prompt["obj_2_attributes"][0]}
    return any(pair == set(p) for p in excluded)


def toy_visor_prompts(limit: int | None = None, seed: int = 0, split: str = "all") -> list[dict[str, Any]]:
    """VISOR's spatial prompts over the toy categories, those of ``split`` (``SPLITS``), or a seeded random
    ``limit`` of them (sorted by ``unique_id``, the position in the full list of 360, as ``visor_prompts``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    prompts = visor_prompts(category_names())
    if split != "all":
        prompts = [p for p in prompts if is_unseen(p) == (split == "unseen")]
    return subsample(prompts, limit, seed)


def object_accuracy_rows(detections: Mapping[str, Mapping[str, Any]], prompts: Sequence[Mapping[str, Any]],
                         images_per_prompt: int, threshold: float = 0.1) -> list[list[int]]:
    """One row per prompt (in ``prompts`` order), one 0/1 a image (seed j = 0..``images_per_prompt``-1): 1 when
    both named objects are detected with a score above ``threshold`` (VISOR's OA, image by image).

    ``detections`` are ``run_visor``'s, keyed "<unique_id>_<j>"; a missing image is an error, not a miss.
    """
    rows = []
    for prompt in prompts:
        a, b = prompt["obj_1_attributes"][0], prompt["obj_2_attributes"][0]
        row = []
        for j in range(images_per_prompt):
            key = f"{prompt['unique_id']}_{j}"
            if key not in detections:
                raise KeyError(f"no detections for image {key} ({prompt['text']!r}); was it generated?")
            found = detected_names(detections[key], threshold, key)
            row.append(int(a in found and b in found))
        rows.append(row)
    return rows
