"""The dataset: images, captions and one binary mask per noun, read in the authors' format (paper Sec. 3.2).

A dataset is a folder with the images and a ``metadata.jsonl``, one JSON object a line::

    {"file_name": "0001.png", "text": "a photo of a cat and a kite.",
     "attn_list": [["cat", "seg/0001/mask_cat.png"], ["kite", null]]}

``file_name`` is the image, relative to the folder of ``metadata.jsonl``; each ``attn_list`` entry is a noun of
the caption and its mask (a PNG, relative to the dataset folder), or ``null`` when the noun has no mask: such a
noun is dropped, it takes no part in L_token / L_pixel (Eq. 3-4). A path that leaves the dataset folder
(``../x.png``, an absolute path, a symlink pointing out) is rejected and never read.

The authors' released COCO data trains unchanged. Their layout (``train/data/`` of mlpc-ucsd/TokenCompose)
differs from the one above in two ways, both recognised here:

* their ``--train_data_dir`` is ``coco_gsam_img/``, a Hugging Face *imagefolder* with a split subfolder: the
  file is ``coco_gsam_img/train/metadata.jsonl`` and ``file_name`` (``"000000000142.jpg"``, no subfolder) is
  relative to ``coco_gsam_img/train/``;
* their mask paths say ``seg/<id>/mask_<id>_<noun>.png`` but the masks live in a sibling folder
  ``coco_gsam_seg/<id>/...`` (their loader rewrites ``seg`` to ``../coco_gsam_seg``). Pass ``seg_dir`` (or let
  the authors' layout be detected: ``ROOT/train/metadata.jsonl`` and ``ROOT/../coco_gsam_seg``); a mask path
  ``seg/...`` missing from the dataset folder is then looked up in ``seg_dir``, and must stay inside it.

Pre-processing, as the authors' ``train_token_compose.py`` (torchvision ``Resize(R)`` + ``CenterCrop(R)``), but
with PIL only: the shorter side is resized to ``R`` (the longer to ``int(R * long / short)``), then the centre
``R x R`` is cut (offset ``round((size - R) / 2)``). Differences from the authors' code:

* images are resized bicubic (theirs: bilinear), in float, then mapped to ``value_range``;
* a mask is made binary first (any value > 0 is the object, as their divide-by-max then ``> 0`` in the loss),
  resized bilinear with the same geometry as the image, and thresholded at 0.5, so ``masks`` holds exact 0/1
  (theirs keeps the soft bilinear edge and thresholds after resizing to the attention resolution);
* a noun's token positions come from ``tokens.noun_token_positions`` (theirs: ``get_word_idx`` with an
  ``assert``); a noun absent from its caption is a validation problem with its file and line, not a crash.

Before training, ``validate_dataset`` reports every problem of a folder, with file and line; the
``TokenComposeDataset`` constructor refuses a folder with problems unless ``skip_bad=True``. From a shell::

    python -m tokencompose validate DIR
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .cli_args import NAME_MAX, ArgumentParser, input_folder
from .images import ImageModeError, open_rgb, to_rgb
from .tokens import MAX_LENGTH, PhraseNotFoundError, clip_tokenizer, noun_token_positions, token_positions

logger = logging.getLogger(__name__)

METADATA_FILE = "metadata.jsonl"
REQUIRED_KEYS = ("file_name", "text", "attn_list")
#: the authors' mask folder, next to their ``coco_gsam_img/`` dataset folder
AUTHORS_SEG_DIR = "coco_gsam_seg"
#: how many problems a ``DatasetError`` lists before "and N more"
ERROR_LIST_LIMIT = 10

Array = np.ndarray


class DatasetError(ValueError):
    """A dataset folder failed validation (and ``skip_bad`` was not set), or nothing usable is left."""


@dataclass(frozen=True)
class Problem:
    """One problem of a dataset folder: where it is, what is wrong and what to do about it."""

    file: str
    #: 1-based line of ``metadata.jsonl``, or ``None`` for a problem of the whole folder
    line: int | None
    #: short machine-readable kind, e.g. ``"missing_image"``, ``"noun_not_in_caption"``
    kind: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message} -> {self.fix}"


@dataclass(frozen=True)
class Record:
    """One parsed line of ``metadata.jsonl`` (paths as written in the file, not yet checked)."""

    line: int
    file_name: str
    text: str
    #: ``(noun, mask path or None)`` in file order
    attn_list: tuple[tuple[str, str | None], ...]

    @property
    def masked_nouns(self) -> list[str]:
        """The nouns that have a mask (those the grounding losses supervise)."""
        return [noun for noun, mask in self.attn_list if mask is not None]


@dataclass
class _CheckedRecord:
    """A record that passed validation, with its resolved paths and token positions."""

    record: Record
    image_path: Path
    nouns: list[str]
    mask_paths: list[Path]
    positions: list[list[int]]


@dataclass
class _Layout:
    """Where a dataset's files are: the folder, its metadata file, image folder and trusted mask folders."""

    root: Path
    metadata: Path
    image_dir: Path
    seg_dir: Path | None = None
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# reading metadata.jsonl
# --------------------------------------------------------------------------------------------------

def _format_problem(data: object) -> tuple[str, str] | None:
    """``(kind, message)`` if a decoded line does not have the authors' record shape, else ``None``."""
    if not isinstance(data, dict):
        return "not_an_object", f"the line is a JSON {type(data).__name__}, not an object"
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        return "missing_keys", f"missing key(s) {missing} (a record needs {list(REQUIRED_KEYS)})"
    if not isinstance(data["file_name"], str) or not data["file_name"].strip():
        return "bad_value", f"'file_name' must be a non-empty string, got {data['file_name']!r}"
    if not isinstance(data["text"], str) or not data["text"].strip():
        return "bad_value", f"'text' must be a non-empty string, got {data['text']!r}"
    if not isinstance(data["attn_list"], list):
        return "bad_value", f"'attn_list' must be a list of [noun, mask path or null], got {data['attn_list']!r}"
    for entry in data["attn_list"]:
        ok = (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and entry[0].strip()
              and (entry[1] is None or isinstance(entry[1], str)))
        if not ok:
            return "bad_value", f"'attn_list' entry {entry!r} is not [noun, mask path or null]"
    return None


def read_metadata(path: str | Path) -> Iterator[Record | Problem]:
    """Parse ``metadata.jsonl`` line by line: a ``Record`` for each good line, a ``Problem`` for each bad one.

    Blank lines are skipped. Only the JSON and the record shape are checked here (no file is opened besides
    ``path``); ``validate_dataset`` checks the rest.

    Raises:
        OSError: ``path`` cannot be read.
    """
    path = Path(path)
    with open(path, encoding="utf-8-sig") as handle:  # -sig: a leading BOM is not an error
        for line_number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as error:
                yield Problem(str(path), line_number, "malformed_json", f"malformed JSON: {error.msg} "
                              f"(column {error.colno})", "fix the line so it is one JSON object")
                continue
            problem = _format_problem(data)
            if problem:
                kind, message = problem
                yield Problem(str(path), line_number, kind, message,
                              'write the record as {"file_name": ..., "text": ..., "attn_list": '
                              '[[noun, mask path or null], ...]}')
                continue
            yield Record(line_number, data["file_name"], data["text"],
                         tuple((noun, mask) for noun, mask in data["attn_list"]))


# --------------------------------------------------------------------------------------------------
# paths: found in the layout, never outside it
# --------------------------------------------------------------------------------------------------

def _layout(root: str | Path, seg_dir: str | Path | None = None) -> _Layout:
    """The dataset's layout: ours (``ROOT/metadata.jsonl``) or the authors' imagefolder one (``ROOT/train/``)."""
    root = Path(root)
    own, authors = root / METADATA_FILE, root / "train" / METADATA_FILE
    layout = _Layout(root, own, root)
    if not own.is_file() and authors.is_file():
        layout = _Layout(root, authors, authors.parent)
        layout.notes.append(f"authors' imagefolder layout: metadata and images in {authors.parent}")
        sibling = root.resolve().parent / AUTHORS_SEG_DIR
        if seg_dir is None and sibling.is_dir():
            seg_dir = sibling
            layout.notes.append(f"authors' layout: mask paths 'seg/...' read from {sibling}")
    layout.seg_dir = Path(seg_dir) if seg_dir is not None else None
    return layout


class _BadPath(Exception):
    """A metadata path that names no file any file system can hold or reach; the message says why."""


def _name_fault(relative: str) -> str | None:
    """Why ``relative`` can name no file (a NUL byte, a name longer than ``NAME_MAX`` bytes), else ``None``."""
    if "\0" in relative:
        return "holds a NUL byte, which no file name can hold"
    longest = max(Path(relative).parts, key=lambda part: len(os.fsencode(part)), default="")
    if len(os.fsencode(longest)) > NAME_MAX:
        return (f"has a name of {len(os.fsencode(longest))} bytes ({longest[:30]!r}...); file systems take at most "
                f"{NAME_MAX}")
    return None


def _resolve(path: Path) -> Path:
    """``path`` with its symlinks followed; a symlink loop (or a path that cannot be resolved) is a ``_BadPath``."""
    try:
        return path.resolve()
    except RuntimeError:  # Python < 3.13: "Symlink loop from ..."
        raise _BadPath(f"is a symlink loop ({path} links back to itself)") from None
    except OSError as error:
        raise _BadPath(f"is a symlink loop ({path} links back to itself)" if error.errno == errno.ELOOP
                       else f"cannot be resolved: {error.strerror}") from None


def _inside(base: Path, relative: str) -> Path | None:
    """``base / relative`` resolved (symlinks followed) if it stays inside ``base``, else ``None``.

    Raises:
        _BadPath: ``relative`` holds a NUL byte or a name too long for any file system, or is a symlink loop.
    """
    if not relative or os.path.isabs(relative) or relative.startswith(("/", "\\")) or ":" in relative[:3]:
        return None
    fault = _name_fault(relative)
    if fault:
        raise _BadPath(fault)
    base = base.resolve()
    candidate = _resolve(base / relative)
    return candidate if candidate.is_relative_to(base) else None


def _shown(name: str, limit: int = 60) -> str:
    """``repr(name)``, its middle cut when it is longer than ``limit`` characters (a 300-character name)."""
    return repr(name) if len(name) <= limit else f"{name[:limit // 2]!r}...{name[-limit // 2:]!r}"


def _not_a_file(path: Path) -> str:
    """Why an existing-or-not ``path`` is not a readable file: a folder, a broken symlink, or not there."""
    if path.is_dir():
        return f"is a folder, not a file ({path})"
    if path.is_symlink():
        return f"is a symlink to nothing ({path} -> {os.readlink(path)})"
    return f"not found at {path}"


def _image_path(layout: _Layout, file_name: str) -> Path | None:
    return _inside(layout.image_dir, file_name)


def _mask_path(layout: _Layout, mask: str) -> Path | None:
    """The mask file for a metadata mask path, inside the dataset folder or (``seg/...``) inside ``seg_dir``."""
    path = _inside(layout.root, mask)
    if path is None:
        return None
    if path.exists() or layout.seg_dir is None:
        return path
    parts = Path(mask).parts
    if parts and parts[0] == "seg":
        in_seg = _inside(layout.seg_dir, str(Path(*parts[1:]))) if len(parts) > 1 else None
        if in_seg is not None and in_seg.exists():
            return in_seg
    return path


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------

def _mask_band(image: Image.Image) -> Array:
    """The values [H, W] of a mask file's first band (a palette image through its grey levels)."""
    if image.mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr"):
        image = image.getchannel(0)
    elif image.mode in ("P", "PA"):
        image = image.convert("L")
    return np.asarray(image)


def _mask_foreground(image: Image.Image) -> Array:
    """Boolean [H, W]: where a mask file marks the object (first band, value > 0, as the authors' loader)."""
    return _mask_band(image) > 0


#: modes of masks with more than 8 bits a pixel (16-bit PNG, 32-bit integer or float TIFF)
WIDE_MASK_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _odd_values(values: Array) -> tuple[float, int]:
    """``(fraction, expected high value)``: the share of pixels of an 8-bit band that are not binary, judged
    against 0/1 when its largest value is 1 (or a 1-bit image) and against 0/255 otherwise."""
    high = 1 if values.dtype == bool or values.max(initial=0) <= 1 else 255
    odd = (values != 0) & (values != high)
    return float(odd.mean()) if odd.size else 0.0, high


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.3g}%"


def _read_failure(kind: str, what: str, error: Exception) -> tuple[str, str]:
    """``(kind, message)`` for an image or mask file PIL could not decode (``kind``: "image" or "mask")."""
    if isinstance(error, Image.DecompressionBombError):
        return f"{kind}_too_large", f"{what} is too large to decode safely ({error})"
    if "truncated" in str(error):
        return f"truncated_{kind}", f"{what} is truncated: {error}"
    return f"unreadable_{kind}", f"{what} cannot be read: {error}"


#: what PIL raises for a file it cannot decode (SyntaxError: a broken PNG chunk; DecompressionBombError:
#: more pixels than twice ``PIL.Image.MAX_IMAGE_PIXELS``)
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _check_record(record: Record, layout: _Layout, tokenizer) -> tuple[_CheckedRecord | None, list[Problem]]:
    """Every problem of one record; the checked record when there is none."""
    file, line = str(layout.metadata), record.line
    problems: list[Problem] = []

    def problem(kind: str, message: str, fix: str) -> None:
        problems.append(Problem(file, line, kind, message, fix))

    # caption length: CLIP sees at most 77 tokens (start + 75 + end); the rest would be cut silently
    n_tokens = len(tokenizer(record.text, add_special_tokens=False, truncation=False)["input_ids"]) + 2
    if n_tokens > MAX_LENGTH:
        problem("caption_too_long", f"caption {record.text!r} is {n_tokens} tokens, longer than CLIP's "
                f"{MAX_LENGTH}", "shorten the caption (tokens past 77 are cut off)")

    image_size = None
    bad_path = None
    try:
        image_path = _image_path(layout, record.file_name)
    except _BadPath as error:
        image_path, bad_path = None, str(error)
    if bad_path is not None:
        problem("bad_path", f"image path {_shown(record.file_name)} {bad_path}",
                "fix 'file_name' so it names an image file")
    elif image_path is None:
        problem("path_leaves_folder", f"image path {record.file_name!r} leaves the dataset folder "
                f"{layout.image_dir}", "use a path relative to the dataset folder, without '..' or symlinks out")
    elif not image_path.is_file():
        problem("missing_image", f"image {record.file_name!r} {_not_a_file(image_path)}",
                "add the image or fix 'file_name' so it names an image file")
    else:
        try:
            with Image.open(image_path) as image:
                image.load()  # decode it all: a truncated file fails here, not in a training step
                image_size = image.size
                to_rgb(image, f"image {record.file_name!r}")  # a mode with no 8-bit meaning is refused here
        except ImageModeError as error:
            problem("image_mode", str(error), "save the image as an 8-bit (or 16-bit) PNG or JPEG")
        except DECODE_ERRORS as error:
            kind, message = _read_failure("image", f"image {record.file_name!r}", error)
            problem(kind, message, "resize it below PIL.Image.MAX_IMAGE_PIXELS (or raise that limit if you trust "
                    "the file)" if kind == "image_too_large" else "replace it with a readable PNG/JPEG")

    nouns, mask_paths = [], []
    for noun, mask in record.attn_list:
        if mask is None:
            continue
        try:
            mask_path = _mask_path(layout, mask)
        except _BadPath as error:
            problem("bad_path", f"mask path {_shown(mask)} of noun {noun!r} {error}",
                    "fix the mask path so it names a PNG file, or write null")
            continue
        if mask_path is None:
            problem("path_leaves_folder", f"mask path {mask!r} of noun {noun!r} leaves the dataset folder "
                    f"{layout.root}", "use a path relative to the dataset folder, without '..' or symlinks out")
            continue
        if not mask_path.is_file():
            problem("missing_mask", f"mask {mask!r} of noun {noun!r} {_not_a_file(mask_path)}",
                    "add the mask file, or write null for a noun without a mask")
            continue
        what = f"mask {mask!r} of noun {noun!r}"
        try:
            with Image.open(mask_path) as mask_image:
                mask_image.load()
                mask_size, mask_mode, mask_format = mask_image.size, mask_image.mode, mask_image.format
                values = _mask_band(mask_image)  # [H, W]
        except DECODE_ERRORS as error:
            kind, message = _read_failure("mask", what, error)
            problem(kind, message, "replace it with a readable binary PNG (0 and 255)")
            continue
        empty = not (values > 0).any()
        binary_fix = "save it as an 8-bit PNG of 0 and 255, e.g. Image.fromarray((mask > 0).astype('uint8') * 255)"
        if mask_mode in WIDE_MASK_MODES:
            bits = "16-bit" if mask_mode.startswith("I;16") else "32-bit float" if mask_mode == "F" else "32-bit"
            problem("mask_bit_depth", f"{what} has {bits} pixels (PIL mode {mask_mode}, values {values.min()}.."
                    f"{values.max()}); masks are 8-bit", binary_fix)
        elif mask_format == "JPEG":
            fraction, _ = _odd_values(values)
            problem("jpeg_mask", f"{what} is a JPEG: lossy compression turns its edges grey ({_percent(fraction)} "
                    "of its pixels are neither 0 nor 255)", "save masks as PNG (lossless), 0 and 255")
        else:
            fraction, high = _odd_values(values)
            if fraction > 0:
                problem("non_binary_mask", f"{what} is not binary: {_percent(fraction)} of its pixels are neither 0 "
                        f"nor {high} (largest value {values.max()}{'; a faint mask?' if values.max() < 128 else ''})",
                        binary_fix)
        if empty:
            problem("empty_mask", f"mask {mask!r} of noun {noun!r} is empty (no pixel > 0)",
                    "write null for a noun that is not in the image, or regenerate the mask")
        if image_size is not None and mask_size != image_size:
            problem("mask_size_mismatch", f"mask {mask!r} of noun {noun!r} is {mask_size[0]}x{mask_size[1]}, "
                    f"the image is {image_size[0]}x{image_size[1]} (width x height)",
                    "save the mask at the image's size")
        nouns.append(noun)
        mask_paths.append(mask_path)

    # every noun with a mask, even one whose file has a problem; a repeated noun takes its next occurrence
    positions: list[list[int]] = []
    seen: dict[str, int] = {}
    for noun in record.masked_nouns:
        occurrence = seen.get(noun.lower(), 0)
        seen[noun.lower()] = occurrence + 1
        try:
            positions.append(token_positions(record.text, noun, tokenizer, occurrence=occurrence))
        except PhraseNotFoundError as error:
            problem("noun_not_in_caption", str(error), "fix the noun or the caption, or write null for its mask")

    if problems:
        return None, problems
    return _CheckedRecord(record, image_path, nouns, mask_paths, positions), []


def _scan(root: str | Path, tokenizer, seg_dir: str | Path | None = None
          ) -> tuple[list[_CheckedRecord], list[Problem], int]:
    """Checked good records, every problem, and the number of records (non-blank lines) of a folder."""
    layout = _layout(root, seg_dir)
    for note in layout.notes:
        logger.info(note)
    if not layout.root.is_dir():
        return [], [Problem(str(layout.root), None, "missing_folder", "dataset folder not found",
                            "pass the folder that holds metadata.jsonl")], 0
    if layout.metadata.is_dir() or layout.metadata.is_symlink() and not layout.metadata.is_file():
        return [], [Problem(str(layout.metadata), None, "unreadable_metadata", f"{METADATA_FILE} "
                            f"{_not_a_file(layout.metadata)}", f"make {METADATA_FILE} a file of one JSON record a "
                            "line (python -m tokencompose prepare / toy-data write one)")], 0
    if not layout.metadata.is_file():
        return [], [Problem(str(layout.metadata), None, "missing_metadata", f"no {METADATA_FILE} in "
                            f"{layout.root} (nor in {layout.root / 'train'})",
                            "write metadata.jsonl (python -m tokencompose prepare / toy-data)")], 0
    good: list[_CheckedRecord] = []
    problems: list[Problem] = []
    n_records = 0
    try:
        items = list(read_metadata(layout.metadata))
    except (OSError, UnicodeDecodeError) as error:
        return [], [Problem(str(layout.metadata), None, "unreadable_metadata", f"cannot read: {error}",
                            "save metadata.jsonl as UTF-8 text")], 0
    first_line: dict[tuple, int] = {}  # record content -> line where it first appears
    for item in tqdm(items, desc=f"validating {layout.root.name}", unit="record", disable=len(items) < 1000):
        n_records += 1
        if isinstance(item, Problem):
            problems.append(item)
            continue
        key = (item.file_name, item.text, item.attn_list)
        if key in first_line:
            problems.append(Problem(str(layout.metadata), item.line, "duplicate_record",
                                    f"line {item.line} repeats line {first_line[key]} ({item.file_name!r}, "
                                    f"{item.text!r})", "delete the repeated line (a repeated record is trained on "
                                    "twice as often)"))
            continue
        first_line[key] = item.line
        checked, record_problems = _check_record(item, layout, tokenizer)
        problems.extend(record_problems)
        if checked is not None:
            good.append(checked)
    if n_records == 0:
        problems.append(Problem(str(layout.metadata), None, "empty_metadata", f"{METADATA_FILE} has no records",
                                "write one JSON record a line (python -m tokencompose prepare / toy-data)"))
    return good, problems, n_records


def validate_dataset(root: str | Path, tokenizer, seg_dir: str | Path | None = None) -> list[Problem]:
    """Every problem of a dataset folder, each with its file and ``metadata.jsonl`` line and what to do.

    Checks: malformed JSON, missing keys / bad values, a record repeated on a later line, no record at all,
    missing, unreadable or truncated image or mask (every file is decoded in full; one larger than PIL's
    decompression-bomb limit is a problem, not a crash), a path that leaves the folder (never read), empty mask,
    a mask that is not 8-bit binary (16-bit, JPEG, values other than 0/255 or 0/1, with the share of odd
    pixels), mask size different from the image's, a noun whose tokens are not in its caption (or lie past the
    77-token truncation), a caption longer than 77 tokens. ``TokenComposeDataset(skip_bad=True)`` skips
    exactly the records of the problems reported here.

    Args:
        root: the dataset folder (``metadata.jsonl`` inside, or the authors' ``train/metadata.jsonl``).
        tokenizer: the CLIP tokenizer (``tokens.clip_tokenizer()``).
        seg_dir: folder that mask paths ``seg/...`` point into (authors' ``coco_gsam_seg``); default: detected.
    """
    return _scan(root, tokenizer, seg_dir)[1]


# --------------------------------------------------------------------------------------------------
# one example -> tensors
# --------------------------------------------------------------------------------------------------

def _resize_crop_geometry(width: int, height: int, resolution: int) -> tuple[int, int, int, int]:
    """``(new_width, new_height, left, top)``: shorter side -> resolution, then the centre square's offset."""
    if width <= height:
        new_w, new_h = resolution, int(resolution * height / width)
    else:
        new_w, new_h = int(resolution * width / height), resolution
    return new_w, new_h, int(round((new_w - resolution) / 2)), int(round((new_h - resolution) / 2))


def _resize_crop(plane: Array, resolution: int, resample: int) -> Array:
    """One float [H, W] plane resized (shorter side -> resolution) and centre-cropped to [R, R]."""
    height, width = plane.shape
    if height == width == resolution:  # what PIL's resize and crop return at this size: the plane itself
        return np.array(plane, dtype=np.float32)
    new_w, new_h, left, top = _resize_crop_geometry(width, height, resolution)
    image = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))  # mode "F"
    image = image.resize((new_w, new_h), resample=resample)
    image = image.crop((left, top, left + resolution, top + resolution))
    return np.asarray(image, dtype=np.float32)


def _image_to_float(image: Array | Image.Image) -> Array:
    """An RGB image as float32 [H, W, 3] in [0, 1] (PIL image, uint8 array, or float array in [0, 1])."""
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb(image), dtype=np.float32) / 255.0  # 16-bit scaled, not clipped
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"expected an image [H, W, 3] (channels last), got an array of shape {array.shape}")
    array = array[:, :, :3]
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == bool or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"expected a uint8 or float image, got dtype {array.dtype}")
    if array.size and (array.min() < -1e-6 or array.max() > 1 + 1e-6):
        raise ValueError(f"a float image must lie in [0, 1], got [{array.min():.3g}, {array.max():.3g}]; "
                         "pass uint8 0-255 or divide by 255")
    return array.astype(np.float32)


def _mask_to_bool(mask: Array | Image.Image, noun: str) -> Array:
    if isinstance(mask, Image.Image):
        return _mask_foreground(mask)
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"the mask of noun {noun!r} must be [H, W], got shape {array.shape}")
    return array > 0


def encode_example(
    image: Array | Image.Image,
    text: str,
    nouns: Sequence[str],
    masks: Sequence[Array | Image.Image | None],
    tokenizer,
    resolution: int,
    value_range: tuple[float, float] = (-1.0, 1.0),
    positions: Sequence[Sequence[int]] | None = None,
) -> dict:
    """One example (image, caption, a mask per noun) -> the training dict, with no file involved.

    Args:
        image: PIL image, or array [H, W, 3] (uint8, or float in [0, 1]).
        text: the caption.
        nouns: nouns of the caption.
        masks: one per noun, [H, W] (non-zero = object) or a PIL image, or ``None`` for a noun without a mask
            (dropped from the result, as ``null`` in ``metadata.jsonl``); an array [N, H, W] works too.
        tokenizer: the CLIP tokenizer.
        resolution: side R of the square output.
        value_range: image values map 0 -> low, 1 -> high ((-1, 1) for SD, (0, 1) for the toy preset).
        positions: token positions of the nouns that have masks, if already known (else computed).

    Returns:
        ``pixel_values`` float32 [3, R, R] in ``value_range``; ``input_ids`` int64 [77] (padded, truncated);
        ``masks`` float32 [N, R, R] of 0/1 for the N nouns with masks; ``positions`` (list of N lists of token
        positions); ``nouns`` (the N nouns); ``text``.

    Raises:
        ValueError: bad shapes, a mask whose size differs from the image's, a bad ``value_range``.
        PhraseNotFoundError: a noun with a mask is not in the caption's first 77 tokens.
    """
    if not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
    low, high = value_range
    if not low < high:
        raise ValueError(f"value_range must be (low, high) with low < high, got {value_range!r}")
    if len(nouns) != len(masks):
        raise ValueError(f"got {len(nouns)} nouns but {len(masks)} masks for caption {text!r}; give one mask "
                         "(or None) per noun")

    pixels = _image_to_float(image)  # [H, W, 3] in [0, 1]
    height, width = pixels.shape[:2]
    channels = [_resize_crop(pixels[:, :, c], resolution, Image.Resampling.BICUBIC) for c in range(3)]
    pixel_values = torch.from_numpy(np.clip(np.stack(channels), 0.0, 1.0)) * (high - low) + low  # [3, R, R]

    kept_nouns, kept_masks = [], []
    for noun, mask in zip(nouns, masks, strict=True):
        if mask is None:
            continue
        foreground = _mask_to_bool(mask, noun)
        if foreground.shape != (height, width):
            raise ValueError(f"the mask of noun {noun!r} is {foreground.shape[1]}x{foreground.shape[0]}, the image "
                             f"is {width}x{height} (caption {text!r}); masks must have the image's size")
        resized = _resize_crop(foreground.astype(np.float32), resolution, Image.Resampling.BILINEAR)
        kept_nouns.append(noun)
        kept_masks.append(torch.from_numpy((resized > 0.5).astype(np.float32)))
    mask_tensor = torch.stack(kept_masks) if kept_masks else torch.zeros(0, resolution, resolution)  # [N, R, R]

    if positions is None:
        positions = noun_token_positions(text, kept_nouns, tokenizer)
    elif len(positions) != len(kept_nouns):
        raise ValueError(f"got {len(positions)} position lists for {len(kept_nouns)} nouns with masks")
    input_ids = tokenizer(text, max_length=MAX_LENGTH, padding="max_length", truncation=True)["input_ids"]
    return {
        "pixel_values": pixel_values.float(),
        "input_ids": torch.tensor(input_ids, dtype=torch.long),
        "masks": mask_tensor,
        "positions": [list(p) for p in positions],
        "nouns": kept_nouns,
        "text": text,
    }


def collate(batch: Sequence[dict]) -> dict:
    """Examples -> a batch: ``pixel_values`` [B, 3, R, R] and ``input_ids`` [B, 77] stacked; ``masks`` (list of
    [N_b, R, R]), ``positions`` (list of lists), ``nouns`` and ``text`` kept as lists, since N_b varies."""
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in batch]),
        "input_ids": torch.stack([example["input_ids"] for example in batch]),
        "masks": [example["masks"] for example in batch],
        "positions": [example["positions"] for example in batch],
        "nouns": [example["nouns"] for example in batch],
        "text": [example["text"] for example in batch],
    }


# --------------------------------------------------------------------------------------------------
# the Dataset
# --------------------------------------------------------------------------------------------------

def _error_text(root: Path, problems: Sequence[Problem]) -> str:
    shown = [f"  {problem}" for problem in problems[:ERROR_LIST_LIMIT]]
    more = len(problems) - len(shown)
    if more > 0:
        shown.append(f"  ... and {more} more")
    lines = [f"dataset {root} has {len(problems)} problem(s):", *shown,
             f"To see them all, run python -m tokencompose validate {root}"]
    if all(problem.line is not None for problem in problems):
        lines.append("To train on the good records only, pass skip_bad=True to skip these records (train --skip-bad).")
    return "\n".join(lines)


class TokenComposeDataset(torch.utils.data.Dataset):
    """A dataset folder in the authors' format as a torch ``Dataset`` of ``encode_example`` dicts.

    The constructor validates the folder (``validate_dataset``). With problems, it raises ``DatasetError``
    unless ``skip_bad=True``, which drops every record with a problem and logs each one. Images and masks are
    read in ``__getitem__``. Batch with ``collate``::

        loader = DataLoader(TokenComposeDataset(root, tokenizer, 512), batch_size=2, collate_fn=collate)
    """

    def __init__(
        self,
        root: str | Path,
        tokenizer,
        resolution: int,
        value_range: tuple[float, float] = (-1.0, 1.0),
        skip_bad: bool = False,
        seg_dir: str | Path | None = None,
    ) -> None:
        if not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
        if not value_range[0] < value_range[1]:
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range!r}")
        self.root = Path(root)
        self.tokenizer = tokenizer
        self.resolution = resolution
        self.value_range = (float(value_range[0]), float(value_range[1]))
        good, problems, n_records = _scan(self.root, tokenizer, seg_dir)
        whole_folder = [problem for problem in problems if problem.line is None]
        if whole_folder or (problems and not skip_bad):
            raise DatasetError(_error_text(self.root, problems))
        for line in sorted({problem.line for problem in problems}):
            reasons = "; ".join(problem.message for problem in problems if problem.line == line)
            logger.warning("skipping record at %s:%d: %s", problems[0].file, line, reasons)
        if not good:
            raise DatasetError(f"dataset {self.root} has no usable record ({n_records} records, "
                               f"{len(problems)} problems); run python -m tokencompose validate {self.root}")
        if problems:
            logger.warning("skipped %d of %d records of %s", n_records - len(good), n_records, self.root)
        #: the problems of the skipped records (empty unless ``skip_bad``)
        self.problems: list[Problem] = problems
        self._examples = good

    @property
    def records(self) -> list[Record]:
        """The records that are used, in file order."""
        return [checked.record for checked in self._examples]

    def __len__(self) -> int:
        return len(self._examples)

    def __getitem__(self, index: int) -> dict:
        checked = self._examples[index]
        image = open_rgb(checked.image_path)  # 16-bit greyscale scaled to 8 bits (convert("RGB") clips it)
        masks = []
        for path in checked.mask_paths:
            with Image.open(path) as mask:
                masks.append(_mask_foreground(mask))
        return encode_example(image, checked.record.text, checked.nouns, masks, self.tokenizer,
                              self.resolution, self.value_range, positions=checked.positions)


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------------
# batches of a training run: a pure function of (step, micro-step), so a resumed run continues exactly
# --------------------------------------------------------------------------------------------------

def seed_for(*keys: int) -> int:
    """A 63-bit seed mixed from ``keys`` (NumPy's SeedSequence): nearby keys give unrelated streams."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint64)[0] >> 1)


class DatasetBatches:
    """Micro-batch ``(step, micro)`` of a dataset: sample k of the run is ``permutation(epoch)[k mod n]``.

    ``config`` gives ``seed``, ``train_batch_size`` and ``gradient_accumulation_steps``; process ``rank`` of
    ``world`` takes every ``world``-th micro-batch.
    """

    def __init__(self, dataset, config, rank: int = 0, world: int = 1) -> None:
        self.dataset, self.config, self.rank, self.world = dataset, config, rank, world
        self._permutations: dict[int, torch.Tensor] = {}

    def _index(self, k: int) -> int:
        epoch, position = divmod(k, len(self.dataset))
        if epoch not in self._permutations:
            self._permutations = {epoch: torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(
                seed_for(self.config.seed, epoch, 1)))}
        return int(self._permutations[epoch][position])

    def __call__(self, step: int, micro: int) -> dict:
        size = self.config.train_batch_size
        first = ((step * self.config.gradient_accumulation_steps + micro) * self.world + self.rank) * size
        return collate([self.dataset[self._index(first + i)] for i in range(size)])


def cli(argv: list[str]) -> int:
    """``python -m tokencompose validate DIR``: print every problem of a dataset; exit status 1 if any (2: no
    such folder)."""
    parser = ArgumentParser(prog="tokencompose validate", description=cli.__doc__)
    parser.add_argument("root", metavar="DIR", type=input_folder,
                        help="dataset folder (metadata.jsonl inside, or train/metadata.jsonl)")
    parser.add_argument("--seg-dir", type=input_folder,
                        help="folder that mask paths 'seg/...' point into (authors' coco_gsam_seg)")
    parser.add_argument("--tokenizer", metavar="MODEL",
                        help="hub id or folder whose tokenizer to use (default: the offline CLIP tokenizer)")
    args = parser.parse_args(argv)

    _, problems, n_records = _scan(args.root, clip_tokenizer(args.tokenizer, fallback=False), args.seg_dir)
    for problem in problems:
        print(problem)
    print(f"{n_records} records, {len(problems)} problems")
    return 1 if problems else 0
