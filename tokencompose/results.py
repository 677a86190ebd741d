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
