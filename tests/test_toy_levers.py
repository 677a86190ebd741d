"""benchmarks/toy_levers.py: the levers table is read from the results files (paired gains recomputed from the
per-prompt outcomes), a gain is named only where its interval lies above 0, missing runs say so, and the
committed table is current."""

import json

from repo_scripts import load_script


def test_readings_follow_the_interval():
    script = load_script("benchmarks/toy_levers.py")
    assert script.reading({"mean": 5.0, "low": 0.5, "high": 9.5}) == "**gain**"
    assert script.reading({"mean": 5.0, "low": -0.5, "high": 10.5}) == "none shown"
    assert script.reading({"mean": -5.0, "low": -9.0, "high": -1.0}) == "loss"
    assert script.reading(None) == "not measured"


def test_paper_gains_are_table_1_differences():
    script = load_script("benchmarks/toy_levers.py")
    assert round(script.paper_gain("TokenCompose", 3), 2) == round(76.16 - 50.74, 2)
    assert round(script.paper_gain("Attend-and-Excite", 4), 2) == round(28.01 - 11.68, 2)


def _record(name, variant, seed, hits_by_prompt):
    """An ablation record with one image per prompt at CFG 3.0 on unseen 4-object prompts."""
    outcomes = [{"prompt": i, "hits": h, "count": 4} for i, h in enumerate(hits_by_prompt)]
    return {"name": name, "variant": variant, "seed": seed, "train_minutes": 2.0,
            "scores": {"3.0": {"unseen": {"4": {"outcomes": outcomes}}}}}


def test_an_ablation_gain_is_paired_prompt_by_prompt(tmp_path, monkeypatch):
    script = load_script("benchmarks/toy_levers.py")
    monkeypatch.setattr(script, "outcome_rows", lambda record, guidance, split, k, key: [
        [float(o["hits"] >= k)] for o in record["scores"][guidance][split]["4"]["outcomes"]])
    results = {"records": [_record("ldm_seed0", "ldm", 0, [2, 3, 2, 3]), _record("both_seed0", "both", 0, [3, 3, 3, 3])]}
    gain = script.ablation_gain(results, [0], 3)
    assert gain["mean"] == 50.0 and gain["prompts"] == 4
    assert script._seeds(results) == [0]


def test_missing_results_are_rows_that_say_so(tmp_path, monkeypatch):
    script = load_script("benchmarks/toy_levers.py")
    monkeypatch.setattr(script, "RESULTS", tmp_path)
    rows = script.training_rows()
    assert all(row["MG3"] is None for row in rows)
    assert {row["note"] for row in rows} <= {"results file absent", "not run yet"}
    assert script.sampling_rows() == []
    text = script.report(rows, [])
    assert "toy_ablation_cpu_noun_base.json absent" in text and "| **gain** |" not in text


def test_the_committed_table_is_current(tmp_path):
    script = load_script("benchmarks/toy_levers.py")
    assert script.main(["--check"]) == 0, "run python benchmarks/toy_levers.py"
    out = tmp_path / "levers"
    assert script.main(["--out", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["training"][0]["seeds"] == [0, 1, 2]
