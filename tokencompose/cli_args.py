"""What the command line accepts: argparse types shared by every command, and ``UserError``.

Every command checks its arguments before it does any work, with the types below (``type=positive_int``
...) and this module's ``ArgumentParser``: a bad value stops the parser with exit status 2 and one line
naming the flag, the value and what it accepts. An error found later that the user can fix (a malformed
prompt file, an unknown category) is a ``UserError``; ``python -m tokencompose`` prints it as
``error: <message>`` and exits with status 2 (``__main__.main``, which treats the package's other named
errors the same way; ``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class UserError(Exception):
    """An error the user caused and can fix; its message says what is wrong, where, and how to fix it."""


class InputFileError(UserError, ValueError):
    """A file the user passed is missing or malformed; the message names the file and the line (a
    ``ValueError`` too, for callers of the library functions that read such files)."""


#: what argparse takes for a (negative) value rather than a flag: anything that starts with a minus and a digit
#: (``-1e-4``, ``-1,1,1,1``) and ``-inf`` / ``-nan``; argparse's own pattern takes ``-1e-4`` for a flag and answers
#: ``--learning-rate -1e-4`` with "expected one argument". No flag of this package starts with a digit.
NEGATIVE_NUMBER = re.compile(r"^-\.?\d|^-(inf|infinity|nan)$", re.IGNORECASE)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose error is one line on stderr (no usage block) that points at ``--help``;
    exit status 2, as argparse. A value such as ``-1e-4`` or ``-inf`` is read as a (negative) value, so the
    flag's type names what it accepts, instead of being taken for a flag."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (steps, batch sizes, image counts, limits)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


#: the noise levels (timesteps) every scheduler here is trained on: SD's and the toy preset's
NOISE_LEVELS = 1000
#: the most sampling steps: DDIM cannot take more steps than there are noise levels (diffusers refuses once the
#: model is loaded; the toy sampler would repeat timesteps)
MAX_SAMPLING_STEPS = NOISE_LEVELS
#: the most prompts a command generates: MultiGen's sets hold 1,000; a typo such as 1000000000 is refused, not run
MAX_PROMPTS = 100_000


def sampling_steps(text: str) -> int:
    """A number of sampling (denoising) steps: 1 to ``MAX_SAMPLING_STEPS``, checked before any model loads."""
    value = positive_int(text)
    if value > MAX_SAMPLING_STEPS:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_SAMPLING_STEPS} (the noise levels the models are trained on), got {text!r}; the "
            "paper samples with 50")
    return value


def prompt_count(text: str) -> int:
    """A number of prompts to generate: 1 to ``MAX_PROMPTS``."""
    value = positive_int(text)
    if value > MAX_PROMPTS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_PROMPTS:,} prompts, got {text!r}; MultiGen's sets "
                                         "hold 1,000")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (seeds, warm-up steps, counts where 0 means none)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """A finite number (no nan / inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (loss weights, guidance scales)."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates, gradient-norm limits)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def probability(text: str) -> float:
    """A number in [0, 1] (detection and box thresholds)."""
    value = finite_float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


#: the longest file or folder name most file systems take (bytes); ``os.pathconf`` says so where it can
NAME_MAX = 255


def check_path_name(text: str) -> Path:
    """``text`` as a ``Path``, refused (``ArgumentTypeError``) when no file system can hold it: a NUL byte, or a
    name (one component) longer than ``NAME_MAX`` bytes. Without this check such a path fails late, in the
    middle of the work, with ``embedded null byte`` or ``OSError: File name too long``."""
    if "\0" in str(text):
        raise argparse.ArgumentTypeError(f"{str(text)!r} contains a NUL byte; no file name can hold one")
    path = Path(text)
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise argparse.ArgumentTypeError(
                f"the name {part[:40]!r}... in {str(text)[:80]!r}... is {len(os.fsencode(part))} bytes long; file "
                f"systems take at most {NAME_MAX}: pass a shorter name")
    return path


def device(text: str) -> str:
    """``auto``, or a torch device this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``); returned as typed.

    Refused: a name torch does not know, and a GPU that is not there (no CUDA, an index past the GPUs, no MPS),
    which would otherwise fail with a traceback once the model is loaded, or (``train``) fall back to the CPU
    without a word."""
    if text == "auto":
        return text
    import torch  # here, not at the top: parsing flags of commands that need no torch stays cheap

    try:
        chosen = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text!r}: no CUDA GPU is visible on this machine "
                                             "(torch.cuda.is_available() is False); use --device cpu or auto")
        if chosen.index is not None and chosen.index >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {count} CUDA GPU(s), numbered 0..{count - 1}")
    elif chosen.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine; use --device cpu or auto")
    return text


def input_folder(text: str) -> str:
    """An existing folder (a dataset, a model, images to read)."""
    path = check_path_name(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"folder {text!r} not found; check the path")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder")
    return str(text)


def output_folder(text: str) -> str:
    """A folder that exists and is writable, or that can be created (nothing is created here).

    Refused: an existing file, a path below a file, a folder (or nearest existing parent) without write
    permission, an empty path, a path no file system can hold (``check_path_name``).
    """
    if not str(text).strip():
        raise argparse.ArgumentTypeError("the output folder is an empty path; pass a folder, e.g. outputs/run")
    path = check_path_name(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder; pass a folder path (or move the file)")
    existing = path if path.exists() else next((p for p in path.absolute().parents if p.exists()), None)
    if existing is None:
        raise argparse.ArgumentTypeError(f"cannot create {text!r}: none of its parent folders exists")
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create folder {text!r}: {str(existing)!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "it" if existing == path else f"its parent {str(existing)!r}"
        raise argparse.ArgumentTypeError(f"cannot write to {text!r}: no write permission on {where}; pass a "
                                          "folder you can write to")
    return str(text)


def output_file(text: str) -> str:
    """A file path whose folder is an ``output_folder`` and which is not itself a folder."""
    path = check_path_name(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; pass a file path, e.g. {path / 'result.json'}")
    output_folder(str(path.parent))
    return str(text)


def result_file(text: str) -> str:
    """An ``output_file`` for a result written as JSON with a ``.md`` table beside it (``--out`` of ``evaluate
    segmentation`` / ``latency``): a name ending in ``.md`` is refused, as the table would overwrite the JSON."""
    output_file(text)
    if Path(text).suffix.lower() == ".md":
        raise argparse.ArgumentTypeError(f"{text!r} ends in .md, the name of the table written beside the JSON "
                                         f"result; pass a .json path, e.g. {str(Path(text).with_suffix('.json'))!r}")
    return str(text)


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise InputFileError(f"{what} {str(path)!r} not found; check the path")
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: a leading BOM is not an error
    except UnicodeDecodeError as error:
        raise InputFileError(f"{what} {path} is not UTF-8 text ({error.reason} at byte {error.start}); save it "
                             "as UTF-8") from None


def read_json_file(path: str | Path, what: str = "file") -> Any:
    """The JSON value of a file.

    Raises:
        InputFileError: no such file, not UTF-8, or not valid JSON (the message names the file, line and column).
    """
    path = Path(path)
    text = _read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InputFileError(f"{what} {path}:{error.lineno}: malformed JSON ({error.msg}, column {error.colno}); "
                             "fix the file so it is one JSON value") from None


def read_json_lines(path: str | Path, what: str = "file") -> list[tuple[int, Any]]:
    """``(line number, value)`` of each non-blank line of a JSON Lines file.

    Raises:
        InputFileError: no such file, not UTF-8, or a line that is not valid JSON (named with its line and column).
    """
    path = Path(path)
    values = []
    for number, line in enumerate(_read_text(path, what).splitlines(), start=1):
        if line.strip():
            try:
                values.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise InputFileError(f"{what} {path}:{number}: malformed JSON ({error.msg}, column {error.colno}); "
                                     "a .jsonl file holds one JSON value a line") from None
    return values


#: the errors of a file system with no room left (a full disk, a full quota)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def disk_full_is_named(where: str | Path, kept: str | Callable[[], str], again: str) -> Iterator[None]:
    """Turn an ``OSError`` of a full disk (or quota) raised inside into a ``UserError`` that says so: where it
    was writing (``where``, or the file the error names), what is kept (``kept``: what was finished and is safe;
    a function is called when the error happens) and how to go on (``again``). Any other error passes unchanged."""
    try:
        yield
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        kept_now = kept() if callable(kept) else kept
        raise UserError(f"the disk is full: could not write {error.filename or where} ({error.strerror}); "
                        f"{kept_now}; free some space (or choose a folder on another disk), then {again}") from error
