"""demo.py: the main job runs end to end (tiny sizes) and writes its report with figures and both models."""

from tokencompose.models import build_toy_model, save_toy_model
from tokencompose.toy.ablation import AblationSettings
from tokencompose.toy.demo import cli, run_demo


def test_demo_end_to_end_on_a_tiny_budget(tmp_path):
    base = save_toy_model(build_toy_model(), tmp_path / "base")
    settings = AblationSettings(steps=2, batch_size=2, prompts_per_count=1, images_per_prompt=1, sample_steps=2,
                                counts=(2,))
    report = run_demo(tmp_path / "demo", settings, str(base))
    text = report.read_text()
    # one row per model, MG_1 and MG_2 of each split with an interval, and the exact-match share
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "seen MG2" in rows["model"] and "unseen MG1" in rows["model"] and "nothing extra" in rows["model"]
    for model in ("L_LDM only", "+ L_token + L_pixel"):
        assert rows[model].count("[") == 4, rows[model]  # mean [low, high] for MG1, MG2 x seen, unseen
    for figure in ("attention.png", "losses.png", "samples_base.png"):
        assert (tmp_path / "demo" / figure).stat().st_size > 1000, figure
    assert (tmp_path / "demo" / "ldm_seed0" / "log.csv").is_file()


def test_demo_without_base_says_how_to_build_it(tmp_path, capsys):
    try:
        cli(["--base", str(tmp_path / "missing")])
    except SystemExit as exit_:
        assert exit_.code == 2
    assert "pretrain-toy" in capsys.readouterr().err


def _runs(ldm_hits, both_hits):
    def scores(hits):
        return {"unseen": {4: {"outcomes": {"hits": hits}}}}
    return [{"variant": "ldm", "scores": scores(ldm_hits)}, {"variant": "both", "scores": scores(both_hits)}]


def test_the_verdict_follows_the_paired_interval_of_unseen_mg3():
    from tokencompose.toy.demo import verdict

    prompts = 12
    low = [[2, 2]] * prompts  # 2 of 4 named objects in every image: MG3 0%
    high = [[3, 4]] * prompts  # MG3 100%
    noisy = [[3, 2], [2, 3]] * (prompts // 2)  # MG3 50%, the same on every pair of prompts
    assert "composed more" in verdict(_runs(low, high)) and "MG_3" in verdict(_runs(low, high))
    assert "composed fewer" in verdict(_runs(high, low))
    same = verdict(_runs(noisy, [[2, 3], [3, 2]] * (prompts // 2)))
    assert "contains 0" in same and "0.0 [" in same
    assert verdict([{"variant": "both", "scores": {}}]) == ""  # no baseline: nothing to say
