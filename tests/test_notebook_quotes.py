"""The notebooks' prose quotes results files only as they are: every results file a text cell names exists, a
date written beside it is the date the file says it was measured, and no text cell types a table row of
measured numbers (mean [low, high]) that the results files do not hold word for word (a notebook shows
measured tables by reading the files, so a typed copy is a copy that can go stale)."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))
RESULTS = ROOT / "benchmarks" / "results"
CITED = re.compile(r"benchmarks/results/([\w.-]+\.(?:md|json|png))")
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
INTERVAL = re.compile(r"-?\d+(?:\.\d+)? \[-?\d+(?:\.\d+)?, -?\d+(?:\.\d+)?\]")


def _text_cells(path: Path) -> list[str]:
    return ["".join(cell["source"]) for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "markdown"]


def _measured_date(name: str) -> str | None:
    path = RESULTS / name
    if path.suffix != ".md":
        return None
    line = next((line for line in path.read_text().splitlines() if line.startswith("Measured")), "")
    found = DATE.search(line)
    return found.group(0) if found else None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_cited_results_files_exist_and_dates_match(path):
    for text in _text_cells(path):
        cited = CITED.findall(text)
        for name in cited:
            assert (RESULTS / name).is_file(), f"{path.name} cites benchmarks/results/{name}, which does not exist"
        dates = set(DATE.findall(text))
        if dates and len(cited) == 1:
            measured = _measured_date(cited[0])
            if measured is not None:
                assert dates == {measured}, (f"{path.name} dates benchmarks/results/{cited[0]} {sorted(dates)}; "
                                             f"the file says it was measured {measured}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_typed_copy_of_a_measured_table(path):
    held = "\n".join(p.read_text() for p in RESULTS.glob("*.md"))
    for text in _text_cells(path):
        for line in text.splitlines():
            if line.startswith("|") and INTERVAL.search(line):
                assert line.strip() in held, f"{path.name} types a measured row not in benchmarks/results: {line}"


def test_the_checks_can_fail(tmp_path, monkeypatch):
    notebook = tmp_path / "x.ipynb"
    notebook.write_text(json.dumps({"cells": [
        {"cell_type": "markdown", "source": ["See benchmarks/results/no_such_file.md.\n"]},
        {"cell_type": "markdown", "source": ["| L_LDM only | 51.7 [48.1, 55.3] | 99.9 [1.0, 2.0] |\n"]}]}))
    with pytest.raises(AssertionError, match="does not exist"):
        test_cited_results_files_exist_and_dates_match(notebook)
    with pytest.raises(AssertionError, match="types a measured row"):
        test_no_typed_copy_of_a_measured_table(notebook)
