"""benchmarks/demo_time.py: the table's median and the verdict against issue 16's goal (no clone is made here)."""

from repo_scripts import load_script


def test_report_takes_the_median_and_judges_both_goals():
    script = load_script("benchmarks/demo_time.py")
    runs = [{"setup": 2.0, "demo": 4.0, "total": 6.0}, {"setup": 3.0, "demo": 6.0, "total": 9.0},
            {"setup": 2.5, "demo": 4.5, "total": 7.0}]
    text = script.report(runs, "abc1234")
    assert "| median | 2.5 | 4.5 | 7.0 |" in text and "**met**" in text and "commit abc1234" in text
    slow = [dict(r, demo=r["demo"] + 1.0) for r in runs]  # total within 8 min but the demo over 5
    assert "**not met**" in script.report(slow, "abc1234")
