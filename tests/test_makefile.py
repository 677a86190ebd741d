"""The first ten minutes: `make setup` installs JupyterLab (the package's `notebooks` extra) and `make lab` opens
the notebooks; read from the Makefile and pyproject.toml as make and pip would."""

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def targets() -> dict[str, list[str]]:
    """Makefile target -> its recipe lines."""
    found: dict[str, list[str]] = {}
    current = None
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z$()_.\-/]+):", line)
        if match and not line.startswith("\t"):
            current = match.group(1)
            found[current] = []
        elif line.startswith("\t") and current is not None:
            found[current].append(line.strip())
    return found


def test_setup_installs_the_notebooks_extra_and_it_holds_jupyterlab():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.split("[")[0].split(">")[0].split("=")[0].strip() == "jupyterlab" for dep in extras["notebooks"])
    installs = [line for line in targets()["$(STAMP)"] if "pip install" in line and "-e" in line]
    assert installs and all("notebooks" in re.search(r'"\.\[([^\]]*)\]"', line).group(1).split(",")
                            for line in installs)


def test_make_lab_opens_the_notebooks_in_jupyterlab():
    recipe = targets()["lab"]
    assert any("jupyter lab" in line and "notebooks" in line for line in recipe), recipe
    assert "make lab" in (ROOT / "README.md").read_text().split("## Open the notebooks")[1][:400]
