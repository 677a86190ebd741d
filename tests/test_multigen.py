"""MultiGen: prompt sets (authors' format), scoring on hand-made detections, the resumable runner."""

import json

import numpy as np
import pytest

from tokencompose.config import REFERENCE_DIR
from tokencompose.evaluate import multigen
from tokencompose.evaluate.multigen import MultiGenPrompt, make_prompts, multigen_caption, multigen_scores
from tokencompose.toy.world import category_names, toy_caption

REFERENCE = REFERENCE_DIR

FIVE = [MultiGenPrompt(0, ("book", "cup", "kite", "mouse", "surfboard"), "p0"),
        MultiGenPrompt(1, ("cat", "dog", "bus", "car", "tie"), "p1")]


def test_scores_by_hand():
    # per image, distinct named categories above 0.1: 0_0 -> 5, 0_1 -> 2, 1_0 -> 0, 1_1 -> 3
    detections = {
        "0_0": {"classes": ["book", "cup", "kite", "mouse", "surfboard", "book", "person"],
                "scores": [0.9, 0.5, 0.3, 0.2, 0.15, 0.8, 0.9]},
        "0_1": {"classes": ["book", "cup", "kite"], "scores": [0.4, 0.11, 0.05]},
        "1_0": {"classes": ["cat"], "scores": [0.1]},  # exactly 0.1 is not > 0.1
        "1_1": {"classes": ["cat", "dog", "bus", "zebra"], "scores": [0.3, 0.3, 0.3, 0.9]},
    }
    scores = multigen_scores(detections, FIVE, threshold=0.1, images_per_prompt=2)
    # MG1: 3 of 4 images; j=0: 1 of 2 (50%), j=1: 2 of 2 (100%) -> population std 25
    assert scores["MG1"] == pytest.approx((75.0, 25.0))
    assert scores["MG2"] == pytest.approx((75.0, 25.0))
    assert scores["MG3"] == pytest.approx((50.0, 0.0))   # 0_0, 1_1; 50% at j=0 and j=1
    assert scores["MG4"] == pytest.approx((25.0, 25.0))  # 0_0 only: 50% at j=0, 0% at j=1
    assert scores["MG5"] == pytest.approx((25.0, 25.0))
    assert list(scores) == ["MG1", "MG2", "MG3", "MG4", "MG5"]
    # the authors' JSON objects score the same as MultiGenPrompt objects
    assert multigen_scores(detections, [p.to_json() for p in FIVE], 0.1, 2) == scores
    # a lower threshold counts 0_1's kite and 1_0's cat
    low = multigen_scores(detections, FIVE, threshold=0.01, images_per_prompt=2)
    assert low["MG1"] == pytest.approx((100.0, 0.0))
    assert low["MG3"] == pytest.approx((75.0, 25.0))


def test_intervals_by_hand_cluster_by_prompt():
    # the detections of test_scores_by_hand: hits per image 0_0 -> 5, 0_1 -> 2, 1_0 -> 0, 1_1 -> 3
    detections = {
        "0_0": {"classes": ["book", "cup", "kite", "mouse", "surfboard"], "scores": [0.9, 0.5, 0.3, 0.2, 0.15]},
        "0_1": {"classes": ["book", "cup", "kite"], "scores": [0.4, 0.11, 0.05]},
        "1_0": {"classes": ["cat"], "scores": [0.1]},
        "1_1": {"classes": ["cat", "dog", "bus", "zebra"], "scores": [0.3, 0.3, 0.3, 0.9]},
    }
    intervals = multigen.multigen_intervals(detections, FIVE, threshold=0.1, images_per_prompt=2)
    half = 1.959964 * 25.0  # z * s / sqrt(2), s of the per-prompt rates (100, 50) and (50, 0) = 35.36
    # MG1: prompt 0 100%, prompt 1 50% -> mean 75, upper end cut at 100
    assert intervals["MG1"] == pytest.approx([75.0, 75.0 - half, 100.0], abs=1e-3)
    assert intervals["MG3"] == pytest.approx([50.0, 50.0, 50.0])  # 50% in both prompts: no spread
    assert intervals["MG5"] == pytest.approx([25.0, 0.0, 25.0 + half], abs=1e-3)  # 50% and 0%, cut at 0
    # the same means as the authors' scores
    scores = multigen_scores(detections, FIVE, threshold=0.1, images_per_prompt=2)
    assert [v[0] for v in intervals.values()] == pytest.approx([v[0] for v in scores.values()])
    result = {"model": "m", "scores": scores, "intervals": intervals, "num_images": 4, "det_threshold": 0.1}
    assert "75.0 [26.0, 100.0]" in multigen.multigen_table([result], uncertainty="interval")
    assert "75.00(25.00)" in multigen.multigen_table([result])  # the authors' format stays the default
    with pytest.raises(ValueError, match="rerun run_multigen"):
        multigen.multigen_table([{k: v for k, v in result.items() if k != "intervals"}], uncertainty="interval")


def test_scores_fewer_objects():
    prompts = [MultiGenPrompt(0, ("circle", "star"), "a"), MultiGenPrompt(1, ("ring", "bar", "heart"), "b")]
    detections = {"0_0": {"classes": ["circle", "star"], "scores": [1, 1]},
                  "1_0": {"classes": ["ring", "bar"], "scores": [1, 1]}}
    scores = multigen_scores(detections, prompts, images_per_prompt=1)
    assert scores["MG1"] == pytest.approx((100.0, 0.0))
    assert scores["MG2"] == pytest.approx((100.0, 0.0))
    assert scores["MG3"] == pytest.approx((0.0, 0.0))  # only prompt 1 names 3 objects, and it shows 2
    assert "MG4" not in scores


def test_scores_bad_input():
    with pytest.raises(ValueError, match="images_per_prompt"):
        multigen_scores({"0_3": {"classes": [], "scores": []}}, FIVE, images_per_prompt=2)
    with pytest.raises(ValueError, match="prompt 7"):
        multigen_scores({"7_0": {"classes": [], "scores": []}}, FIVE, images_per_prompt=2)
    with pytest.raises(ValueError, match="same length"):
        multigen_scores({"0_0": {"classes": ["cup"], "scores": []}}, FIVE, images_per_prompt=2)


def test_nothing_extra():
    detections = {"0_0": {"classes": ["book", "person"], "scores": [0.9, 0.5]},
                  "0_1": {"classes": ["book", "person"], "scores": [0.9, 0.05]},
                  "1_0": {"classes": [], "scores": []},
                  "1_1": {"classes": ["zebra"], "scores": [0.2]}}
    assert multigen.nothing_extra_share(detections, FIVE, 0.1) == pytest.approx(50.0)


def test_caption_and_generator():
    assert multigen_caption(["book", "cup", "kite", "mouse", "surfboard"]) == \
        "a photo of a book, a cup, a kite, a mouse, and a surfboard."
    assert multigen_caption(["orange", "cat"]) == "a photo of a orange and a cat."
    categories = multigen.load_categories("coco")
    assert len(categories) == 80 and categories[0] == "person" and "hair drier" in categories
    prompts = make_prompts(categories, 20, 5, seed=3)
    assert prompts == make_prompts(categories, 20, 5, seed=3)
    assert prompts != make_prompts(categories, 20, 5, seed=4)
    for i, p in enumerate(prompts):
        assert p.unique_id == i and len(set(p.objects)) == 5 and set(p.objects) <= set(categories)
        assert p.text == multigen_caption(p.objects)
        entry = p.to_json()
        assert list(entry) == ["unique_id", "num_objects", "obj_1_attributes", "obj_2_attributes",
                               "obj_3_attributes", "obj_4_attributes", "obj_5_attributes", "text"]
        assert MultiGenPrompt.from_json(entry) == p
    toy = make_prompts(category_names(), 6, (2, 3, 4), seed=0, template=toy_caption)
    assert [len(p.objects) for p in toy] == [2, 3, 4, 2, 3, 4]
    assert toy[1].text.count(",") == 1 and " and " in toy[1].text  # "a photo of a x, a y and a z."
    with pytest.raises(ValueError, match="num_objects"):
        make_prompts(["a", "b"], 3, 3)


def test_load_prompts_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"unique_id": 0, "num_objects": 2, "obj_1_attributes": ["cat"], "text": "x"}]))
    with pytest.raises(ValueError, match="obj_2_attributes"):
        multigen.load_prompts(bad)


@pytest.mark.parametrize("name", ["coco_obj_comp_5_1k.json", "ade20k_obj_comp_5_1k.json"])
def test_reads_authors_files(name, tmp_path):
    path = REFERENCE / name  # carried in the repository: never skipped
    prompts = multigen.load_prompts(path)
    assert len(prompts) == 1000 and all(len(p.objects) == 5 for p in prompts)
    assert prompts[0].text == multigen_caption(prompts[0].objects)
    raw = json.loads(path.read_text())
    assert [p.to_json() for p in prompts] == raw  # lossless round trip of their format
    if name.startswith("coco"):
        assert set(multigen.load_categories(path)) == set(multigen.load_categories("coco"))


# ---------------------------------------------------------------------------------------------------------
# the runner on the toy world
# ---------------------------------------------------------------------------------------------------------


class FakeGenerator:
    """Renders the true scene of a toy caption: a perfect model (so MG_k = 100 % by construction)."""

    def __init__(self, prompts):
        from tokencompose.toy.world import get_category

        self.objects = {p.text: [get_category(n) for n in p.objects] for p in prompts}
        self.calls = 0
        self.provenance = {"model": "truth"}  # what a sample.Generator carries: keys the cached images

    def __call__(self, texts, seeds):
        from tokencompose.toy.world import render_scene

        self.calls += len(texts)
        return np.stack([render_scene(self.objects[t], np.random.default_rng(s), size=48).image
                         for t, s in zip(texts, seeds, strict=True)])


def test_runner_toy_end_to_end(tmp_path):
    from tokencompose.toy.detector import ToyDetector

    prompts = make_prompts(category_names(), 4, (2, 3, 4), seed=1, template=toy_caption)
    generate = FakeGenerator(prompts)
    result = multigen.run_multigen(prompts, ToyDetector(), tmp_path, generate_fn=generate, images_per_prompt=2,
                                   model_name="truth", progress=False)
    assert generate.calls == 8
    assert {k: tuple(v) for k, v in result["scores"].items()} == {f"MG{k}": (100.0, 0.0) for k in (1, 2, 3, 4)}
    assert result["nothing_extra"] == 100.0 and result["num_images"] == 8
    assert sorted(p.name for p in (tmp_path / "images").iterdir())[:2] == ["0_0.png", "0_1.png"]
    saved = json.loads((tmp_path / "multigen.json").read_text())
    assert saved["scores"]["MG4"] == [100.0, 0.0]
    table = (tmp_path / "multigen.md").read_text()
    assert "| Model | MG_1 | MG_2 | MG_3 | MG_4 | Num_Imgs | det_threshold |" in table
    assert "| truth | 100.00(0.00) |" in table
    # resumable: nothing is regenerated, nothing re-detected (the same detector, failing if called)
    refuse = ToyDetector()

    def detect(image, names=None):
        raise AssertionError("detected again")

    refuse.detect = detect
    again = multigen.run_multigen(prompts, refuse, tmp_path, generate_fn=generate, images_per_prompt=2,
                                  progress=False, report_extra=False)
    assert generate.calls == 8 and again["scores"] == result["scores"]
    # a lost detection is redone, a lost image regenerated
    (tmp_path / "images" / "3_1.png").unlink()
    own = tmp_path / "detections" / "0.json"
    data = json.loads(own.read_text())
    del data["3_1"]
    own.write_text(json.dumps(data))
    multigen.run_multigen(prompts, ToyDetector(), tmp_path, generate_fn=generate, images_per_prompt=2,
                          progress=False)
    assert generate.calls == 9
    # figure + example grid
    path = multigen.plot_multigen([result, {**result, "model": "other"}], tmp_path / "mg.png")
    assert path.stat().st_size > 0
    grid = multigen.example_figure(tmp_path / "images", multigen.load_detections(tmp_path / "detections"),
                                   ["0_0", "1_0"], tmp_path / "ex.png")
    assert grid.stat().st_size > 0


def test_another_model_is_never_scored_on_the_first_ones_images(tmp_path):
    """The stale-cache bug (notebook 07's base row, issue 17): a second model evaluated into the same folder
    was scored on the first model's images. Now the folder's manifest names the model that made them."""
    from tokencompose.toy.detector import ToyDetector

    prompts = make_prompts(category_names(), 3, 2, seed=2, template=toy_caption)
    truth = FakeGenerator(prompts)

    class Blank(FakeGenerator):  # a model that draws nothing
        def __call__(self, texts, seeds):
            self.calls += len(texts)
            return np.zeros((len(texts), 48, 48, 3), dtype=np.uint8)

    blank = Blank(prompts)
    blank.provenance = {"model": "blank"}
    good = multigen.run_multigen(prompts, ToyDetector(), tmp_path, generate_fn=truth, images_per_prompt=2,
                                 progress=False)
    bad = multigen.run_multigen(prompts, ToyDetector(), tmp_path, generate_fn=blank, images_per_prompt=2,
                                progress=False)
    assert blank.calls == 6 and good["scores"]["MG1"][0] == 100.0 and bad["scores"]["MG1"][0] == 0.0
    assert json.loads((tmp_path / "images" / "manifest.json").read_text())["model"] == "blank"
    # the same model again reuses its images; a generator without provenance is refused
    multigen.run_multigen(prompts, ToyDetector(), tmp_path, generate_fn=blank, images_per_prompt=2, progress=False)
    assert blank.calls == 6
    with pytest.raises(ValueError, match="provenance"):
        multigen.run_multigen(prompts, ToyDetector(), tmp_path, generate_fn=lambda t, s: None, images_per_prompt=2,
                              progress=False)
    # another detector setting re-detects (the images stay)
    strict = ToyDetector(min_score=0.99)
    multigen.run_multigen(prompts, strict, tmp_path, generate_fn=blank, images_per_prompt=2, progress=False)
    assert blank.calls == 6
    detections = json.loads((tmp_path / "detections" / "manifest.json").read_text())
    assert detections["detector_settings"]["min_score"] == 0.99


def test_runner_missing_images(tmp_path):
    from tokencompose.toy.detector import ToyDetector

    prompts = make_prompts(category_names(), 1, 2, template=toy_caption)
    with pytest.raises(FileNotFoundError, match="0_0.png"):
        multigen.run_multigen(prompts, ToyDetector(), tmp_path, images_per_prompt=1, progress=False)


def test_cli_toy_images(tmp_path):
    from tokencompose.evaluate.cli import cli

    out = tmp_path / "run"
    prompts = make_prompts(category_names(), 3, (2, 3), seed=0, template=toy_caption)
    multigen.save_prompts(prompts, tmp_path / "prompts.json")
    images = tmp_path / "imgs"
    images.mkdir()
    generate = FakeGenerator(prompts)
    for i, p in enumerate(prompts):
        for j in range(2):
            multigen._save_png(generate([p.text], [j])[0], images / f"{i}_{j}.png")
    assert cli(["multigen", "--prompts", str(tmp_path / "prompts.json"), "--images", str(images), "--detector", "toy",
                "--n-images", "2", "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "multigen.json").read_text())
    assert result["scores"]["MG3"] == [100.0, 0.0] and result["model"] == "imgs"
    assert (out / "multigen.png").is_file() and (out / "examples.png").is_file()


def test_image_outcome_and_at_least_follow_the_papers_mg_k():
    from tokencompose.evaluate.multigen import at_least, image_outcome

    assert image_outcome(["cat", "kite", "pizza", "dog"], {"cat", "pizza", "bus"}) == \
        {"hits": 2, "all_named": 0, "exact": 0}
    assert image_outcome(["cat", "kite"], ["kite", "cat"]) == {"hits": 2, "all_named": 1, "exact": 1}
    hits = [[4, 2, 0], [3, 1, 1]]
    assert at_least(hits, 1) == [[1, 1, 0], [1, 1, 1]]
    assert at_least(hits, 3) == [[1, 0, 0], [1, 0, 0]]
    with pytest.raises(ValueError, match="k >= 1"):
        at_least(hits, 0)
