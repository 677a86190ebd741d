"""``prepare``: captioned images -> nouns -> Grounded-SAM masks -> a dataset in the authors' format.

The data step of TokenCompose (paper Sec. 3.2; authors' ``preprocess_data/``): for every image, the noun
phrases of its caption (``nouns.noun_phrases``), then one mask per noun (``masks.GroundedSAM``). The
output folder is what ``data.py`` and the authors' training script read::

    OUT/
      metadata.jsonl      {"file_name": "0001.jpg", "text": "...", "attn_list": [["cat", "seg/0001/mask_cat.png"],
                                                                               ["kite", null]]}
      0001.jpg            the image (copied, or hard-linked with --link)
      seg/0001/mask_cat.png   8-bit PNG, 0 / 255, at the image's resolution

Usage::

    python -m tokencompose prepare --images DIR --captions captions.jsonl --out DATASET [--tagger perceptron]
        [--settings authors | grounded-sam-script] [--backend transformers | original]

Grounded-SAM settings (``masks.GROUNDING_SETTINGS``): ``authors`` (default) is the authors' run
(``preprocess_data/run_pipeline.sh``: Grounding DINO Swin-T OGC, SAM-HQ ViT-H, box 0.25, text 0.25), the
setting that made the masks the paper's models were trained on; ``grounded-sam-script`` is ``gen_mask.py``'s
own argparse defaults (box 0.3, text 0.25, SAM ViT-H) with Grounding DINO Swin-B, this module's earlier
default. ``--detector``, ``--segmenter``, ``--box-threshold``, ``--text-threshold`` override one value each.

Captions: JSONL with ``{"file_name": ..., "text": ...}`` a line, or a CSV / TSV file with a
``file_name,text`` header. ``file_name`` is relative to ``--images``.

The run is resumable: each finished record is appended to ``metadata.jsonl`` and flushed to disk, after its
masks and image; a rerun skips every ``file_name`` already there and never rewrites its files, so a crash
loses at most the record in progress. An image that cannot be read is logged and skipped (it is tried again
on the next run). Differences from the authors' ``gen_mask.py``: they wrote ``metadata.jsonl`` once at the
end (a crash lost everything) and named masks ``mask_<id>_<noun>.png``; a mask that SAM leaves empty is
written here as ``null`` (an empty mask would push the noun's attention off the whole image).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .cli_args import ArgumentParser, device, input_folder, output_folder, positive_int, probability
from .images import open_rgb
from .masks import (
    DEFAULT_GROUNDING_SETTINGS,
    GROUNDING_SETTINGS,
    GroundedSAM,
    ModelLoadError,
    mask_file_name,
    safe_noun_name,
    save_mask,
)
from .nouns import TaggerUnavailableError, noun_phrases
from .provenance import check_outputs, record_written, unknown_origin_error, written_files

logger = logging.getLogger(__name__)

METADATA_FILE = "metadata.jsonl"
SEG_DIR = "seg"
CAPTION_COLUMNS = ("file_name", "text")


class Segmenter(Protocol):
    """What ``prepare_dataset`` needs from the segmentation step (``masks.GroundedSAM`` is one)."""

    def masks_for_nouns(self, image: Image.Image, nouns: list[str]) -> Mapping[str, np.ndarray | None]:
        """``{noun: bool [H, W] mask at the image's resolution, or None}``."""
        ...


@dataclass(frozen=True)
class Caption:
    """One input line: an image (relative to the images folder) and its caption."""

    file_name: str
    text: str
    #: where it came from, for messages: ``"captions.jsonl:12"``
    source: str = ""


@dataclass
class PrepareReport:
    """What a ``prepare_dataset`` run did."""

    out_dir: Path
    #: records written by this run
    written: int = 0
    #: records found finished in ``metadata.jsonl`` and skipped
    already_done: int = 0
    #: ``(file_name, reason)`` of images that could not be read (skipped, retried on the next run)
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: nouns of the records written by this run, and how many of them got a mask
    nouns: int = 0
    masked: int = 0


# --------------------------------------------------------------------------------------------------
# captions
# --------------------------------------------------------------------------------------------------

def _check_file_name(file_name: Any, source: str) -> str:
    if not isinstance(file_name, str) or not file_name.strip():
        raise ValueError(f"{source}: 'file_name' must be a non-empty string, got {file_name!r}")
    path = PurePosixPath(file_name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or os.path.isabs(file_name):
        raise ValueError(f"{source}: file_name {file_name!r} must be a path relative to the images folder, "
                         "without '..' (the dataset keeps it as the image's path inside the output folder)")
    return path.as_posix()


def read_captions(path: str | os.PathLike) -> list[Caption]:
    """Read captions from JSONL (``{"file_name", "text"}`` a line) or CSV / TSV (header ``file_name,text``).

    The format is chosen by the suffix (``.csv``, ``.tsv``; anything else is read as JSONL). Raises
    ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and line of a bad entry.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"captions file {str(path)!r} is a folder; pass --captions a JSONL file with one "
                         '{"file_name": "0001.jpg", "text": "a cat and a kite"} a line (or a CSV/TSV with a '
                         "file_name,text header)")
    if not path.is_file():
        raise FileNotFoundError(
            f"captions file {str(path)!r} not found: pass --captions a JSONL file with one "
            '{"file_name": "0001.jpg", "text": "a cat and a kite"} a line (or a CSV/TSV with a file_name,text header)')
    captions: list[Caption] = []
    if path.suffix.lower() in (".csv", ".tsv"):
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            missing = [c for c in CAPTION_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: the header {reader.fieldnames} lacks column(s) {missing}; the first "
                                 f"line must name the columns: file_name{delimiter}text")
            for row in reader:
                source = f"{path}:{reader.line_num}"
                text = row.get("text")
                if not isinstance(text, str):
                    raise ValueError(f"{source}: the row has no 'text' value")
                captions.append(Caption(_check_file_name(row.get("file_name"), source), text, source))
    else:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                source = f"{path}:{number}"
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{source}: not valid JSON ({error.msg}); each line must be one object "
                                     '{"file_name": ..., "text": ...}') from error
                if not isinstance(entry, dict) or "text" not in entry or "file_name" not in entry:
                    raise ValueError(f"{source}: each line must be an object with 'file_name' and 'text', got "
                                     f"{line.strip()[:80]!r}")
                if not isinstance(entry["text"], str):
                    raise ValueError(f"{source}: 'text' must be a string, got {entry['text']!r}")
                captions.append(Caption(_check_file_name(entry["file_name"], source), entry["text"], source))
    if not captions:
        raise ValueError(f"captions file {path} holds no captions; write one {{\"file_name\": ..., \"text\": ...}} "
                         "a line (or CSV/TSV rows under a file_name,text header)")
    return captions


def image_id(file_name: str) -> str:
    """The mask folder name of an image: its path without the suffix, ``/`` -> ``_`` (``a/0001.jpg`` -> ``a_0001``).

    The authors used the base name without suffix; sub-folders are kept in the id here so two images of
    the same name in different folders do not share a mask folder.
    """
    return safe_noun_name(PurePosixPath(file_name).with_suffix("").as_posix().replace("/", "_"))


def _unique_captions(captions: Iterable[Caption]) -> list[Caption]:
    """First caption of each image (later duplicates logged and dropped); mask-folder clashes are errors."""
    by_name: dict[str, Caption] = {}
    by_id: dict[str, Caption] = {}
    dropped = 0
    for caption in captions:
        if caption.file_name in by_name:
            dropped += 1
            continue
        key = image_id(caption.file_name)
        if key in by_id:
            other = by_id[key]
            raise ValueError(f"{caption.source}: {caption.file_name!r} and {other.file_name!r} ({other.source}) "
                             f"would share the mask folder seg/{key}/; rename one of the images")
        by_name[caption.file_name] = by_id[key] = caption
    if dropped:
        logger.warning("%d caption(s) of images captioned earlier in the file were ignored (one caption an "
                       "image; the first one is kept)", dropped)
    return list(by_name.values())


# --------------------------------------------------------------------------------------------------
# the output folder
# --------------------------------------------------------------------------------------------------

def finished_file_names(metadata_path: str | os.PathLike) -> set[str]:
    """``file_name`` of every record already in ``metadata.jsonl`` (an absent file: none).

    A last line cut short by a crash (no newline, not valid JSON) is removed from the file, logged, and its
    record counts as unfinished; a bad line anywhere else raises ``ValueError`` with its line number.
    """
    path = Path(metadata_path)
    if not path.exists():
        return set()
    data = path.read_bytes()
    lines = data.split(b"\n")
    done: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            done.add(entry["file_name"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
            if number == len(lines) and not data.endswith(b"\n"):
                keep = len(data) - len(line)
                with path.open("r+b") as handle:
                    handle.truncate(keep)
                logger.warning("%s: removed the unfinished last line %d (a run stopped while writing it); its "
                               "record will be prepared again", path, number)
                break
            raise ValueError(f"{path}:{number}: not a record ({error}); repair or delete that line, then rerun "
                             "(records already written are kept)") from error
    return done


def _place_image(source: Path, target: Path, link: bool) -> None:
    """Put the image file at ``target`` (nothing to do when it is the same file)."""
    if target.exists() and os.path.samefile(source, target):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=target.suffix, dir=target.parent)
    os.close(handle)
    try:
        copied = False
        if link:
            os.remove(temporary)
            try:
                os.link(source, temporary)
                copied = True
            except OSError:
                logger.debug("cannot hard-link %s (another file system?); copying", source)
        if not copied:
            shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _read_image(path: Path) -> Image.Image:
    return open_rgb(path)  # decoded now (a truncated or corrupt file fails here, not later); 16-bit scaled


def _write_masks(out_dir: Path, caption: Caption, nouns: Sequence[str], masks: Mapping[str, Any],
                 size: tuple[int, int]) -> list[list[str | None]]:
    """Save each noun's mask under ``seg/<id>/``; the ``attn_list`` of the record."""
    width, height = size
    folder = f"{SEG_DIR}/{image_id(caption.file_name)}"
    attn_list: list[list[str | None]] = []
    used: set[str] = set()
    for noun in nouns:
        mask = masks.get(noun)
        if mask is None:
            attn_list.append([noun, None])
            continue
        mask = np.asarray(mask)
        if mask.shape != (height, width):
            raise ValueError(f"{caption.file_name}: the mask of {noun!r} has shape {mask.shape}, the image is "
                             f"{height}x{width} (H x W); a segmenter must return masks at image resolution")
        if not mask.any():
            logger.info("%s: the mask of %r is empty; written as null", caption.file_name, noun)
            attn_list.append([noun, None])
            continue
        name = mask_file_name(noun)
        stem, number = name[: -len(".png")], 2
        while name.lower() in used:  # "Plate" and "plate", or "a/c" and "a_c": keep both files apart
            name, number = f"{stem}_{number}.png", number + 1
        used.add(name.lower())
        relative = f"{folder}/{name}"
        record_written(out_dir, {relative: None})  # (checked: absent or this project's)
        save_mask(mask, out_dir / relative)
        attn_list.append([noun, relative])
    return attn_list


def _is_source(source: Path, target: Path) -> bool:
    """Whether ``target`` is the image ``source`` itself (``--out`` is ``--images``, or a hard link)."""
    try:
        return os.path.samefile(source, target)
    except OSError:
        return False


def check_prepare_folder(images_dir: str | os.PathLike, captions: Sequence[Caption],
                         out_dir: str | os.PathLike) -> None:
    """The output-folder rule for ``prepare`` (``provenance``), changing nothing: ``metadata.jsonl``, each
    caption's image copy and its ``seg/<id>/`` masks in ``out_dir`` absent or written by this project (an image
    that *is* its source, ``--out`` = ``--images``, is not written); ``provenance.OutputFolderError`` names the
    rest. Called before any model loads."""
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    check_outputs(out_dir, [METADATA_FILE], what="a dataset")
    if not out_dir.is_dir():
        return
    ours = set(written_files(out_dir) or {})
    foreign = []
    for caption in captions:
        target = out_dir / caption.file_name
        if os.path.lexists(target) and caption.file_name not in ours and not _is_source(images_dir / caption.file_name,
                                                                                       target):
            foreign.append(caption.file_name)
        masks = out_dir / SEG_DIR / image_id(caption.file_name)
        if masks.is_dir():
            foreign += [name for path in sorted(masks.iterdir())
                        if (name := path.relative_to(out_dir).as_posix()) not in ours]
    if foreign:
        raise unknown_origin_error(out_dir, foreign)


def prepare_dataset(
    images_dir: str | os.PathLike,
    captions: str | os.PathLike | Iterable[Caption],
    out_dir: str | os.PathLike,
    segmenter: Segmenter,
    tagger: str | Callable[[Sequence[str]], Sequence[str]] = "auto",
    *,
    link_images: bool = False,
    limit: int | None = None,
    progress: bool = True,
) -> PrepareReport:
    """Nouns, then masks, for every captioned image; writes the dataset into ``out_dir`` (resumable).

    Args:
        images_dir: the folder that ``file_name`` of each caption is relative to.
        captions: a captions file (``read_captions``) or ``Caption`` objects.
        out_dir: the dataset folder (created); may be ``images_dir`` itself (images are then not copied).
        segmenter: anything with ``masks_for_nouns(image, nouns)`` (``masks.GroundedSAM``).
        tagger: for ``nouns.noun_phrases``: ``"auto"``, ``"flair"``, ``"perceptron"`` or a callable
            ``tokens -> Penn Treebank tags``.
        link_images: hard-link images into ``out_dir`` instead of copying them (copied where linking fails).
        limit: prepare at most this many new records (the rest wait for the next run).
        progress: show a tqdm progress bar.
    """
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    caption_list = read_captions(captions) if isinstance(captions, (str, os.PathLike)) else list(captions)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"images folder {str(images_dir)!r} not found: pass --images the folder that the "
                                "captions' file_name values are relative to")
    caption_list = _unique_captions(caption_list)
    check_prepare_folder(images_dir, caption_list, out_dir)  # before anything is written (or truncated)
    out_dir.mkdir(parents=True, exist_ok=True)
    record_written(out_dir, {METADATA_FILE: None})
    metadata_path = out_dir / METADATA_FILE
    done = finished_file_names(metadata_path)
    pending = [c for c in caption_list if c.file_name not in done]
    report = PrepareReport(out_dir=out_dir, already_done=len(caption_list) - len(pending))
    if report.already_done:
        logger.info("%s: %d record(s) already finished, %d to go", metadata_path, report.already_done, len(pending))
    if limit is not None:
        pending = pending[:limit]

    with metadata_path.open("a", encoding="utf-8") as metadata:
        for caption in tqdm(pending, desc="prepare", unit="image", disable=not progress):
            source = images_dir / caption.file_name
            try:
                image = _read_image(source)
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                logger.warning("skipped %s (%s): cannot read the image: %s", caption.file_name, caption.source, error)
                report.failed.append((caption.file_name, f"{type(error).__name__}: {error}"))
                continue
            nouns = noun_phrases(caption.text, tagger=tagger)
            masks = segmenter.masks_for_nouns(image, list(nouns)) if nouns else {}
            attn_list = _write_masks(out_dir, caption, nouns, masks, image.size)
            if not _is_source(source, out_dir / caption.file_name):
                record_written(out_dir, {caption.file_name: None})
                _place_image(source, out_dir / caption.file_name, link_images)
            record = {"file_name": caption.file_name, "text": caption.text, "attn_list": attn_list}
            metadata.write(json.dumps(record) + "\n")
            metadata.flush()
            os.fsync(metadata.fileno())
            report.written += 1
            report.nouns += len(attn_list)
            report.masked += sum(mask is not None for _, mask in attn_list)
    return report


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m tokencompose prepare",
        description="Captioned images -> noun phrases -> Grounded-SAM masks -> a dataset in the authors' "
                    "format (metadata.jsonl + seg/<id>/mask_<noun>.png). Resumable: rerun to continue.")
    parser.add_argument("--images", required=True, type=input_folder,
                        help="folder the captions' file_name values are relative to")
    parser.add_argument("--captions", required=True,
                        help='JSONL with {"file_name", "text"} a line, or CSV/TSV with a file_name,text header')
    parser.add_argument("--out", required=True, type=output_folder,
                        help="dataset folder to write (created; may be --images)")
    parser.add_argument("--tagger", default="auto", choices=("auto", "flair", "perceptron"),
                        help="part-of-speech tagger for the nouns (flair: the paper's; perceptron: offline)")
    presets = "; ".join(f"{name}: {s.detector_id}, {s.segmenter_id}, box {s.box_threshold}, text "
                        f"{s.text_threshold}" for name, s in GROUNDING_SETTINGS.items())
    parser.add_argument("--settings", default=DEFAULT_GROUNDING_SETTINGS, choices=sorted(GROUNDING_SETTINGS),
                        help="Grounded-SAM preset: 'authors' = the authors' run (run_pipeline.sh), "
                             "'grounded-sam-script' = gen_mask.py's own defaults; the four flags below override "
                             f"single values ({presets})")
    parser.add_argument("--backend", default="transformers", choices=("transformers", "original"),
                        help="'original': the authors' groundingdino-py and segment-anything(-hq) packages "
                             "(tokencompose.masks_original); --detector / --segmenter are then their .pth files")
    parser.add_argument("--detector", default=None, help="Grounding DINO hub id or folder (default: the preset's)")
    parser.add_argument("--segmenter", default=None, help="SAM or SAM-HQ hub id or folder (default: the preset's)")
    parser.add_argument("--device", type=device, default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--box-threshold", type=probability, default=None, help="default: the preset's")
    parser.add_argument("--text-threshold", type=probability, default=None, help="default: the preset's")
    parser.add_argument("--link", action="store_true", help="hard-link images into --out instead of copying")
    parser.add_argument("--limit", type=positive_int, default=None, help="prepare at most N new records this run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def cli(argv: list[str]) -> int:
    """``python -m tokencompose prepare ...``; exit status 0 (also when unreadable images were skipped:
    they are logged), 1 when the models cannot be loaded, 2 for bad input (captions, images folder, tagger)."""
    args = _parser().parse_args(argv)
    try:
        captions = read_captions(args.captions)
        unique = _unique_captions(captions)
    except (OSError, ValueError) as error:
        logger.error("%s", error)
        return 2
    check_prepare_folder(args.images, unique, args.out)  # before any model loads
    try:
        segmenter = GroundedSAM.from_pretrained(args.detector, args.segmenter, device=args.device,
                                                box_threshold=args.box_threshold,
                                                text_threshold=args.text_threshold, settings=args.settings,
                                                backend=args.backend)
        used = segmenter.settings
        logger.info("Grounded-SAM settings %r: %s, %s, box threshold %s, text threshold %s", used.name,
                    used.detector_id, used.segmenter_id, used.box_threshold, used.text_threshold)
    except ModelLoadError as error:
        logger.error("%s", error)
        return 1
    try:
        report = prepare_dataset(args.images, captions, args.out, segmenter, tagger=args.tagger,
                                 link_images=args.link, limit=args.limit, progress=not args.no_progress)
    except (OSError, ValueError, TaggerUnavailableError) as error:
        logger.error("%s", error)
        return 2
    logger.info("%s: %d record(s) written, %d already there, %d image(s) unreadable; %d of %d nouns got a mask",
                report.out_dir / METADATA_FILE, report.written, report.already_done, len(report.failed),
                report.masked, report.nouns)
    for file_name, reason in report.failed:
        logger.warning("unreadable, skipped (rerun to retry): %s (%s)", file_name, reason)
    return 0
