"""MultiGen (paper Sec. 4.1, Table 1): how many of the objects a prompt names does the image show?

A MultiGen prompt names 5 distinct categories in one sentence, "a photo of a book, a cup, a kite, a mouse,
and a surfboard."; a model draws N images of it (10 in the paper), an open-vocabulary detector (OWLv2) looks
for the 5 categories, and

    MG_k = 100 * (# images in which >= k distinct named categories are detected with score > 0.1) / # images

reported as ``mean(std)``, the std being the population std, over the image index j = 0..N-1, of the success
rate among the j-th images of all prompts. This module replicates the authors' scoring
(``multigen/gen_multigen_scores.py`` of mlpc-ucsd/TokenCompose) and reads their files unchanged: the prompt
sets ``coco_obj_comp_5_1k.json`` / ``ade20k_obj_comp_5_1k.json`` and their detection JSON
(``{"<prompt index>_<j>": {"classes": [...], "scores": [...]}}``).

Where this differs from the authors' code, and why:

- **fewer objects** (the toy world's prompts name 2-4 objects): MG_k is computed over the images of the
  prompts that name at least k objects (a 2-object prompt cannot succeed at MG_3, and does not count in
  its denominator); the std is over j of the success rate among those prompts' j-th images. On 5-object
  prompts this is exactly the authors' number. Keys run MG1 .. MG{largest num_objects}.
- **seeds**: image j of every prompt is drawn with seed j (the authors' pipeline was unseeded).
- **saved scores**: detections with score > 0.01 are saved, as the authors' detection script intends; in
  their script transformers' post-processing had already dropped scores <= 0.1 (its default threshold), so
  their files hold only > 0.1. Scored at the paper's threshold 0.1 the two agree.
- **incomplete results** (a run stopped half-way) are scored over the images present (the authors divide
  by ``len(results) / images_per_prompt``, which assumes every image is there); a warning says so.
- **extra objects** (toy world only): ``nothing_extra_share`` = % of images in which no category the
  prompt did not name is detected. OWL only looks for the named categories, so it cannot measure this.

Usage::

    python -m tokencompose evaluate multigen --prompts coco_obj_comp_5_1k.json --model sd14 --out runs/mg
    python -m tokencompose evaluate multigen --prompts toy --num-prompts 60 --model toy --detector toy --out runs/mg_toy
    accelerate launch -m tokencompose evaluate multigen ...   # prompts split across GPUs
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from tokencompose.cli_args import UserError
from tokencompose.evaluate.detectors import Detection, draw_detections, to_pil
from tokencompose.images import open_rgb
from tokencompose.provenance import (
    MANIFEST,
    WRITTEN_PREFIX,
    check_outputs,
    claim_folder,
    record_written,
    written_files,
)
from tokencompose.stats import cluster_interval

logger = logging.getLogger(__name__)

#: COCO's 80 category names (the authors' ``coco_obj_comp_5_1k.json`` uses exactly these)
COCO_CATEGORIES_FILE = Path(__file__).resolve().parents[2] / "data" / "coco_categories.txt"

#: a caption template for ``make_prompts``: (category names, the prompts' numpy generator) -> caption
CaptionTemplate = Callable[[Sequence[str], np.random.Generator], str]

#: generate_fn(prompts, seeds) -> images: [N, H, W, 3] uint8 array or a list of PIL images / arrays
GenerateFn = Callable[[Sequence[str], Sequence[int]], Any]


class MissingImagesError(UserError, FileNotFoundError):
    """``--images`` lacks images the prompts need and there is no model to generate them; the message names
    the folder, how many are missing and a few of their names."""


# ----------------------------------------------------------------------------------------------------------
# Prompt sets (the authors' JSON format)
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MultiGenPrompt:
    """One prompt: its ``unique_id``, the ``objects`` it names (in order) and its ``text``."""

    unique_id: int
    objects: tuple[str, ...]
    text: str

    def to_json(self) -> dict[str, Any]:
        """The authors' JSON object: unique_id, num_objects, obj_k_attributes = [name], text."""
        entry: dict[str, Any] = {"unique_id": self.unique_id, "num_objects": len(self.objects)}
        for k, name in enumerate(self.objects, start=1):
            entry[f"obj_{k}_attributes"] = [name]
        entry["text"] = self.text
        return entry

    @classmethod
    def from_json(cls, entry: Mapping[str, Any], where: str = "") -> MultiGenPrompt:
        """Read one object of the authors' format (``where`` names it in error messages)."""
        where = where or "a MultiGen prompt"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: expected a JSON object, got {type(entry).__name__}")
        missing = [key for key in ("unique_id", "num_objects", "text") if key not in entry]
        if missing:
            raise ValueError(f"{where}: missing {missing}; a MultiGen prompt has unique_id, num_objects, "
                             "obj_1_attributes ... obj_<num_objects>_attributes and text")
        count, unique_id, text = entry["num_objects"], entry["unique_id"], entry["text"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:  # JSON true is not 1 object
            raise ValueError(f"{where}: num_objects must be a whole number >= 1, got {json.dumps(count)}; write "
                             "the number of objects the prompt names")
        if isinstance(unique_id, str) and unique_id.strip().isdigit():
            unique_id = int(unique_id)
        if isinstance(unique_id, bool) or not isinstance(unique_id, int) or unique_id < 0:
            raise ValueError(f"{where}: unique_id must be a whole number >= 0, got {json.dumps(unique_id)}; write "
                             "the prompt's index")
        if not isinstance(text, str) or not text.strip():  # null would be sampled as the prompt "None"
            raise ValueError(f"{where}: text must be the prompt (a non-empty string), got {json.dumps(text)}")
        objects = []
        for k in range(1, count + 1):
            attributes = entry.get(f"obj_{k}_attributes")
            if not isinstance(attributes, list) or not attributes or not isinstance(attributes[0], str) \
                    or not attributes[0].strip():
                raise ValueError(f"{where}: obj_{k}_attributes must be a list whose first item is the category "
                                 f"name (num_objects is {count}), got {json.dumps(attributes)}")
            objects.append(attributes[0])
        return cls(unique_id, tuple(objects), text)


def multigen_caption(names: Sequence[str]) -> str:
    """The authors' template: "a photo of a book, a cup, a kite, a mouse, and a surfboard."

    As in their files, the article is always "a" ("a photo of a orange, ..."), with a comma before "and"
    from three names on; one name: "a photo of a cat."; two: "a photo of a cat and a dog.".
    """
    names = list(names)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"a MultiGen caption needs one or more non-empty names, got {names!r}")
    phrases = [f"a {name}" for name in names]
    if len(phrases) == 1:
        listed = phrases[0]
    elif len(phrases) == 2:
        listed = f"{phrases[0]} and {phrases[1]}"
    else:
        listed = ", ".join(phrases[:-1]) + ", and " + phrases[-1]
    return f"a photo of {listed}."


def is_prompt_set(path: str | Path) -> bool:
    """Whether ``path`` names a MultiGen prompt file: a ``.json`` suffix in any case (``UP.JSON``), or an existing
    file of another name whose content starts with ``[`` (a JSON list), not a category list."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return True
    if not path.is_file():
        return False
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        return handle.read(4096).lstrip().startswith("[")


def load_categories(source: str | Path) -> list[str]:
    """Category names: "coco" (COCO's 80, ``data/coco_categories.txt``) or a file (the toy world's:
    ``tokencompose.toy.world.category_names()``).

    A file has one name a line; blank lines and lines starting with "#" are skipped. A MultiGen prompt file
    (``.json``, e.g. the authors' ADE20K set) gives the distinct names it uses, sorted.
    """
    path = COCO_CATEGORIES_FILE if str(source) == "coco" else Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"category list {path} not found; pass 'coco', a text file with one "
                                "name a line, or a MultiGen prompt .json")
    if is_prompt_set(path):
        return sorted({name for prompt in load_prompts(path) for name in prompt.objects})
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: category names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    return names


def make_prompts(categories: Sequence[str], n: int, num_objects: int | Sequence[int] = 5, seed: int = 0,
                 template: str | CaptionTemplate = "authors") -> list[MultiGenPrompt]:
    """``n`` prompts of distinct categories drawn uniformly (numpy ``default_rng(seed)``), in drawn order.

    ``num_objects``: an int, or a sequence cycled over the prompts (``(2, 3, 4)`` gives a balanced mix).
    ``template``: "authors" (``multigen_caption``) or a ``CaptionTemplate`` ``(names, rng) -> caption`` that
    may draw from the prompts' generator (the toy world's: ``toy.world.toy_caption``, "a photo of a circle, a
    star and a ring.", and ``toy.world.toy_attribute_caption``, a random colour word before each noun).
    """
    categories = list(categories)
    counts = [num_objects] if isinstance(num_objects, int) else list(num_objects)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of prompts, got {n!r}")
    if len(set(categories)) != len(categories) or not categories:
        raise ValueError(f"categories must be distinct names, got {categories!r}")
    if not counts or any(not isinstance(k, int) or not 1 <= k <= len(categories) for k in counts):
        raise ValueError(f"num_objects must be integers in 1..{len(categories)} (the number of categories), "
                         f"got {num_objects!r}")

    if template != "authors" and not callable(template):
        raise ValueError(f"unknown template {template!r}; use 'authors' or a function (names, rng) -> caption")
    rng = np.random.default_rng(seed)
    prompts = []
    for i in range(n):
        chosen = [categories[c] for c in rng.choice(len(categories), size=counts[i % len(counts)], replace=False)]
        text = multigen_caption(chosen) if template == "authors" else template(chosen, rng)
        prompts.append(MultiGenPrompt(i, tuple(chosen), text))
    return prompts


def load_prompts(path: str | Path) -> list[MultiGenPrompt]:
    """Read a prompt file in the authors' format (a JSON list; theirs are read unchanged)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"MultiGen prompt file {path} not found") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON list of prompts (the authors' format)")
    prompts = [MultiGenPrompt.from_json(entry, f"{path} item {i}") for i, entry in enumerate(data)]
    moved = [i for i, p in enumerate(prompts) if p.unique_id != i]
    if moved:
        logger.warning("%s: %d prompts have unique_id != their position (first: item %d); detection keys "
                       "'<index>_<j>' use the position, as the authors' scorer does", path, len(moved), moved[0])
    return prompts


def save_prompts(prompts: Sequence[MultiGenPrompt], path: str | Path) -> Path:
    """Write ``prompts`` in the authors' format (indent 2)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([p.to_json() for p in prompts], indent=2) + "\n", encoding="utf-8")
    return path


def _objects(prompt: MultiGenPrompt | Mapping[str, Any], where: str) -> tuple[str, ...]:
    if isinstance(prompt, MultiGenPrompt):
        return prompt.objects
    return MultiGenPrompt.from_json(prompt, where).objects


# ----------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------


def _parse_key(key: str, n_prompts: int, images_per_prompt: int) -> tuple[int, int]:
    parts = str(key).split("_")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"detection key {key!r} is not '<prompt index>_<image index>'")
    index, j = int(parts[0]), int(parts[1])
    if index >= n_prompts:
        raise ValueError(f"detection key {key!r}: prompt {index} is not in the prompt set ({n_prompts} prompts); "
                         "score with the prompt file the images were generated from")
    if j >= images_per_prompt:
        raise ValueError(f"detection key {key!r}: image {j} but images_per_prompt={images_per_prompt}; "
                         "pass the number of images generated per prompt")
    return index, j


def detected_names(entry: Mapping[str, Any], threshold: float = 0.1, key: str = "") -> set[str]:
    """Distinct class names detected with score > threshold in one detection entry."""
    classes, scores = entry.get("classes"), entry.get("scores")
    if not isinstance(classes, list) or not isinstance(scores, list) or len(classes) != len(scores):
        raise ValueError(f"detection {key!r} must have 'classes' and 'scores' lists of the same length, got "
                         f"{entry!r}")
    return {c for c, s in zip(classes, scores, strict=True) if s > threshold}


def image_outcome(named: Sequence[str], found: Sequence[str] | set[str]) -> dict[str, int]:
    """One generated image scored against its prompt: ``hits`` = how many distinct named categories were
    detected (the image counts toward MG_k for every k <= hits: the paper's definition), ``all_named`` (1 if
    every named category was detected) and ``exact`` (1 if those and nothing else were)."""
    named, found = set(named), set(found)
    hits = len(named & found)
    return {"hits": hits, "all_named": int(hits == len(named)), "exact": int(named == found)}


def at_least(hits: Sequence[Sequence[int]], k: int) -> list[list[int]]:
    """Per prompt and image, 1 if the image has >= ``k`` named categories detected: the indicator whose mean
    is MG_k (``hits`` as ``image_outcome`` gives it, one row per prompt: the clusters of an interval)."""
    if k < 1:
        raise ValueError(f"MG_k needs k >= 1, got {k}")
    return [[int(h >= k) for h in row] for row in hits]


def multigen_scores(detections: Mapping[str, Mapping[str, Any]],
                    prompts: Sequence[MultiGenPrompt | Mapping[str, Any]], threshold: float = 0.1,
                    images_per_prompt: int = 10, max_k: int | None = None) -> dict[str, tuple[float, float]]:
    """``{"MG1": (mean, std), ...}`` in percent from detections keyed "<prompt index>_<j>" (module docstring).

    ``prompts``: ``MultiGenPrompt`` objects or the authors' JSON objects, indexed by position. Keys run
    MG1..MG``max_k`` (default: the most objects a scored prompt names); MG_k counts only the prompts that
    name >= k objects. std: population std over j of the per-j success rate (as ``numpy.std``).
    """
    if not detections:
        raise ValueError("no detections to score; run the detector first (or check the detection folder)")
    objects = [_objects(p, f"prompt {i}") for i, p in enumerate(prompts)]
    parsed = {key: _parse_key(key, len(objects), images_per_prompt) for key in detections}
    top = max_k or max(len(objects[i]) for i, _ in parsed.values())
    hits = np.zeros((top, images_per_prompt))    # [k, j] images of index j with >= k+1 named detected
    totals = np.zeros((top, images_per_prompt))  # [k, j] images of index j whose prompt names >= k+1
    for key, (index, j) in parsed.items():
        named = set(objects[index])
        found = len(detected_names(detections[key], threshold, key) & named)
        eligible = min(len(named), top)
        totals[:eligible, j] += 1
        hits[:min(found, top), j] += 1
    present = totals.sum(axis=1)
    if (totals[0] > 0).sum() < images_per_prompt or len(set(totals[0])) > 1:
        logger.warning("incomplete results: images per index j = %s; scoring the %d images present",
                       totals[0].astype(int).tolist(), int(present[0]))
    scores = {}
    for k in range(top):
        if present[k] == 0:
            raise ValueError(f"MG{k + 1}: no scored prompt names {k + 1} objects; lower max_k")
        seen = totals[k] > 0
        per_j = 100.0 * hits[k, seen] / totals[k, seen]
        scores[f"MG{k + 1}"] = (float(100.0 * hits[k].sum() / present[k]), float(np.std(per_j)))
    return scores


def multigen_intervals(detections: Mapping[str, Mapping[str, Any]],
                       prompts: Sequence[MultiGenPrompt | Mapping[str, Any]], threshold: float = 0.1,
                       images_per_prompt: int = 10, max_k: int | None = None) -> dict[str, list[float]]:
    """``{"MG1": [mean, low, high], ...}`` in percent: MG_k with its 95% interval clustered by prompt.

    The same MG_k as ``multigen_scores`` (the prompts naming >= k objects, every image present), with the
    uncertainty that fits few images a prompt: a prompt's images are one cluster (``stats.cluster_interval``),
    where the authors' std over the seed index j is a std of ``images_per_prompt`` numbers (2 in a lesson)."""
    objects = [_objects(p, f"prompt {i}") for i, p in enumerate(prompts)]
    rows: dict[int, list[int]] = {}
    for key in sorted(detections):
        index, _ = _parse_key(key, len(objects), images_per_prompt)
        rows.setdefault(index, []).append(
            image_outcome(objects[index], detected_names(detections[key], threshold, key))["hits"])
    top = max_k or max(len(objects[i]) for i in rows)
    intervals = {}
    for k in range(1, top + 1):
        eligible = [row for index, row in sorted(rows.items()) if len(objects[index]) >= k]
        if eligible:
            cell = cluster_interval(at_least(eligible, k))
            intervals[f"MG{k}"] = [cell["mean"], cell["low"], cell["high"]]
    return intervals


def nothing_extra_share(detections: Mapping[str, Mapping[str, Any]],
                        prompts: Sequence[MultiGenPrompt | Mapping[str, Any]], threshold: float = 0.1) -> float:
    """% of images in which no category outside the prompt's names is detected above ``threshold``.

    Meaningful only with a detector that reports every category it sees (the toy world's ``ToyDetector``).
    """
    if not detections:
        raise ValueError("no detections to score")
    objects = [_objects(p, f"prompt {i}") for i, p in enumerate(prompts)]
    clean = 0
    for key, entry in detections.items():
        index, _ = _parse_key(key, len(objects), 10**9)
        clean += not (detected_names(entry, threshold, key) - set(objects[index]))
    return 100.0 * clean / len(detections)


# ----------------------------------------------------------------------------------------------------------
# Generation + detection (resumable, split across processes by accelerate)
# ----------------------------------------------------------------------------------------------------------


class _SingleProcess:
    """Stand-in for accelerate's PartialState when accelerate is unavailable: one process."""

    process_index = 0
    num_processes = 1
    is_main_process = True

    @contextmanager
    def split_between_processes(self, items: list) -> Any:
        yield items

    def wait_for_everyone(self) -> None:
        return None


def process_state() -> Any:
    """accelerate's ``PartialState()`` (under ``accelerate launch``: this process's rank), else one process."""
    try:
        from accelerate import PartialState  # lazy: 0.4 s, and runs without it are one process
    except ImportError:
        return _SingleProcess()
    return PartialState()


def _as_image_list(images: Any, count: int) -> list[Any]:
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"generate_fn must return [N, H, W, 3] images, got an array of shape {images.shape}")
        images = list(images)
    images = list(images)
    if len(images) != count:
        raise ValueError(f"generate_fn returned {len(images)} images for {count} prompts")
    return images


def _save_png(image: Any, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    to_pil(image).save(tmp)
    os.replace(tmp, path)  # a crash never leaves a half-written image that a resumed run would trust


def write_json(data: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def load_detections(folder: str | Path) -> dict[str, dict[str, Any]]:
    """All detection JSON files of ``folder`` merged (the authors' layout: one file per process)."""
    merged: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(folder).glob("*.json")):
        # what made them and what this project wrote (provenance.claim_folder / record_written), not detections
        if path.name != MANIFEST and not path.name.startswith(WRITTEN_PREFIX):
            merged.update(json.loads(path.read_text(encoding="utf-8")))
    return merged


def _check_image_prompts(folder: Path, items: Sequence[tuple[int, str, Sequence[str]]]) -> None:
    """Images of ``folder`` written by ``sample`` carry their prompt list (``prompts.json``): image
    ``{i}_{seed}.png`` must be of the prompt this evaluation gives id ``i``, or ``UserError`` says which is not."""
    record = folder / "prompts.json"
    if not record.is_file():
        return
    try:
        listed = json.loads(record.read_text(encoding="utf-8")).get("prompts")
    except (ValueError, AttributeError):  # not sample's record (e.g. a MultiGen output folder's prompt set)
        return
    if not isinstance(listed, list):
        return
    for pid, text, _ in items:
        if 0 <= pid < len(listed) and listed[pid] != text:
            raise UserError(f"{record} says images {pid}_*.png are of prompt {listed[pid]!r}, but prompt {pid} here is "
                            f"{text!r}; pass the --prompts those images were made from, or generate the images for "
                            "these prompts (--model)")


def _external_images_record(folder: Path) -> dict[str, Any]:
    """What identifies images this evaluation did not make (``--images``), so that their detections are redone
    when the images change: the folder, and the manifest of whatever made them (``sample``, an earlier
    evaluation), else the names, sizes and modification times of its images."""
    record: dict[str, Any] = {"images_dir": str(folder.resolve())}
    manifest = folder / MANIFEST
    if manifest.is_file():
        record["made_by"] = json.loads(manifest.read_text(encoding="utf-8"))
        record["written"] = written_files(folder)  # which prompt each image was made for
    else:
        digest = hashlib.sha256()
        for path in sorted(folder.glob("*_*.png")):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        record["files"] = digest.hexdigest()[:16]
    return record


#: the result files an evaluation writes into its output folder, beside ``images/`` and ``detections/``
#: (``run_multigen`` / ``run_visor`` the first ones, ``evaluate``'s command the figures and prompt sets)
RESULT_FILES: dict[str, tuple[str, ...]] = {
    "multigen": ("multigen.json", "multigen.md"),
    "visor": ("visor.json", "visor.md", "visor_prompts.json"),
}


def check_result_files(out_dir: str | Path, names: Sequence[str]) -> None:
    """The output-folder rule for an evaluation's result files (``provenance.check_outputs``): ``names`` in
    ``out_dir`` that this project did not write are refused, naming them, before anything changes. A folder an
    earlier version evaluated into (detections with a manifest, no written list) counts its results as its own."""
    out_dir = Path(out_dir)
    earlier = (out_dir / "detections" / MANIFEST).is_file() and written_files(out_dir) is None
    check_outputs(out_dir, names, also_ours=names if earlier else ())


def generate_and_detect(items: Sequence[tuple[int, str, Sequence[str]]], detector: Any, out_dir: str | Path,
                        images_per_prompt: int, generate_fn: GenerateFn | None = None,
                        images_dir: str | Path | None = None, save_threshold: float = 0.01,
                        generate_batch_size: int = 16, progress: bool = True, state: Any = None,
                        desc: str = "", provenance: Mapping[str, Any] | None = None
                        ) -> dict[str, dict[str, Any]]:
    """Images ``{id}_{j}.png`` (j = seed = 0..N-1) for each ``(id, text, query names)``, detected and saved.

    - images: in ``images_dir`` (default ``out_dir/images``); with ``generate_fn`` the missing ones are
      generated (``generate_fn(texts, seeds)``) and saved, those on disk are never regenerated; without it
      every image must already be there;
    - detections: ``out_dir/detections/<rank>.json``, ``{"<id>_<j>": {"classes", "scores", "boxes"}}``
      with scores > ``save_threshold``, rewritten after every prompt; images already detected are skipped;
    - under ``accelerate launch`` each process takes its share of the items
      (``PartialState.split_between_processes``) and writes its own file;
    - ``provenance``: what makes the images (``{"model": provenance.model_digest(model), settings...}``;
      default: ``generate_fn.provenance``, which ``sample.Generator`` has). With ``generate_fn`` it is required: images and detections made by anything else are removed first
      (``provenance.claim_folder``), so a second model evaluated into the same folder is never scored on the
      first one's images. Detections are claimed for (images, detector, save threshold, the items' content): a
      prompt file whose prompts differ is never scored on the old images or detections. An image is reused
      only when this project made it for the same prompt. Files of unknown origin under those names are
      refused (``provenance.OutputFolderError``), never deleted or overwritten.

    Returns every detection of the folder (all processes), once all processes are done.
    """
    state = state or process_state()
    out_dir = Path(out_dir)
    image_folder = Path(images_dir) if images_dir is not None else out_dir / "images"
    detection_folder = out_dir / "detections"
    provenance = provenance if provenance is not None else getattr(generate_fn, "provenance", None)
    if generate_fn is not None and provenance is None:
        raise ValueError("generating images needs their provenance (model digest and sampling settings), so that "
                         "images of another model are never reused: use sample.Generator(model, steps) as generate_fn, or pass provenance={'model': model_digest(model), ...}")
    if generate_fn is not None:
        images_record = dict(provenance)
    else:
        _check_image_prompts(image_folder, items)
        images_record = _external_images_record(image_folder)
    # what the detections depend on besides the images: the prompts and query names, their content
    items_digest = hashlib.sha256(json.dumps([[int(i), str(text), list(map(str, names))] for i, text, names in items]
                                             ).encode()).hexdigest()[:16]
    if state.is_main_process:
        if generate_fn is not None:
            claim_folder(image_folder, images_record, patterns=("*_*.png",))
        claim_folder(detection_folder, {"images": images_record, "detector": type(detector).__name__,
                                        "detector_settings": _detector_settings(detector),
                                        "save_threshold": save_threshold, "items": items_digest},
                     patterns=("[0-9]*.json",))
    state.wait_for_everyone()
    rank = str(state.process_index)
    image_folder.mkdir(parents=True, exist_ok=True)
    detection_folder.mkdir(parents=True, exist_ok=True)
    own_file = detection_folder / f"{state.process_index}.json"
    with state.split_between_processes(list(items)) as mine:
        done = load_detections(detection_folder)
        own = json.loads(own_file.read_text(encoding="utf-8")) if own_file.is_file() else {}
        # 1. images: an image is reused only if it is there and, when this run generates, was made for this prompt
        made_for = (written_files(image_folder) or {}) if generate_fn is not None else {}
        missing = [(pid, text, j) for pid, text, _ in mine for j in range(images_per_prompt)
                   if not (image_folder / f"{pid}_{j}.png").is_file()
                   or made_for.get(f"{pid}_{j}.png", text) != text]
        if missing and generate_fn is None:
            shown = ", ".join(f"{pid}_{j}.png" for pid, _, j in missing[:5])
            raise MissingImagesError(f"{len(missing)} images are missing from {image_folder} (e.g. {shown}); "
                                     "generate them (pass a model) or point to the folder that holds them")
        starts = range(0, len(missing), generate_batch_size)
        for start in tqdm(starts, desc=f"generating {desc}".strip(), disable=not progress or not missing):
            batch = missing[start:start + generate_batch_size]
            images = _as_image_list(generate_fn([t for _, t, _ in batch], [j for _, _, j in batch]), len(batch))
            for (pid, _, j), image in zip(batch, images, strict=True):
                _save_png(image, image_folder / f"{pid}_{j}.png")
            record_written(image_folder, {f"{pid}_{j}.png": text for pid, text, j in batch}, part=rank)
        # 2. detections
        todo = [(pid, names, [j for j in range(images_per_prompt) if f"{pid}_{j}" not in done])
                for pid, _, names in mine]
        todo = [t for t in todo if t[2]]
        for pid, names, indices in tqdm(todo, desc=f"detecting {desc}".strip(), disable=not progress or not todo):
            images = [_load_rgb(image_folder / f"{pid}_{j}.png") for j in indices]
            for j, found in zip(indices, detect_images(detector, images, names), strict=True):
                kept = [d for d in found if d.score > save_threshold]
                own[f"{pid}_{j}"] = {"classes": [d.name for d in kept], "scores": [d.score for d in kept],
                                     "boxes": [list(d.box) for d in kept]}
            write_json(own, own_file)
            record_written(detection_folder, {own_file.name: None}, part=rank)
    state.wait_for_everyone()
    return load_detections(detection_folder)


def _detector_settings(detector: Any) -> dict[str, Any]:
    """The public scalar settings of a detector (thresholds, colour mode, model name): part of what made a
    detection file."""
    return {k: v for k, v in sorted(vars(detector).items())
            if not k.startswith("_") and isinstance(v, (str, int, float, bool, type(None)))}


def _load_rgb(path: Path) -> Any:
    return open_rgb(path)  # 16-bit greyscale scaled, not clipped


def detect_images(detector: Any, images: Sequence[Any], names: Sequence[str]) -> list[list[Detection]]:
    """``detector.detect_many`` when it has one (batched OWL), else ``detect`` image by image."""
    if hasattr(detector, "detect_many"):
        return detector.detect_many(images, list(names))
    return [detector.detect(image, list(names)) for image in images]


# ----------------------------------------------------------------------------------------------------------
# The runner, tables and figures
# ----------------------------------------------------------------------------------------------------------


def run_multigen(prompts: Sequence[MultiGenPrompt], detector: Any, out_dir: str | Path,
                 generate_fn: GenerateFn | None = None, images_dir: str | Path | None = None,
                 images_per_prompt: int = 10, model_name: str = "model", threshold: float = 0.1,
                 save_threshold: float = 0.01, report_extra: bool | None = None, generate_batch_size: int = 16,
                 progress: bool = True, state: Any = None, provenance: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
    """Generate (or read), detect, score; write ``multigen.json`` and ``multigen.md`` in ``out_dir``.

    ``report_extra`` (default: when the detector reports every category it sees, its
    ``reports_all_categories``: the toy world's) adds ``nothing_extra``. Resumable: a
    second run with the same ``provenance`` (model digest, settings; see ``generate_and_detect``) regenerates
    no image on disk and re-detects no image already in ``out_dir/detections``; another model's images and
    detections in the folder are removed first. A ``multigen.json`` or ``.md`` there that this project did not
    write is refused before anything changes (``check_result_files``).
    Returns the result dict (every process gets it; only the main process writes files).
    """
    state = state or process_state()
    check_result_files(out_dir, RESULT_FILES["multigen"])
    items = [(i, p.text, p.objects) for i, p in enumerate(prompts)]
    detections = generate_and_detect(items, detector, out_dir, images_per_prompt, generate_fn, images_dir,
                                     save_threshold, generate_batch_size, progress, state, desc="MultiGen",
                                     provenance=provenance)
    wanted = {f"{i}_{j}" for i in range(len(prompts)) for j in range(images_per_prompt)}
    detections = {k: v for k, v in detections.items() if k in wanted}
    result: dict[str, Any] = {
        "model": model_name,
        "scores": {k: list(v) for k, v in multigen_scores(detections, prompts, threshold, images_per_prompt).items()},
        "intervals": multigen_intervals(detections, prompts, threshold, images_per_prompt),
        "num_images": len(detections), "num_prompts": len(prompts), "images_per_prompt": images_per_prompt,
        "det_threshold": threshold, "detector": type(detector).__name__,
    }
    if report_extra if report_extra is not None else getattr(detector, "reports_all_categories", False):
        result["nothing_extra"] = nothing_extra_share(detections, prompts, threshold)
    if state.is_main_process:
        out_dir = Path(out_dir)
        record_written(out_dir, dict.fromkeys(RESULT_FILES["multigen"]))
        write_json(result, out_dir / "multigen.json")
        (out_dir / "multigen.md").write_text(multigen_table([result]) + "\n", encoding="utf-8")
    return result


def multigen_table(results: Sequence[Mapping[str, Any]], uncertainty: str = "std") -> str:
    """Markdown table like the authors': ``Model | MG_1 .. MG_k | Num_Imgs | det_threshold``.

    ``uncertainty="std"``: their mean(std over the seed index), to set beside the paper's tables;
    ``"interval"``: mean [95% interval clustered by prompt] (``multigen_intervals``), for few images a prompt.
    """
    if uncertainty not in ("std", "interval"):
        raise ValueError(f"uncertainty must be 'std' or 'interval', got {uncertainty!r}")
    if uncertainty == "interval" and any("intervals" not in r for r in results):
        raise ValueError("a result has no 'intervals' (written before they existed): rerun run_multigen")
    top = max(len(r["scores"]) for r in results)
    extra = any("nothing_extra" in r for r in results)
    header = ["Model"] + [f"MG_{k}" for k in range(1, top + 1)] + ["Num_Imgs", "det_threshold"]
    header += ["nothing_extra"] if extra else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [str(r["model"])]
        for k in range(1, top + 1):
            if uncertainty == "interval":
                cell = r["intervals"].get(f"MG{k}")
                cells.append(f"{cell[0]:.1f} [{cell[1]:.1f}, {cell[2]:.1f}]" if cell else "-")
            else:
                mean_std = r["scores"].get(f"MG{k}")
                cells.append(f"{mean_std[0]:.2f}({mean_std[1]:.2f})" if mean_std else "-")
        cells += [str(r["num_images"]), str(r["det_threshold"])]
        if extra:
            cells.append(f"{r['nothing_extra']:.2f}" if "nothing_extra" in r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_multigen(results: Sequence[Mapping[str, Any]], path: str | Path, title: str = "MultiGen") -> Path:
    """Bars of MG_1..MG_k with 95% intervals clustered by prompt (``multigen_intervals``; results written
    before them: the authors' +- std), one colour per model; saved as PNG."""
    from tokencompose.viz import score_bars  # lazy: viz imports matplotlib (0.6 s), only this plot needs it

    def bar(result: Mapping[str, Any], key: str) -> tuple[float, float, float]:
        if key in result.get("intervals", {}):
            return tuple(result["intervals"][key])
        if key in result["scores"]:
            mean, std = result["scores"][key]
            return mean, mean - std, mean + std
        return np.nan, np.nan, np.nan

    top = max(len(r["scores"]) for r in results)
    keys = [f"MG{k}" for k in range(1, top + 1)]
    series = {str(r["model"]): [bar(r, k) for k in keys] for r in results}
    figure = score_bars({title: series}, [f"MG$_{k}$" for k in range(1, top + 1)], ylabel="success rate (%)",
                        ylim=(0, 118))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def example_figure(images_dir: str | Path, detections: Mapping[str, Mapping[str, Any]],
                   keys: Sequence[str], path: str | Path, threshold: float = 0.1, columns: int = 4) -> Path:
    """A grid of images ``{key}.png`` with their detections above ``threshold`` drawn (boxes + labels)."""
    tiles = []
    for key in keys:
        entry = detections[key]
        found = [Detection(c, s, tuple(b)) for c, s, b in
                 zip(entry["classes"], entry["scores"], entry.get("boxes") or [], strict=False) if s > threshold]
        image = _load_rgb(Path(images_dir) / f"{key}.png")
        scale = max(1, 256 // max(image.size))
        tiles.append(draw_detections(image, found, scale=scale))
    if not tiles:
        raise ValueError("no images to draw")
    side = max(max(t.size) for t in tiles) + 4  # a 4-pixel grey gap between tiles
    rows = (len(tiles) + columns - 1) // columns
    grid = Image.new("RGB", (side * min(columns, len(tiles)), side * rows), (128, 128, 128))
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % columns) * side + 2, (i // columns) * side + 2))
    path = Path(path)
    grid.save(path)
    return path
