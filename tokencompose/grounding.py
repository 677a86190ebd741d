"""What every Grounded-SAM backend shares (paper Sec. 3.1, "grounding" the nouns of a caption): the presets,
the detection record, the text prompt, phrase matching, mask union and ``GroundedSegmenter``, the interface with
its one algorithm (``masks_for_nouns``).

Two backends implement ``detect`` and ``segment``: ``masks.GroundedSAM`` (transformers, the default) and
``masks_original.OriginalGroundedSAM`` (the authors' groundingdino / segment_anything packages). Both import
from here; this module imports neither, so the two never import each other (``masks`` imports the original
backend only when ``backend="original"`` is asked for). ``masks`` re-exports these names.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from .images import to_rgb

logger = logging.getLogger("tokencompose.masks")


#: segmenter architectures whose outputs and processor this module knows (SAM and SAM-HQ)
SEGMENTER_TYPES = ("sam", "sam_hq")


#: SAM ViT-H: the fallback where transformers has no SAM-HQ, and the "grounded-sam-script" preset's segmenter
SAM_VIT_H_ID = "facebook/sam-vit-huge"


SAM_HQ_VIT_H_ID = "syscv-community/sam-hq-vit-huge"


@dataclass(frozen=True)
class GroundingSettings:
    """One Grounded-SAM configuration: the two models and the two Grounding DINO thresholds."""

    name: str
    detector_id: str
    segmenter_id: str
    box_threshold: float
    text_threshold: float
    #: where the values come from (shown by ``describe``)
    source: str


#: the named presets (module docstring: which is which, and why "authors" is the default)
GROUNDING_SETTINGS: dict[str, GroundingSettings] = {
    "authors": GroundingSettings(
        "authors", "IDEA-Research/grounding-dino-tiny", SAM_HQ_VIT_H_ID, 0.25, 0.25,
        "the authors' run (preprocess_data/run_pipeline.sh): Grounding DINO Swin-T OGC, SAM-HQ ViT-H, box 0.25, "
        "text 0.25"),
    "grounded-sam-script": GroundingSettings(
        "grounded-sam-script", "IDEA-Research/grounding-dino-base", SAM_VIT_H_ID, 0.3, 0.25,
        "gen_mask.py's argparse defaults (box 0.3, text 0.25, SAM vit_h without --use_sam_hq) with Grounding "
        "DINO Swin-B (the script has no default detector)"),
}


DEFAULT_GROUNDING_SETTINGS = "authors"


#: the default preset's values (``prepare``'s flags and error messages show them)
DEFAULT_DETECTOR_ID = GROUNDING_SETTINGS[DEFAULT_GROUNDING_SETTINGS].detector_id


DEFAULT_SEGMENTER_ID = GROUNDING_SETTINGS[DEFAULT_GROUNDING_SETTINGS].segmenter_id


BOX_THRESHOLD = GROUNDING_SETTINGS[DEFAULT_GROUNDING_SETTINGS].box_threshold


TEXT_THRESHOLD = GROUNDING_SETTINGS[DEFAULT_GROUNDING_SETTINGS].text_threshold


def sam_hq_available() -> bool:
    """Whether the installed transformers has SAM-HQ (``SamHQModel`` and ``SamHQProcessor``)."""
    try:
        from transformers import SamHQModel, SamHQProcessor  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_grounding_settings(settings: str | GroundingSettings = DEFAULT_GROUNDING_SETTINGS,
                               fallback: bool = True) -> GroundingSettings:
    """The preset ``settings`` names, with SAM ViT-H in place of SAM-HQ where transformers has no SAM-HQ.

    The fallback (``fallback=True``) is logged as a warning: SAM ViT-H's masks are close to SAM-HQ's, but not
    the ones the authors trained on.
    """
    if isinstance(settings, str):
        if settings not in GROUNDING_SETTINGS:
            raise ValueError(f"unknown Grounded-SAM settings {settings!r}; choose among {sorted(GROUNDING_SETTINGS)} "
                             f"('authors': the authors' run, the default)")
        settings = GROUNDING_SETTINGS[settings]
    if fallback and segmenter_kind_of(settings) == "sam_hq" and not sam_hq_available():
        logger.warning("the installed transformers has no SamHQModel: the %r settings use SAM ViT-H (%s) instead "
                       "of the authors' SAM-HQ ViT-H (%s); upgrade transformers to segment as the authors did",
                       settings.name, SAM_VIT_H_ID, SAM_HQ_VIT_H_ID)
        settings = replace(settings, segmenter_id=SAM_VIT_H_ID,
                           source=settings.source + " (SAM ViT-H: this transformers has no SAM-HQ)")
    return settings


class ModelLoadError(OSError):
    """Grounding DINO or SAM weights could not be loaded (message says what was tried and what to do)."""


@dataclass(frozen=True)
class Detection:
    """One Grounding DINO box kept by the thresholds.

    ``phrase`` is the decoded text of the prompt tokens whose probability beat the text threshold,
    ``score`` the box's highest token probability, ``box`` ``(x0, y0, x1, y1)`` in image pixels.
    """

    phrase: str
    score: float
    box: tuple[float, float, float, float]


def grounding_prompt(nouns: Sequence[str]) -> str:
    """The Grounding DINO text prompt for ``nouns``: lower case, joined by ``" . "``, ending in ``" ."``.

    ``["Cat", "kite"] -> "cat . kite ."`` (the authors join with ``" . "``, lower-case and add a final
    dot; Grounding DINO reads ``"."`` as the separator between phrases, so a noun may not contain one).
    """
    if isinstance(nouns, str):
        raise TypeError(f"nouns must be a list of strings, got the string {nouns!r}; wrap it in a list")
    cleaned = []
    for noun in nouns:
        if not isinstance(noun, str) or not noun.strip():
            raise ValueError(f"every noun must be a non-empty string, got {noun!r} in {list(nouns)!r}")
        if "." in noun:
            raise ValueError(
                f"noun {noun!r} contains '.', which Grounding DINO reads as a phrase separator; "
                "remove the dot from the noun (e.g. 'st. bernard' -> 'st bernard')"
            )
        cleaned.append(" ".join(noun.lower().split()))
    if not cleaned:
        raise ValueError("no nouns to ground: the prompt would be empty")
    return " . ".join(cleaned) + " ."


def match_phrase(detected_phrase: str, nouns: Sequence[str]) -> str | None:
    """The noun of ``nouns`` that a Grounding DINO phrase stands for, or ``None``.

    The authors' rules (``gen_mask.py``), in order; the first that finds a noun wins:

    1. the phrase is one of the nouns;
    2. case: its upper-case, then its lower-case form is one of the nouns (``"tv"`` -> ``"TV"``);
    3. hyphen: the tokenizer decodes ``"dump-truck"`` as ``"dump - truck"``; undo that;
    4. containment: the first noun (caption order) that contains the phrase or is contained in it,
       compared in lower case as substrings (``"top horse"`` -> ``"horse"``, ``"horse"`` -> ``"top
       horse"``, ``"birthday cake"`` -> ``"tank birthday cake"``). The authors first try whole-word
       containment, but their substring loop runs afterwards unconditionally and overrides it, so the
       substring rule is what decides; it is reproduced as such (``"catalog"`` -> ``"cat"`` too);
    5. token subset: the first noun that contains every space-separated token of the phrase
       (``"red dump truck"`` -> ``"a red and blue dump truck"``).

    An empty phrase matches nothing.
    """
    phrase = " ".join(detected_phrase.split())
    if not phrase:
        return None
    noun_set = set(nouns)
    for candidate in (phrase, phrase.upper(), phrase.lower(), phrase.replace(" - ", "-")):
        if candidate in noun_set:
            return candidate
    lowered = phrase.lower()
    for noun in nouns:
        if noun.lower() in lowered or lowered in noun.lower():
            return noun
    tokens = lowered.split(" ")
    for noun in nouns:
        if all(token in noun.lower() for token in tokens):
            return noun
    return None


def union_masks(masks: Iterable[np.ndarray]) -> np.ndarray:
    """Pixel-wise OR of binary masks of one shape: bool ``[H, W]`` (the authors' ``aggregate_masks``)."""
    result: np.ndarray | None = None
    for index, mask in enumerate(masks):
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"mask {index} has shape {mask.shape}; expected a 2-D [H, W] mask")
        if result is None:
            result = mask.astype(bool).copy()
        elif mask.shape != result.shape:
            raise ValueError(f"mask {index} has shape {mask.shape}, the first had {result.shape}: "
                             "masks of one noun must share the image's resolution")
        else:
            result |= mask.astype(bool)
    if result is None:
        raise ValueError("union_masks needs at least one mask")
    return result


def segmentation_inputs(image: Image.Image, boxes: Sequence[Sequence[float]]) -> tuple[Image.Image, list[list[float]]]:
    """What both backends' ``segment`` prompt SAM with: the image as RGB and the boxes as ``[x0, y0, x1, y1]``
    lists of floats (``ValueError`` for a box of another length)."""
    box_list = [[float(v) for v in box] for box in boxes]
    if any(len(box) != 4 for box in box_list):
        raise ValueError(f"each box must be (x0, y0, x1, y1), got {boxes!r}")
    return as_rgb(image), box_list


def as_rgb(image: Image.Image) -> Image.Image:
    """``image`` as RGB (both backends feed RGB to their models); a ``TypeError`` for anything but a PIL image."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL.Image, got {type(image).__name__}; open the file with PIL.Image.open")
    return to_rgb(image)  # 16-bit greyscale scaled, not clipped to black and white


def segmenter_kind_of(settings: GroundingSettings) -> str:
    """The segmenter architecture a preset names: "sam_hq" for SAM-HQ ids, else "sam"."""
    return "sam_hq" if "sam-hq" in settings.segmenter_id.lower() else "sam"


class GroundedSegmenter:
    """A Grounded-SAM backend: ``detect`` (boxes and phrases for the nouns) and ``segment`` (a mask a box),
    with ``settings``, ``box_threshold`` and ``text_threshold``; ``masks_for_nouns`` is the algorithm both
    backends share: one union mask per noun."""

    settings: GroundingSettings
    box_threshold: float
    text_threshold: float

    def detect(self, image: Image.Image, nouns: Sequence[str]) -> list[Detection]:
        raise NotImplementedError

    def segment(self, image: Image.Image, boxes: Sequence[Sequence[float]]) -> np.ndarray:
        raise NotImplementedError

    def masks_for_nouns(self, image: Image.Image, nouns: Sequence[str]) -> dict[str, np.ndarray | None]:
        """``{noun: bool [H, W] mask at image resolution, or None}`` for every noun, in ``nouns`` order.

        Detect with the nouns as prompt, segment every kept box, unite the masks of one detected phrase,
        match each phrase to a noun (``match_phrase``) and unite again per noun.
        """
        result: dict[str, np.ndarray | None] = {noun: None for noun in nouns}
        if not nouns:
            return result
        image = as_rgb(image)
        detections = self.detect(image, list(result))
        if not detections:
            return result
        box_masks = self.segment(image, [d.box for d in detections])  # [boxes, H, W]
        per_phrase: dict[str, list[np.ndarray]] = {}
        for detection, mask in zip(detections, box_masks, strict=True):
            per_phrase.setdefault(detection.phrase, []).append(mask)
        per_noun: dict[str, list[np.ndarray]] = {}
        for phrase, masks in per_phrase.items():
            noun = match_phrase(phrase, list(result))
            if noun is None:
                logger.info("detected phrase %r matches none of the nouns %s; its mask is dropped", phrase,
                            list(result))
                continue
            per_noun.setdefault(noun, []).append(union_masks(masks))
        for noun, masks in per_noun.items():
            result[noun] = union_masks(masks)
        return result

    __call__ = masks_for_nouns
