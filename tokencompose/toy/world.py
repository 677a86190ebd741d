"""The toy world: synthetic scenes with exact masks, MultiGen-style captions and an exact detector.

A world small enough to train a text-to-image model on a CPU in minutes, where every mask is exact and
every detection can be checked (DESIGN.md "The toy world"):

- K object categories (default 10, ``TOY_CATEGORIES``), each a distinct shape on a black background
  (black = 0, so an undertrained model gets the background right);
- two colour modes (``COLOUR_MODES``): ``"identity"`` (the first world: each category has its own colour, so
  a pixel's colour names its category) and ``"attribute"`` (each object is drawn in a random colour of
  ``TOY_COLOURS``, distinct within a scene, and the caption names it: "a photo of a red circle and a blue
  star."). In the attribute world a blob's colour does not say what it is, so a denoiser must ask the
  caption, per location, which noun is drawn there: the question Stable Diffusion's cross-attention answers;
- scenes of 1-4 objects of distinct categories, random size and position, never overlapping (at least one
  black pixel between the boxes of two objects);
- captions in MultiGen's template: "a photo of a circle, a star and a ring.";
- exact binary masks from the renderer, written in the authors' dataset format (``make_toy_dataset``);
- ``EXCLUDED_PAIRS``: pairs of categories that never appear together in generated training scenes, the
  held-out "uncommon combinations" of the evaluation (MultiGen measures composition of objects the model
  rarely saw together);
- the world's detector lives with the other detectors: ``toy.detector.ToyDetector`` (colour and
  shape; in the attribute world the shape whatever the colour).

Every category name is a common English noun that CLIP's BPE tokenizer encodes as one token
(``"circle</w>"``), so one noun = one cross-attention column, as for most COCO nouns in the paper.

Usage::

    python -m tokencompose toy-data --out data/toy -n 2000 --seed 0 --max-objects 4
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from tokencompose.cli_args import (
    ArgumentParser,
    non_negative_float,
    non_negative_int,
    output_folder,
    positive_int,
)
from tokencompose.config import TOY_BASE_DIR
from tokencompose.data import collate, encode_example, seed_for
from tokencompose.provenance import check_outputs, record_written, remove_written

logger = logging.getLogger(__name__)

#: a box (x0, y0, x1, y1) in pixels, the convention of ``evaluate.detectors``
Box = tuple[float, float, float, float]

# ----------------------------------------------------------------------------------------------------------
# Categories
# ----------------------------------------------------------------------------------------------------------

#: shapes the renderer can draw (each fills its box exactly: its mask touches all four sides)
SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar", "diamond", "star", "heart", "arrow")

#: long side / short side of a bar (every other shape is drawn in a square box)
BAR_ASPECT = 1 / 0.35


@dataclass(frozen=True)
class Category:
    """One object category: its ``name`` (the caption noun), colour ``rgb`` (0-255) and ``shape`` (``SHAPES``)."""

    name: str
    rgb: tuple[int, int, int]
    shape: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or not self.name.isalpha() or not self.name.islower():
            raise ValueError(f"category name must be a lowercase word (a caption noun), got {self.name!r}")
        if (len(self.rgb) != 3 or not all(isinstance(c, (int, np.integer)) and 0 <= c <= 255 for c in self.rgb)):
            raise ValueError(f"category {self.name!r}: rgb must be 3 integers in 0-255, got {self.rgb!r}")
        if max(self.rgb) < 128:
            raise ValueError(f"category {self.name!r}: colour {self.rgb} is too dark to tell from the black "
                             "background; use a colour with a channel >= 128")
        if self.shape not in SHAPES:
            raise ValueError(f"category {self.name!r}: unknown shape {self.shape!r}; choose one of {SHAPES}")


#: The default world: 10 shapes, 10 saturated colours at least 128 apart in RGB (0.5 apart in chromaticity).
#: Every name is one CLIP BPE token followed by ``</w>`` (checked in tests/test_toy_world.py).
TOY_CATEGORIES: tuple[Category, ...] = (
    Category("circle", (255, 0, 0), "circle"),      # red
    Category("square", (0, 255, 0), "square"),      # green
    Category("triangle", (0, 0, 255), "triangle"),  # blue
    Category("cross", (255, 255, 0), "cross"),      # yellow
    Category("ring", (255, 0, 255), "ring"),        # magenta
    Category("bar", (0, 255, 255), "bar"),          # cyan
    Category("diamond", (255, 128, 0), "diamond"),  # orange
    Category("star", (255, 255, 255), "star"),      # white
    Category("heart", (128, 0, 255), "heart"),      # violet
    Category("arrow", (128, 255, 0), "arrow"),      # lime
)

#: Pairs that never co-occur in a generated training scene: the held-out "uncommon combinations" of the
#: evaluation. Every default category is in exactly one pair; the first 6 categories (a K = 6 world) keep
#: two pairs, (circle, triangle) and (square, ring). Pairs naming a category outside the world are ignored.
EXCLUDED_PAIRS: tuple[tuple[str, str], ...] = (
    ("circle", "triangle"),
    ("square", "ring"),
    ("cross", "star"),
    ("bar", "heart"),
    ("diamond", "arrow"),
)

#: "identity": each category is drawn in its own colour (``Category.rgb``); "attribute": each object in a
#: random colour of ``TOY_COLOURS`` (distinct within a scene) named in the caption ("a red circle").
COLOUR_MODES = ("identity", "attribute")


@dataclass(frozen=True)
class Colour:
    """A colour of the attribute world: its caption word ``name`` and ``rgb`` (0-255)."""

    name: str
    rgb: tuple[int, int, int]


#: The attribute world's palette: 8 saturated colours ~0.5 or more apart in chromaticity (what the detector
#: compares), each one CLIP BPE token (checked in tests/test_toy_world.py).
TOY_COLOURS: tuple[Colour, ...] = (
    Colour("red", (255, 0, 0)),
    Colour("green", (0, 255, 0)),
    Colour("blue", (0, 0, 255)),
    Colour("yellow", (255, 255, 0)),
    Colour("pink", (255, 0, 255)),
    Colour("orange", (255, 128, 0)),
    Colour("white", (255, 255, 255)),
    Colour("purple", (128, 0, 255)),
)


def check_colour_mode(colour_mode: str) -> str:
    """``colour_mode`` if it is one of ``COLOUR_MODES``, else ``ValueError`` naming them."""
    if colour_mode not in COLOUR_MODES:
        raise ValueError(f"unknown colour mode {colour_mode!r}; choose one of {COLOUR_MODES}")
    return colour_mode


def sample_colours(rng: np.random.Generator, k: int, palette: Sequence[Colour] = TOY_COLOURS) -> list[Colour]:
    """``k`` distinct colours of ``palette`` in random order (one per object of an attribute-world scene)."""
    if not 1 <= k <= len(palette):
        raise ValueError(f"cannot draw {k} distinct colours from a palette of {len(palette)}")
    return [palette[i] for i in rng.permutation(len(palette))[:k]]


def check_world(categories: Sequence[Category]) -> tuple[Category, ...]:
    """The categories as a tuple, after checking they are Category objects with distinct names and colours."""
    categories = tuple(categories)
    if not categories:
        raise ValueError("the toy world needs at least one category; got an empty list")
    for category in categories:
        if not isinstance(category, Category):
            raise TypeError(f"categories must be Category objects, got {category!r}")
    names = [c.name for c in categories]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"category names must be distinct; repeated: {duplicates}")
    chroma = chromaticity(categories)
    distance = np.linalg.norm(chroma[:, None] - chroma[None, :], axis=-1)  # [K, K], one call (run per scene)
    for i in range(len(categories)):
        for j in range(i + 1, len(categories)):
            if distance[i, j] < 0.3:
                raise ValueError(
                    f"categories {categories[i].name!r} {categories[i].rgb} and {categories[j].name!r} "
                    f"{categories[j].rgb} have colours too close for the colour detector; make their "
                    "colours differ by >= 0.3 in chromaticity (rgb / max channel)")
    return categories


def get_category(name: str, categories: Sequence[Category] = TOY_CATEGORIES) -> Category:
    """The category called ``name``; ``KeyError`` naming the known categories if there is none."""
    for category in categories:
        if category.name == name:
            return category
    raise KeyError(f"unknown toy category {name!r}; this world has {[c.name for c in categories]}")


def chromaticity(categories: Sequence[Category]) -> np.ndarray:
    """[K, 3] colours divided by their brightest channel (what ``ToyDetector`` compares pixels with)."""
    rgb = np.array([c.rgb for c in categories], dtype=np.float64) / 255.0
    return rgb / rgb.max(axis=1, keepdims=True)


def model_colour_mode(model: Any) -> str:
    """The colour mode a toy model was trained in: ``colour_mode`` of its folder's ``pretrain_settings.json``
    ("toy" = the shipped base). "identity" when there is no such file or key (the first base predates the
    attribute world) or ``model`` is no folder (a hub id, objects in memory, ``None``)."""
    if model == "toy":
        model = TOY_BASE_DIR
    if not isinstance(model, (str, Path)) or not Path(model).is_dir():
        return "identity"
    settings = Path(model) / "pretrain_settings.json"
    if not settings.is_file():
        return "identity"
    return check_colour_mode(json.loads(settings.read_text()).get("colour_mode", "identity"))


# ----------------------------------------------------------------------------------------------------------
# Captions and category sampling
# ----------------------------------------------------------------------------------------------------------


def caption_for(names: Sequence[str | Category], colours: Sequence[str | Colour] | None = None) -> str:
    """MultiGen's template: "a photo of a circle.", "... of a circle and a ring.", "... a, b and c." .

    ``names`` are nouns or ``Category`` objects (their names are used), in caption order. ``colours`` (the
    attribute world) puts one colour word before each noun: "a photo of a red circle and an orange star.".
    """
    names = [n.name if isinstance(n, Category) else n for n in names]
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"caption_for needs one or more non-empty nouns, got {names!r}")
    if colours is not None:
        colours = [c.name if isinstance(c, Colour) else c for c in colours]
        if len(colours) != len(names) or not all(isinstance(c, str) and c for c in colours):
            raise ValueError(f"caption_for needs one colour word per noun, got {colours!r} for {names!r}")
        names = [f"{c} {n}" for c, n in zip(colours, names, strict=True)]
    phrases = [("an " if n[0].lower() in "aeiou" else "a ") + n for n in names]
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return f"a photo of {listed}."


def toy_caption(names: Sequence[str], rng: np.random.Generator | None = None) -> str:
    """A MultiGen caption template (``evaluate.multigen.make_prompts(template=)``) of the identity world:
    ``caption_for(names)``, "a photo of a circle, a star and a ring." (``rng`` unused)."""
    return caption_for(names)


def toy_attribute_caption(names: Sequence[str], rng: np.random.Generator) -> str:
    """The attribute world's MultiGen template: a distinct random colour word before each noun, drawn from
    ``rng`` ("a photo of a red circle and a blue star.")."""
    return caption_for(names, sample_colours(rng, len(names)))


def multigen_template(colour_mode: str):
    """The caption template of the toy world ``colour_mode`` for ``evaluate.multigen.make_prompts``."""
    return toy_attribute_caption if check_colour_mode(colour_mode) == "attribute" else toy_caption


def category_names(k: int | None = None) -> list[str]:
    """The names of the first ``k`` toy categories (all by default), in ``TOY_CATEGORIES`` order."""
    return [c.name for c in (TOY_CATEGORIES[:k] if k else TOY_CATEGORIES)]


def toy_nouns(prompt: str) -> list[str]:
    """The toy categories named in a toy caption, in caption order (each once)."""
    words = re.findall(r"[a-z]+", prompt.lower())
    names = {c.name for c in TOY_CATEGORIES}
    return list(dict.fromkeys(w for w in words if w in names))


def caption_colours(caption: str, names: Sequence[str]) -> list[str | None]:
    """The colour word right before each noun of ``names`` in an attribute-world ``caption`` (``None`` where
    the word before the noun is not a colour of ``TOY_COLOURS``)."""
    palette = {c.name for c in TOY_COLOURS}
    colours = []
    for name in names:
        match = re.search(rf"\b([a-z]+) {re.escape(name)}\b", caption)
        colours.append(match.group(1) if match and match.group(1) in palette else None)
    return colours


def _pairs_in_world(exclude_pairs: Sequence[Sequence[str]], names: Sequence[str]) -> list[frozenset[str]]:
    """The excluded pairs as sets, keeping those inside the world; unknown names raise ``ValueError``."""
    known = set(names) | {c.name for c in TOY_CATEGORIES}
    pairs = []
    for pair in exclude_pairs:
        pair = tuple(pair)
        if len(pair) != 2 or pair[0] == pair[1]:
            raise ValueError(f"an excluded pair must be two different category names, got {pair!r}")
        unknown = [n for n in pair if n not in known]
        if unknown:
            raise ValueError(f"excluded pair {pair!r} names unknown categor{'y' if len(unknown) == 1 else 'ies'} "
                             f"{unknown}; this world has {list(names)}")
        if pair[0] in names and pair[1] in names:
            pairs.append(frozenset(pair))
    return pairs


def _allowed(chosen: Sequence[str], pairs: Sequence[frozenset[str]]) -> bool:
    chosen = set(chosen)
    return not any(pair <= chosen for pair in pairs)


def sample_categories(rng: np.random.Generator, k: int, categories: Sequence[Category] = TOY_CATEGORIES,
                      exclude_pairs: Sequence[Sequence[str]] = EXCLUDED_PAIRS) -> list[Category]:
    """``k`` distinct categories, uniformly among the sets that contain no excluded pair, in random order.

    Rejection sampling (exactly uniform over the allowed sets); if 1000 draws all hit an excluded pair, a
    randomized search finds an allowed set, and ``ValueError`` says so when none exists.
    """
    categories = check_world(categories)
    names = [c.name for c in categories]
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= len(categories):
        raise ValueError(f"cannot draw k={k!r} distinct categories from a world of {len(categories)}: "
                         f"use 1 <= k <= {len(categories)}")
    pairs = _pairs_in_world(exclude_pairs, names)
    for _ in range(1000):
        order = rng.permutation(len(categories))[:k]
        if _allowed([names[i] for i in order], pairs):
            return [categories[i] for i in order]
    # The allowed sets are rare (or absent): depth-first search in a random order.
    order = [int(i) for i in rng.permutation(len(categories))]

    def extend(chosen: list[int], start: int) -> list[int] | None:
        if len(chosen) == k:
            return chosen
        for position in range(start, len(order)):
            candidate = chosen + [order[position]]
            if _allowed([names[i] for i in candidate], pairs):
                found = extend(candidate, position + 1)
                if found is not None:
                    return found
        return None

    found = extend([], 0)
    if found is None:
        raise ValueError(f"no {k} categories of {names} avoid the excluded pairs "
                         f"{[tuple(sorted(p)) for p in pairs]}; lower the number of objects or exclude fewer pairs")
    return [categories[i] for i in found]


def random_toy_prompts(n: int, seed: int = 0, objects: tuple[int, int] = (2, 3)) -> list[str]:
    """``n`` toy captions of ``objects[0]..objects[1]`` categories (no excluded pair), reproducible by ``seed``."""
    rng = np.random.default_rng(seed)
    return [caption_for(sample_categories(rng, int(rng.integers(objects[0], objects[1] + 1)))) for _ in range(n)]


def _count_probabilities(objects: tuple[int, int], object_weights: Sequence[float] | None,
                         n_categories: int) -> tuple[np.ndarray, np.ndarray]:
    """(counts, probabilities) for the number of objects in a scene."""
    low, high = objects
    if not 1 <= low <= high:
        raise ValueError(f"objects must be (min, max) with 1 <= min <= max, got {objects!r}")
    if high > n_categories:
        raise ValueError(f"a scene of up to {high} objects needs {high} distinct categories; the world has "
                         f"{n_categories}: lower max objects or add categories")
    counts = np.arange(low, high + 1)
    if object_weights is None:
        return counts, np.full(len(counts), 1.0 / len(counts))
    weights = np.asarray(object_weights, dtype=np.float64)
    if weights.shape != counts.shape or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"object_weights must be {len(counts)} non-negative numbers (probabilities of "
                         f"{counts.tolist()} objects), got {object_weights!r}")
    return counts, weights / weights.sum()


# ----------------------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------------------


def _polygon_sdf(x: np.ndarray, y: np.ndarray, vertices: Sequence[tuple[float, float]]) -> np.ndarray:
    """Signed distance from points (x, y) to a polygon (negative inside; even-odd rule)."""
    v = np.asarray(vertices, dtype=np.float64)
    distance = np.full(x.shape, np.inf)
    inside = np.zeros(x.shape, dtype=bool)
    for (ax, ay), (bx, by) in zip(v, np.roll(v, -1, axis=0), strict=True):
        ex, ey = bx - ax, by - ay
        wx, wy = x - ax, y - ay
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        distance = np.minimum(distance, np.hypot(wx - t * ex, wy - t * ey))
        if ey != 0:
            crosses = (ay > y) != (by > y)
            inside ^= crosses & (x < ax + (y - ay) * ex / ey)
    return np.where(inside, -distance, distance)


def _fit_to_box(vertices: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Vertices mapped affinely so that their bounding box is exactly [-1, 1] x [-1, 1]."""
    v = np.asarray(vertices, dtype=np.float64)
    low, high = v.min(axis=0), v.max(axis=0)
    return [tuple(p) for p in 2 * (v - low) / (high - low) - 1]


def _star_vertices(points: int = 5, inner: float = 0.5) -> list[tuple[float, float]]:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return _fit_to_box(list(zip(radii * np.cos(angles), radii * np.sin(angles), strict=True)))


_ARM = 0.34  # half-width of the cross's arms
_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "triangle": [(0, -1), (1, 1), (-1, 1)],
    "diamond": [(0, -1), (1, 0), (0, 1), (-1, 0)],
    "cross": [(-_ARM, -1), (_ARM, -1), (_ARM, -_ARM), (1, -_ARM), (1, _ARM), (_ARM, _ARM), (_ARM, 1),
              (-_ARM, 1), (-_ARM, _ARM), (-1, _ARM), (-1, -_ARM), (-_ARM, -_ARM)],
    "star": _star_vertices(),
    "arrow": [(-1, -0.3), (0, -0.3), (0, -1), (1, 0), (0, 1), (0, 0.3), (-1, 0.3)],
}
_RING_INNER = 0.6  # inner radius of the ring, as a fraction of the outer one


def _shape_sdf(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance to ``shape`` drawn in the box [-1, 1]^2 (y points down, as image rows do)."""
    if shape in ("square", "bar"):
        return np.maximum(np.abs(x), np.abs(y)) - 1
    if shape == "circle":
        return np.hypot(x, y) - 1
    if shape == "ring":
        r = np.hypot(x, y)
        return np.maximum(r - 1, _RING_INNER - r)
    if shape == "heart":  # two lobes on top of a downward triangle
        lobes = np.minimum(np.hypot(x + 0.5, y + 0.5), np.hypot(x - 0.5, y + 0.5)) - 0.5
        return np.minimum(lobes, _polygon_sdf(x, y, [(-1, -0.5), (1, -0.5), (0, 1)]))
    if shape in _POLYGONS:
        return _polygon_sdf(x, y, _POLYGONS[shape])
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def shape_mask(shape: str, height: int, width: int) -> np.ndarray:
    """[height, width] bool mask of ``shape`` stretched to fill the box: it touches all four sides.

    Pixel centres are placed on [-1, 1] (the outermost rows and columns sit on the box's edges) and a pixel
    is inside when it is within half a pixel of the shape, so every extreme point of the shape lights a
    pixel on the box's border: the mask's tight bounding box is the box, whatever its size.
    """
    if height < 2 or width < 2:
        raise ValueError(f"shape_mask needs a box of at least 2 x 2 pixels, got {height} x {width}")
    y, x = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    half_pixel = max(1.0 / (height - 1), 1.0 / (width - 1))
    return _shape_sdf(shape, x, y) <= half_pixel + 1e-9


# ----------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Scene:
    """A rendered scene: ``image`` [H, W, 3] uint8, exact ``masks`` [H, W] bool and ``boxes`` per name.

    ``names`` are in caption order; ``boxes[name]`` is (x0, y0, x1, y1) in pixels (detectors.py convention).
    """

    image: np.ndarray
    names: tuple[str, ...]
    masks: dict[str, np.ndarray]
    boxes: dict[str, Box]
    #: the attribute world: each object's colour word, in ``names`` order (``None``: identity colours)
    colours: tuple[str, ...] | None = None

    @property
    def caption(self) -> str:
        """The MultiGen-style caption, nouns in ``names`` order (with their colours in the attribute world)."""
        return caption_for(self.names, self.colours)


def default_object_size(size: int) -> tuple[int, int]:
    """(min, max) object side in pixels for an image of ``size``: 8-14 px at 32, 16-28 px at 64."""
    return max(4, round(size / 4)), max(5, round(size * 0.44))


def _box_dims(shape: str, side: int, vertical: bool) -> tuple[int, int]:
    """(height, width) of an object of ``shape`` whose long side is ``side``."""
    if shape != "bar":
        return side, side
    short = max(2, round(side / BAR_ASPECT))
    return (side, short) if vertical else (short, side)


def _free_positions(occupied: np.ndarray, height: int, width: int) -> np.ndarray:
    """[N, 2] top-left (row, col) where a height x width box overlaps no occupied pixel."""
    rows, cols = occupied.shape
    if height > rows or width > cols:
        return np.zeros((0, 2), dtype=int)
    integral = np.zeros((rows + 1, cols + 1), dtype=np.int64)
    integral[1:, 1:] = occupied.cumsum(0).cumsum(1)
    sums = (integral[height:, width:] - integral[:-height, width:]
            - integral[height:, :-width] + integral[:-height, :-width])
    return np.argwhere(sums == 0)


def render_scene(categories: Sequence[Category], rng: np.random.Generator, size: int = 32,
                 object_size: tuple[int, int] | None = None, colours: Sequence[Colour] | None = None) -> Scene:
    """Draw one object of each of ``categories`` (caption order) at random sizes and places on black.

    Each object is drawn in its category's colour, or in ``colours[i]`` (the attribute world: one distinct
    colour per object, named in the caption).

    Sizes are uniform in ``object_size`` (default ``default_object_size(size)``); bars are drawn
    horizontally or vertically. Objects are placed largest first at a uniformly random free position whose
    box keeps at least one black pixel from every other box; an object with no room shrinks one pixel at a
    time, and a scene that still does not fit is drawn again (``RuntimeError`` after 100 tries).
    """
    categories = tuple(categories)
    names = [c.name for c in categories]
    if not categories or len(set(names)) != len(names):
        raise ValueError(f"render_scene needs one or more distinct categories, got {names}")
    if colours is not None and (len(colours) != len(categories) or len({c.rgb for c in colours}) != len(colours)):
        raise ValueError(f"render_scene needs one distinct colour per object, got {list(colours)} for {names}")
    if not isinstance(size, (int, np.integer)) or size < MIN_SCENE_SIZE:
        raise ValueError(f"image size must be an integer >= {MIN_SCENE_SIZE}, got {size!r}")
    low, high = default_object_size(size) if object_size is None else object_size
    if not 2 <= low <= high <= size:
        raise ValueError(f"object_size must be (min, max) with 2 <= min <= max <= size={size}, got {(low, high)}")
    for _ in range(100):
        sides = [int(s) for s in rng.integers(low, high + 1, size=len(categories))]
        vertical = [bool(v) for v in rng.integers(0, 2, size=len(categories))]
        occupied = np.zeros((size, size), dtype=bool)
        placed: dict[int, tuple[int, int, int, int]] = {}
        for i in sorted(range(len(categories)), key=lambda i: -sides[i]):
            for side in range(sides[i], low - 1, -1):
                height, width = _box_dims(categories[i].shape, side, vertical[i])
                free = _free_positions(occupied, height, width)
                if len(free):
                    top, left = (int(v) for v in free[rng.integers(len(free))])
                    placed[i] = (top, left, height, width)
                    occupied[max(0, top - 1):top + height + 1, max(0, left - 1):left + width + 1] = True
                    break
            else:
                break
        if len(placed) == len(categories):
            break
    else:
        raise RuntimeError(f"could not place {len(categories)} objects of {low}-{high} px in a {size} x {size} "
                           "image in 100 tries; use fewer objects, smaller objects or a larger image")
    image = np.zeros((size, size, 3), dtype=np.uint8)
    masks: dict[str, np.ndarray] = {}
    boxes: dict[str, Box] = {}
    for i, category in enumerate(categories):
        top, left, height, width = placed[i]
        mask = np.zeros((size, size), dtype=bool)
        mask[top:top + height, left:left + width] = shape_mask(category.shape, height, width)
        image[mask] = category.rgb if colours is None else colours[i].rgb
        masks[category.name] = mask
        boxes[category.name] = (float(left), float(top), float(left + width), float(top + height))
    return Scene(image=image, names=tuple(names), masks=masks, boxes=boxes,
                 colours=None if colours is None else tuple(c.name for c in colours))


def random_scene(rng: np.random.Generator, categories: Sequence[Category] = TOY_CATEGORIES,
                 objects: tuple[int, int] = (1, 4), object_weights: Sequence[float] | None = None,
                 exclude_pairs: Sequence[Sequence[str]] = EXCLUDED_PAIRS, size: int = 32,
                 colour_mode: str = "identity") -> Scene:
    """A scene with a random number of objects (``object_weights`` = probabilities of min..max objects).

    ``colour_mode="attribute"`` draws each object in a random distinct colour of ``TOY_COLOURS`` (drawn
    right after the categories); ``"identity"`` draws nothing more, so its scenes are those of the first world.
    """
    categories = check_world(categories)
    counts, probabilities = _count_probabilities(tuple(objects), object_weights, len(categories))
    k = int(rng.choice(counts, p=probabilities))
    chosen = sample_categories(rng, k, categories, exclude_pairs)
    colours = sample_colours(rng, k) if check_colour_mode(colour_mode) == "attribute" else None
    return render_scene(chosen, rng, size=size, colours=colours)


@dataclass
class SceneBatch:
    """A batch for a training loop: ``images`` [B, H, W, 3] float32 in [0, 1], captions, (name, mask) lists."""

    images: np.ndarray
    captions: list[str]
    masks: list[list[tuple[str, np.ndarray]]]


def scene_batch(rng: np.random.Generator, batch: int, categories: Sequence[Category] = TOY_CATEGORIES,
                objects: tuple[int, int] = (1, 4), object_weights: Sequence[float] | None = None,
                exclude_pairs: Sequence[Sequence[str]] = EXCLUDED_PAIRS, size: int = 32,
                colour_mode: str = "identity") -> SceneBatch:
    """``batch`` fresh random scenes in memory (no disk): cheap enough to draw new ones every step."""
    if not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    scenes = [random_scene(rng, categories, objects, object_weights, exclude_pairs, size, colour_mode)
              for _ in range(batch)]
    return SceneBatch(
        images=np.stack([s.image for s in scenes]).astype(np.float32) / 255.0,
        captions=[s.caption for s in scenes],
        masks=[[(name, s.masks[name]) for name in s.names] for s in scenes],
    )


@dataclass
class ToyScenes:
    """An endless, seeded iterable of ``SceneBatch`` (each ``iter`` starts again from ``seed``).

    Batch ``i`` is drawn from a generator seeded by ``(seed, i)`` (``batch(i)``), so a resumed training run
    jumps to its step instead of drawing every earlier batch again.
    """

    batch_size: int = 8
    seed: int = 0
    categories: Sequence[Category] = TOY_CATEGORIES
    objects: tuple[int, int] = (1, 4)
    object_weights: Sequence[float] | None = None
    exclude_pairs: Sequence[Sequence[str]] = EXCLUDED_PAIRS
    size: int = 32
    colour_mode: str = "identity"

    def batch(self, index: int) -> SceneBatch:
        """Batch number ``index`` (>= 0) of the stream: the same scenes whenever it is asked for."""
        if index < 0:
            raise ValueError(f"batch index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, index])
        return scene_batch(rng, self.batch_size, self.categories, self.objects, self.object_weights,
                           self.exclude_pairs, self.size, self.colour_mode)

    def __iter__(self) -> Iterator[SceneBatch]:
        index = 0
        while True:
            yield self.batch(index)
            index += 1


@dataclass
class ToySceneBatches:
    """Training micro-batches of fresh toy scenes, encoded as a dataset's (``data.encode_example`` +
    ``data.collate``): micro-batch ``(step, micro)`` of process ``rank`` is drawn with a generator seeded by
    (seed, step, micro, rank), so a resumed run sees the scenes it would have seen."""

    tokenizer: Any
    seed: int = 0
    batch_size: int = 16
    resolution: int = 32
    value_range: tuple[float, float] = (0.0, 1.0)
    objects: tuple[int, int] = (2, 4)
    colour_mode: str = "identity"
    rank: int = 0

    def __post_init__(self) -> None:
        check_colour_mode(self.colour_mode)

    def __call__(self, step: int, micro: int) -> dict:
        rng = np.random.default_rng(seed_for(self.seed, step, micro, self.rank, 2))
        scenes = scene_batch(rng, self.batch_size, objects=tuple(self.objects), exclude_pairs=EXCLUDED_PAIRS,
                             size=self.resolution, colour_mode=self.colour_mode)
        examples = [encode_example(image, caption, [n for n, _ in masks], [m for _, m in masks], self.tokenizer,
                                   self.resolution, self.value_range)
                    for image, caption, masks in zip(scenes.images, scenes.captions, scenes.masks, strict=True)]
        return collate(examples)



def scene_batches(config: Any, objects: tuple[int, int] = (2, 4), colours: str | None = None):
    """The toy world as a training data source (``train.BatchSource``) for ``train.train(..., batches=)``.

    Fresh scenes of ``objects`` (min, max) objects (pairs in ``EXCLUDED_PAIRS`` never co-occur) at
    ``config.resolution``, in the colour mode ``colours`` or else the base model's (``model_colour_mode`` of
    ``config.pretrained``). Raises ``ValueError`` for a latent (VAE) preset: the scenes are pixel-space images.
    """
    low, high = objects
    if not 1 <= low <= high:
        raise ValueError(f"toy scene objects must be (min, max) with 1 <= min <= max, got {tuple(objects)!r}")
    if not config.pixel_space:
        raise ValueError(f"toy scenes are toy-world images, which only the pixel-space toy model takes; preset "
                         f"{config.preset!r} needs train_data_dir (a dataset folder, data.py)")
    colour_mode = check_colour_mode(colours or model_colour_mode(config.pretrained))

    def source(tokenizer: Any, run_config: Any, rank: int = 0, world: int = 1) -> ToySceneBatches:
        return ToySceneBatches(tokenizer, seed=run_config.seed, batch_size=run_config.train_batch_size,
                               resolution=run_config.resolution, value_range=run_config.value_range,
                               objects=(int(low), int(high)), colour_mode=colour_mode, rank=rank)

    return source


def add_scene_arguments(parser: Any) -> None:
    """The ``train`` command's toy-scene flags (``--toy-scenes``, ``--toy-objects MIN MAX``)."""
    parser.add_argument("--toy-scenes", action="store_true", help="toy preset: train on fresh in-memory scenes")
    parser.add_argument("--toy-objects", type=positive_int, nargs=2, default=(2, 4), metavar=("MIN", "MAX"))


def scene_batches_from_args(args: Any):
    """For ``train --toy-scenes``: a function of the run's config giving its ``scene_batches`` (``None``
    without the flag: the loop reads ``--train-data-dir``)."""
    objects = tuple(args.toy_objects)
    return lambda config: scene_batches(config, objects) if args.toy_scenes else None


# ----------------------------------------------------------------------------------------------------------
# The dataset on disk (the authors' format: metadata.jsonl + images + seg/<id>/mask_<noun>.png)
# ----------------------------------------------------------------------------------------------------------


#: the names a toy dataset's files take (``make_toy_dataset``): the output-folder rule guards them
TOY_DATASET_NAMES = ("metadata.jsonl",)
TOY_DATASET_PATTERNS = ("images/[0-9][0-9][0-9][0-9][0-9]*.png", "seg/[0-9][0-9][0-9][0-9][0-9]*/mask_*.png")
#: scenes drawn, recorded as this project's and written at a time
_SCENE_CHUNK = 256


def check_toy_dataset_folder(out_dir: str | Path, overwrite: bool = False) -> list[str]:
    """The output-folder rule for ``make_toy_dataset`` (``provenance.check_outputs``), changing nothing: files of
    unknown origin under a toy dataset's names (``images/00000.png``, ``seg/00000/mask_*.png``,
    ``metadata.jsonl``) are refused, naming them; a dataset this project wrote there is refused unless
    ``overwrite``. Returns this project's files there (to be replaced)."""
    return check_outputs(out_dir, TOY_DATASET_NAMES, TOY_DATASET_PATTERNS, replace=overwrite,
                         what="a toy dataset")


def make_toy_dataset(out_dir: str | Path, n: int, objects: tuple[int, int] = (1, 4), seed: int = 0,
                     categories: Sequence[Category] = TOY_CATEGORIES,
                     exclude_pairs: Sequence[Sequence[str]] = EXCLUDED_PAIRS,
                     object_weights: Sequence[float] | None = None, size: int = 32,
                     overwrite: bool = False, colour_mode: str = "identity") -> Path:
    """Write ``n`` random scenes to ``out_dir`` in the authors' format and return ``out_dir``.

    ``images/00000.png`` (RGB), ``seg/00000/mask_<noun>.png`` (L, 0/255, the image's resolution) and
    ``metadata.jsonl``: one ``{"file_name", "text", "attn_list": [[noun, mask path], ...]}`` a line, nouns
    in caption order, paths relative to ``out_dir``. Scene ``i`` is drawn from
    ``numpy.random.default_rng([seed, i])``: the same seed gives the same bytes, and a dataset of ``n``
    scenes is the first ``n`` of a larger one.

    The output-folder rule (``check_toy_dataset_folder``): files of unknown origin under those names raise
    ``provenance.OutputFolderError`` before anything is written; a dataset this project wrote there is replaced
    only with ``overwrite=True`` (its files, listed in the folder's written list, are removed first; no other
    file is touched).
    """
    categories = check_world(categories)
    counts, probabilities = _count_probabilities(tuple(objects), object_weights, len(categories))
    _pairs_in_world(exclude_pairs, [c.name for c in categories])  # fail before writing anything
    check_colour_mode(colour_mode)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive number of scenes, got {n!r}")
    out_dir = Path(out_dir)
    earlier = check_toy_dataset_folder(out_dir, overwrite)
    metadata_path = out_dir / "metadata.jsonl"
    if earlier:
        logger.warning("%s: replacing the toy dataset this project wrote there (%d files)", out_dir, len(earlier))
        remove_written(out_dir, earlier)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    digits = max(5, len(str(n - 1)))
    lines = []
    for first in tqdm(range(0, n, _SCENE_CHUNK), desc="toy scenes", disable=n < 500):
        scenes = [_dataset_scene(seed, i, counts, probabilities, categories, exclude_pairs, size, colour_mode)
                  for i in range(first, min(n, first + _SCENE_CHUNK))]
        stems = [f"{i:0{digits}d}" for i in range(first, first + len(scenes))]
        # listed as this project's before they are written: an interrupted run's files are its own
        record_written(out_dir, {name: None for stem, scene in zip(stems, scenes, strict=True)
                                 for name in (f"images/{stem}.png", *_mask_names(stem, scene))})
        lines += [_write_scene(out_dir, stem, scene) for stem, scene in zip(stems, scenes, strict=True)]
    record_written(out_dir, {"metadata.jsonl": None})
    tmp = metadata_path.with_suffix(".jsonl.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(metadata_path)  # the metadata appears only once every file it names is written
    logger.info("wrote %d toy scenes to %s", n, out_dir)
    return out_dir


def _dataset_scene(seed: int, i: int, counts, probabilities, categories: Sequence[Category],
                   exclude_pairs: Sequence[Sequence[str]], size: int, colour_mode: str) -> Scene:
    """Scene ``i`` of a toy dataset of ``seed``: drawn from ``numpy.random.default_rng([seed, i])``."""
    rng = np.random.default_rng([seed, i])
    k = int(rng.choice(counts, p=probabilities))
    chosen = sample_categories(rng, k, categories, exclude_pairs)
    colours = sample_colours(rng, k) if colour_mode == "attribute" else None
    return render_scene(chosen, rng, size=size, colours=colours)


def _mask_names(stem: str, scene: Scene) -> list[str]:
    return [f"seg/{stem}/mask_{name}.png" for name in scene.names]


def _write_scene(out_dir: Path, stem: str, scene: Scene) -> str:
    """Write one scene's image and masks; returns its ``metadata.jsonl`` line."""
    file_name = f"images/{stem}.png"
    Image.fromarray(scene.image, mode="RGB").save(out_dir / file_name)
    (out_dir / "seg" / stem).mkdir(parents=True, exist_ok=True)
    attn_list = []
    for name, mask_name in zip(scene.names, _mask_names(stem, scene), strict=True):
        Image.fromarray(scene.masks[name].astype(np.uint8) * 255, mode="L").save(out_dir / mask_name)
        attn_list.append([name, mask_name])
    return json.dumps({"file_name": file_name, "text": scene.caption, "attn_list": attn_list})


# ----------------------------------------------------------------------------------------------------------
# Image degradations (what generated images look like): for tests and the robustness figure
# ----------------------------------------------------------------------------------------------------------


def as_float_image(image: Any) -> np.ndarray:
    """An RGB image (numpy uint8 / float in [0, 1], or PIL) as [H, W, 3] float64 in [0, 1]."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got an array of shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"expected a uint8 image (0-255) or a float image in [0, 1], got dtype {array.dtype}")
    return np.clip(np.nan_to_num(array.astype(np.float64)), 0.0, 1.0)


def degrade(image: Any, rng: np.random.Generator | None = None, noise: float = 0.0,
            tint: Sequence[float] = (1.0, 1.0, 1.0), blur: float = 0.0) -> np.ndarray:
    """``image`` blurred (gaussian, ``blur`` = sigma in px), tinted (per-channel gain) and noised (sigma).

    Returns [H, W, 3] float64 in [0, 1]. Used to check the detector against generated-image artefacts.
    """
    out = as_float_image(image)
    if blur > 0:
        radius = max(1, math.ceil(3 * blur))
        offsets = np.arange(-radius, radius + 1)
        kernel = np.exp(-0.5 * (offsets / blur) ** 2)
        kernel /= kernel.sum()
        for axis in (0, 1):
            padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in range(3)])
            out = sum(w * np.take(padded, np.arange(out.shape[axis]) + radius + o, axis=axis)
                      for w, o in zip(kernel, offsets, strict=True))
    out = out * np.asarray(tint, dtype=np.float64)
    if noise > 0:
        if rng is None:
            raise ValueError("degrade(noise > 0) needs an rng (numpy Generator)")
        out = out + rng.normal(0.0, noise, size=out.shape)
    return np.clip(out, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------


#: the most scenes one ``toy-data`` writes (a few KB each): a typo such as ``-n 1000000000000`` is refused before
#: the folder is touched, not run for years
MAX_SCENES = 1_000_000
#: the smallest scene (pixels a side) the renderer draws
MIN_SCENE_SIZE = 16


def scene_count(text: str) -> int:
    """``-n`` of ``toy-data``: 1 to ``MAX_SCENES`` scenes."""
    value = positive_int(text)
    if value > MAX_SCENES:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SCENES:,} scenes, got {text!r}; write a larger "
                                         "dataset in parts (--seed differs per part)")
    return value


def cli(argv: list[str]) -> int:
    """``python -m tokencompose toy-data --out DIR -n N``: write a toy-world dataset (authors' format)."""
    parser = ArgumentParser(prog="tokencompose toy-data", description=cli.__doc__)
    parser.add_argument("--out", required=True, type=output_folder, help="dataset folder to write")
    parser.add_argument("-n", type=scene_count, required=True, help=f"number of scenes (at most {MAX_SCENES:,})")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--min-objects", type=positive_int, default=1)
    parser.add_argument("--max-objects", type=positive_int, default=4)
    parser.add_argument("--object-weights", type=str, default=None,
                        help="comma-separated probabilities of min..max objects, e.g. 0.5,0.3,0.1,0.1")
    parser.add_argument("--size", type=positive_int, default=32, help="image side in pixels")
    parser.add_argument("--num-categories", type=positive_int, default=len(TOY_CATEGORIES),
                        help=f"use the first K of the {len(TOY_CATEGORIES)} default categories")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a toy dataset this project wrote in --out (files it did not write are never "
                             "replaced or deleted)")
    parser.add_argument("--colours", choices=COLOUR_MODES, default="identity",
                        help="identity: each category in its own colour; attribute: random colours named in "
                             "the caption")
    args = parser.parse_args(argv)
    if args.size < MIN_SCENE_SIZE:  # before the folder is made
        parser.error(f"image size must be an integer >= {MIN_SCENE_SIZE}, got {args.size}")
    if not 1 <= args.num_categories <= len(TOY_CATEGORIES):
        parser.error(f"--num-categories must be in 1..{len(TOY_CATEGORIES)}, got {args.num_categories}")
    weights = None
    if args.object_weights:
        try:
            weights = [non_negative_float(w) for w in args.object_weights.split(",")]
        except argparse.ArgumentTypeError:
            parser.error(f"--object-weights must be comma-separated finite numbers >= 0, got "
                         f"{args.object_weights!r}")
    try:
        out = make_toy_dataset(args.out, args.n, objects=(args.min_objects, args.max_objects), seed=args.seed,
                               categories=TOY_CATEGORIES[:args.num_categories], object_weights=weights,
                               size=args.size, overwrite=args.overwrite, colour_mode=args.colours)
    except (ValueError, FileExistsError, RuntimeError) as error:
        parser.error(str(error))
    logger.info("toy dataset ready: %s (%d scenes)", out / "metadata.jsonl", args.n)
    return 0
