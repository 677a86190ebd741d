"""benchmarks/toy_sampling.py: its verdict follows the numbers, and its smoke size runs end to end."""

from repo_scripts import load_script


def test_conclusion_takes_only_a_faster_faithful_setting():
    script = load_script("benchmarks/toy_sampling.py")
    reference = ("float32", 10.0, 100, 100.0, 0, 40.0)
    faithful = ("bf16", 15.0, 100, 99.5, 3, 40.0)
    different = ("bf16 other", 16.0, 100, 64.0, 255, 46.0)
    slow = ("big batch", 9.0, 100, 100.0, 0, 40.0)
    assert script.conclusion([reference, faithful, different]).startswith("use bf16 (1.50x")
    verdict = script.conclusion([reference, different, slow])
    assert verdict.startswith("keep float32") and "36.0%" in verdict and "bf16 other" in verdict
    assert "nothing measured here is faster" in script.conclusion([reference, slow])


def test_smoke_run_writes_a_table(tmp_path):
    script = load_script("benchmarks/toy_sampling.py")
    out = tmp_path / "toy_sampling.md"
    assert script.main(["--smoke", "--images", "4", "--steps", "1", "--threads", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| float32, batch 64 (before) |" in text and "| bfloat16 autocast, batch 64 |" in text
    assert "**Decision:**" in text
