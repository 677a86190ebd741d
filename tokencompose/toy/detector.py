"""The toy world's colour-and-shape detector: the toy world's stand-in for OWLv2 (``evaluate.detectors``
interface), exact on rendered scenes and robust to noise, tint and blur; it finds every rendered object and
reports objects nobody asked for. In the attribute world (``toy.world.COLOUR_MODES``) it classifies each
object's shape whatever its colour, and reports the colour. ``colour_segmentation`` gives reference masks of a
generated image (segmentation transfer).

Usage::

    from tokencompose.toy.detector import ToyDetector
    ToyDetector().detect(image)                          # [Detection(name="circle", score=1.0, box=...), ...]
    ToyDetector(colour_mode="attribute").detect(image)   # ... attribute="red"
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tokencompose.evaluate.detectors import Detection

from .world import (
    BAR_ASPECT,
    SHAPES,
    TOY_CATEGORIES,
    TOY_COLOURS,
    Category,
    Colour,
    as_float_image,
    check_colour_mode,
    check_world,
    chromaticity,
    model_colour_mode,
    shape_mask,
    toy_nouns,
)

_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def _shifted(array: np.ndarray, dy: int, dx: int, fill: Any) -> np.ndarray:
    """``array`` moved so that out[y, x] = array[y + dy, x + dx] (``fill`` outside)."""
    height, width = array.shape
    out = np.full_like(array, fill)
    out[max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)] = \
        array[max(0, dy):height - max(0, -dy), max(0, dx):width - max(0, -dx)]
    return out


def _connected_components(labels: np.ndarray) -> np.ndarray:
    """[H, W] component id (the smallest flat index in it) of 8-connected same-label pixels; -1 = background.

    Min-label propagation with pointer jumping: each pixel takes the smallest id among its same-label
    neighbours, then the id of the pixel its id points to, until nothing changes (a few iterations).
    """
    height, width = labels.shape
    foreground = labels >= 0
    ids = np.where(foreground, np.arange(height * width).reshape(height, width), height * width)
    same = [(dy, dx, foreground & (_shifted(labels, dy, dx, -1) == labels)) for dy, dx in _NEIGHBOURS]
    while True:
        new = ids.copy()
        for dy, dx, link in same:
            np.minimum(new, np.where(link, _shifted(ids, dy, dx, height * width), height * width), out=new)
        flat = np.append(new.ravel(), height * width)
        new = np.where(foreground, flat[flat[new]], height * width)
        if np.array_equal(new, ids):
            break
        ids = new
    return np.where(foreground, ids, -1)


@dataclass
class _Component:
    label: int
    mask: np.ndarray  # [h, w] bool crop at its tight box
    top: int
    left: int


class ToyDetector:
    """Colour-and-shape detector of the toy world; implements ``evaluate.detectors.Detector``.

    Steps, for an RGB image (numpy uint8 or float in [0, 1], or PIL):

    1. classify each pixel: background if its brightest channel is below ``dark`` (the black background,
       dark noise); otherwise the category whose chromaticity (rgb / brightest channel) is nearest, or
       background if none is within ``max_colour_distance``. Dividing by the brightest channel makes a
       blurred, half-bright edge pixel keep its category (colours are 0.5 apart, so a tint or noise that
       moves a colour by < 0.25 does not change the class);
    2. majority filter (3 x 3): a pixel whose class has fewer than 3 of the 9 pixels around it (itself
       included) takes the most common class there (removes salt noise, keeps one-pixel tips);
    3. 8-connected components of same-class pixels; each keeps only its pixels at least ``edge_level``
       (half) as bright as the component's bright pixels (90th percentile): the half-maximum edge of a
       blurred object, which undoes the blur's dilation and follows a globally dimmed image. Fragments are
       dropped: smaller than ``min_area`` (fraction of the image), longer side under ``min_side`` (fraction
       of the image side), or not isolated (fewer than ``min_isolation`` of the pixels around it are darker
       than that edge level: objects sit on black, blobs of colour noise do not);
    4. shape check: a component's score is its IoU with its category's shape drawn to fill its box
       (``shape_mask``), times an aspect-ratio factor (``min(1, 1.15 * r_small / r_large)`` of the box's
       and the shape's long/short ratios). A rendered object scores 1.0. A component is reported when its
       score is >= ``min_score`` and no other shape fits its pixels better by more than ``shape_margin``
       (a red square is not a circle).

    It reports ALL objects it finds, of every category: ``names`` in ``detect`` only labels the query (an
    unknown name raises ``ValueError``); it does not filter, so a caller can see objects nobody asked for
    and counts only the named ones itself. Several objects of one category give several detections.
    """

    #: it reports every category it sees, so MultiGen can count objects nobody asked for (``nothing_extra``)
    reports_all_categories = True

    def __init__(self, categories: Sequence[Category] = TOY_CATEGORIES, dark: float = 0.3,
                 max_colour_distance: float = 0.4, min_area: float = 0.02, min_side: float = 0.2,
                 min_score: float = 0.5, shape_margin: float = 0.05, edge_level: float = 0.5,
                 min_isolation: float = 0.5, colour_mode: str = "identity",
                 palette: Sequence[Colour] = TOY_COLOURS) -> None:
        self.categories = check_world(categories)
        self.colour_mode = check_colour_mode(colour_mode)
        self.palette = tuple(palette)
        self.dark = dark
        self.max_colour_distance = max_colour_distance
        self.min_area = min_area
        self.min_side = min_side
        self.min_score = min_score
        self.shape_margin = shape_margin
        self.edge_level = edge_level
        self.min_isolation = min_isolation
        # the colour classes of step 1: the categories' colours, or the attribute world's palette
        self._classes = self.categories if colour_mode == "identity" else self.palette
        self._chroma = chromaticity(self._classes)  # [K, 3]
        self._templates: dict[tuple[str, int, int], np.ndarray] = {}

    # -- pixels -> classes -> components --------------------------------------------------------------
    def classify_pixels(self, image: Any) -> np.ndarray:
        """[H, W] int: each pixel's colour class, -1 for background (step 1): an index into ``categories``
        (identity world) or into ``palette`` (attribute world)."""
        rgb = as_float_image(image)
        brightness = rgb.max(axis=2)
        chroma = rgb / np.maximum(brightness, 1e-6)[..., None]
        distances = np.linalg.norm(chroma[:, :, None, :] - self._chroma[None, None], axis=3)  # [H, W, K]
        labels = distances.argmin(axis=2)
        background = (brightness < self.dark) | (distances.min(axis=2) > self.max_colour_distance)
        return np.where(background, -1, labels)

    def _majority_filter(self, labels: np.ndarray) -> np.ndarray:
        classes = len(self._classes) + 1  # class 0 = background
        shifted = labels + 1
        counts = np.zeros((classes,) + labels.shape, dtype=np.int32)  # [K + 1, H, W]
        for dy, dx in _NEIGHBOURS + [(0, 0)]:
            neighbour = _shifted(shifted, dy, dx, 0)
            for c in range(classes):
                counts[c] += neighbour == c
        own = np.take_along_axis(counts, shifted[None], axis=0)[0]
        return np.where(own >= 3, labels, counts.argmax(axis=0) - 1)

    def _components(self, image: Any) -> tuple[np.ndarray, list[_Component]]:
        brightness = as_float_image(image).max(axis=2)
        labels = self._majority_filter(self.classify_pixels(image))
        height, width = labels.shape
        ids = _connected_components(labels)
        min_area = self.min_area * height * width
        min_side = self.min_side * min(height, width)
        components = []
        for component_id in np.unique(ids[ids >= 0]):
            mask = ids == component_id
            # half maximum: a blurred edge is at half the object's brightness (undoes blur's dilation)
            level = self.edge_level * np.percentile(brightness[mask], 90)
            mask &= brightness >= level
            rows, cols = np.nonzero(mask)
            if len(rows) == 0:
                continue
            # isolation: an object sits on a dark background; a blob of colour noise does not
            border = np.zeros_like(mask)
            for dy, dx in _NEIGHBOURS:
                border |= _shifted(mask, dy, dx, False)
            border &= ~mask
            if border.any() and (brightness[border] < level).mean() < self.min_isolation:
                continue
            top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
            if len(rows) < min_area or max(bottom - top, right - left) < min_side or min(bottom - top,
                                                                                            right - left) < 2:
                continue
            label = int(labels.flat[component_id])
            components.append(_Component(label, mask[top:bottom, left:right], int(top), int(left)))
        return labels, components

    # -- shape check ------------------------------------------------------------------------------------
    def _template(self, shape: str, height: int, width: int) -> np.ndarray:
        key = (shape, height, width)
        if key not in self._templates:
            self._templates[key] = shape_mask(shape, height, width)
        return self._templates[key]

    def shape_score(self, crop: np.ndarray, shape: str) -> float:
        """How well a [h, w] bool crop (tight box) matches ``shape``: IoU with the template x aspect factor."""
        height, width = crop.shape
        template = self._template(shape, height, width)
        iou = float((crop & template).sum() / (crop | template).sum())
        observed = max(height, width) / min(height, width)
        natural = BAR_ASPECT if shape == "bar" else 1.0
        return iou * min(1.0, 1.15 * min(observed, natural) / max(observed, natural))

    # -- public API -------------------------------------------------------------------------------------
    def detect(self, image: Any, names: Sequence[str] | None = None) -> list[Detection]:
        """Every object found in ``image``, best score first (``names`` is checked, never used to filter)."""
        if names is not None:
            known = [c.name for c in self.categories]
            if isinstance(names, str):
                raise TypeError(f"names must be a sequence of category names, not the string {names!r}")
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(f"ToyDetector cannot look for {unknown}: not categories of this toy world "
                                 f"({known})")
        detections = []
        for component in self._components(image)[1]:
            category, score, colour = self._classify(component)
            if category is None:
                continue
            height, width = component.mask.shape
            box = (float(component.left), float(component.top), float(component.left + width),
                   float(component.top + height))
            detections.append(Detection(name=category.name, score=score, box=box, attribute=colour))
        return sorted(detections, key=lambda d: -d.score)

    def _classify(self, component: _Component) -> tuple[Category | None, float, str | None]:
        """(category or None, shape score, colour word or None) of a component (step 4).

        Identity world: the colour names the category; its shape must fit (no other shape better by more
        than ``shape_margin``). Attribute world: the best-fitting shape among the world's categories names
        it, whatever the colour, and the colour is reported.
        """
        if self.colour_mode == "identity":
            category = self.categories[component.label]
            score = self.shape_score(component.mask, category.shape)
            best_other = max(self.shape_score(component.mask, s) for s in SHAPES if s != category.shape)
            if score < self.min_score or best_other > score + self.shape_margin:
                return None, score, None
            return category, score, None
        scores = [self.shape_score(component.mask, c.shape) for c in self.categories]
        best = int(np.argmax(scores))
        if scores[best] < self.min_score:
            return None, scores[best], None
        return self.categories[best], scores[best], self.palette[component.label].name

    def segment(self, image: Any) -> dict[str, np.ndarray]:
        """[H, W] bool mask per category: its colour's pixels in components that are not fragments.

        Identity world: colour only (steps 1-3, no shape check); attribute world: each component goes to its
        best-fitting shape (step 4). The reference masks of a generated image for the segmentation-transfer
        check; a category absent from the image gets an all-False mask.
        """
        labels, components = self._components(image)
        masks = {c.name: np.zeros(labels.shape, dtype=bool) for c in self.categories}
        for component in components:
            if self.colour_mode == "identity":
                category = self.categories[component.label]
            else:  # the attribute world: the colour says nothing about the category; the shape does
                category = self._classify(component)[0]
                if category is None:
                    continue
            height, width = component.mask.shape
            region = masks[category.name][component.top:component.top + height,
                                          component.left:component.left + width]
            region |= component.mask
        return masks


def colour_segmentation(image: Any, categories: Sequence[Category] = TOY_CATEGORIES,
                        colour_mode: str = "identity") -> dict[str, np.ndarray]:
    """Reference masks of a (generated) toy image: ``{name: [H, W] bool}`` (``ToyDetector.segment``)."""
    return ToyDetector(categories, colour_mode=colour_mode).segment(image)


@dataclass(frozen=True)
class ToySegmenter:
    """The toy world's reference masks for segmentation transfer (an ``evaluate.segmentation.Segmenter``):
    the colour segmentation of each generated image (``colour_segmentation``, exact up to the model's colours),
    and, through ``nouns_of``, the categories a toy caption names.

    ``ToySegmenter.for_model(model)`` segments in the world a toy model folder was trained in (the attribute
    world segments by shape, not colour: ``world.model_colour_mode``).
    """

    colour_mode: str = "identity"
    #: recorded as the reference in segmentation transfer's settings
    name: str = "toy"

    @classmethod
    def for_model(cls, model: Any) -> ToySegmenter:
        return cls(model_colour_mode(model))

    def __call__(self, image: Any, nouns: Sequence[str]) -> dict[str, np.ndarray | None]:
        segmentation = colour_segmentation(np.asarray(image), colour_mode=self.colour_mode)
        return {noun: segmentation.get(noun) for noun in nouns}

    def nouns_of(self, prompt: str) -> list[str]:
        return toy_nouns(prompt)
