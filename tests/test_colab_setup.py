"""scripts/colab_setup.py: every notebook's Colab set-up cell comes from pyproject's one repository URL, and on
Colab a placeholder URL says what to do instead of raising."""

import json
import subprocess
import sys

from repo_scripts import load_script


def test_every_notebook_has_the_generated_cell():
    script = load_script("scripts/colab_setup.py")
    assert script.main(["--check"]) == 0, "run python scripts/colab_setup.py"
    url = script.repository_url()
    for path in script.notebooks():
        cells = json.loads(path.read_text())["cells"]
        assert "".join(cells[2]["source"]) == script.cell_source(url)
        assert path.name in "".join(cells[1]["source"])  # the badge opens this notebook


def _run_cell(source: str, colab: bool) -> subprocess.CompletedProcess:
    """Execute the cell in a fresh interpreter, as if on Colab (a fake google.colab module), with pip faked."""
    prelude = ("import sys, types, subprocess\n"
               + ("sys.modules['google.colab'] = types.ModuleType('google.colab')\n" if colab else "")
               + "subprocess.run = lambda args, check: print('PIP', ' '.join(args[3:]))\n")
    return subprocess.run([sys.executable, "-c", prelude + source], capture_output=True, text=True, timeout=60)


def test_the_cell_installs_from_the_url_and_explains_a_placeholder():
    script = load_script("scripts/colab_setup.py")
    placeholder = _run_cell(script.cell_source("https://github.com/<owner>/tokencompose"), colab=True)
    assert placeholder.returncode == 0 and "does not know its repository" in placeholder.stdout
    assert "PIP" not in placeholder.stdout
    real = _run_cell(script.cell_source("https://github.com/someone/tokencompose"), colab=True)
    assert real.returncode == 0 and "git+https://github.com/someone/tokencompose" in real.stdout
    outside = _run_cell(script.cell_source("https://github.com/someone/tokencompose"), colab=False)
    assert outside.returncode == 0 and outside.stdout == ""
