"""benchmarks/toy_base_gates.py at smoke size: measures a model, writes the side-by-side table, and refuses a
measurement whose model folder now holds other weights."""

import json

import pytest
import torch
from repo_scripts import load_script

from tokencompose.models import build_toy_model, save_toy_model
from tokencompose.toy.probes import GATES, gate_verdicts


def _folder(path, colour_mode):
    components = build_toy_model(sample_size=16, padding="zero" if colour_mode == "attribute" else "encoded")
    save_toy_model(components, path)
    (path / "pretrain_settings.json").write_text(json.dumps({"colour_mode": colour_mode}))
    return components


def test_gates_script_measures_tables_and_refuses_stale_rows(tmp_path):
    script = load_script("benchmarks/toy_base_gates.py")
    components = _folder(tmp_path / "new", "attribute")
    _folder(tmp_path / "old", "identity")
    out, target = tmp_path / "results", tmp_path / "gates.md"
    report = script.measure(tmp_path / "new", "new base", out, smoke=True)
    script.measure(tmp_path / "old", "control", out, smoke=True)
    assert set(report["gates"]) and all(isinstance(g["met"], bool) for g in report["gates"].values())
    assert report["seen"][4]["n"] == 4 and set(report["intervention"]) == {"none", "oracle", "excite"}
    text = script.table(out, target)
    assert "| new base |" in text and "| control |" in text and "oracle attention" in text
    assert target.read_text() == text
    # retrain (here: perturb) the new base: its row is stale and the table says so
    with torch.no_grad():
        next(components.unet.parameters()).add_(0.5)
    save_toy_model(components, tmp_path / "new")
    with pytest.raises(SystemExit, match="measure it again"):
        script.table(out, target)


def _report(one=0.97, spec=(1.1, 2.5), miou=0.4, four_all=0.3, missing=0.7):
    return {"supervised_groups": ["mid_8", "up_16"],
            "specificity": {"mid_8": {"specificity": spec[0]}, "up_16": {"specificity": spec[1]}},
            "seen": {1: {"exact": one}, 4: {"all_named": four_all, "errors": {"missing": missing}}},
            "noun_miou": {"miou": miou}}


def test_gate_verdicts_by_hand():
    met = gate_verdicts(_report())
    assert all(v["met"] for v in met.values())
    assert met["specificity"]["group"] == "up_16"
    failed = gate_verdicts(_report(one=0.9, spec=(1.9, 1.0), miou=0.2, four_all=0.7, missing=0.3))
    assert not any(v["met"] for v in failed.values())
    assert GATES["specificity"] == 2.0 and GATES["noun_miou"] == 0.35


def test_gates_script_reuses_the_cards_measurements_only_for_the_same_weights(tmp_path):
    from tokencompose.provenance import weights_digest
    from tokencompose.toy.pretrain import save_gates

    script = load_script("benchmarks/toy_base_gates.py")
    components = _folder(tmp_path / "new", "attribute")
    before = weights_digest(tmp_path / "new")
    report = script.measure(tmp_path / "new", "new base", tmp_path / "scratch", smoke=True)
    saved = save_gates(tmp_path / "new", {k: v for k, v in report.items() if k != "label"} | {"marker": 1}, 2.0)
    assert weights_digest(tmp_path / "new") == before  # the measurements do not change the weights' digest
    assert json.loads(saved.read_text())["digest"] == before
    reused = script.measure(tmp_path / "new", "new base", tmp_path / "results", smoke=False)
    assert reused["marker"] == 1 and reused["label"] == "new base"
    with torch.no_grad():  # other weights in the folder: the saved file is not used
        next(components.unet.parameters()).add_(0.5)
    save_toy_model(components, tmp_path / "new")
    assert script.saved_report(tmp_path / "new") is None
