"""ablation.py: held-out prompts are seen or unseen combinations as asked; bad variants are refused."""

import pytest

from tokencompose.toy.ablation import VARIANTS, held_out_prompts, run_ablation
from tokencompose.toy.world import EXCLUDED_PAIRS


def contains_excluded_pair(objects):
    return sum(set(pair) <= set(objects) for pair in EXCLUDED_PAIRS)


@pytest.mark.parametrize("count", [2, 3, 4])
def test_unseen_prompts_hold_exactly_one_excluded_pair(count):
    prompts = held_out_prompts(50, count, unseen=True, seed=1)
    assert all(len(p.objects) == count == len(set(p.objects)) for p in prompts)
    assert all(contains_excluded_pair(p.objects) == 1 for p in prompts)
    assert all(all(name in p.text for name in p.objects) for p in prompts)


@pytest.mark.parametrize("count", [2, 3, 4])
def test_seen_prompts_hold_none(count):
    prompts = held_out_prompts(50, count, unseen=False, seed=1)
    assert all(contains_excluded_pair(p.objects) == 0 for p in prompts)


def test_prompts_are_deterministic_and_differ_by_seed():
    assert held_out_prompts(10, 3, True, seed=5) == held_out_prompts(10, 3, True, seed=5)
    assert held_out_prompts(10, 3, True, seed=5) != held_out_prompts(10, 3, True, seed=6)


def test_variants_are_table_two_and_unknown_ones_are_refused(tmp_path):
    assert VARIANTS == {"ldm": (False, False), "pixel": (False, True), "token": (True, False), "both": (True, True)}
    with pytest.raises(ValueError, match="unknown variant"):
        run_ablation(["ldm", "tokens"], out_dir=tmp_path)


# ---- statistics of the ablation (tokencompose.toy.ablation + benchmarks/toy_ablation.py) ----

import math  # noqa: E402

from repo_scripts import ROOT, load_script  # noqa: E402

from tokencompose.evaluate.multigen import MultiGenPrompt  # noqa: E402
from tokencompose.toy import ablation  # noqa: E402
from tokencompose.toy.ablation import image_outcomes, weights_for_ratio  # noqa: E402


def _bench():
    return load_script("benchmarks/toy_ablation.py")


def test_image_outcomes_scores_hits_all_named_and_exact():
    prompts = [MultiGenPrompt(0, ("circle", "star"), "a photo of a circle and a star."),
               MultiGenPrompt(1, ("bar", "ring"), "a photo of a bar and a ring.")]
    detections = {
        "0_0": {"classes": ["circle", "star"], "scores": [0.9, 0.8]},           # exact
        "0_1": {"classes": ["circle", "star", "bar"], "scores": [0.9, 0.8, 0.7]},  # all named, one extra
        "1_0": {"classes": ["bar", "ring"], "scores": [0.9, 0.05]},             # ring below the threshold
        "1_1": {"classes": [], "scores": []},
    }
    outcomes = image_outcomes(detections, prompts, images_per_prompt=2)
    assert outcomes == {"hits": [[2, 2], [1, 0]], "all_named": [[1, 1], [0, 0]], "exact": [[1, 0], [0, 0]]}
    with pytest.raises(KeyError, match="0_2"):
        image_outcomes(detections, prompts, images_per_prompt=3)


def test_weights_for_ratio_match_the_ratio_of_terms():
    scales = {"ldm": 0.02, "token": 2.0, "pixel": 0.5}
    lam, gam = weights_for_ratio(scales, 0.1)
    assert lam * scales["token"] == pytest.approx(0.1 * scales["ldm"])
    assert gam * scales["pixel"] == pytest.approx(0.1 * scales["ldm"])
    with pytest.raises(ValueError):
        weights_for_ratio(scales, -1)


def _record(variant, seed, rate, miou):
    """A fake job record: 4-object prompts, 20 prompts x 4 images a split; a share ``rate`` of the images show all
    4 named objects, the others 1 (so MG1 = 100%, MG2..MG4 = rate)."""
    def rows(share, high, low):
        count = round(share * 80)
        flat = [high] * count + [low] * (80 - count)
        return [flat[i::20] for i in range(20)]  # spread evenly over the prompts
    outcomes = {"hits": rows(rate, 4, 1), "all_named": rows(rate, 1, 0), "exact": rows(rate / 2, 1, 0)}
    cells = {s: {"4": {"outcomes": outcomes}} for s in ("seen", "unseen")}
    return {"name": f"{variant}_seed{seed}", "variant": variant, "seed": seed, "scores": {"3.0": cells},
            "miou": {"miou": miou}, "losses": {}, "train_minutes": 0, "eval_minutes": 0}


@pytest.mark.parametrize("both_rate, expected", [(0.8, "**Reproduced**"), (0.3, "**Not reproduced**")])
def test_verdicts_are_decided_by_the_numbers(both_rate, expected):
    bench = ablation  # the plan's verdicts live in the package; the benchmark script only calls them
    rates = {"ldm": 0.3, "pixel": 0.3, "token": 0.6, "both": both_rate}
    miou = {"ldm": 0.2, "pixel": 0.25, "token": 0.5, "both": 0.6}
    by_variant = {v: [_record(v, s, rates[v], miou[v]) for s in (0, 1)] for v in VARIANTS}
    lines = bench.verdicts(by_variant, "3.0", [0, 1])
    assert sum(expected in line for line in lines[:2]) == 2
    ordering = [line for line in lines if "ordering" in line]
    assert all(("**Holds**" in line) == (both_rate >= 0.6) for line in ordering)
    assert "**Higher**" in lines[-1]
    diff = bench.paired_difference(by_variant["both"][0], by_variant["ldm"][0], "3.0", "unseen", 3)
    assert diff["mean"] == pytest.approx(100 * (both_rate - 0.3), abs=1e-6)
    first = bench.pooled(by_variant["ldm"], "3.0", "unseen", 1)  # every image has >= 1 named object
    assert first["mean"] == pytest.approx(100.0) and bench.pooled(by_variant["ldm"], "3.0", "unseen", 4)["mean"] \
        == pytest.approx(30.0)
    assert bench.pooled(by_variant["ldm"], "3.0", "unseen", key="exact")["mean"] == pytest.approx(15.0)
    with pytest.raises(ValueError, match="1 <= k <= 4"):
        bench.pooled(by_variant["ldm"], "3.0", "unseen", 5)


def test_sweep_row_scores_the_mean_of_seen_and_unseen_mg_and_sets_the_weights():
    record = {"variant": "both", "seed": 0, "scores": {"3.0": {
        split: _record("both", 0, rate, 0.1)["scores"]["3.0"]["unseen"] for split, rate in (("seen", 0.2), ("unseen", 0.6))}}}
    row = ablation.sweep_row(record, 0.1, {"ldm": 0.01, "token": 0.5, "pixel": 2.0}, ks=(3,))
    assert row["mg"]["3"] == pytest.approx(40.0) and row["score"] == pytest.approx(40.0)
    assert (row["lambda"], row["gamma"]) == pytest.approx((0.1 * 0.01 / 0.5, 0.1 * 0.01 / 2.0))


def test_benchmarks_import_nothing_from_benchmarks():
    """Issue 14: the experiment lives in the package; a benchmark script is a thin caller that writes results."""
    for script in (ROOT / "benchmarks").glob("*.py"):
        text = script.read_text()
        assert 'str(REPO_ROOT / "benchmarks")' not in text, script
        for other in (ROOT / "benchmarks").glob("*.py"):
            assert f"import {other.stem}" not in text and f"from {other.stem} import" not in text, (script, other)


def test_measured_results_reads_the_marked_blocks(tmp_path):
    from tokencompose.toy.ablation import measured_results

    (tmp_path / "toy_ablation_cpu.md").write_text(
        "# Toy-world ablation\n\nMeasured today.\n\n| hidden |\n<!-- readme:begin -->\n| shown |\n<!-- readme:end -->\n")
    (tmp_path / "other.md").write_text("# not an ablation\n")
    (tmp_path / "toy_investigation_cpu.md").write_text("# Investigation\n")
    (tmp_path / "toy_investigation_cpu.png").write_bytes(b"png")
    entries = measured_results(tmp_path)
    assert [e["name"] for e in entries] == ["toy_ablation_cpu", "toy_investigation_cpu"]
    assert entries[1]["figure"] == tmp_path / "toy_investigation_cpu.png"
    assert "| shown |" in entries[0]["summary"] and "hidden" not in entries[0]["summary"]
    assert "Measured today." in entries[0]["summary"] and entries[0]["figure"] is None
    assert measured_results(tmp_path / "missing") == []


def test_loss_profile_reports_every_group_and_sums_the_supervised_ones():
    from tokencompose.toy.ablation import loss_profile, loss_scales

    profile = loss_profile(batches=1, batch_size=2, seed=3, groups=("down_16", "mid_8", "up_16"))
    for kind in ("token", "pixel"):
        parts = [profile[f"{kind}/{g}"] for g in ("down_16", "mid_8", "up_16")]
        assert all(value > 0 for value in parts)
        assert math.isclose(profile[kind], sum(parts), rel_tol=1e-5)
    assert 0 < profile["ldm"] < 1
    scales = loss_scales(batches=1, batch_size=2, seed=3)  # the toy preset's groups: mid_8 + up_16
    assert set(scales) == {"ldm", "token", "pixel"}
    assert math.isclose(scales["ldm"], profile["ldm"], rel_tol=1e-5)
    assert math.isclose(scales["token"], profile["token/mid_8"] + profile["token/up_16"], rel_tol=1e-4)
    with pytest.raises(ValueError, match="not in the recorded attention maps"):
        loss_profile(batches=1, batch_size=2, groups=("up_32",))


def test_attention_before_after_one_row_per_model(tmp_path):
    from tokencompose.models import build_toy_model, save_toy_model
    from tokencompose.toy.ablation import attention_before_after

    first = save_toy_model(build_toy_model(sample_size=16, seed=0), tmp_path / "a")
    second = save_toy_model(build_toy_model(sample_size=16, seed=1), tmp_path / "b")
    prompts = held_out_prompts(2, 2, unseen=True, seed=5)
    figure = attention_before_after({"a": first, "b": second}, prompts, steps=2)
    assert len(figure.axes) == 2 * 2 * (1 + 2) + 1  # + one colour bar shared by every heat map
    assert [ax.get_ylabel() for ax in figure.axes[:-1:6]] == ["a", "b"]
    assert figure.axes[1].get_title() == prompts[0].objects[0]


def test_ablation_and_investigation_scripts_run_end_to_end(tmp_path):
    """The smoke presets of benchmarks/toy_ablation.py and benchmarks/toy_investigation.py (tiny sizes)."""
    bench, investigation = _bench(), load_script("benchmarks/toy_investigation.py")
    with pytest.raises(SystemExit, match="run `python benchmarks/toy_ablation.py --preset smoke` first"):
        investigation.main(["--preset", "smoke", "--ablation-work", str(tmp_path / "missing")])
    results = tmp_path / "results"
    assert bench.main(["--preset", "smoke", "--seeds", "0", "--ratio", "0.1", "--work", str(tmp_path / "ablation"),
                       "--results", str(results / "toy_ablation_smoke"), "--threads", "1", "--workers", "1"]) == 0
    text = (results / "toy_ablation_smoke.md").read_text()
    assert "| base (no fine-tuning) |" in text and "| + L_token + L_pixel |" in text
    assert (results / "toy_ablation_smoke.png").stat().st_size > 0
    assert investigation.main(["--preset", "smoke", "--ablation-work", str(tmp_path / "ablation"), "--work",
                               str(tmp_path / "investigation"), "--results",
                               str(results / "toy_investigation_smoke"), "--threads", "1"]) == 0
    report = (results / "toy_investigation_smoke.md").read_text()
    section_one, where = report.split("## 1.")[1].split("## 2.")[0].split("### Where the attention goes")
    profile_rows = [line for line in section_one.splitlines() if line.startswith("| ")][1:]  # after the header
    assert len(profile_rows) == 1 + 4 + 3  # base, the ablation's four seed-0 models, the three long runs
    specificity_rows = [line for line in where.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0] for row in specificity_rows] == [row.split(" | ")[0] for row in profile_rows]
    assert "(ablation, r = 0.1)" in report and "(long, r = 0.3)" in report
    headline = report.split("## 2.")[1].split("<!-- readme:begin -->")[1].split("<!-- readme:end -->")[0]
    long_rows = [line for line in headline.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0] for row in long_rows] == ["| L_LDM only", "| + L_token", "| + L_token + L_pixel"]
    section_three = report.split("## 3.")[1].split("## 4.")[0]
    guidance_rows = [line.split(" | ")[:2] for line in section_three.splitlines() if line.startswith("| ")][1:]
    assert [cfg for _, cfg in guidance_rows] == ["1.0", "3.0", "7.5"] * 3
    verdicts = [line for line in headline.splitlines() if line.startswith("- Long run")]
    assert len(verdicts) == 2 and all("unseen MG3" in line and "unseen MG4" in line for line in verdicts)
    assert guidance_rows[0][0] == "| base" and "L_LDM only (ablation)" in guidance_rows[3][0]
    assert (results / "toy_investigation_smoke.png").stat().st_size > 0
    # only the cheap parts: the profiles and specificity of the ablation's models, no long runs, no CFG sweep
    assert investigation.main(["--preset", "smoke", "--ablation-work", str(tmp_path / "ablation"), "--work",
                               str(tmp_path / "investigation"), "--results", str(results / "cheap"), "--threads",
                               "1", "--parts"]) == 0
    cheap = (results / "cheap.md").read_text()
    assert "## 2." not in cheap and "## 3." not in cheap and "## 4." in cheap and "Costly parts run: none (the others" in cheap
    assert len([line for line in cheap.split("## 1.")[1].split("### Where")[0].splitlines()
                if line.startswith("| ")][1:]) == 1 + 4  # base and the ablation's four seed-0 models


def test_ablation_follows_the_base_image_size(tmp_path):
    """A 64 x 64 toy base (the GPU preset's larger toy): fine-tuning scenes and supervised groups follow it."""
    import json

    from tokencompose.config import TOY_BASE_DIR
    from tokencompose.models import build_toy_model, save_toy_model
    from tokencompose.toy.ablation import AblationSettings, finetune, loss_profile, toy_geometry

    assert toy_geometry(TOY_BASE_DIR) == {"resolution": 32, "groups": ("mid_8", "up_16"), "unsupervised": ("down_16",)}
    base = save_toy_model(build_toy_model(sample_size=64, seed=0), tmp_path / "base64")
    geometry = toy_geometry(base)
    assert geometry["resolution"] == 64 and geometry["groups"] == ("mid_16", "up_32")
    profile = loss_profile(base, batches=1, batch_size=2, groups=(*geometry["unsupervised"], *geometry["groups"]))
    assert {"token/down_32", "token/mid_16", "token/up_32", "pixel/up_32"} <= set(profile)
    result = finetune("both", 0, AblationSettings(steps=1, batch_size=2, token_weight=1e-3, pixel_weight=1e-3),
                      tmp_path / "run", str(base))
    config = json.loads((result.unet_dir.parent / "training_config.json").read_text())
    assert config["resolution"] == 64 and list(config["groups"]) == ["mid_16", "up_32"]
    with pytest.raises(FileNotFoundError, match="not a toy model folder"):
        toy_geometry(tmp_path)


def test_attention_specificity_splits_each_tokens_attention_three_ways():
    from tokencompose.config import TOY_CONTROL_BASE_DIR
    from tokencompose.toy.ablation import attention_specificity

    result = attention_specificity(TOY_CONTROL_BASE_DIR, batches=1, batch_size=4, seed=5)
    assert set(result) == {"down_16", "mid_8", "up_16"}
    for group, parts in result.items():
        assert parts["tokens"] >= 8, group  # 4 scenes of 2-4 objects, one token a noun
        assert 0 < parts["own"] < 1 and 0 < parts["others"] < 1 and 0 < parts["background"] < 1
        assert math.isclose(parts["own"] + parts["others"] + parts["background"], 1.0, abs_tol=1e-6)
        assert 0.5 < parts["specificity"] < 2.0  # the first base (the control): no strong preference (about 1)
    default = attention_specificity(batches=1, batch_size=4, seed=5)  # the default base: nouns find their objects
    assert default["down_16"]["specificity"] > 2.0 and default["mid_8"]["specificity"] > 1.5
    with pytest.raises(ValueError, match="not recorded"):
        attention_specificity(batches=1, batch_size=2, groups=("up_32",))


def test_job_losses_and_minutes_come_from_the_whole_log(tmp_path):
    """A resumed fine-tune returns only this invocation's history: the job reads its run's log.csv instead."""
    log = tmp_path / "log.csv"
    rows = [f"{step},{0.01 if step <= 20 else 0.002},2.0,1.0,0.01,0.0001,1.5" for step in range(1, 201)]
    log.write_text("step,ldm,token,pixel,total,lr,seconds\n" + "\n".join(rows) + "\n")
    from tokencompose.toy.jobs import losses_from_log

    logged = losses_from_log(log)
    assert logged["losses"]["first"]["ldm"] == pytest.approx(0.01)
    assert logged["losses"]["last"]["ldm"] == pytest.approx(0.002)
    assert logged["losses"]["last"]["token"] == pytest.approx(2.0)
    assert logged["train_minutes"] == pytest.approx(200 * 1.5 / 60)


def test_mg_table_and_figure_give_intervals_clustered_by_prompt():
    from tokencompose.toy.ablation import mg_figure, mg_table

    def result(share):
        """evaluate_model's layout: 4-object prompts, 10 prompts x 2 images a split."""
        hits = [[4, 4] if i < share * 10 else [1, 1] for i in range(10)]
        return {split: {4: {"outcomes": {"hits": hits}}} for split in ("seen", "unseen")}

    scores = {"base": result(0.2), "both": result(0.6)}
    table = mg_table(scores, columns={"lambda": "x"}, rows={"both": ["0.1"]})
    lines = table.splitlines()
    assert lines[0] == ("| model | lambda | seen MG1 | seen MG2 | seen MG3 | seen MG4 | unseen MG1 | unseen MG2 | "
                        "unseen MG3 | unseen MG4 |")
    assert lines[3].startswith("| both | 0.1 | 100.0 [100.0, 100.0] | 60.0 [")
    assert lines[2].split(" | ")[5].startswith("20.0 [")  # base, seen MG4
    figure = mg_figure(scores)
    heights = sorted(round(p.get_height()) for ax in figure.axes for p in ax.patches)
    assert heights == sorted([100, 20, 20, 20, 100, 60, 60, 60] * 2)


def test_role_positions_finds_the_attribute_word_before_each_noun():
    from tokencompose.tokens import clip_tokenizer, token_positions
    from tokencompose.toy.ablation import role_positions

    tokenizer = clip_tokenizer()
    caption = "a photo of a red circle and a blue star."
    ids = tokenizer([caption], padding="max_length", max_length=77).input_ids
    nouns = [[token_positions(caption, noun, tokenizer) for noun in ("circle", "star")]]
    colour_ids = {tokenizer(c, add_special_tokens=False).input_ids[0] for c in ("red", "blue")}
    attribute = role_positions(nouns, ids, "attribute", colour_ids)
    decoded = [tokenizer.decode([ids[0][p] for p in positions]).strip() for positions in attribute[0]]
    assert decoded == ["red", "blue"]
    phrase = role_positions(nouns, ids, "phrase", colour_ids)
    assert [tokenizer.decode([ids[0][p] for p in positions]).strip() for positions in phrase[0]] == \
        ["red circle", "blue star"]
    assert role_positions(nouns, ids, "noun", colour_ids) == nouns
    plain = "a photo of a circle and a star."
    plain_ids = tokenizer([plain], padding="max_length", max_length=77).input_ids
    with pytest.raises(ValueError, match="not an attribute word"):
        role_positions([[token_positions(plain, "circle", tokenizer)]], plain_ids, "attribute", colour_ids)
    with pytest.raises(ValueError, match="unknown token role"):
        role_positions(nouns, ids, "verb", colour_ids)


def test_attention_specificity_follows_a_role_at_one_timestep():
    from tokencompose.toy.ablation import attention_specificity

    base = ROOT / "tokencompose" / "assets" / "toy_base_attribute"
    result = attention_specificity(base, batches=1, batch_size=2, role="attribute", timestep=300)
    for group, values in result.items():
        assert values["tokens"] > 0 and 0 <= values["own"] <= 1 and values["specificity"] > 0, group
    with pytest.raises(ValueError, match="not an attribute word"):  # the identity world names no colour
        attention_specificity(ROOT / "tokencompose" / "assets" / "toy_base", batches=1, batch_size=2, role="attribute")
    with pytest.raises(ValueError, match="timestep must be in"):
        attention_specificity(base, batches=1, batch_size=2, timestep=1000)


def test_token_routes_benchmark_smoke(tmp_path):
    script = load_script("benchmarks/investigations/toy_token_routes.py")
    out = tmp_path / "routes.md"
    assert script.main(["--smoke", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| attribute base (WIP) | attribute |" in text and "| first base (control) | noun |" in text
    assert "| first base (control) | attribute |" not in text  # the identity world names no colour
    assert text.count("<!-- readme:begin -->") == 1


def test_mg_comparison_reads_the_intervals():
    from tokencompose.toy.ablation import mg_comparison

    def result(hits):  # one row of hits (one image) a prompt
        return {"unseen": {"4": {"outcomes": {"hits": [[h] for h in hits]}}}}

    high, low = result([4, 4, 3, 3] * 10), result([1, 2, 1, 0] * 10)
    assert "A is higher, with intervals apart" in mg_comparison({"A": high, "B": low}, "A", "B")
    assert "B is higher" in mg_comparison({"A": low, "B": high}, "A", "B")
    assert "cannot tell them apart" in mg_comparison({"A": high, "B": high}, "A", "B")
    assert mg_comparison({"A": high, "B": low}, "A", "B").startswith("Unseen MG3: A 100.0 [")


def test_measured_results_finds_the_committed_files_by_default():
    """The default folder is the repository's benchmarks/results (the toy world moved one package down once and
    the default silently found nothing)."""
    from tokencompose.toy.ablation import measured_results

    names = [entry["name"] for entry in measured_results(patterns=("toy_ablation_cpu_noun_base.md", "toy_levers.md"))]
    assert names == ["toy_ablation_cpu_noun_base", "toy_levers"]
