"""Grounded-SAM: one binary mask per noun of a caption (paper Sec. 3.2, "token-level grounding data").

TokenCompose supervises each noun token's cross-attention with a segmentation mask of that noun. The
authors obtain the masks with Grounded-SAM (their ``preprocess_data/gen_mask.py``): Grounding DINO detects
boxes for a text prompt made of the caption's nouns, SAM turns each box into a mask, masks of the same
detected phrase are united, and each detected phrase is matched back to a noun of the caption. A noun
nobody detected gets ``null`` in ``metadata.jsonl`` and is simply not supervised.

The steps, each a function a notebook can show on its own::

    prompt  = grounding_prompt(["cat", "kite"])            # "cat . kite ."
    found   = gsam.detect(image, ["cat", "kite"])          # [Detection(phrase, score, box), ...]
    masks   = gsam.segment(image, [d.box for d in found])  # bool [boxes, H, W]
    noun    = match_phrase(found[0].phrase, nouns)         # the authors' fallback rules
    per_noun = gsam.masks_for_nouns(image, nouns)          # all of the above: {noun: bool [H, W] | None}

Backend: ``transformers`` instead of the original packages
------------------------------------------------------------
The ``groundingdino`` and ``segment_anything`` packages the authors used import only beside torchvision;
this module runs the same two models through ``transformers`` (the default: no torchvision, no CUDA
extension). ``GroundedSAM.from_pretrained(..., backend="original")`` (``prepare --backend original``) runs the
original packages instead, from their ``.pth`` files, where torchvision imports (Colab): ``masks_original.py``,
tested in its own environment by ``scripts/test_original_masks.sh``. The correspondence:

=====================================================  ======================================================
authors' code (Grounded-Segment-Anything)               here
=====================================================  ======================================================
``load_model(GroundingDINO_SwinT_OGC.py, .pth)``        ``GroundingDinoForObjectDetection.from_pretrained(id)``
``T.RandomResize([800], max_size=1333)`` + Normalize    the hub processor's image processor (shortest edge 800,
                                                        longest 1333, same ImageNet mean/std)
``caption.lower().strip()`` + ``"."``                   ``grounding_prompt(nouns)``
``outputs["pred_logits"].sigmoid()`` / ``pred_boxes``   ``outputs.logits.sigmoid()`` / ``outputs.pred_boxes``
                                                        (``[queries, max_text_len]``; boxes cx, cy, w, h in 0-1)
``logits.max(dim=1) > box_threshold``                   ``detections_from_outputs(box_threshold=...)``
``get_phrases_from_posmap(logit > text_threshold)``     ``detections_from_outputs(text_threshold=...)``
``SamPredictor(build_sam_hq(ckpt))``                    ``SamHQModel.from_pretrained(SAM_HQ_VIT_H_ID)`` and
(``--use_sam_hq``, the authors' run)                    ``SamHQProcessor`` (``syscv-community/sam-hq-vit-huge``)
``SamPredictor(sam_model_registry["vit_h"](ckpt))``     ``SamModel.from_pretrained("facebook/sam-vit-huge")``
``predictor.set_image`` + ``transform.apply_boxes``     ``SamProcessor(images, input_boxes=[[boxes]])``
                                                        (longest side 1024, boxes rescaled alike)
``predict_torch(boxes=..., multimask_output=False)``    ``SamModel(**inputs, multimask_output=False)``
mask logits ``> model.mask_threshold`` (0.0)             ``processor.post_process_masks(..., mask_threshold=0.0)``
``aggregate_masks`` (union per detected phrase)          ``union_masks`` per phrase, then per noun
the matching ``if/elif`` chain                          ``match_phrase``
``plt.imsave(path, mask, cmap=gray)``                   ``save_mask`` (8-bit PNG, 0 / 255)
=====================================================  ======================================================

Settings: the authors' run by default
-------------------------------------
Two named presets (``GROUNDING_SETTINGS``; ``GroundedSAM(settings=...)``, ``prepare --settings``):

========================  ==========================================  ==========================================
setting                   ``"authors"`` (default)                     ``"grounded-sam-script"``
========================  ==========================================  ==========================================
detector                  Grounding DINO Swin-T OGC                   Grounding DINO Swin-B
                          (``IDEA-Research/grounding-dino-tiny``)     (``IDEA-Research/grounding-dino-base``)
segmenter                 SAM-HQ ViT-H                                SAM ViT-H (``facebook/sam-vit-huge``)
                          (``syscv-community/sam-hq-vit-huge``)
box threshold             0.25                                        0.3
text threshold            0.25                                        0.25
where it comes from       ``preprocess_data/run_pipeline.sh``: the    ``gen_mask.py``'s argparse defaults (box
                          command the authors ran for their COCO      0.3, text 0.25, ``--sam_version vit_h``
                          data (``GroundingDINO_SwinT_OGC.py``,       without ``--use_sam_hq``); the script has
                          ``sam_hq_vit_h.pth``, ``--use_sam_hq``,     no default detector, Swin-B is the larger
                          ``--box_threshold 0.25``)                   released one (this module's earlier default)
========================  ==========================================  ==========================================

``"authors"`` is the default because it made the masks the paper's models were trained on. SAM-HQ runs
through transformers' ``SamHQModel`` / ``SamHQProcessor``; where the installed transformers has no
``SamHQModel`` (an older release), the preset falls back to SAM ViT-H and logs that it did
(``resolve_grounding_settings``). Every field can still be overridden one by one (``detector_id=``,
``box_threshold=``...; ``--detector``, ``--box-threshold``...).

Other differences: when two detected phrases match the same noun, the authors' code overwrote the first
mask file with the second; here the two masks are united. A detected phrase left
empty by the text threshold matches nothing (in the authors' code ``"" in word`` matched the first noun).

Real weights come from the Hugging Face Hub (``GroundedSAM.from_pretrained()``); offline tests and
demonstrations use ``GroundedSAM.random_tiny(words)``, the same architectures with tiny configs and
random weights (the masks are meaningless; shapes, plumbing and file format are real).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .config import resolve_device
from .grounding import (  # noqa: F401 - the shared names, re-exported: masks.Detection etc.
    BOX_THRESHOLD,
    DEFAULT_DETECTOR_ID,
    DEFAULT_GROUNDING_SETTINGS,
    DEFAULT_SEGMENTER_ID,
    GROUNDING_SETTINGS,
    SAM_HQ_VIT_H_ID,
    SAM_VIT_H_ID,
    SEGMENTER_TYPES,
    TEXT_THRESHOLD,
    Detection,
    GroundedSegmenter,
    GroundingSettings,
    ModelLoadError,
    as_rgb,
    grounding_prompt,
    match_phrase,
    resolve_grounding_settings,
    sam_hq_available,
    segmentation_inputs,
    segmenter_kind_of,
    union_masks,
)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# pure helpers
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExamplePhoto:
    """A real photograph bundled with scikit-image (no download), its caption and its licence."""

    name: str
    caption: str
    licence: str
    image: Image.Image


#: scikit-image's bundled photographs (``skimage.data.<name>()``): caption written here, licence from
#: scikit-image's docstrings
EXAMPLE_PHOTOS = {
    "coffee": ("a cup of coffee on a saucer", "CC0, photographer Rachel Michetti (scikit-image's skimage.data.coffee)"),
    "chelsea": ("a cat", "CC0, photographer Stefan van der Walt (scikit-image's skimage.data.chelsea)"),
}


def example_photo(name: str = "coffee") -> ExamplePhoto:
    """A real photograph to run Grounded-SAM on offline: one of ``EXAMPLE_PHOTOS`` from scikit-image's wheel.

    Raises ``KeyError`` naming the choices, or ``ImportError`` saying how to install scikit-image (Colab has it;
    ``pip install "tokencompose[colab]"`` adds it)."""
    if name not in EXAMPLE_PHOTOS:
        raise KeyError(f"no example photo {name!r}; choose one of {sorted(EXAMPLE_PHOTOS)}")
    try:
        from skimage import data as skimage_data
    except ImportError as error:
        raise ImportError("the example photographs come with scikit-image: pip install scikit-image (or "
                          "'tokencompose[colab]'), or pass a photo of your own as image_path") from error
    caption, licence = EXAMPLE_PHOTOS[name]
    pixels = np.asarray(getattr(skimage_data, name)())
    return ExamplePhoto(name=name, caption=caption, licence=licence, image=Image.fromarray(pixels).convert("RGB"))


def safe_noun_name(noun: str) -> str:
    """``noun`` made safe as a file-name part: whitespace -> ``_``, anything not a letter/digit/-/_ -> ``_``.

    ``"teddy bear" -> "teddy_bear"``, ``"a/c unit" -> "a_c_unit"``.
    """
    name = "".join(ch if (ch.isalnum() or ch in "-_") else "_" for ch in "_".join(noun.split()))
    return name or "_"


def mask_file_name(noun: str) -> str:
    """``mask_<noun>.png`` with the noun made file-system safe (``safe_noun_name``)."""
    return f"mask_{safe_noun_name(noun)}.png"


def save_mask(mask: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a binary mask ``[H, W]`` as an 8-bit grey PNG with values 0 and 255; returns the path.

    Parent folders are created; the file is written to a temporary name first and renamed, so an
    interrupted run never leaves a truncated PNG under the final name.
    """
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"a mask must be 2-D [H, W], got shape {array.shape} for {path}")
    if array.dtype != bool:
        values = np.unique(array)
        if not np.isin(values, (0, 1)).all() and not np.isin(values, (0, 255)).all():
            raise ValueError(f"mask for {path} is not binary (values {values[:5]}...): "
                             "pass a bool array or one of 0/1 or 0/255")
        array = array > 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.where(array, 255, 0).astype(np.uint8), mode="L")
    handle, temporary = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(handle)
    try:
        image.save(temporary, format="PNG")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def detections_from_outputs(
    logits: Any,
    pred_boxes: Any,
    input_ids: Sequence[int],
    tokenizer: Any,
    image_size: tuple[int, int],
    box_threshold: float = BOX_THRESHOLD,
    text_threshold: float = TEXT_THRESHOLD,
) -> list[Detection]:
    """Grounding DINO's raw outputs for one image -> the boxes kept and their phrases.

    ``logits``: ``[queries, text_positions]`` (pre-sigmoid); ``pred_boxes``: ``[queries, 4]``
    as (cx, cy, w, h) in 0-1; ``input_ids``: the prompt's token ids; ``image_size``: ``(width,
    height)`` as PIL gives it. A query is kept when its highest token probability exceeds
    ``box_threshold``; its phrase is the decoded prompt tokens whose probability exceeds
    ``text_threshold`` (special tokens such as ``[CLS]``/``[SEP]`` left out), as in the authors'
    ``get_grounding_output``.
    """
    import torch

    probabilities = torch.as_tensor(logits).detach().float().sigmoid().cpu()  # [queries, text]
    boxes = torch.as_tensor(pred_boxes).detach().float().cpu()  # [queries, 4]
    if probabilities.ndim != 2 or boxes.ndim != 2 or boxes.shape != (probabilities.shape[0], 4):
        raise ValueError(f"expected logits [queries, text] and boxes [queries, 4] for one image, "
                         f"got {tuple(probabilities.shape)} and {tuple(boxes.shape)}")
    ids = [int(i) for i in input_ids]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    width, height = image_size
    detections = []
    for query in range(probabilities.shape[0]):
        score = float(probabilities[query].max())
        if not score > box_threshold:
            continue
        positions = torch.nonzero(probabilities[query, : len(ids)] > text_threshold).flatten().tolist()
        phrase_ids = [ids[p] for p in positions if ids[p] not in special]
        phrase = " ".join(tokenizer.decode(phrase_ids).split()) if phrase_ids else ""
        cx, cy, w, h = boxes[query].tolist()
        box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
        detections.append(Detection(phrase=phrase, score=score, box=box))
    return detections


# --------------------------------------------------------------------------------------------------
# the model pair
# --------------------------------------------------------------------------------------------------

def _load_error(what: str, model_id: str, error: Exception) -> ModelLoadError:
    tried = f"Tried: transformers from_pretrained({model_id!r}), {{}}."
    path = Path(model_id).expanduser()
    if path.is_dir():
        tried = tried.format("a local folder")
        fix = ("The folder must hold what save_pretrained / `huggingface-cli download` writes: config.json, "
               "model.safetensors (or pytorch_model.bin) and the processor files; download it again if it is "
               "incomplete.")
    else:
        looks_local = model_id.startswith((".", "/", "~")) or model_id.count("/") > 1 or "\\" in model_id
        tried = tried.format("no such folder exists" if looks_local else "a Hugging Face Hub id")
        fix = ("To get the weights: on a machine with internet, run `huggingface-cli login` (or `hf auth login`) "
               "if the repository needs it, and either let from_pretrained download them or run `huggingface-cli "
               f"download {model_id if not looks_local else 'REPO_ID'} --local-dir FOLDER` and pass FOLDER instead (--detector / --segmenter on the "
               "command line, detector_id= / segmenter_id= in Python). Default ids: "
               f"{DEFAULT_DETECTOR_ID}, {DEFAULT_SEGMENTER_ID}.")
    return ModelLoadError(f"could not load the {what} from {model_id!r} ({type(error).__name__}: {error}).\n"
                          f"{tried}\n{fix}\nOffline demonstrations without weights: GroundedSAM.random_tiny(words).")


class GroundedSAM(GroundedSegmenter):
    """Grounding DINO (boxes for the nouns) + SAM / SAM-HQ (a mask per box) -> one union mask per noun.

    Build it from already-loaded parts (``GroundedSAM(detector=..., detector_processor=...,
    segmenter=..., segmenter_processor=...)``, used by the tests), or load weights with
    ``GroundedSAM(detector_id=..., segmenter_id=...)`` / ``GroundedSAM.from_pretrained(...)``.

    ``settings`` names the preset (``GROUNDING_SETTINGS``): ``"authors"`` (default: Grounding DINO Swin-T OGC,
    SAM-HQ ViT-H, box 0.25, text 0.25, the authors' run) or ``"grounded-sam-script"`` (Grounding DINO Swin-B,
    SAM ViT-H, box 0.3, text 0.25, ``gen_mask.py``'s own defaults). An argument left ``None`` takes the
    preset's value; one given overrides it. ``self.settings`` holds what was used.
    """

    def __init__(
        self,
        detector_id: str | None = None,
        segmenter_id: str | None = None,
        device: str = "auto",
        box_threshold: float | None = None,
        text_threshold: float | None = None,
        *,
        settings: str | GroundingSettings = DEFAULT_GROUNDING_SETTINGS,
        detector: Any = None,
        detector_processor: Any = None,
        segmenter: Any = None,
        segmenter_processor: Any = None,
        **load_kwargs: Any,
    ) -> None:
        parts = (detector, detector_processor, segmenter, segmenter_processor)
        if any(part is None for part in parts) and any(part is not None for part in parts):
            raise ValueError("pass all four of detector, detector_processor, segmenter, segmenter_processor, "
                             "or none of them (then they are loaded from detector_id / segmenter_id)")
        # no SAM-HQ fallback (nor its warning) when the segmenter is given: it is used as it is
        preset = resolve_grounding_settings(settings, fallback=segmenter_id is None and segmenter is None)
        chosen = replace(
            preset,
            detector_id=preset.detector_id if detector_id is None else detector_id,
            segmenter_id=preset.segmenter_id if segmenter_id is None else segmenter_id,
            box_threshold=preset.box_threshold if box_threshold is None else box_threshold,
            text_threshold=preset.text_threshold if text_threshold is None else text_threshold,
        )
        for name in ("box_threshold", "text_threshold"):
            value = getattr(chosen, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1] (a probability), got {value}")
        #: what this instance uses: the preset with the arguments given applied over it
        self.settings = chosen
        self.device = resolve_device(device)
        self.box_threshold = chosen.box_threshold
        self.text_threshold = chosen.text_threshold
        if detector is None:
            detector, detector_processor = _load_detector(chosen.detector_id, **load_kwargs)
            segmenter, segmenter_processor = _load_segmenter(chosen.segmenter_id, **load_kwargs)
        model_type = getattr(getattr(segmenter, "config", None), "model_type", None)
        if model_type not in SEGMENTER_TYPES:
            raise ValueError(f"segmenter must be a SAM or SAM-HQ model (model_type in {SEGMENTER_TYPES}), "
                             f"got model_type {model_type!r}")
        self.detector = detector.to(self.device).eval()
        self.detector_processor = detector_processor
        self.segmenter = segmenter.to(self.device).eval()
        self.segmenter_processor = segmenter_processor

    @classmethod
    def from_pretrained(
        cls,
        detector_id: str | None = None,
        segmenter_id: str | None = None,
        device: str = "auto",
        box_threshold: float | None = None,
        text_threshold: float | None = None,
        *,
        settings: str | GroundingSettings = DEFAULT_GROUNDING_SETTINGS,
        backend: str = "transformers",
        **load_kwargs: Any,
    ) -> GroundedSAM:
        """Load Grounding DINO and SAM / SAM-HQ (hub ids or local folders; ``None``: the ``settings`` preset's);
        ``load_kwargs`` go to every ``from_pretrained`` (``cache_dir``, ``revision``, ``local_files_only``,
        ``token``).

        ``backend="original"``: the authors' groundingdino / segment_anything packages instead of transformers
        (``masks_original.OriginalGroundedSAM``; the two ids are then its ``.pth`` checkpoints, ``load_kwargs`` its
        keywords), with the same output.

        Raises ``ModelLoadError`` saying what was tried and how to get the weights.
        """
        if backend == "original":
            from .masks_original import OriginalGroundedSAM

            return OriginalGroundedSAM(detector_id, segmenter_id, device, box_threshold, text_threshold,
                                       settings=settings, **load_kwargs)
        if backend != "transformers":
            raise ValueError(f"unknown backend {backend!r}; choose 'transformers' (default) or 'original'")
        return cls(detector_id, segmenter_id, device, box_threshold, text_threshold, settings=settings,
                   **load_kwargs)

    @classmethod
    def random_tiny(
        cls,
        words: Iterable[str],
        seed: int = 0,
        device: str = "cpu",
        box_threshold: float | None = None,
        text_threshold: float | None = None,
        image_size: int = 64,
        *,
        settings: str | GroundingSettings = DEFAULT_GROUNDING_SETTINGS,
    ) -> GroundedSAM:
        """The real Grounding DINO and SAM-HQ / SAM architectures from tiny configs with random weights.

        For offline tests and demonstrations only: the boxes and masks are meaningless, the code path
        (processors, models, post-processing, file format) is the one real weights take. ``words`` is
        the vocabulary of the tiny BERT tokenizer (lower-case words; others become ``[UNK]``). The segmenter
        is the ``settings`` preset's architecture (SAM-HQ for "authors" where transformers has it, else SAM);
        thresholds left ``None`` take the preset's.
        """
        preset = resolve_grounding_settings(settings)
        detector, detector_processor, segmenter, segmenter_processor = build_random_tiny_models(
            words, seed=seed, image_size=image_size, segmenter=segmenter_kind_of(preset))
        return cls(device=device, box_threshold=box_threshold, text_threshold=text_threshold, settings=preset,
                   detector=detector, detector_processor=detector_processor,
                   segmenter=segmenter, segmenter_processor=segmenter_processor)

    # ---- the steps -------------------------------------------------------------------------------

    def detect(self, image: Image.Image, nouns: Sequence[str]) -> list[Detection]:
        """Grounding DINO on ``image`` with the prompt ``grounding_prompt(nouns)``; boxes in pixels."""
        import torch

        image = as_rgb(image)
        prompt = grounding_prompt(nouns)
        max_text_len = int(getattr(self.detector.config, "max_text_len", 256))
        inputs = self.detector_processor(images=image, text=prompt, return_tensors="pt")
        if inputs["input_ids"].shape[-1] > max_text_len:
            raise ValueError(f"the prompt {prompt!r} is {inputs['input_ids'].shape[-1]} tokens long; Grounding "
                             f"DINO reads at most {max_text_len}: pass fewer nouns")
        inputs = inputs.to(self.device)
        with torch.inference_mode():
            outputs = self.detector(**inputs)
        return detections_from_outputs(
            outputs.logits[0], outputs.pred_boxes[0], inputs["input_ids"][0].tolist(),
            self.detector_processor.tokenizer, image.size, self.box_threshold, self.text_threshold)

    def segment(self, image: Image.Image, boxes: Sequence[Sequence[float]]) -> np.ndarray:
        """SAM prompted with each box (one mask a box, ``multimask_output=False``): bool ``[boxes, H, W]``."""
        import torch

        image, box_list = segmentation_inputs(image, boxes)
        if not box_list:
            return np.zeros((0, image.height, image.width), dtype=bool)
        inputs = self.segmenter_processor(images=image, input_boxes=[box_list], return_tensors="pt")
        original_sizes = inputs["original_sizes"]
        reshaped_sizes = inputs["reshaped_input_sizes"]
        inputs = inputs.to(self.device)
        with torch.inference_mode():
            outputs = self.segmenter(
                pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"], multimask_output=False)
        masks = self.segmenter_processor.image_processor.post_process_masks(
            outputs.pred_masks.float().cpu(), original_sizes.cpu(), reshaped_sizes.cpu(), mask_threshold=0.0)
        return masks[0][:, 0].numpy().astype(bool)  # [boxes, H, W]


def _load_config(what: str, model_id: str, model_types: tuple[str, ...], **load_kwargs: Any) -> Any:
    """The config, read first, to refuse a wrong architecture before its weights load at random."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_id, **load_kwargs)
    except (OSError, ValueError) as error:
        raise _load_error(what, model_id, error) from error
    if config.model_type not in model_types:
        raise ModelLoadError(f"{model_id!r} holds a {config.model_type!r} model, not a {what} "
                             f"(model_type {' or '.join(map(repr, model_types))}); check the order of the ids")
    return config


def _load_pair(what: str, model_id: str, model_class: Any, processor_class: Any,
               **load_kwargs: Any) -> tuple[Any, Any]:
    try:
        model = model_class.from_pretrained(model_id, **load_kwargs)
        processor = processor_class.from_pretrained(model_id, **load_kwargs)
    except (OSError, ValueError) as error:
        raise _load_error(what, model_id, error) from error
    return model, processor


def _load_detector(model_id: str, **load_kwargs: Any) -> tuple[Any, Any]:
    from transformers import AutoProcessor, GroundingDinoForObjectDetection

    what = "Grounding DINO detector"
    _load_config(what, model_id, ("grounding-dino",), **load_kwargs)
    return _load_pair(what, model_id, GroundingDinoForObjectDetection, AutoProcessor, **load_kwargs)


def _load_segmenter(model_id: str, **load_kwargs: Any) -> tuple[Any, Any]:
    """SAM (``SamModel`` + ``SamProcessor``) or SAM-HQ (``SamHQModel`` + ``SamHQProcessor``), by its config."""
    what = "SAM segmenter"
    config = _load_config(what, model_id, SEGMENTER_TYPES, **load_kwargs)
    if config.model_type == "sam_hq":
        if not sam_hq_available():
            raise ModelLoadError(f"{model_id!r} holds a SAM-HQ model, which this transformers cannot run (it has "
                                 f"no SamHQModel): upgrade transformers, or segment with SAM ViT-H (--segmenter "
                                 f"{SAM_VIT_H_ID})")
        from transformers import SamHQModel, SamHQProcessor

        return _load_pair(what, model_id, SamHQModel, SamHQProcessor, **load_kwargs)
    from transformers import SamModel, SamProcessor

    return _load_pair(what, model_id, SamModel, SamProcessor, **load_kwargs)


# --------------------------------------------------------------------------------------------------
# tiny random models (offline tests, demonstrations)
# --------------------------------------------------------------------------------------------------

_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def build_random_tiny_models(words: Iterable[str], seed: int = 0, image_size: int = 64,
                             segmenter: str | None = None) -> tuple[Any, ...]:
    """``(detector, detector_processor, segmenter, segmenter_processor)``: Grounding DINO and SAM-HQ or SAM
    from tiny configs with random weights, with a BERT tokenizer over ``words`` + ``.`` and ``-``.

    ``segmenter``: "sam_hq" or "sam"; default: the default preset's (SAM-HQ where transformers has it).
    Sizes: Grounding DINO d_model 32 (a multiple of 32), a 3-stage Swin backbone (one feature level a
    stage), 2 decoder layers, 10 queries, 32 text positions; SAM / SAM-HQ ViT with 16 channels on a
    ``image_size`` input (SAM-HQ: 2 layers, the second global, whose features feed the HQ decoder).
    Builds in well under a second on a CPU.
    """
    import torch
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoProcessor,
        SwinConfig,
    )

    if segmenter is None:
        segmenter = segmenter_kind_of(resolve_grounding_settings(DEFAULT_GROUNDING_SETTINGS))
    if segmenter not in SEGMENTER_TYPES:
        raise ValueError(f"segmenter must be one of {SEGMENTER_TYPES}, got {segmenter!r}")
    if segmenter == "sam_hq" and not sam_hq_available():
        raise ImportError("this transformers has no SamHQModel (upgrade it for SAM-HQ); pass segmenter='sam'")
    vocab = list(_SPECIAL_TOKENS) + [".", "-", ","]
    for word in words:
        for piece in re.findall(r"[a-z0-9]+", word.lower()):
            if piece not in vocab:
                vocab.append(piece)
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        tokenizer = BertTokenizerFast.from_pretrained(folder, do_lower_case=True)

    patch = 8
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = SwinConfig(image_size=image_size, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1],
                              num_heads=[1, 1, 1, 1], window_size=2,
                              out_features=["stage2", "stage3", "stage4"])
        text = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=37, max_position_embeddings=64)
        detector = GroundingDinoForObjectDetection(GroundingDinoConfig(
            backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1, decoder_layers=2,
            encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2,
            num_queries=10, num_feature_levels=3, max_text_len=32, encoder_n_points=1, decoder_n_points=1))
        prompt_config = dict(hidden_size=16, image_size=image_size, patch_size=patch, mask_input_channels=4)
        decoder_config = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_dim=32,
                              iou_head_hidden_dim=16)
        if segmenter == "sam_hq":
            from transformers import SamHQConfig, SamHQModel, SamHQProcessor

            segmenter_model = SamHQModel(SamHQConfig(
                vision_config=dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                   image_size=image_size, patch_size=patch, output_channels=16, mlp_dim=32,
                                   global_attn_indexes=[1], window_size=2, num_pos_feats=8),
                prompt_encoder_config=prompt_config,
                mask_decoder_config=dict(decoder_config, vit_dim=16)))
            processor_class = SamHQProcessor
        else:
            from transformers import SamConfig, SamModel, SamProcessor

            segmenter_model = SamModel(SamConfig(
                vision_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   image_size=image_size, patch_size=patch, output_channels=16, mlp_dim=32,
                                   global_attn_indexes=[0], window_size=2, num_pos_feats=8),
                prompt_encoder_config=prompt_config, mask_decoder_config=decoder_config))
            processor_class = SamProcessor
    detector_processor = GroundingDinoProcessor(
        image_processor=_image_processor("grounding_dino", "GroundingDinoImageProcessor",
                                         size={"shortest_edge": image_size, "longest_edge": image_size}),
        tokenizer=tokenizer)
    mask_side = image_size // patch * 4  # SAM's low-resolution masks: 4x the image-embedding side
    segmenter_processor = processor_class(image_processor=_image_processor(
        "sam", "SamImageProcessor", size={"longest_edge": image_size},
        pad_size={"height": image_size, "width": image_size}, mask_size={"longest_edge": mask_side},
        mask_pad_size={"height": mask_side, "width": mask_side}))
    return detector.eval(), detector_processor, segmenter_model.eval(), segmenter_processor


def _image_processor(module: str, class_name: str, **kwargs: Any) -> Any:
    """The PIL image processor where transformers has one (5.x, no torchvision needed), else the plain one."""
    import importlib

    try:
        pil_module = importlib.import_module(f"transformers.models.{module}.image_processing_pil_{module}")
        return getattr(pil_module, f"{class_name}Pil")(**kwargs)
    except (ImportError, AttributeError):
        import transformers

        return getattr(transformers, class_name)(**kwargs)
