"""Execute the notebooks with papermill, so they are committed with the outputs of a real run.

Usage (from the repository root; ``make notebooks`` runs the first form)::

    python scripts/run_notebooks.py                         # every notebooks/*.ipynb, in place, toy preset
    python scripts/run_notebooks.py --notebooks 00 03       # the notebooks whose names start with 00 or 03
    python scripts/run_notebooks.py --check                 # execute into a temporary folder, files untouched
    python scripts/run_notebooks.py --notebooks 03 --param seed=1 --param model='"toy"'

Each notebook runs with its own default parameters (its ``parameters`` cell), plus any ``--param`` given,
in the ``notebooks/`` folder as working directory (as Jupyter and nbval run them), with the ``python3``
kernel. After an in-place run the per-cell papermill timestamps are removed, so re-running an unchanged
notebook changes only what its outputs changed. Exit status: 0 if all ran, 1 if any failed (each failure is
reported with the notebook and the error).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
KERNEL = "python3"


def find_notebooks(prefixes: list[str] | None = None, folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The notebooks of ``folder`` in name order, keeping those whose name starts with one of ``prefixes``."""
    notebooks = sorted(path for path in folder.glob("*.ipynb") if not path.name.startswith("."))
    if not prefixes:
        return notebooks
    chosen = [path for path in notebooks if any(path.name.startswith(prefix) for prefix in prefixes)]
    unknown = [prefix for prefix in prefixes if not any(p.name.startswith(prefix) for p in notebooks)]
    if unknown:
        raise SystemExit(f"no notebook in {folder} starts with {unknown}; have: {[p.name for p in notebooks]}")
    return chosen


def parse_param(text: str) -> tuple[str, object]:
    """``NAME=VALUE``; VALUE is read as JSON (``3``, ``0.5``, ``true``, ``"toy"``), else kept as a string."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"--param takes NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def strip_run_metadata(path: Path) -> None:
    """Remove papermill's per-cell timestamps and durations (they change on every run and bloat diffs)."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    papermill = notebook.metadata.get("papermill")
    if papermill is not None:
        for key in ("start_time", "end_time", "duration", "input_path", "output_path", "environment_variables"):
            papermill.pop(key, None)
    nbformat.write(notebook, path)


def without_injected_parameters(notebook: Path, folder: Path) -> Path:
    """A copy of ``notebook`` in ``folder`` without the ``injected-parameters`` cell of an earlier papermill run,
    so a run with the defaults really uses the ``parameters`` cell (papermill keeps an old injected cell when
    it is given no parameters)."""
    import nbformat

    content = nbformat.read(notebook, as_version=4)
    content.cells = [cell for cell in content.cells
                     if "injected-parameters" not in cell.get("metadata", {}).get("tags", [])]
    copy = folder / f"input-{notebook.name}"
    nbformat.write(content, copy)
    return copy


def execute(notebook: Path, output: Path, parameters: dict | None = None, timeout: int = 1800) -> float:
    """Run ``notebook`` into ``output`` with papermill in the notebook's folder; returns the seconds it took."""
    import papermill

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        source = without_injected_parameters(notebook, Path(scratch))
        papermill.execute_notebook(
            str(source), str(output), parameters=parameters or {}, kernel_name=KERNEL, cwd=str(notebook.parent),
            progress_bar=False, request_save_on_cell_execute=False, execution_timeout=timeout,
        )
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebooks", nargs="+", metavar="PREFIX", help="name prefixes, e.g. 00 03 (default: all)")
    parser.add_argument("--check", action="store_true",
                        help="execute into a temporary folder and leave the committed notebooks untouched")
    parser.add_argument("--param", action="append", type=parse_param, default=[], metavar="NAME=VALUE",
                        help="override a parameter in every selected notebook (repeatable)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds a cell may run (default 1800)")
    args = parser.parse_args(argv)

    notebooks = find_notebooks(args.notebooks)
    parameters = dict(args.param)
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        for notebook in notebooks:
            output = Path(scratch) / notebook.name if args.check else notebook
            try:
                seconds = execute(notebook, output, parameters, args.timeout)
            except Exception as error:  # noqa: BLE001 - report every notebook, then fail
                failures.append(f"{notebook.name}: {type(error).__name__}: {str(error).strip()[-2000:]}")
                print(f"FAILED {notebook.name}", file=sys.stderr)
                continue
            if not args.check:
                strip_run_metadata(output)
            print(f"ok     {notebook.name}  {seconds:6.1f} s")
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
