"""scripts/colab_setup.py: every notebook's Colab set-up cell comes from pyproject's one repository URL, and on
Colab a placeholder URL says what to do instead of raising."""

import json
import subprocess
import sys
import zipfile

from repo_scripts import load_script


def test_every_notebook_has_the_generated_cell():
    script = load_script("scripts/colab_setup.py")
    assert script.main(["--check"]) == 0, "run python scripts/colab_setup.py"
    url = script.repository_url()
    for path in script.notebooks():
        cells = json.loads(path.read_text())["cells"]
        assert "".join(cells[2]["source"]) == script.cell_source(url)
        assert "".join(cells[1]["source"]) == script.note_source(url, path.relative_to(script.ROOT / "notebooks").as_posix())


def _run_cell(source: str, colab: bool, content) -> subprocess.CompletedProcess:
    """Execute the cell in a fresh interpreter, as if on Colab (a fake google.colab module) with ``content`` as
    /content; every command it runs is printed instead (a faked ``git clone`` makes a bare repository copy)."""
    prelude = ("import os, sys, types, subprocess\n"
               + ("sys.modules['google.colab'] = types.ModuleType('google.colab')\n" if colab else "")
               + "def fake(args, check):\n"
               + "    print('RUN', ' '.join(args))\n"
               + "    if args[0] == 'git':\n"
               + "        os.makedirs(os.path.join(args[-1], 'notebooks'))\n"
               + "        open(os.path.join(args[-1], 'pyproject.toml'), 'w').close()\n"
               + "subprocess.run = fake\n")
    return subprocess.run([sys.executable, "-c", prelude + source.replace("/content", str(content))],
                          capture_output=True, text=True, timeout=60, cwd=content)


def _repository_zip(path, top="tokencompose-main"):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{top}/pyproject.toml", "[project]\nname = 'tokencompose'\n")
        archive.writestr(f"{top}/notebooks/00_overview.ipynb", "{}")
        archive.writestr(f"{top}/tests/fixtures/pyproject.toml", "")  # a deeper one is not taken for the root


def test_the_cell_clones_the_url_of_its_form_field_and_says_so(tmp_path):
    script = load_script("scripts/colab_setup.py")
    source = script.cell_source("https://github.com/someone/tokencompose")
    assert '# @param {type:"string"}' in source.splitlines()[1]  # Colab shows REPO_URL as a form field
    real = _run_cell(source, colab=True, content=tmp_path)
    assert real.returncode == 0, real.stderr
    assert f"RUN git clone --quiet --depth 1 https://github.com/someone/tokencompose {tmp_path}/tokencompose" in real.stdout
    assert f"pip install --quiet -e {tmp_path}/tokencompose" in real.stdout
    assert "installed from the repository https://github.com/someone/tokencompose" in real.stdout


def test_the_cell_installs_an_uploaded_copy_and_says_so(tmp_path):
    script = load_script("scripts/colab_setup.py")
    _repository_zip(tmp_path / "tokencompose-main.zip")
    run = _run_cell(script.cell_source("https://github.com/<owner>/tokencompose"), colab=True, content=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "installed from the uploaded copy" in run.stdout and "git clone" not in run.stdout
    assert (tmp_path / "tokencompose" / "notebooks" / "00_overview.ipynb").is_file()
    assert f"pip install --quiet -e {tmp_path}/tokencompose" in run.stdout


def test_a_zip_without_the_repository_is_named(tmp_path):
    script = load_script("scripts/colab_setup.py")
    with zipfile.ZipFile(tmp_path / "tokencompose.zip", "w") as archive:
        archive.writestr("photo.png", "")
    run = _run_cell(script.cell_source("https://github.com/<owner>/tokencompose"), colab=True, content=tmp_path)
    assert run.returncode != 0 and "holds no pyproject.toml" in run.stderr and "RUN" not in run.stdout


def test_with_neither_an_address_nor_a_copy_the_cell_says_what_to_do(tmp_path):
    script = load_script("scripts/colab_setup.py")
    for url in ("https://github.com/<owner>/tokencompose", "", "my repo"):
        run = _run_cell(script.cell_source(url), colab=True, content=tmp_path)
        assert run.returncode == 0 and "Nothing was installed" in run.stdout and "upload a zip" in run.stdout
        assert "RUN" not in run.stdout


def test_outside_colab_the_cell_does_nothing(tmp_path):
    script = load_script("scripts/colab_setup.py")
    outside = _run_cell(script.cell_source("https://github.com/someone/tokencompose"), colab=False, content=tmp_path)
    assert outside.returncode == 0 and outside.stdout == ""


def test_the_note_has_a_badge_only_for_a_real_repository():
    script = load_script("scripts/colab_setup.py")
    assert "colab-badge" not in script.note_source("https://github.com/<owner>/tokencompose", "00_overview.ipynb")
    note = script.note_source("https://github.com/someone/tokencompose", "solutions/04_losses_solutions.ipynb")
    assert ("https://colab.research.google.com/github/someone/tokencompose/blob/main/notebooks/solutions/"
            "04_losses_solutions.ipynb") in note
