"""Write the Colab set-up cell into every notebook, from the repository URL in ``pyproject.toml``.

The URL lives in one place, ``[project.urls] Repository``. A fork sets its own URL there and runs::

    python scripts/colab_setup.py          # rewrite the set-up cell (cell 2) of notebooks/0*.ipynb and solutions/
    python scripts/colab_setup.py --check  # exit 1 if a notebook's cell differs (the tests run this)

The cell does nothing outside Colab (a checkout has run ``make setup``). On Colab it installs the package, with
bitsandbytes on a GPU runtime (8-bit AdamW, the ``t4`` training profile), from a copy of the repository: one
already at ``/content/tokencompose``, else a zip the user uploaded (``/content/tokencompose*.zip``), else a clone
of the address in its form field (``REPO_URL``, prefilled from pyproject), and says which. With none of them it
says what to do and installs nothing. While pyproject's URL is the placeholder, the note above the cell has no
badge (it would open a repository that does not exist) and says how to open the notebook on Colab instead.
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
On Colab, run the next cell first. It installs the package from the repository named in its form field
(prefilled with this project's address), or from a copy you upload as a zip (`tokencompose*.zip`, in the Files
panel under `/content`), and says which it did; bitsandbytes comes with it on a GPU runtime (the `t4` training
profile). In a checkout of the repository `make setup` has already installed everything and the cell does nothing.
"""

NOTE_NO_URL = """### Run on Colab
On Colab (colab.research.google.com, *File > Upload notebook*, this file), run the next cell first. It installs
the package from the repository you paste into its form field (`REPO_URL`), or from a copy of the repository you
upload as a zip (`tokencompose*.zip`, in the Files panel under `/content`), and says which it did. In a checkout
of the repository `make setup` has already installed everything and the cell does nothing. (Maintainers: set
`[project.urls] Repository` in `pyproject.toml` and run `python scripts/colab_setup.py`: the field is then
prefilled and a badge here opens this notebook on Colab.)
"""

TEMPLATE = '''# Run on Colab: install tokencompose (in a checkout `make setup` already did, and this cell does nothing).
REPO_URL = "{url}"  # @param {{type:"string"}}
import glob, os, shutil, subprocess, sys, zipfile  # noqa: E401

if "google.colab" in sys.modules:
    home = "/content/tokencompose"  # the repository's copy: package, notebooks and data/reference/
    uploads = sorted(glob.glob("/content/tokencompose*.zip"))
    if os.path.isfile(f"{{home}}/pyproject.toml"):
        source = f"the copy already at {{home}}"
    elif uploads:  # a copy of the repository uploaded as a zip
        with zipfile.ZipFile(uploads[-1]) as archive:
            archive.extractall("/content/upload")
        found = sorted(glob.glob("/content/upload/**/pyproject.toml", recursive=True), key=len)
        if not found:
            raise SystemExit(f"{{uploads[-1]}} holds no pyproject.toml: upload a zip of the whole repository")
        shutil.move(os.path.dirname(found[0]), home)
        source = f"the uploaded copy {{uploads[-1]}}"
    elif REPO_URL.startswith(("https://", "git@")) and "{placeholder}" not in REPO_URL:
        subprocess.run(["git", "clone", "--quiet", "--depth", "1", REPO_URL, home], check=True)
        source = f"the repository {{REPO_URL}}"
    else:
        source = None
        print(f"Nothing was installed: REPO_URL ({{REPO_URL!r}}) is not a repository address. Paste the address of "
              "the repository that holds tokencompose into the form field above, or upload a zip of the "
              "repository (tokencompose*.zip) to /content, then run this cell again.")
    if source:
        extras = "[colab]" if shutil.which("nvidia-smi") else ""  # bitsandbytes for the t4 profile on a GPU
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", f"{{home}}{{extras}}"], check=True)
        subprocess.run([sys.executable, "-m", "tokencompose", "setup-tokenizer"], check=True)
        sys.path.insert(0, home)  # this kernel sees the editable install without a restart
        os.chdir(f"{{home}}/notebooks")
        print(f"tokencompose installed from {{source}}; working folder {{home}}/notebooks")
'''


def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """``[project.urls] Repository`` of ``pyproject``."""
    return tomllib.loads(pyproject.read_text())["project"]["urls"]["Repository"]


def cell_source(url: str) -> str:
    return TEMPLATE.format(url=url, placeholder=PLACEHOLDER)


def note_source(url: str, notebook: str) -> str:
    """The "Run on Colab" markdown cell with its badge (Colab opens a notebook straight from GitHub);
    ``notebook`` is the path inside ``notebooks/`` ("03_attention_capture.ipynb", "solutions/...")."""
    if PLACEHOLDER in url:
        return NOTE_NO_URL
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
