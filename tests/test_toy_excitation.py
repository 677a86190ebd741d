"""benchmarks/toy_excitation.py: its paired gains and their difference follow the per-image hits, a missing
fine-tune is named, and a tiny run goes end to end with its cache keyed by the model's weights."""

import json

import pytest
from repo_scripts import load_script

from tokencompose.models import build_toy_model, save_toy_model


def _record(hits):
    return {"scores": {"hits": hits, "mg": {}}, "minutes": 0.0}


def test_report_pairs_prompts_and_reads_the_difference_of_gains(tmp_path):
    script = load_script("benchmarks/toy_excitation.py")
    models = {"base": ("base", -1, tmp_path), "ldm_seed0": ("ldm", 0, tmp_path), "both_seed0": ("both", 0, tmp_path)}
    plain = [2, 3, 2, 3]                       # MG3: 2 of 4 prompts
    results = {
        "base": {"none": _record(plain), "excite": _record(plain), "attend-and-excite": _record(plain),
                 "oracle": _record(plain)},
        "ldm_seed0": {"none": _record(plain), "excite": _record([2, 3, 3, 3]), "attend-and-excite": _record(plain),
                      "oracle": _record(plain)},
        "both_seed0": {"none": _record(plain), "excite": _record([3, 4, 3, 4]),
                       "attend-and-excite": _record([3, 3, 3, 3]), "oracle": _record([2, 2, 2, 2])},
    }
    digests = dict.fromkeys(models, "digest")  # the folders are not models here
    settings = {"n": 4, "count": 4, "unseen": True, "prompt_seed": 1234, "steps": 2, "guidance": 3.0,
                "fraction": 0.4, "factor": 3.0, "batch_size": 4}
    text, numbers = script.report(results, models, digests, settings, [0], "cmd", 0.0)
    assert numbers["scores"]["both/excite"]["MG3"]["mean"] == 100.0
    assert numbers["scores"]["both/excite"]["MG4"]["mean"] == 50.0
    assert numbers["gains"]["ldm/excite"]["MG3"]["mean"] == 25.0
    assert numbers["gains"]["both/excite"]["MG3"]["mean"] == 50.0
    assert numbers["gains"]["both/oracle"]["MG3"]["mean"] == -50.0
    assert numbers["interaction"]["excite"]["MG3"]["mean"] == 25.0   # 50 - 25, prompt by prompt
    assert numbers["interaction"]["oracle"]["MG3"]["mean"] == -50.0
    assert numbers["gains"]["both/attend-and-excite"]["MG3"]["mean"] == 50.0
    assert numbers["interaction"]["attend-and-excite"]["MG3"]["mean"] == 50.0
    # per prompt (0, -100, 0, -100): mean -50, s = 57.7, 1.96 s / 2 = 56.6 -> [-106.6, 6.6], cut at -100
    assert "| oracle (layout masks) | -50.0 [-100.0, 6.6] |" in text
    assert "MG3: no difference shown (interval spans 0)" in text.split("| oracle (layout masks) | -50.0")[1]
    # excitation per prompt (100, 0, 0, 0) ... the reading follows the interval, not the mean
    assert "| excitation (nouns x3) | 25.0 [-24.0, 74.0] | " in text


def test_a_missing_fine_tune_is_named(tmp_path):
    script = load_script("benchmarks/toy_excitation.py")
    with pytest.raises(SystemExit, match="ldm_seed0 holds no finished fine-tune"):
        script.models_of(tmp_path, tmp_path / "work", [0])


def _tiny(folder, seed):
    save_toy_model(build_toy_model(sample_size=16, seed=seed), folder)
    return folder


def test_tiny_run_end_to_end_and_its_cache_follows_the_weights(tmp_path):
    script = load_script("benchmarks/toy_excitation.py")
    ablation = tmp_path / "ablation"
    for seed, variant in enumerate(("ldm", "both")):
        _tiny(ablation / f"{variant}_seed0" / "train", seed)
        (ablation / f"{variant}_seed0" / "job.json").write_text(json.dumps({"note": ""}))
    base = _tiny(tmp_path / "base", 2)
    argv = ["--ablation-work", str(ablation), "--base", str(base), "--seeds", "0", "--prompts", "2", "--steps", "2",
            "--batch-size", "2", "--threads", "1", "--work", str(tmp_path / "work"), "--results",
            str(tmp_path / "out" / "excitation")]
    assert script.main(argv) == 0
    text = (tmp_path / "out" / "excitation.md").read_text()
    assert "| L_LDM only | excitation (nouns x3) |" in text and "| + L_token + L_pixel | oracle" in text
    assert json.loads((tmp_path / "out" / "excitation.json").read_text())["interaction"]["excite"]["MG3"]["prompts"] == 2
    cached = sorted(p.name for p in (tmp_path / "work").glob("*.json"))
    assert len(cached) == 12  # 3 models x 4 modes, each under its weights' digest
    assert "| + L_token + L_pixel | Attend-and-Excite |" in text
    _tiny(ablation / "both_seed0" / "train", 3)  # retrained: new weights, new digest
    assert script.main(argv) == 0
    assert len(list((tmp_path / "work").glob("*.json"))) == 16
