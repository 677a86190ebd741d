"""Object detectors behind one interface: ``Detector.detect(image, names) -> list[Detection]``.

The evaluations (MultiGen MG1-5, VISOR object accuracy; DESIGN.md "Evaluation") only need to know which
named objects a detector finds in an image, with a score. Two kinds of detector implement this protocol:

- the toy world's colour-and-shape detector, ``tokencompose.toy.detector.ToyDetector`` (exact on rendered
  scenes, robust to noise, tint and blur; it needs no weights);
- open-vocabulary detectors for real images, OWLv2 (``google/owlv2-large-patch14-ensemble``: MultiGen, as
  in the paper) and OWL-ViT (``google/owlvit-base-patch32``: VISOR), through ``transformers``:
  ``OwlDetector.from_pretrained("owlv2" | "owlvit" | folder)``; both query "a photo of a {name}" for each
  name. ``OwlDetector.tiny(kind)`` builds the same architecture at a tiny size with random weights, so the
  plumbing and post-processing run offline (``tests/test_owl_detectors.py``).

``draw_detections`` draws boxes and labels on an image (the example figures of the evaluation CLI).

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

import numpy as np
import torch
from PIL import Image, ImageDraw

from tokencompose.images import to_rgb
from tokencompose.models import WeightsNotFoundError
from tokencompose.tokens import clip_tokenizer

#: a box (x0, y0, x1, y1) in pixels, see the module docstring for the convention
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Detection:
    """One detected object: its category ``name``, a ``score`` in [0, 1] and its ``box`` (x0, y0, x1, y1).

    ``attribute``: what a detector reports beside the category, if anything (the toy detector in the
    attribute world: the object's colour word).
    """

    name: str
    score: float
    box: Box
    attribute: str | None = None


@runtime_checkable
class Detector(Protocol):
    """Anything with ``detect(image, names=None) -> list[Detection]`` (see the module docstring)."""

    def detect(self, image: Any, names: Sequence[str] | None = None) -> list[Detection]:
        """Detections in ``image`` (H x W x 3 RGB, numpy or PIL), for the query ``names``."""
        ...


# ----------------------------------------------------------------------------------------------------------
# OWLv2 / OWL-ViT (open-vocabulary detectors, through transformers)
# ----------------------------------------------------------------------------------------------------------

#: MultiGen's detector (the authors' ``multigen/gen_json_dist.py``)
OWLV2_MODEL = "google/owlv2-large-patch14-ensemble"
#: VISOR's detector (``microsoft/VISOR``, ``text2image_realtime_evaluate.ipynb``)
OWLVIT_MODEL = "google/owlvit-base-patch32"
#: the text query of both evaluations; note "a" even before a vowel, as the authors wrote it
QUERY_TEMPLATE = "a photo of a {name}"
#: short names accepted by ``OwlDetector.from_pretrained``
OWL_ALIASES = {"owlv2": OWLV2_MODEL, "owlvit": OWLVIT_MODEL}


def owl_postprocess(logits: Any, pred_boxes: Any, names: Sequence[str], image_size: tuple[int, int],
                    padded_to_square: bool, threshold: float = 0.01) -> list[Detection]:
    """OWL outputs of one image -> detections, as transformers' ``post_process_object_detection`` does.

    Each predicted box (one per image patch) gets ONE label, the query with the highest logit, and the
    score ``sigmoid(max logit)``; boxes with ``score > threshold`` are kept, best first. Boxes come as
    (cx, cy, w, h) relative to the model's input; OWL-ViT stretches the image to its input square, so x
    scales by the image width and y by its height; OWLv2 pads the image to a square (bottom / right) before
    resizing, so both scale by the longer side. Boxes are then clipped to the image.

    Args:
        logits: ``[boxes, queries]`` class logits (``outputs.logits[i]``).
        pred_boxes: ``[boxes, 4]`` (cx, cy, w, h) in [0, 1] (``outputs.pred_boxes[i]``).
        names: the category of each query, in query order.
        image_size: ``(width, height)`` of the input image in pixels.
        padded_to_square: True for OWLv2, False for OWL-ViT.
    """
    logits = torch.as_tensor(logits).float()
    pred_boxes = torch.as_tensor(pred_boxes).float()
    if logits.ndim != 2 or logits.shape[1] != len(names):
        raise ValueError(f"logits must be [boxes, {len(names)} queries] for names {list(names)}, "
                         f"got shape {tuple(logits.shape)}")
    if pred_boxes.shape != (logits.shape[0], 4):
        raise ValueError(f"pred_boxes must be [{logits.shape[0]}, 4], got {tuple(pred_boxes.shape)}")
    width, height = image_size
    best = logits.max(dim=-1)
    scores = torch.sigmoid(best.values)  # [boxes]
    cx, cy, w, h = pred_boxes.unbind(-1)
    corners = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)  # [boxes, 4] relative
    scale_x, scale_y = (max(width, height),) * 2 if padded_to_square else (width, height)
    corners = corners * torch.tensor([scale_x, scale_y, scale_x, scale_y], dtype=corners.dtype)
    corners[:, 0::2] = corners[:, 0::2].clamp(0, width)
    corners[:, 1::2] = corners[:, 1::2].clamp(0, height)
    keep = torch.nonzero(scores > threshold).flatten().tolist()
    detections = [Detection(name=names[int(best.indices[i])], score=float(scores[i]),
                            box=tuple(float(v) for v in corners[i])) for i in keep]
    return sorted(detections, key=lambda d: -d.score)


def _owl_classes(kind: str) -> tuple[Any, Any, Any]:
    """(config class, model class, image processor class) of ``kind`` ("owlv2" or "owlvit").

    transformers 5 has a torchvision and a PIL image processor; the PIL one (``...ImageProcessorPil``, which
    for OWLv2 needs scipy) runs without torchvision. transformers 4 has only the PIL-based one.
    """
    import transformers  # lazy: seconds to import; only the OWL detectors need it

    if kind == "owlv2":
        names = ("Owlv2Config", "Owlv2ForObjectDetection", "Owlv2ImageProcessorPil", "Owlv2ImageProcessor")
    elif kind == "owlvit":
        names = ("OwlViTConfig", "OwlViTForObjectDetection", "OwlViTImageProcessorPil", "OwlViTImageProcessor")
    else:
        raise ValueError(f"unknown OWL kind {kind!r}; use 'owlv2' or 'owlvit'")
    processor = getattr(transformers, names[2], None) or getattr(transformers, names[3])
    return getattr(transformers, names[0]), getattr(transformers, names[1]), processor


class OwlDetector:
    """OWLv2 or OWL-ViT behind ``Detector``: ``detect(image, names)`` queries "a photo of a {name}" per name.

    Reports only the queried categories (an open-vocabulary detector knows no others); one label per
    predicted box (the best query), scores above ``threshold`` (default 0.01: what MultiGen saves).
    Build it with ``OwlDetector.from_pretrained("owlv2" | "owlvit" | hub id | folder)`` for real weights, or
    ``OwlDetector.tiny(kind)`` for the same architecture with random weights (offline tests, no meaning).
    """

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, kind: str,
                 template: str = QUERY_TEMPLATE, threshold: float = 0.01, batch_size: int = 8) -> None:
        if kind not in ("owlv2", "owlvit"):
            raise ValueError(f"unknown OWL kind {kind!r}; use 'owlv2' or 'owlvit'")
        if "{name}" not in template:
            raise ValueError(f"the query template must contain '{{name}}', got {template!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.kind = kind
        self.template = template
        self.threshold = threshold
        self.batch_size = batch_size
        #: text length of the OWL text encoder (16 for the released models)
        self.max_length = int(model.config.text_config.max_position_embeddings)

    # -- construction -----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model: str = "owlv2", device: str | None = None, dtype: Any = None,
                        **kwargs: Any) -> OwlDetector:
        """Load real weights: ``model`` is "owlv2", "owlvit", a hub id or a local folder.

        Raises ``tokencompose.models.WeightsNotFoundError`` saying what was tried and how to get the weights.
        """
        source = OWL_ALIASES.get(model, model)
        kind = "owlvit" if "owlvit" in source.lower() else "owlv2"
        tried = []
        for candidate in (kind, "owlvit" if kind == "owlv2" else "owlv2"):
            _, model_class, processor_class = _owl_classes(candidate)
            try:
                network = model_class.from_pretrained(source, torch_dtype=dtype or torch.float32)
                image_processor = processor_class.from_pretrained(source)
            except Exception as error:  # noqa: BLE001 - every failure becomes one actionable message
                tried.append(f"{model_class.__name__}.from_pretrained({source!r}): {type(error).__name__}: "
                             f"{str(error).splitlines()[0][:160] if str(error) else ''}")
                if "owlv2" in source.lower() or "owlvit" in source.lower():
                    break  # the name says which architecture it is: no point trying the other one
                continue
            if device is not None:
                network = network.to(device)
            return cls(network, clip_tokenizer(source), image_processor, candidate, **kwargs)
        raise WeightsNotFoundError(
            f"could not load the detector {source!r}. Tried:\n  " + "\n  ".join(tried) + "\n"
            "To get the weights: on a machine with internet access run "
            f"`huggingface-cli download {source} --local-dir DIR` and pass DIR (CLI: --detector DIR), or let "
            "transformers download them on first use (needs access to huggingface.co). For the toy world use "
            "--detector toy, which needs no weights.")

    @classmethod
    def tiny(cls, kind: str = "owlv2", image_size: int = 32, patch_size: int = 8, seed: int = 0,
             **kwargs: Any) -> OwlDetector:
        """The ``kind`` architecture at a tiny size with random weights and the offline CLIP tokenizer.

        For offline tests and notebooks: the plumbing, pre- and post-processing are the real ones, the
        detections are meaningless. Image processor built directly at ``image_size``.
        """
        config_class, model_class, processor_class = _owl_classes(kind)
        text = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=2, max_position_embeddings=16)
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      image_size=image_size, patch_size=patch_size)
        torch.manual_seed(seed)
        network = model_class(config_class(text_config=text, vision_config=vision, projection_dim=32))
        size = {"height": image_size, "width": image_size}
        processor = processor_class(size=size, **({"crop_size": size} if kind == "owlvit" else {}))
        return cls(network, clip_tokenizer(), processor, kind, **kwargs)

    # -- detection --------------------------------------------------------------------------------------
    def queries(self, names: Sequence[str]) -> list[str]:
        """The text queries for ``names`` ("a photo of a {name}")."""
        return [self.template.format(name=name) for name in names]

    def _check_names(self, names: Sequence[str] | None) -> list[str]:
        if names is None or isinstance(names, str) or len(names) == 0:
            raise ValueError(f"{self.kind} needs the category names to look for (a non-empty list), got {names!r}")
        return list(names)

    def detect(self, image: Any, names: Sequence[str] | None = None) -> list[Detection]:
        """Detections of ``names`` in ``image`` (H x W x 3 RGB, numpy or PIL), best first."""
        return self.detect_many([image], names)[0]

    def detect_many(self, images: Sequence[Any], names: Sequence[str] | None = None) -> list[list[Detection]]:
        """``detect`` for several images with the same query, ``batch_size`` images a forward pass."""
        names = self._check_names(names)
        pil_images = [to_pil(image) for image in images]
        text = self.tokenizer(self.queries(names), padding="max_length", max_length=self.max_length,
                              truncation=True, return_tensors="pt")
        parameter = next(self.model.parameters())
        results: list[list[Detection]] = []
        for start in range(0, len(pil_images), self.batch_size):
            chunk: list[Image.Image] = pil_images[start:start + self.batch_size]
            pixels = self.image_processor(images=chunk, return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                outputs = self.model(
                    input_ids=text["input_ids"].repeat(len(chunk), 1).to(parameter.device),  # [B * Q, L]
                    attention_mask=text["attention_mask"].repeat(len(chunk), 1).to(parameter.device),
                    pixel_values=pixels.to(parameter.device, parameter.dtype),  # [B, 3, S, S]
                )
            for i, image in enumerate(chunk):
                results.append(owl_postprocess(outputs.logits[i].cpu(), outputs.pred_boxes[i].cpu(), names,
                                               image.size, self.kind == "owlv2", self.threshold))
        return results


def to_pil(image: Any) -> Any:
    """An RGB ``PIL.Image`` from a PIL image or an H x W x 3 array (uint8, or float in [0, 1])."""
    if isinstance(image, Image.Image):
        return to_rgb(image)  # 16-bit greyscale scaled, not clipped
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got an array of shape {array.shape}")
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(array, mode="RGB")


def draw_detections(image: Any, detections: Sequence[Detection], scale: int = 1) -> Any:
    """``image`` (PIL) with each detection's box and "name score" label drawn on it, enlarged ``scale`` x."""
    picture = to_pil(image)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), resample=0)  # nearest
    draw = ImageDraw.Draw(picture)
    palette = ["#ff4040", "#40c0ff", "#ffd040", "#40ff80", "#ff40ff", "#ffffff"]
    names = sorted({d.name for d in detections})
    for detection in detections:
        colour = palette[names.index(detection.name) % len(palette)]
        x0, y0, x1, y1 = (v * scale for v in detection.box)
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=max(1, scale // 2))
        draw.text((x0 + 1, y0 + 1), f"{detection.name} {detection.score:.2f}", fill=colour)
    return picture
