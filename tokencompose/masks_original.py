"""Grounded-SAM through the authors' own packages: ``groundingdino`` + ``segment_anything`` (``backend="original"``).

``masks.GroundedSAM`` runs Grounding DINO and SAM-HQ through ``transformers`` (the default backend). This module
runs the code the authors ran (their ``preprocess_data/gen_mask.py``): GroundingDINO's ``build_model`` from its
python config and ``.pth`` checkpoint, its own resize-and-normalise transform and ``get_phrases_from_posmap``, and
SAM's ``SamPredictor`` (``set_image``, ``transform.apply_boxes_torch``, ``predict_torch(multimask_output=False)``).
Matching phrases to nouns, uniting masks and the output are ``GroundedSAM``'s: ``masks_for_nouns`` returns the same
``{noun: bool [H, W] mask at the image's resolution, or None}``, so ``prepare`` and the rest of the pipeline do not
care which backend made the masks.

Usage::

    gsam = GroundedSAM.from_pretrained("groundingdino_swint_ogc.pth", "sam_hq_vit_h.pth", backend="original")
    python -m tokencompose prepare ... --backend original \\
        --detector groundingdino_swint_ogc.pth --segmenter sam_hq_vit_h.pth

What it needs (none of it is a dependency of tokencompose; ``scripts/test_original_masks.sh`` builds such an
environment, ``.venv-original``):

* packages: ``pip install torchvision groundingdino-py==0.4.0 segment-anything-hq==0.3`` (SAM-HQ, the authors'
  run) or ``segment-anything==1.0`` (SAM, the ``grounded-sam-script`` preset). torchvision must match the installed
  torch (e.g. torch 2.14.1 with torchvision 0.29.1); groundingdino-py's BERT wrapper needs ``transformers<5``
  (it calls ``get_extended_attention_mask`` / ``get_head_mask``, gone in 5). groundingdino-py 0.4.0 has no C++/CUDA
  extension to build: its multi-scale deformable attention is always the pure-PyTorch
  ``multi_scale_deformable_attn_pytorch`` (``grid_sample`` per level), the function the upstream repository runs on
  CPU; on CUDA upstream uses its compiled ``_C`` kernel, equal up to rounding. segment-anything-hq 0.3 is SysCV's
  release of the SAM-HQ code the authors had vendored in Grounded-Segment-Anything (``build_sam_hq``).
* checkpoints (``ORIGINAL_CHECKPOINTS``): ``groundingdino_swint_ogc.pth`` (Grounding DINO Swin-T OGC, from the
  GitHub release v0.1.0-alpha of IDEA-Research/GroundingDINO) and ``sam_hq_vit_h.pth`` (SAM-HQ ViT-H, linked
  from the README of SysCV/sam-hq; also in the Hugging Face repository lkeab/hq-sam) for the ``authors`` preset;
  ``groundingdino_swinb_cogcoor.pth`` (release v0.1.0-alpha2) and ``sam_vit_h_4b8939.pth``
  (https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth) for ``grounded-sam-script``.
* the Grounding DINO python config: shipped inside groundingdino-py (``groundingdino/config/
  GroundingDINO_SwinT_OGC.py``, ``GroundingDINO_SwinB_cfg.py``), found automatically; ``detector_config=`` takes
  another file.
* BERT: the config names ``text_encoder_type = "bert-base-uncased"``, which GroundingDINO loads with transformers'
  ``from_pretrained`` (hub or cache) for its tokenizer and architecture; the checkpoint then overwrites the BERT
  weights. Offline, pass a folder holding ``bert-base-uncased`` as ``text_encoder=``.

Where this differs from ``gen_mask.py``: the checkpoint's tensors are read with ``weights_only=True``
(``argparse.Namespace`` allowed), and a checkpoint that matches none of the model's parameters is refused instead
of being loaded with ``strict=False`` into a random model; the image for SAM is PIL's decoding, where the authors
re-read the file with OpenCV (the two JPEG decoders can differ by a grey level); the rest is in ``masks``' module
docstring (united masks for two phrases of one noun, an empty phrase matches nothing). groundingdino-py 0.4.0's
``get_phrases_from_posmap`` keeps ``[CLS]`` / ``[SEP]`` in a phrase when they beat the text threshold (later
GroundingDINO releases drop position 0, ``[CLS]``; the transformers backend drops both). ``match_phrase``'s
containment rule usually finds the same noun for such a phrase, not always: with the nouns "dog" and "hot dog",
"hot dog" goes to "hot dog" but "[CLS] hot dog" to "dog".
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .config import resolve_device
from .grounding import (
    DEFAULT_GROUNDING_SETTINGS,
    Detection,
    GroundedSegmenter,
    GroundingSettings,
    ModelLoadError,
    as_rgb,
    grounding_prompt,
    resolve_grounding_settings,
    segmentation_inputs,
    segmenter_kind_of,
)

logger = logging.getLogger(__name__)

#: what to ``pip install`` for this backend (torchvision: the build matching the installed torch)
PIP_INSTALL = "pip install torchvision groundingdino-py==0.4.0 segment-anything-hq==0.3 segment-anything==1.0"
#: the Python module of each segmenter kind, and the distribution that provides it
SAM_PACKAGES = {"sam_hq": ("segment_anything_hq", "segment-anything-hq==0.3"),
                "sam": ("segment_anything", "segment-anything==1.0")}
#: Grounding DINO's image transform in ``gen_mask.py``: ``T.RandomResize([800], max_size=1333)`` + ImageNet stats
DETECTOR_SHORTEST_EDGE = 800
DETECTOR_LONGEST_EDGE = 1333
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class OriginalCheckpoints:
    """The files one preset needs with the original packages, and where each comes from."""

    detector_config: str  # a file in groundingdino/config/
    detector_checkpoint: str
    detector_source: str
    sam_model_type: str  # a key of the SAM package's sam_model_registry
    segmenter_checkpoint: str
    segmenter_source: str


#: per preset of ``masks.GROUNDING_SETTINGS``
ORIGINAL_CHECKPOINTS: dict[str, OriginalCheckpoints] = {
    "authors": OriginalCheckpoints(
        "GroundingDINO_SwinT_OGC.py", "groundingdino_swint_ogc.pth",
        "https://github.com/IDEA-Research/GroundingDINO/releases/download/v0.1.0-alpha/groundingdino_swint_ogc.pth",
        "vit_h", "sam_hq_vit_h.pth",
        "the README of https://github.com/SysCV/sam-hq (also https://huggingface.co/lkeab/hq-sam)"),
    "grounded-sam-script": OriginalCheckpoints(
        "GroundingDINO_SwinB_cfg.py", "groundingdino_swinb_cogcoor.pth",
        "https://github.com/IDEA-Research/GroundingDINO/releases/download/v0.1.0-alpha2/"
        "groundingdino_swinb_cogcoor.pth",
        "vit_h", "sam_vit_h_4b8939.pth", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"),
}


class OriginalPackagesMissingError(ModelLoadError):
    """The original packages cannot be imported here (message: what to ``pip install``)."""


def _files_hint(preset: str) -> str:
    files = ORIGINAL_CHECKPOINTS.get(preset, ORIGINAL_CHECKPOINTS[DEFAULT_GROUNDING_SETTINGS])
    return (f"Checkpoints for the {preset!r} settings: {files.detector_checkpoint} (from {files.detector_source}) "
            f"as the detector, {files.segmenter_checkpoint} (from {files.segmenter_source}) as the segmenter "
            f"(--detector / --segmenter, or the first two arguments of from_pretrained); the Grounding DINO config "
            f"{files.detector_config} comes with groundingdino-py; its BERT tokenizer is bert-base-uncased from "
            f"the Hugging Face cache, or a local folder passed as text_encoder=.")


def import_original(segmenter_kind: str = "sam_hq", preset: str = DEFAULT_GROUNDING_SETTINGS) -> dict[str, Any]:
    """Import the original packages this backend calls: ``{"build_model": ..., "SamPredictor": ...}``.

    Raises ``OriginalPackagesMissingError`` naming the missing module and the ``pip install`` line.
    """
    if segmenter_kind not in SAM_PACKAGES:
        raise ValueError(f"segmenter_kind must be one of {sorted(SAM_PACKAGES)}, got {segmenter_kind!r}")
    sam_module, sam_dist = SAM_PACKAGES[segmenter_kind]
    needed = [("torchvision", "torchvision (the build for your torch)"),
              ("groundingdino.models", "groundingdino-py==0.4.0"),
              ("groundingdino.util.slconfig", "groundingdino-py==0.4.0"),
              ("groundingdino.util.utils", "groundingdino-py==0.4.0"),
              ("groundingdino.datasets.transforms", "groundingdino-py==0.4.0"),
              (sam_module, sam_dist)]
    modules: dict[str, Any] = {}
    for module, dist in needed:
        try:
            modules[module] = importlib.import_module(module)
        except (ImportError, RuntimeError, OSError) as error:  # RuntimeError: torchvision built for another torch
            raise OriginalPackagesMissingError(
                f"backend='original' runs the authors' packages, and {module} cannot be imported here "
                f"({type(error).__name__}: {error}). It comes with {dist}. Install them beside torch:\n"
                f"    {PIP_INSTALL}\n(segment-anything-hq: SAM-HQ, the authors' run; segment-anything: SAM ViT-H; "
                f"scripts/test_original_masks.sh builds such an environment, .venv-original). Or use the default "
                f"backend='transformers', which needs none of them.\n{_files_hint(preset)}") from error
    return {"build_model": modules["groundingdino.models"].build_model,
            "SLConfig": modules["groundingdino.util.slconfig"].SLConfig,
            "clean_state_dict": modules["groundingdino.util.utils"].clean_state_dict,
            "get_phrases_from_posmap": modules["groundingdino.util.utils"].get_phrases_from_posmap,
            "transforms": modules["groundingdino.datasets.transforms"],
            "sam_model_registry": modules[sam_module].sam_model_registry,
            "SamPredictor": modules[sam_module].SamPredictor}


def packaged_detector_config(name: str = ORIGINAL_CHECKPOINTS[DEFAULT_GROUNDING_SETTINGS].detector_config) -> Path:
    """The path of a Grounding DINO config shipped inside groundingdino-py (``groundingdino/config/<name>``)."""
    import groundingdino

    path = Path(groundingdino.__file__).parent / "config" / name
    if not path.is_file():
        raise ModelLoadError(f"groundingdino-py has no config {name!r} in {path.parent}; pass detector_config= "
                             f"the path of a GroundingDINO python config")
    return path


def _quietly(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``function`` with its prints (the original packages print what they load) sent to the debug log."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = function(*args, **kwargs)
    if buffer.getvalue().strip():
        logger.debug("%s printed: %s", getattr(function, "__name__", function), buffer.getvalue().strip())
    return result


def _read_checkpoint(what: str, path: str | os.PathLike, preset: str) -> dict[str, Any]:
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"no {what} checkpoint at {str(path)!r}: backend='original' loads the authors' .pth "
                             f"files.\n{_files_hint(preset)}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a bad file; all mean the same here
        raise ModelLoadError(f"could not read the {what} checkpoint {str(path)!r} ({type(error).__name__}: "
                             f"{error}); download it again.\n{_files_hint(preset)}") from error


def _load_weights(what: str, model: Any, state_dict: dict[str, Any], path: str | os.PathLike) -> None:
    """``load_state_dict(strict=False)`` as the original code does, refusing a file that matches no parameter."""
    own = set(model.state_dict())
    if not own & set(state_dict):
        raise ModelLoadError(f"{str(path)!r} holds no parameter of the {what} (its first keys: "
                             f"{sorted(state_dict)[:3]}); is it the right checkpoint for this model?")
    result = model.load_state_dict(state_dict, strict=False)
    if result.missing_keys:
        logger.warning("%s: %d parameters not in %s, left at random (first: %s)", what, len(result.missing_keys),
                       path, result.missing_keys[:5])
    if result.unexpected_keys:
        logger.info("%s: %d entries of %s not used (first: %s)", what, len(result.unexpected_keys), path,
                    result.unexpected_keys[:5])


def build_original_detector(config: str | os.PathLike | None = None, checkpoint: str | os.PathLike | None = None,
                            text_encoder: str | os.PathLike | None = None,
                            preset: str = DEFAULT_GROUNDING_SETTINGS) -> Any:
    """GroundingDINO's own model: ``build_model(SLConfig.fromfile(config))``, then the checkpoint's ``"model"``.

    ``config``: a GroundingDINO python config (default: the preset's, shipped in groundingdino-py);
    ``checkpoint``: the ``.pth`` file (``None``: random weights, for tests); ``text_encoder``: a folder (or hub id)
    for the BERT tokenizer and architecture, in place of the config's ``text_encoder_type``.
    """
    original = import_original(preset=preset)
    config_path = Path(config) if config is not None else packaged_detector_config(
        ORIGINAL_CHECKPOINTS.get(preset, ORIGINAL_CHECKPOINTS[DEFAULT_GROUNDING_SETTINGS]).detector_config)
    if not config_path.is_file():
        raise ModelLoadError(f"no GroundingDINO config at {str(config_path)!r}")
    state = _read_checkpoint("Grounding DINO", checkpoint, preset) if checkpoint is not None else None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # the authors' files: {"model": state_dict, ...}
    args = original["SLConfig"].fromfile(str(config_path))
    args.device = "cpu"
    if text_encoder is not None:
        args.text_encoder_type = str(text_encoder)
    try:
        model = _quietly(original["build_model"], args)
    except (OSError, ValueError) as error:  # BERT not found (offline without a cache) or a bad config
        raise ModelLoadError(f"could not build GroundingDINO from {str(config_path)!r} with text encoder "
                             f"{args.text_encoder_type!r} ({type(error).__name__}: {error}). Offline, pass "
                             f"text_encoder= a folder holding bert-base-uncased (save_pretrained of its model "
                             f"and tokenizer).\n{_files_hint(preset)}") from error
    if state is not None:
        _load_weights("Grounding DINO", model, original["clean_state_dict"](state), checkpoint)
    return model.eval()


def build_original_segmenter(segmenter_kind: str = "sam_hq", checkpoint: str | os.PathLike | None = None,
                             model_type: str = "vit_h", preset: str = DEFAULT_GROUNDING_SETTINGS) -> Any:
    """SAM-HQ (``segment_anything_hq``) or SAM (``segment_anything``): ``sam_model_registry[model_type]()`` with
    random weights, then the checkpoint's state dict (``None``: random weights, for tests)."""
    original = import_original(segmenter_kind, preset=preset)
    registry = original["sam_model_registry"]
    if model_type not in registry:
        raise ValueError(f"unknown SAM model type {model_type!r}; choose among {sorted(registry)}")
    state = _read_checkpoint("SAM", checkpoint, preset) if checkpoint is not None else None
    model = _quietly(registry[model_type], checkpoint=None)
    if state is not None:
        _load_weights(f"{segmenter_kind} {model_type}", model, state, checkpoint)
    return model.eval()


class OriginalGroundedSAM(GroundedSegmenter):
    """A ``grounding.GroundedSegmenter`` whose ``detect`` and ``segment`` run the original packages (module
    docstring); ``masks.GroundedSAM`` is the transformers one.

    ``detector_checkpoint`` / ``segmenter_checkpoint``: the ``.pth`` files (``ORIGINAL_CHECKPOINTS`` names them per
    preset), or already-built models as ``detector=`` (GroundingDINO's ``build_model``) and ``segmenter=`` (a SAM
    or SAM-HQ ``Sam``), as the tests do. ``masks_for_nouns`` is ``GroundedSegmenter``'s, as for ``GroundedSAM``;
    ``segmenter_kind`` ("sam_hq" or "sam") defaults to the preset's, ``sam_model_type`` to ``"vit_h"``.
    ``image_size`` / ``max_size``: Grounding DINO's resize (shortest edge, longest edge; the authors' 800 / 1333).
    It does not load transformers models: the ``.pth`` checkpoints are the only weights it reads.
    """

    def __init__(
        self,
        detector_checkpoint: str | os.PathLike | None = None,
        segmenter_checkpoint: str | os.PathLike | None = None,
        device: str = "auto",
        box_threshold: float | None = None,
        text_threshold: float | None = None,
        *,
        settings: str | GroundingSettings = DEFAULT_GROUNDING_SETTINGS,
        detector_config: str | os.PathLike | None = None,
        text_encoder: str | os.PathLike | None = None,
        segmenter_kind: str | None = None,
        sam_model_type: str | None = None,
        detector: Any = None,
        segmenter: Any = None,
        image_size: int = DETECTOR_SHORTEST_EDGE,
        max_size: int = DETECTOR_LONGEST_EDGE,
    ) -> None:
        preset = resolve_grounding_settings(settings, fallback=False)  # the original SAM-HQ needs no fallback
        kind = segmenter_kind or segmenter_kind_of(preset)
        self._original = import_original(kind, preset=preset.name)
        for name, value in (("box_threshold", box_threshold), ("text_threshold", text_threshold)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1] (a probability), got {value}")
        files = ORIGINAL_CHECKPOINTS.get(preset.name, ORIGINAL_CHECKPOINTS[DEFAULT_GROUNDING_SETTINGS])
        for what, model, path, expected in (("detector", detector, detector_checkpoint, files.detector_checkpoint),
                                            ("segmenter", segmenter, segmenter_checkpoint,
                                             files.segmenter_checkpoint)):
            if model is None and path is None:
                raise ModelLoadError(f"backend='original' needs the {what} checkpoint ({expected} for the "
                                     f"{preset.name!r} settings).\n{_files_hint(preset.name)}")
        if detector is None:
            detector = build_original_detector(detector_config, detector_checkpoint, text_encoder, preset.name)
        if segmenter is None:
            segmenter = build_original_segmenter(kind, segmenter_checkpoint, sam_model_type or files.sam_model_type,
                                                 preset.name)
        #: what this instance uses: the preset, with the checkpoint files in place of the hub ids
        self.settings = replace(
            preset,
            detector_id=str(detector_checkpoint) if detector_checkpoint is not None else "(a built GroundingDINO)",
            segmenter_id=str(segmenter_checkpoint) if segmenter_checkpoint is not None else f"(a built {kind})",
            box_threshold=preset.box_threshold if box_threshold is None else float(box_threshold),
            text_threshold=preset.text_threshold if text_threshold is None else float(text_threshold),
            source=preset.source + " (original packages: groundingdino-py, " + SAM_PACKAGES[kind][1] + ")")
        self.backend = "original"
        self.segmenter_kind = kind
        self.device = resolve_device(device)
        self.box_threshold = self.settings.box_threshold
        self.text_threshold = self.settings.text_threshold
        self.image_size, self.max_size = int(image_size), int(max_size)
        self.detector = detector.to(self.device).eval()
        self.segmenter = segmenter.to(self.device).eval()
        self.predictor = self._original["SamPredictor"](self.segmenter)

    def detect(self, image: Image.Image, nouns: Sequence[str]) -> list[Detection]:
        """GroundingDINO on ``image`` with ``grounding_prompt(nouns)``, as ``gen_mask.get_grounding_output``:
        boxes whose highest token probability beats the box threshold, phrases from ``get_phrases_from_posmap``."""
        import torch

        transforms = self._original["transforms"]
        image = as_rgb(image)
        prompt = grounding_prompt(nouns)
        tokenizer = self.detector.tokenizer
        tokenized = tokenizer(prompt)
        if len(tokenized["input_ids"]) > self.detector.max_text_len:
            raise ValueError(f"the prompt {prompt!r} is {len(tokenized['input_ids'])} tokens long; Grounding DINO "
                             f"reads at most {self.detector.max_text_len}: pass fewer nouns")
        transform = transforms.Compose([transforms.RandomResize([self.image_size], max_size=self.max_size),
                                        transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        pixels, _ = transform(image, None)  # [3, h, w], shortest edge image_size
        with torch.no_grad():
            outputs = self.detector(pixels[None].to(self.device), captions=[prompt])
        probabilities = outputs["pred_logits"].float().sigmoid()[0].cpu()  # [queries, max_text_len]
        boxes = outputs["pred_boxes"].float()[0].cpu()  # [queries, 4]: cx, cy, w, h in 0-1
        keep = probabilities.max(dim=1).values > self.box_threshold
        width, height = image.size
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        detections = []
        for token_probabilities, box in zip(probabilities[keep], boxes[keep], strict=True):
            phrase = self._original["get_phrases_from_posmap"](token_probabilities > self.text_threshold,
                                                               tokenized, tokenizer)
            cx, cy, w, h = (box * scale).tolist()
            detections.append(Detection(phrase=" ".join(phrase.split()), score=float(token_probabilities.max()),
                                        box=(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)))
        return detections

    def segment(self, image: Image.Image, boxes: Sequence[Sequence[float]]) -> np.ndarray:
        """``SamPredictor`` prompted with each box, one mask a box (``multimask_output=False``): bool ``[boxes, H, W]``."""
        import torch

        image, box_list = segmentation_inputs(image, boxes)
        if not box_list:
            return np.zeros((0, image.height, image.width), dtype=bool)
        pixels = np.asarray(image)  # [H, W, 3] uint8 RGB
        self.predictor.set_image(pixels)
        prompts = self.predictor.transform.apply_boxes_torch(torch.tensor(box_list, dtype=torch.float32),
                                                             pixels.shape[:2])
        with torch.no_grad():
            masks, _, _ = self.predictor.predict_torch(point_coords=None, point_labels=None,
                                                       boxes=prompts.to(self.predictor.device),
                                                       multimask_output=False)
        self.predictor.reset_image()
        return masks[:, 0].cpu().numpy().astype(bool)  # [boxes, H, W]
