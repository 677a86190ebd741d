"""probes.py: the routing table, the noun-feature cosine, composition scores with the error breakdown."""

import json

import numpy as np
import pytest
import torch

from tokencompose.models import build_toy_model, save_toy_model
from tokencompose.toy import probes
from tokencompose.toy.ablation import held_out_prompts
from tokencompose.toy.probes import (
    ROUTING_ROWS,
    AttentionEdit,
    _swap,
    composition_scores,
    image_errors,
    intervention,
    noun_feature_cosine,
    routing,
)
from tokencompose.toy.world import TOY_COLOURS, caption_colours, get_category, render_scene


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
    assert (_swap("a photo of a red circle, an orange star and a blue ring.", ["circle", "star", "ring"],
                  ["arrow", "heart", "bar"]) == "a photo of a red arrow, an orange heart and a blue bar.")
    assert _swap("a photo of a star.", ["star"], ["arrow"]) == "a photo of an arrow."


def _render(prompt, rng, drop_last=False, recolour=False):
    names = list(prompt.objects)[:-1] if drop_last else list(prompt.objects)
    palette = {c.name: c for c in TOY_COLOURS}
    colours = [palette[word] for word in caption_colours(prompt.text, names)]
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
    assert perfect["hits"] == [3] * 6 and neglect["hits"] == [2] * 6
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


def _random_probs(batch=4, heads=2, side=4, tokens=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, heads, side * side, tokens, generator=generator).softmax(-1)


def test_oracle_edit_moves_each_nouns_attention_onto_its_mask():
    probs = _random_probs()
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, :2, :2] = True
    mask[1, 2:, :] = True
    edit = AttentionEdit("oracle", positions=[[[3], [5, 6]], [[2], [4]]], masks=[mask, mask])
    out = edit("up_4", probs)
    assert torch.allclose(out.sum(-1), torch.ones(4, 2, 16))
    assert torch.equal(out[:2], probs[:2])  # the unconditional half of [uncond; cond] is left alone
    flat = mask.flatten(1)
    for token, noun in ((3, 0), (5, 1), (6, 1)):
        column = out[2, :, :, token]
        assert (column[:, ~flat[noun]] == 0).all() and (column[:, flat[noun]] > 0).all()
        # before each row is renormalised, the token holds its whole mass spread evenly over the mask:
        # against an untouched token (0), out[u, t] / out[u, 0] = (sum_u A[u, t] / |M|) / A[u, 0]
        expected = probs[2, :, :, token].sum(-1, keepdim=True) / flat[noun].sum() / probs[2, :, :, 0]
        ratio = column / out[2, :, :, 0]
        assert torch.allclose(ratio[:, flat[noun]], expected[:, flat[noun]], rtol=1e-4)
    edit.active = False
    assert torch.equal(edit("up_4", probs), probs)


def test_excite_edit_raises_the_nouns_share_everywhere():
    probs = _random_probs()
    out = AttentionEdit("excite", positions=[[[3]], [[4]]], factor=3.0)("mid_4", probs)
    assert torch.allclose(out.sum(-1), torch.ones(4, 2, 16))
    assert (out[2, ..., 3] > probs[2, ..., 3]).all() and (out[3, ..., 4] > probs[3, ..., 4]).all()
    ratio = out[2, ..., 3] / probs[2, ..., 3] / (out[2, ..., 0] / probs[2, ..., 0])
    assert torch.allclose(ratio, torch.full_like(ratio, 3.0), rtol=1e-4)
    with pytest.raises(ValueError, match="layout"):
        AttentionEdit("oracle", positions=[[[3]]])


@pytest.mark.parametrize("mode", ["none", "oracle", "excite", "attend-and-excite"])
def test_intervention_runs_on_a_tiny_model(tmp_path, mode):
    folder = _toy_folder(tmp_path / "m", padding="zero", colour_mode="attribute")
    result = intervention(folder, mode=mode, n=3, count=2, steps=3, batch_size=2)
    assert result["n"] == 3 and set(result["mg"]) == {1, 2}


def test_mass_on_regions_by_hand():
    noun_map = np.zeros((4, 4))
    noun_map[0, 0], noun_map[3, 3], noun_map[1, 2] = 2.0, 1.0, 1.0
    a = np.zeros((4, 4), dtype=bool)
    a[0, :2] = True  # holds the 2.0
    b = np.zeros((4, 4), dtype=bool)
    b[3, 3] = True  # holds the 1.0
    shares = probes.mass_on_regions(noun_map, {"a": a, "b": b})
    assert shares == {"a": 0.5, "b": 0.25, "background": 0.25}
    flat = probes.mass_on_regions(np.ones((4, 4)), {"a": a})
    assert flat == {"a": 2 / 16, "background": 14 / 16}
    with pytest.raises(ValueError, match="no mass"):
        probes.mass_on_regions(np.zeros((4, 4)), {"a": a})


def test_place_examples_on_a_tiny_model(tmp_path):
    folder = _toy_folder(tmp_path / "m")
    examples = probes.place_examples(folder, n=2, steps=4, early=2, batch_size=2)
    assert len(examples) == 2
    for example in examples:
        nouns = example["nouns"]
        assert example["early"].shape == example["final"].shape == (len(nouns), 16, 16)
        assert example["image"].shape == (16, 16, 3) and len(example["drawn"]) == len(nouns)
        missing = [noun for noun, drawn in zip(nouns, example["drawn"], strict=True) if not drawn]
        assert sorted(example["missing_mass"]) == sorted(missing)
        assert set(example["regions"]) <= {noun for noun, drawn in zip(nouns, example["drawn"], strict=True) if drawn}
    # the oracle's early maps sit on its layout: each noun's mass is concentrated on its own mask of the layout
    # (several times the mask's share of the image; the coarse layers blur it, so not all of it)
    oracle = probes.place_examples(folder, n=2, steps=4, early=2, batch_size=2, oracle_steps=2)
    prompts = probes.held_out_prompts(2, 4, unseen=True, seed=1234)
    layouts = probes.oracle_layouts(prompts, 0, 1234, 16, "identity")
    for example, layout in zip(oracle, layouts, strict=True):
        for i in range(len(example["nouns"])):
            own = {"own": layout[i].numpy() > 0}
            shares, area = probes.mass_on_regions(example["early"][i], own), probes.mass_on_regions(np.ones((16, 16)), own)
            assert shares["own"] > 3 * area["own"], (shares, area)
    with pytest.raises(ValueError, match="early must be"):
        probes.place_examples(folder, n=1, steps=4, early=5)
