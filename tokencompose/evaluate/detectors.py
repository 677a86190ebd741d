"""Object detectors behind one interface: ``Detector.detect(image, names) -> list[Detection]``.

The evaluations (MultiGen MG1-5, VISOR object accuracy; DESIGN.md "Evaluation") only need to know which
named objects a detector finds in an image, with a score. Two kinds of detector implement this protocol:

- the toy world's colour-and-shape detector, ``tokencompose.toyworld.ToyDetector`` (exact on rendered
  scenes, robust to noise, tint and blur; it needs no weights);
- open-vocabulary detectors for real images, OWLv2 (MultiGen, as in the paper) and OWL-ViT (VISOR), through
  ``transformers``. They are not written yet: they will be added to this module later (by another part of
  the project), and nothing here pretends to provide them.

Conventions every implementation follows:

- ``image``: an ``H x W x 3`` RGB image, a ``numpy`` array (``uint8`` 0-255 or float in [0, 1]) or a
  ``PIL.Image``;
- ``box``: ``(x0, y0, x1, y1)`` in pixels of the input image, ``x`` to the right, ``y`` down, ``(x0, y0)``
  the top-left corner of the top-left pixel and ``(x1, y1)`` the bottom-right corner of the bottom-right
  pixel (so a one-pixel object at column 3, row 5 has the box ``(3, 5, 4, 6)``, width ``x1 - x0``);
- ``score`` in [0, 1]; the caller applies its own threshold (MultiGen keeps scores > 0.01 and counts a
  category as present at > 0.1, following the authors' evaluation).
- ``names``: the category names of the query (for an open-vocabulary detector: the text queries). Whether
  objects of other categories are reported too is each detector's documented choice; the toy detector
  reports every object it finds, so a scorer that wants only the named ones filters by ``Detection.name``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

#: a box (x0, y0, x1, y1) in pixels, see the module docstring for the convention
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Detection:
    """One detected object: its category ``name``, a ``score`` in [0, 1] and its ``box`` (x0, y0, x1, y1)."""

    name: str
    score: float
    box: Box


@runtime_checkable
class Detector(Protocol):
    """Anything with ``detect(image, names=None) -> list[Detection]`` (see the module docstring)."""

    def detect(self, image: Any, names: Sequence[str] | None = None) -> list[Detection]:
        """Detections in ``image`` (H x W x 3 RGB, numpy or PIL), for the query ``names``."""
        ...
