"""Toy VISOR prompts and per-image object accuracy, the paper's numbers, and the controlled toy result read
from its results file (``toy.visor``, ``evaluate.paper``, ``toy.findings``)."""

from __future__ import annotations

import json

import pytest

from tokencompose.evaluate import paper
from tokencompose.toy import findings
from tokencompose.toy.visor import is_unseen, object_accuracy_rows, toy_visor_prompts
from tokencompose.toy.world import EXCLUDED_PAIRS


# -- toy VISOR ------------------------------------------------------------------------------------------------
def test_toy_visor_prompts_cover_every_pair_relation_and_order():
    prompts = toy_visor_prompts()
    assert len(prompts) == 10 * 9 // 2 * 4 * 2  # pairs x relations x orders
    assert prompts[0]["text"] == "a circle to the left of a square"
    assert len({p["text"] for p in prompts}) == len(prompts)


def test_toy_visor_splits_follow_the_excluded_pairs():
    unseen, seen = toy_visor_prompts(split="unseen"), toy_visor_prompts(split="seen")
    assert len(unseen) == len(EXCLUDED_PAIRS) * 4 * 2 and len(seen) == 360 - len(unseen)
    excluded = {frozenset(p) for p in EXCLUDED_PAIRS}
    assert all(frozenset((p["obj_1_attributes"][0], p["obj_2_attributes"][0])) in excluded for p in unseen)
    assert not any(is_unseen(p) for p in seen)


def test_toy_visor_limit_is_a_seeded_sorted_subset():
    first, again, other = (toy_visor_prompts(12, seed=s) for s in (3, 3, 4))
    assert first == again and first != other and len(first) == 12
    ids = [p["unique_id"] for p in first]
    assert ids == sorted(ids)
    with pytest.raises(ValueError, match="split"):
        toy_visor_prompts(split="held out")
    with pytest.raises(ValueError, match="limit"):
        toy_visor_prompts(0)


def test_object_accuracy_rows_count_images_with_both_objects():
    prompt = {"unique_id": 7, "obj_1_attributes": ["circle"], "obj_2_attributes": ["star"], "text": "a circle above a star"}
    detections = {
        "7_0": {"classes": ["star", "circle"], "scores": [0.9, 0.8]},  # both
        "7_1": {"classes": ["circle"], "scores": [0.9]},  # B missing
        "7_2": {"classes": ["circle", "star"], "scores": [0.9, 0.05]},  # B below the threshold
        "7_3": {"classes": ["circle", "ring", "star"], "scores": [0.5, 0.9, 0.2]},  # both, and an extra
    }
    assert object_accuracy_rows(detections, [prompt], 4) == [[1, 0, 0, 1]]
    assert object_accuracy_rows(detections, [prompt], 4, threshold=0.3) == [[1, 0, 0, 0]]
    with pytest.raises(KeyError, match="7_4"):
        object_accuracy_rows(detections, [prompt], 5)


# -- the paper's numbers ----------------------------------------------------------------------------------------
def test_paper_gains_are_largest_at_mg3_and_attend_and_excite_leads_mg5():
    k, points = paper.largest_gain()
    assert k == 3 and points == pytest.approx(76.16 - 50.74)
    assert paper.best_method(5) == "Attend-and-Excite" and paper.best_method(3) == "TokenCompose"
    assert paper.gains("Attend-and-Excite")[4] == pytest.approx(28.01 - 11.68)
    with pytest.raises(KeyError, match="DALL-E"):
        paper.gains("DALL-E")


# -- the controlled result ------------------------------------------------------------------------------------
def _record(variant, seed, hits, miou):
    """A job record as benchmarks/toy_ablation.py stores it: 2-object prompts, one row of hits per prompt."""
    cell = {"outcomes": {"hits": hits}}
    return {"variant": variant, "seed": seed, "guidances": [3.0], "miou": {"miou": miou},
            "settings": {"steps": 40, "prompts_per_count": len(hits), "images_per_prompt": len(hits[0])},
            "scores": {"3.0": {"unseen": {"2": cell}, "seen": {"2": cell}}}}


@pytest.fixture()
def tiny_result():
    records = [_record("ldm", 0, [[2, 1], [1, 1]], 0.5), _record("both", 0, [[2, 2], [1, 2]], 0.7),
               _record("ldm", 1, [[0, 2], [2, 2]], 0.4), _record("both", 1, [[2, 2], [2, 2]], 0.6)]
    sweep = {"rows": [{"ratio": 0.1, "lambda": 1e-4, "gamma": 2e-4}, {"ratio": 0.3, "lambda": 3e-4, "gamma": 6e-4}],
             "prompts": 2, "images": 1, "steps": 40}
    return {"records": records, "ratio": 0.3, "scales": {"ldm": 0.01, "token": 2.0, "pixel": 0.5}, "sweep": sweep}


def test_controlled_comparison_pools_seeds_and_pairs_prompts(tiny_result):
    comparison = findings.controlled_comparison(tiny_result)
    assert comparison["seeds"] == [0, 1] and comparison["objects"] == 2 and comparison["steps"] == 40
    # MG2 = images with both objects: L_LDM only 1/2, 0/2, 1/2, 2/2 of its (seed, prompt) clusters -> 50%
    assert comparison["scores"]["ldm"][2]["mean"] == pytest.approx(50.0)
    assert comparison["scores"]["both"][2]["mean"] == pytest.approx(100 * (2 + 1 + 2 + 2) / 8)
    # paired per (seed, prompt): (100-50) + (50-0) + (100-50) + (100-100) over 4
    assert comparison["difference"][2]["mean"] == pytest.approx(37.5)
    assert comparison["miou"] == pytest.approx({"ldm": 0.45, "both": 0.65})
    table = findings.comparison_table(comparison)
    assert "| L_LDM only |" in table and "| + L_token + L_pixel |" in table and "difference (paired)" in table


def test_controlled_comparison_refuses_unpaired_seeds(tiny_result):
    tiny_result["records"] = tiny_result["records"][:3]  # "both" lacks seed 1
    with pytest.raises(ValueError, match="same seeds"):
        findings.controlled_comparison(tiny_result)
    with pytest.raises(KeyError, match="token"):
        findings.records_of(tiny_result, "token")


def test_reading_of_an_interval():
    assert findings.reading({"low": 0.5, "high": 3.0}) == "gain"
    assert findings.reading({"low": -3.0, "high": -0.1}) == "loss"
    assert findings.reading({"low": -1.0, "high": 2.0}) == "no difference shown"


def test_loss_weights_name_the_chosen_ratio(tiny_result):
    weights = findings.loss_weights(tiny_result)
    assert (weights["ratio"], weights["lambda"], weights["gamma"]) == (0.3, 3e-4, 6e-4)
    assert weights["scales"]["token"] == 2.0 and len(weights["sweep"]) == 2


def test_committed_result_agrees_with_the_levers_table():
    """The pooled paired MG3 / MG4 differences computed here equal those benchmarks/toy_levers.py wrote."""
    comparison = findings.controlled_comparison(findings.load_result())
    levers = json.loads((findings.RESULTS_DIR / "toy_levers.json").read_text())
    (row,) = [r for r in levers["training"] if r["source"] == findings.ABLATION_RESULT]
    for k in (3, 4):
        assert comparison["difference"][k]["mean"] == pytest.approx(row[f"MG{k}"]["mean"])
        assert comparison["difference"][k]["low"] == pytest.approx(row[f"MG{k}"]["low"])
    with pytest.raises(FileNotFoundError, match="no results file"):
        findings.load_result("no_such_result")
