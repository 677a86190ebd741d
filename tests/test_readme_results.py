"""scripts/readme_results.py: the README's results section is copied from the result files and kept in sync."""

import re
from pathlib import Path

import pytest
from repo_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


def _module():
    return load_script("scripts/readme_results.py")


def test_results_page_and_finding_match_the_result_files():
    module = _module()
    page = ROOT / "benchmarks" / "README.md"
    assert module.updated_readme(page.read_text()) == page.read_text(), (
        "benchmarks/README.md is out of date: run `python scripts/readme_results.py`")
    for front in (ROOT / "README.md", ROOT / "notebooks" / "README.md"):
        assert module.updated_front(front.read_text()) == front.read_text(), (
            f"{front.relative_to(ROOT)}'s finding is out of date: run `python scripts/readme_results.py`")


def test_the_finding_is_copied_from_toy_levers(tmp_path):
    module = _module()
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    readme = f"intro\n{module.FINDING_BEGIN}\nold\n{module.FINDING_END}\nrest\n"
    assert "no finding yet" in module.updated_front(readme, tmp_path)  # no toy_levers.md: said, not invented
    (tmp_path / "benchmarks" / "results" / "toy_levers.md").write_text(
        f"# Levers\n{module.FINDING_BEGIN}\n| a | b |\n{module.FINDING_END}\nmore\n")
    fresh = module.updated_front(readme, tmp_path)
    assert "| a | b |" in fresh and "old" not in fresh and fresh.endswith("rest\n")


def test_links_of_the_results_page_resolve(tmp_path):
    module = _module()
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "a.md").write_text("# Alpha\n\n| x |\n")
    assert "From [`benchmarks/results/a.md`](results/a.md)." in module.summarise(results / "a.md", tmp_path)


def test_summary_takes_the_marked_block_or_the_first_table(tmp_path):
    module = _module()
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "a.md").write_text("# Alpha\n\nMeasured today on a toaster.\n\n| x | y |\n|---|---|\n| 1 | 2 |\n\n"
                                  "| other | table |\n")
    (results / "b.md").write_text("# Beta\n\n| skipped |\n\n<!-- readme:begin -->\n| kept | 3 |\n"
                                  "<!-- readme:end -->\n")
    alpha, beta = module.summarise(results / "a.md", tmp_path), module.summarise(results / "b.md", tmp_path)
    assert "### Alpha" in alpha and "Measured today on a toaster." in alpha and "| 1 | 2 |" in alpha
    assert "other" not in alpha
    assert "| kept | 3 |" in beta and "skipped" not in beta
    readme = f"intro\n{module.BEGIN}\nstale\n{module.END}\noutro\n"
    fresh = module.updated_readme(readme, tmp_path)
    assert "stale" not in fresh and "### Alpha" in fresh and fresh.endswith(f"{module.END}\noutro\n")
    with pytest.raises(ValueError, match="markers"):
        module.updated_readme("no markers", tmp_path)


def test_readme_is_short_and_its_first_screen_holds_what_a_newcomer_needs():
    readme = (ROOT / "README.md").read_text()
    lines = readme.splitlines()
    assert len(lines) <= 150
    first_screen = "\n".join(lines[:60])
    for needed in ("## Two commands", "make demo", "make test", "## Open the notebooks", "make lab", "Colab",
                   "## What we found", "do not lift composition"):
        assert needed in first_screen, needed
    for linked in ("benchmarks/README.md", "benchmarks/results/toy_levers.md", "data/reference/README.md",
                   "tokencompose/README.md"):
        assert (ROOT / linked).is_file(), linked
    for notebook in re.findall(r"\]\((notebooks/[^)]+\.ipynb)\)", readme):
        assert (ROOT / notebook).is_file(), f"the README links {notebook}, which does not exist"
    for jargon in (r"\bissue \d+", r"\bgates?\b"):
        assert not re.search(jargon, readme), jargon
