"""benchmarks/toy_oracle_bands.py and the oracle's band and overlap (probes.AttentionEdit, probes.intervention):
the blended layout's overlap is the histogram intersection it promises, a band edits only its steps, the
report's readings follow the intervals, and a tiny run shares its plain and 0-10 oracle runs with
toy_excitation.py's cache."""

import json

import pytest
import torch
from repo_scripts import load_script

from tokencompose.models import build_toy_model, save_toy_model
from tokencompose.toy.probes import AttentionEdit, intervention


def _two_objects(side=8):
    masks = torch.zeros(2, side, side)
    masks[0, :4, :4] = 1
    masks[1, 4:, 4:] = 1
    return masks


@pytest.mark.parametrize("overlap", [0.0, 0.5, 0.75])
def test_overlap_is_the_histogram_intersection_of_two_disjoint_objects(overlap):
    edit = AttentionEdit("oracle", [[[1], [2]]], [_two_objects()], overlap=overlap)
    maps = edit.layout_maps(0, 8)
    assert torch.allclose(maps.sum(-1), torch.ones(2))
    assert torch.minimum(maps[0], maps[1]).sum().item() == pytest.approx(overlap, abs=1e-6)
    # each noun keeps most of its mass on its own object while overlap < 1
    own = maps[0].reshape(8, 8)[:4, :4].sum().item()
    assert own == pytest.approx(1 - overlap + overlap / 2, abs=1e-6)


def test_overlap_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="overlap must lie in"):
        AttentionEdit("oracle", [[[1]]], [_two_objects()], overlap=1.5)


def test_an_edit_changes_only_its_noun_tokens_and_keeps_rows_normalised():
    edit = AttentionEdit("oracle", [[[1], [2]]], [_two_objects()], guided=False, overlap=0.5)
    probs = torch.softmax(torch.randn(1, 2, 64, 5), -1)
    out = edit("up_8", probs)
    assert torch.allclose(out.sum(-1), torch.ones(1, 2, 64))
    # the edited nouns' maps, renormalised rows aside, follow the layout: noun 1 puts more mass on its object
    noun1 = out[0, :, :, 1].reshape(2, 8, 8)
    assert (noun1[:, :4, :4].sum((-1, -2)) > noun1[:, 4:, 4:].sum((-1, -2))).all()


def _tiny(folder, seed):
    save_toy_model(build_toy_model(sample_size=16, seed=seed), folder)
    return folder


def test_a_band_edits_only_its_steps(tmp_path):
    model = _tiny(tmp_path / "m", 0)
    full = intervention(model, "oracle", n=2, steps=4, band=(0, 4), batch_size=2)
    none = intervention(model, "oracle", n=2, steps=4, band=(3, 4), batch_size=2)
    assert full["n"] == none["n"] == 2
    with pytest.raises(ValueError, match="must satisfy 0 <= first < stop <= steps"):
        intervention(model, "oracle", n=2, steps=4, band=(2, 6))
    with pytest.raises(ValueError, match="must satisfy"):
        intervention(model, "oracle", n=2, steps=4, band=(2, 2))


def _record(hits):
    return {"scores": {"hits": hits, "mg": {}}, "minutes": 0.0}


def test_readings_follow_the_intervals(tmp_path):
    script = load_script("benchmarks/toy_oracle_bands.py")
    labels = list(script.variants(25, 10))
    assert labels[0] == "plain" and "oracle, steps 10-25 only" in labels
    n = 40
    plain = [2] * n
    hits = {"plain": plain,
            "oracle, steps 0-1": [2] * n, "oracle, steps 0-2": [2] * n,
            "oracle, steps 0-5": [3] * 36 + [2] * 4,           # 90% of the full gain
            "oracle, steps 0-10": [3] * n, "oracle, steps 0-25": [3] * n,
            "oracle, steps 10-25 only": [2] * n,
            "oracle, steps 0-10, overlap 0.5": [3] * 20 + [2] * 20,
            "oracle, steps 0-10, overlap 0.75": [2] * n}
    results = {"ldm_seed0": {label: _record(h) for label, h in hits.items()}}
    models = {"ldm_seed0": ("ldm", 0, tmp_path)}
    settings = {"n": n, "count": 4, "prompt_seed": 1234, "guidance": 3.0}
    text, numbers = script.report(results, models, {"ldm_seed0": "d"}, settings, labels, [0], "cmd", 0.0, 25, 10)
    assert numbers["gains"]["ldm"]["oracle, steps 0-5"]["MG3"]["mean"] == 90.0
    assert numbers["overlap_cost"]["ldm"]["MG3"]["mean"] == -100.0
    reading = text.split("## Reading")[1]
    assert "the first 5 of 25 steps already give at least 80%" in reading
    assert "lifts nothing shown" in reading
    assert "exclusivity carries part of the oracle's effect" in reading and "leaves no gain shown" in reading


def test_tiny_run_shares_the_excitation_cache(tmp_path):
    bands = load_script("benchmarks/toy_oracle_bands.py")
    excitation = load_script("benchmarks/toy_excitation.py")
    ablation = tmp_path / "ablation"
    for seed, variant in enumerate(("ldm", "both")):
        _tiny(ablation / f"{variant}_seed0" / "train", seed)
        (ablation / f"{variant}_seed0" / "job.json").write_text(json.dumps({"note": ""}))
    base = _tiny(tmp_path / "base", 2)
    common = ["--ablation-work", str(ablation), "--base", str(base), "--seeds", "0", "--prompts", "2", "--steps",
              "8", "--fraction", "0.75", "--batch-size", "2", "--threads", "1", "--work", str(tmp_path / "work")]
    assert excitation.main(common + ["--results", str(tmp_path / "out" / "excitation")]) == 0
    before = len(list((tmp_path / "work").glob("*.json")))
    assert bands.main(common + ["--results", str(tmp_path / "out" / "bands")]) == 0
    # 9 variants a model, of which plain and the 0-6 oracle were cached by toy_excitation.py
    assert len(list((tmp_path / "work").glob("*.json"))) == before + 3 * 7
    text = (tmp_path / "out" / "bands.md").read_text()
    assert "| + L_token + L_pixel | steps 0-6, overlap 0.75 |" in text and "## Reading" in text
    with pytest.raises(SystemExit):
        bands.main(common + ["--fraction", "0.1"])
