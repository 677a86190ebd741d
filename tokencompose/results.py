"""Reading the committed result files (``benchmarks/results/*.md``, model cards).

Every benchmark writes a markdown file whose headline parts sit between ``<!-- readme:begin -->`` and
``<!-- readme:end -->``: the README's generated "Measured results" section (``scripts/readme_results.py``)
and notebook 07 both show those blocks, so numbers are copied from one place and never typed twice.
"""

from __future__ import annotations

import re
from pathlib import Path

#: a headline block of a results file (the markers are HTML comments: invisible on GitHub)
READ_ME_BLOCK = re.compile(r"<!-- readme:begin -->\n(.*?)<!-- readme:end -->", re.DOTALL)
#: the finding block of ``benchmarks/results/toy_levers.md`` (the paper's numbers beside the toy's)
FINDING_BLOCK = re.compile(r"<!-- finding:begin -->\n(.*?)<!-- finding:end -->", re.DOTALL)
#: where ``benchmarks/toy_levers.py`` writes the finding, relative to the repository
FINDING_FILE = Path("benchmarks") / "results" / "toy_levers.md"


def readme_blocks(text: str) -> list[str]:
    """The headline blocks of a results file's ``text``, in order, without their markers (``[]`` if none)."""
    return READ_ME_BLOCK.findall(text)


def title(text: str, default: str = "") -> str:
    """The first ``# `` heading of ``text`` without its hashes, or ``default``."""
    return next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("# ")), default)


def repository_path(folder: str | Path, root: str | Path | None = None) -> str:
    """``folder`` relative to the repository ``root`` (default: the checkout this package lives in) when inside
    it, else as given: a results file names ``tokencompose/assets/toy_base_noun``, not this machine's paths."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    path = Path(folder).resolve()
    return path.relative_to(root.resolve()).as_posix() if path.is_relative_to(root.resolve()) else str(folder)


def finding_block(text: str) -> str:
    """The finding block of a results file's ``text`` without its markers, or ``""`` if it has none."""
    match = FINDING_BLOCK.search(text)
    return match.group(1) if match else ""


def finding_table(root: str | Path | None = None) -> str:
    """The finding table of ``benchmarks/results/toy_levers.md`` in the repository ``root`` (default: the checkout
    this package lives in), so a notebook shows the committed numbers instead of typing them.

    Raises:
        FileNotFoundError: the file is absent (an install without the repository's ``benchmarks/`` folder), or
            it has no finding block (run ``python benchmarks/toy_levers.py``).
    """
    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    path = root / FINDING_FILE
    table = finding_block(path.read_text(encoding="utf-8")) if path.is_file() else ""
    if not table.strip():
        raise FileNotFoundError(f"no finding in {path}: it is written by python benchmarks/toy_levers.py in a "
                                "checkout of the repository")
    return table


def interval_reading(stat: dict | None) -> str:
    """What a paired 95% interval shows: "gain" (above 0), "loss" (below 0), "none shown" (it spans 0), or
    "not measured" (no interval)."""
    if stat is None:
        return "not measured"
    return "gain" if stat["low"] > 0 else "loss" if stat["high"] < 0 else "none shown"


def levers_readings(levers: dict) -> dict[str, list[str]]:
    """``benchmarks/results/toy_levers.json`` grouped by what each measured lever did to MG3: ``{"gain": [...],
    "loss": [...], "none shown": [...], "not measured": [...]}``, each entry "lever (model)". A gain is a paired
    95% interval above 0, a loss one below 0."""
    groups: dict[str, list[str]] = {"gain": [], "loss": [], "none shown": [], "not measured": []}
    for kind in ("training", "sampling"):
        for row in levers.get(kind, []):
            name = row["lever"] + (f" ({row['model']})" if row.get("model") else "")
            groups[interval_reading(row.get("MG3"))].append(name)
    return groups
