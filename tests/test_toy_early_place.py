"""The early-place probe (toy.probes.early_place): its measures by hand, and benchmarks/toy_early_place.py at
smoke size (a results table, a cache keyed by the weights)."""

import json

import numpy as np
import pytest
import torch
from repo_scripts import load_script

from tokencompose.config import TOY_BASE_DIR
from tokencompose.provenance import weights_digest
from tokencompose.toy.probes import PEAK_FRACTION, place_measures


def test_place_measures_by_hand():
    flat = torch.ones(2, 10, 10)
    rows = place_measures(flat, [np.zeros((10, 10), bool) | (np.arange(100).reshape(10, 10) < 20), None])
    assert rows[0]["peak"] == pytest.approx(PEAK_FRACTION)  # a flat map: its top 10% hold 10%
    assert rows[0]["overlap"] == pytest.approx(1.0)  # two flat maps are the same map
    assert rows[0]["density"] == pytest.approx(1.0)  # no preference for the region
    assert rows[1]["density"] is None  # not drawn: no region

    peaked = torch.zeros(2, 10, 10)
    peaked[0, :2, :5] = 1.0  # all of noun 0 on 10 pixels = the top 10%
    peaked[1, 5:, :] = 1.0   # noun 1 elsewhere: no overlap
    region = np.zeros((10, 10), bool)
    region[:2, :] = True  # 20 pixels, holding all of noun 0's mass on half of them
    rows = place_measures(peaked, [region, None])
    assert rows[0]["peak"] == pytest.approx(1.0)
    assert rows[0]["overlap"] == pytest.approx(0.0) and rows[1]["overlap"] == pytest.approx(0.0)
    # inside: mass 1 over 20 pixels; outside: 0 -> the ratio is very large
    assert rows[0]["density"] > 1e6
    half = torch.ones(1, 10, 10)
    half[0, :2] = 3.0  # the region holds 3x the density of elsewhere
    assert place_measures(half, [region])[0]["density"] == pytest.approx(3.0)
    assert place_measures(half, [region])[0]["overlap"] is None  # one noun: no other map


def test_early_place_script_smoke(tmp_path):
    script = load_script("benchmarks/toy_early_place.py")
    out, work = tmp_path / "results", tmp_path / "work"
    torch.set_num_threads(1)
    assert script.main(["--smoke", "--out", str(out), "--work", str(work)]) == 0
    table = (out / "toy_early_place.md").read_text()
    assert "| first 2 | drawn |" in table and "| all | missing |" in table
    result = json.loads((out / "toy_early_place.json").read_text())["base (no fine-tuning)"]
    assert set(result["bands"]) == {"first 2", "first 5", "first 10", "all"}
    assert result["settings"]["n"] == 4 and result["model"] == "tokencompose/assets/toy_base_noun"
    drawn = result["bands"]["all"]["drawn"]
    if drawn["peak"] is not None:  # a drawn noun's map is at least as peaked as a flat one
        assert drawn["peak"]["mean"] >= PEAK_FRACTION - 1e-9
    cached = list((work / "cache").glob("*.json"))
    assert len(cached) == 1 and cached[0].name.startswith(weights_digest(TOY_BASE_DIR))  # keyed by the weights
    seconds = json.loads(cached[0].read_text())["seconds"]
    assert script.main(["--smoke", "--out", str(out), "--work", str(work)]) == 0  # served from the cache
    again = json.loads((out / "toy_early_place.json").read_text())["base (no fine-tuning)"]
    assert again["seconds"] == seconds
