"""tokencompose.results: the headline blocks and titles read from committed result files."""

from tokencompose.results import readme_blocks, title

RESULTS = """# Toy-world ablation (preset `cpu`)

Measured 2026-11-27 on a 2-core CPU.

<!-- readme:begin -->
| variant | MG3 |
|---|---|
| both | 16.4 |
<!-- readme:end -->

Not a headline.

<!-- readme:begin -->
Verdict: not reproduced.
<!-- readme:end -->
"""


def test_readme_blocks_returns_each_block_in_order_without_markers():
    blocks = readme_blocks(RESULTS)
    assert len(blocks) == 2
    assert blocks[0].startswith("| variant | MG3 |") and "| both | 16.4 |" in blocks[0]
    assert blocks[1].strip() == "Verdict: not reproduced."
    assert not any("readme:" in block or "Not a headline" in block for block in blocks)


def test_readme_blocks_is_empty_without_markers_and_ignores_an_unclosed_block():
    assert readme_blocks("# Title\n\n| a |\n|---|\n") == []
    assert readme_blocks("<!-- readme:begin -->\nnever closed\n") == []


def test_title_is_the_first_level_one_heading_or_the_default():
    assert title(RESULTS) == "Toy-world ablation (preset `cpu`)"
    assert title("no heading here\n## only a subheading", default="fallback") == "fallback"


def test_repository_path_names_folders_inside_the_checkout_relative_to_it(tmp_path):
    from tokencompose.results import repository_path

    assert repository_path(tmp_path / "repo" / "assets" / "base", root=tmp_path / "repo") == "assets/base"
    assert repository_path(tmp_path / "elsewhere", root=tmp_path / "repo") == str(tmp_path / "elsewhere")


LEVERS = """# Levers

<!-- finding:begin -->
| | paper | toy |
|---|---|---|
| MG3 gain | +25.4 | -2.0 |
<!-- finding:end -->

<!-- readme:begin -->
| lever | gain |
<!-- readme:end -->
"""


def test_finding_block_is_the_table_between_the_finding_markers_only():
    from tokencompose.results import finding_block

    block = finding_block(LEVERS)
    assert block.splitlines() == ["| | paper | toy |", "|---|---|---|", "| MG3 gain | +25.4 | -2.0 |"]
    assert finding_block("<!-- readme:begin -->\n| a |\n<!-- readme:end -->\n") == ""
    assert finding_block("<!-- finding:begin -->\nnever closed\n") == ""


def test_finding_table_reads_the_repository_file_and_refuses_a_missing_one(tmp_path):
    import pytest

    from tokencompose.results import FINDING_FILE, finding_table

    (tmp_path / FINDING_FILE).parent.mkdir(parents=True)
    (tmp_path / FINDING_FILE).write_text(LEVERS, encoding="utf-8")
    assert "| MG3 gain | +25.4 | -2.0 |" in finding_table(tmp_path)
    (tmp_path / FINDING_FILE).write_text("# Levers\n\nno block yet\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="toy_levers.py"):
        finding_table(tmp_path)
    with pytest.raises(FileNotFoundError):
        finding_table(tmp_path / "elsewhere")


def test_the_committed_finding_names_the_paper_and_the_l_ldm_only_control():
    from tokencompose.results import finding_table

    table = finding_table()
    assert "paper, SD 1.4" in table and "L_LDM only" in table and "oracle layout" in table


def test_levers_readings_group_by_the_interval():
    from tokencompose.results import levers_readings

    levers = {"training": [{"lever": "a", "MG3": {"mean": 3, "low": 1, "high": 5}},
                           {"lever": "b", "MG3": {"mean": -1, "low": -4, "high": 2}},
                           {"lever": "c", "MG3": None}],
              "sampling": [{"lever": "d", "model": "base", "MG3": {"mean": -9, "low": -12, "high": -6}}]}
    assert levers_readings(levers) == {"gain": ["a"], "loss": ["d (base)"], "none shown": ["b"],
                                       "not measured": ["c"]}
