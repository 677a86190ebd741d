"""scripts/readme_results.py: the README's results section is copied from the result files and kept in sync."""

from pathlib import Path

import pytest
from repo_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


def _module():
    return load_script("scripts/readme_results.py")


def test_readme_results_section_matches_the_result_files():
    module = _module()
    assert module.updated_readme((ROOT / "README.md").read_text()) == (ROOT / "README.md").read_text(), (
        "README.md is out of date: run `python scripts/readme_results.py`")


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
