"""VISOR object accuracy: prompt generation (VISOR's order, articles) and OA on hand-made detections."""

import json
from itertools import combinations

import numpy as np
import pytest

from tokencompose.evaluate import visor
from tokencompose.evaluate.multigen import load_categories


def test_prompt_count_and_articles():
    coco = load_categories("coco")
    prompts = visor.visor_prompts(coco)
    assert len(prompts) == 80 * 79 // 2 * 2 * 4 == 25280
    assert [p["unique_id"] for p in prompts] == list(range(25280))
    # VISOR's order: first pair (person, bicycle), each relation in both orders
    assert [p["text"] for p in prompts[:3]] == ["a person to the left of a bicycle",
                                               "a bicycle to the left of a person",
                                               "a person to the right of a bicycle"]
    texts = {p["text"] for p in prompts}
    assert "an apple above an orange" in texts and "an umbrella below a car" in texts
    assert "a hair drier to the left of an elephant" in texts
    assert len(texts) == len(prompts)
    small = visor.visor_prompts(["cat", "dog", "owl"])
    assert len(small) == len(list(combinations(range(3), 2))) * 2 * 4 == 24
    assert {p["rel_type"] for p in small} == set(visor.RELATIONS)


def test_limit_subset():
    coco = load_categories("coco")
    subset = visor.visor_prompts(coco, limit=50, seed=1)
    assert len(subset) == 50 and subset == visor.visor_prompts(coco, limit=50, seed=1)
    ids = [p["unique_id"] for p in subset]
    assert ids == sorted(ids) and subset != visor.visor_prompts(coco, limit=50, seed=2)
    full = visor.visor_prompts(coco)
    assert all(full[p["unique_id"]] == p for p in subset)


def test_object_accuracy_by_hand():
    prompts = visor.visor_prompts(["cat", "dog"])  # 0: "a cat to the left of a dog"
    assert prompts[0]["text"] == "a cat to the left of a dog"
    detections = {
        # both, cat (centre x 15) left of dog (centre x 45): spatially right
        "0_0": {"classes": ["cat", "dog"], "scores": [0.5, 0.3], "boxes": [[10, 0, 20, 10], [40, 0, 50, 10]]},
        # both, but cat right of dog
        "0_1": {"classes": ["dog", "cat"], "scores": [0.5, 0.3], "boxes": [[10, 0, 20, 10], [40, 0, 50, 10]]},
        # dog below threshold: only cat
        "0_2": {"classes": ["cat", "dog"], "scores": [0.5, 0.1], "boxes": [[10, 0, 20, 10], [40, 0, 50, 10]]},
        "0_3": {"classes": [], "scores": [], "boxes": []},
    }
    result = visor.object_accuracy(detections, prompts, threshold=0.1)
    assert result["OA"] == pytest.approx(50.0)      # 2 of 4 with both
    assert result["OA_A"] == pytest.approx(75.0)    # cat in 3
    assert result["OA_B"] == pytest.approx(50.0)    # dog in 2
    assert result["VISOR_uncond"] == pytest.approx(25.0)
    assert result["VISOR_cond"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="names no prompt"):
        visor.object_accuracy({"999_0": {"classes": [], "scores": []}}, prompts)


def test_run_visor_toy(tmp_path):
    """Toy world: a fake model renders both objects, so OA is 100 % by construction."""
    from tokencompose.toy.detector import ToyDetector
    from tokencompose.toy.world import get_category, render_scene

    prompts = visor.visor_prompts(["circle", "square", "ring"], limit=5, seed=0)

    def generate(texts, seeds):
        by_text = {p["text"]: (p["obj_1_attributes"][0], p["obj_2_attributes"][0]) for p in prompts}
        return [render_scene([get_category(n) for n in by_text[t]], np.random.default_rng(s), size=48).image
                for t, s in zip(texts, seeds, strict=True)]

    result = visor.run_visor(prompts, ToyDetector(), tmp_path, generate_fn=generate, images_per_prompt=2,
                             model_name="truth", subset_note="5 of 24", progress=False,
                             provenance={"model": "truth"})
    assert result["OA"] == 100.0 and result["num_images"] == 10
    saved = json.loads((tmp_path / "visor.json").read_text())
    assert saved["prompt_set"] == "5 of 24"
    assert "| truth | 100.00 |" in (tmp_path / "visor.md").read_text()
