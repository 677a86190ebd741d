"""probes.py: the routing table, the noun-feature cosine, composition scores with the error breakdown."""

import json

import numpy as np
import pytest

from tokencompose.ablation import held_out_prompts
from tokencompose.models import build_toy_model, save_toy_model
from tokencompose.probes import (
    ROUTING_ROWS,
    _swap,
    composition_scores,
    image_errors,
    noun_feature_cosine,
    routing,
)
from tokencompose.toyworld import TOY_COLOURS, get_category, render_scene


def _toy_folder(path, padding="encoded", colour_mode="identity"):
    components = build_toy_model(sample_size=16, padding=padding)
    save_toy_model(components, path)
    (path / "pretrain_settings.json").write_text(json.dumps({"colour_mode": colour_mode, "padding": padding}))
    return path


def test_image_errors_by_hand():
    assert image_errors(["circle", "star"], ["circle", "star"]) == {"missing": 0, "extra": 0, "wrong": 0}
    assert image_errors(["circle", "star", "ring"], ["circle"]) == {"missing": 2, "extra": 0, "wrong": 0}
    # a star drawn as a heart: one substitution, not one missing + one extra
    assert image_errors(["circle", "star"], ["circle", "heart"]) == {"missing": 0, "extra": 0, "wrong": 1}
    assert image_errors(["circle"], ["circle", "heart", "bar"]) == {"missing": 0, "extra": 2, "wrong": 0}


def test_swap_keeps_colours_and_fixes_articles():
    assert (_swap("a photo of a red circle, an orange star and a ring.", ["circle", "star", "ring"],
                  ["arrow", "heart", "bar"]) == "a photo of a red arrow, an orange heart and a bar.")
    assert _swap("a photo of a star.", ["star"], ["arrow"]) == "a photo of an arrow."


def _render(prompt, rng, drop_last=False, recolour=False):
    names = list(prompt.objects)[:-1] if drop_last else list(prompt.objects)
    words = prompt.text.rstrip(".").replace(",", "").split(" ")
    colours = [next(c for c in TOY_COLOURS if c.name == words[words.index(n) - 1]) for n in names]
    if recolour:  # every object in the next palette colour (still distinct) instead of the caption's
        colours = [TOY_COLOURS[(TOY_COLOURS.index(c) + 1) % len(TOY_COLOURS)] for c in colours]
    return render_scene([get_category(n) for n in names], rng, colours=colours).image


def test_composition_scores_on_rendered_images():
    rng = np.random.default_rng(0)
    prompts = held_out_prompts(6, 3, unseen=False, seed=5, colour_mode="attribute")
    perfect = composition_scores(prompts, [_render(p, rng) for p in prompts], "attribute")
    assert perfect["all_named"] == perfect["exact"] == 1.0 and perfect["error_count"] == 0
    assert perfect["mg"] == {1: 1.0, 2: 1.0, 3: 1.0} and perfect["colour_correct"] == 1.0
    neglect = composition_scores(prompts, [_render(p, rng, drop_last=True) for p in prompts], "attribute")
    assert neglect["all_named"] == 0.0 and neglect["mg"] == {1: 1.0, 2: 1.0, 3: 0.0}
    assert neglect["errors"]["missing"] == 1.0 and neglect["recall_by_position"] == [1.0, 1.0, 0.0]
    wrong_colour = composition_scores(prompts, [_render(p, rng, recolour=True) for p in prompts], "attribute")
    assert wrong_colour["all_named"] == 1.0 and wrong_colour["colour_correct"] < 0.5
    with pytest.raises(ValueError, match="one object count"):
        composition_scores(prompts + held_out_prompts(1, 2, False), [None] * 7)


def test_routing_rows_and_zero_padding(tmp_path):
    encoded = routing(_toy_folder(tmp_path / "enc"), batches=1, batch_size=3)
    assert list(encoded) == list(ROUTING_ROWS) and all(np.isfinite(v) for v in encoded.values())
    assert encoded["padding replaced"] != encoded["caption"]  # a random encoder writes into the padding
    zero = routing(_toy_folder(tmp_path / "zero", padding="zero", colour_mode="attribute"), batches=1,
                   batch_size=3)
    # zero padding carries nothing: replacing it by the empty prompt's (also zero) changes nothing
    assert zero["padding replaced"] == pytest.approx(zero["caption"], rel=1e-6)
    assert zero["nouns replaced"] != zero["caption"]


def test_noun_feature_cosine_of_a_random_encoder(tmp_path):
    cosine = noun_feature_cosine(_toy_folder(tmp_path / "m"))
    assert abs(cosine["raw mean"]) < 0.2  # random token embeddings: nearly orthogonal
    assert cosine["encoded mean"] > cosine["raw mean"] + 0.3 and cosine["encoded min"] <= cosine["encoded mean"]
