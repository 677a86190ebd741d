"""Every notebook in notebooks/ is well formed, is in ``make test``'s nbval run, and the branches nbval does not
take run end to end with papermill on the toy preset.

Notebooks are found by glob, so a new notebook is checked as soon as it exists. nbval (``make test``) runs
every lesson at its committed parameters, in order, and compares the checked outputs; running them all again
here at tiny sizes cost 80 s of CI for no path nbval misses (measured 2026-12-01). ``BRANCHES`` holds, per
notebook name prefix, the parameter overrides that take a path the committed parameters do not (every key
must be one of the notebook's parameters; a test checks it), and only those notebooks run here. Each writes
into a temporary ``output_dir`` and runs with the notebooks folder as working directory, as Jupyter, nbval
and ``scripts/run_notebooks.py`` run it.

If the shipped toy base model is missing (it is trained by ``python -m tokencompose pretrain-toy``), a
notebook with a ``model`` parameter gets a randomly initialised toy model saved to a temporary folder: the
code path is the same, the pictures are meaningless.
"""

from __future__ import annotations

import ast
import re
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))

#: parameters every notebook's `parameters` cell defines (DESIGN.md "Notebooks")
REQUIRED_PARAMETERS = ("preset", "device", "seed", "output_dir")

#: per-notebook overrides (name prefix -> parameters) that take a branch nbval's committed parameters do not,
#: at sizes that keep this module quick on a 2-core CPU
BRANCHES: dict[str, dict] = {
    # no fine-tuned model given: the notebook fine-tunes the base itself (nbval evaluates 05's model)
    "06_": {"finetuned": "", "finetune_steps": 2, "n_prompts": 3, "images_per_prompt": 1, "sample_steps": 4,
            "latency_runs": 1, "segmentation_prompts": 2, "toy_visor_limit": 2},
}

#: the Makefile line that lists the notebooks ``make test`` runs with nbval
MAKEFILE_NOTEBOOKS = "NOTEBOOKS := "


def _ids(paths):
    return [path.stem for path in paths]


def _parameter_cells(notebook) -> list:
    return [cell for cell in notebook.cells if "parameters" in cell.get("metadata", {}).get("tags", [])]


def _parameters(notebook) -> dict[str, object]:
    """Names assigned in the notebook's `parameters` cell, with their literal values."""
    (cell,) = _parameter_cells(notebook)
    values = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def _overrides(path: Path) -> dict:
    return next((values for prefix, values in BRANCHES.items() if path.name.startswith(prefix)), {})


BRANCH_NOTEBOOKS = [path for path in NOTEBOOKS if _overrides(path)]


def _makefile_notebooks() -> set[Path]:
    """The notebooks the Makefile's ``NOTEBOOKS`` wildcards expand to."""
    (line,) = [line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith(MAKEFILE_NOTEBOOKS)]
    patterns = re.findall(r"\$\(wildcard ([^)]+)\)", line)
    assert patterns, f"no $(wildcard ...) in the Makefile's {line!r}"
    return {path.resolve() for pattern in patterns for path in ROOT.glob(pattern)}


def test_notebooks_exist():
    assert len(NOTEBOOKS) >= 5, f"expected notebooks 00-04 in {NOTEBOOK_DIR}, found {[p.name for p in NOTEBOOKS]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_structure(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec must be python3"
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), f"{path.name}: starts with a title"
    cells = _parameter_cells(notebook)
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged 'parameters', need exactly one"
    parameters = _parameters(notebook)
    missing = [name for name in REQUIRED_PARAMETERS if name not in parameters]
    assert not missing, f"{path.name}: parameters cell lacks {missing}"
    assert parameters["preset"] == "toy", f"{path.name}: the default preset must be 'toy'"
    assert any("google.colab" in cell.source for cell in notebook.cells if cell.cell_type == "code"), (
        f"{path.name}: no 'run on Colab' install cell")
    assert "## What you learned" in "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_branch_overrides_are_parameters(path):
    unknown = sorted(set(_overrides(path)) - set(_parameters(nbformat.read(path, as_version=4))))
    assert not unknown, f"BRANCHES overrides {unknown} are not parameters of {path.name}"


def test_every_notebook_is_in_the_nbval_run():
    """The notebooks this module does not run are run by ``make test``'s nbval: each must be in its list."""
    missing = sorted(path.name for path in NOTEBOOKS if path.resolve() not in _makefile_notebooks())
    assert not missing, f"the Makefile's NOTEBOOKS (make test's nbval run) lacks {missing}"
    assert BRANCH_NOTEBOOKS, "no notebook branch runs here: BRANCHES names no existing notebook"


@pytest.fixture(scope="module")
def toy_model_source(tmp_path_factory) -> str:
    """"toy" when the shipped base model exists, else a random toy model saved to a temporary folder."""
    from tokencompose.config import TOY_BASE_DIR

    if (TOY_BASE_DIR / "unet").is_dir():
        return "toy"
    from tokencompose.models import build_toy_model, save_toy_model

    return str(save_toy_model(build_toy_model(), tmp_path_factory.mktemp("random_toy_model")))


@pytest.mark.parametrize("path", BRANCH_NOTEBOOKS, ids=_ids(BRANCH_NOTEBOOKS))
def test_notebook_runs(path, tmp_path, toy_model_source):
    import papermill

    parameters = {"preset": "toy", "output_dir": str(tmp_path / "outputs"), **_overrides(path)}
    if "model" in _parameters(nbformat.read(path, as_version=4)) and toy_model_source != "toy":
        parameters["model"] = toy_model_source
    started = time.perf_counter()
    papermill.execute_notebook(
        str(path), str(tmp_path / path.name), parameters=parameters, kernel_name="python3",
        cwd=str(NOTEBOOK_DIR), progress_bar=False, request_save_on_cell_execute=False, execution_timeout=900,
    )
    print(f"{path.name}: {time.perf_counter() - started:.1f} s")
    executed = nbformat.read(tmp_path / path.name, as_version=4)
    errors = [output for cell in executed.cells if cell.cell_type == "code"
              for output in cell.get("outputs", []) if output.get("output_type") == "error"]
    assert not errors, f"{path.name}: error outputs {[e.get('ename') for e in errors]}"
