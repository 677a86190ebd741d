"""Write the Colab set-up cell into every notebook, from the repository URL in ``pyproject.toml``.

The URL lives in one place, ``[project.urls] Repository``. A fork sets its own URL there and runs::

    python scripts/colab_setup.py          # rewrite the set-up cell (cell 2) of notebooks/0*.ipynb and solutions/
    python scripts/colab_setup.py --check  # exit 1 if a notebook's cell differs (the tests run this)

The cell does nothing outside Colab (a checkout has run ``make setup``). On Colab it installs the package from
the repository, with bitsandbytes on a GPU runtime (8-bit AdamW, the ``t4`` training profile); while the URL
is still the placeholder it says so and how to fix it, and installs nothing, instead of raising.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = "<owner>"
CELL_INDEX = 2  # after the title cell and the "Run on Colab" cell (CELL_INDEX - 1)

NOTE = """### Run on Colab
[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url})
On Colab, run the next cell first: it installs the package (with the shipped toy base model) from the
repository, and bitsandbytes on a GPU runtime (the `t4` training profile). In a checkout of the repository
`make setup` has already installed everything and the cell does nothing.
"""

TEMPLATE = '''# Run on Colab: install the package from its repository (from a checkout, `make setup` already did it).
import shutil
import subprocess
import sys

REPO_URL = "{url}"  # written by scripts/colab_setup.py from pyproject.toml
if "google.colab" in sys.modules:
    if "{placeholder}" in REPO_URL:
        print("This notebook does not know its repository yet: in a new cell run\\n"
              "    REPO_URL = 'https://github.com/<you>/tokencompose'  # the repository that holds tokencompose\\n"
              "then run this cell again (maintainers: set [project.urls] Repository in pyproject.toml and run "
              "python scripts/colab_setup.py). Nothing was installed.")
    else:
        extras = "[colab]" if shutil.which("nvidia-smi") else ""  # bitsandbytes for the t4 profile on a GPU
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", f"tokencompose{{extras}} @ git+{{REPO_URL}}"],
                       check=True)
'''


def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """``[project.urls] Repository`` of ``pyproject``."""
    return tomllib.loads(pyproject.read_text())["project"]["urls"]["Repository"]


def cell_source(url: str) -> str:
    return TEMPLATE.format(url=url, placeholder=PLACEHOLDER)


def note_source(url: str, notebook: str) -> str:
    """The "Run on Colab" markdown cell with its badge (Colab opens a notebook straight from GitHub);
    ``notebook`` is the path inside ``notebooks/`` ("03_attention_capture.ipynb", "solutions/...")."""
    colab = url.replace("https://github.com/", "https://colab.research.google.com/github/")
    return NOTE.format(colab_url=f"{colab}/blob/main/notebooks/{notebook}")


def notebooks(root: Path = ROOT) -> list[Path]:
    """The lessons and their exercise solutions."""
    return sorted((root / "notebooks").glob("0*.ipynb")) + sorted((root / "notebooks" / "solutions").glob("0*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="report notebooks whose set-up cell differs; exit 1")
    args = parser.parse_args(argv)
    url = repository_url()
    source = cell_source(url)
    stale = []
    for path in notebooks():
        notebook = json.loads(path.read_text())
        cell = notebook["cells"][CELL_INDEX]
        if cell["cell_type"] != "code" or "REPO_URL" not in "".join(cell["source"]):
            raise SystemExit(f"{path}: cell {CELL_INDEX} is not the Colab set-up cell")
        note = notebook["cells"][CELL_INDEX - 1]
        if note["cell_type"] != "markdown" or "Run on Colab" not in "".join(note["source"]):
            raise SystemExit(f"{path}: cell {CELL_INDEX - 1} is not the 'Run on Colab' note")
        note_text = note_source(url, path.relative_to(ROOT / "notebooks").as_posix())
        if "".join(cell["source"]) == source and "".join(note["source"]) == note_text:
            continue
        stale.append(path.name)
        if not args.check:
            cell["source"] = source.splitlines(keepends=True)
            note["source"] = note_text.splitlines(keepends=True)
            path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    if args.check and stale:
        print(f"set-up cell differs from pyproject.toml's repository in: {', '.join(stale)}; run "
              "python scripts/colab_setup.py", file=sys.stderr)
        return 1
    print(f"{len(stale)} notebook(s) {'differ' if args.check else 'updated'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
