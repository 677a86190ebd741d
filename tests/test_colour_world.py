"""The attribute world (issue 12): random colours named in the caption, the shape-whatever-the-colour
detector, zero padding for the toy text encoder, and the probes of where the caption reaches the UNet."""

import json

import numpy as np
import pytest
import torch

from tokencompose.models import build_toy_model, encode_prompts, encode_text, load_components, save_toy_model
from tokencompose.tokens import clip_tokenizer
from tokencompose.toy.detector import ToyDetector
from tokencompose.toy.world import (
    TOY_COLOURS,
    caption_for,
    check_colour_mode,
    get_category,
    model_colour_mode,
    random_scene,
    render_scene,
    sample_categories,
)


def test_colour_words_are_single_clip_tokens_and_far_apart():
    tokenizer = clip_tokenizer()
    for colour in TOY_COLOURS:
        assert tokenizer.tokenize(colour.name) == [colour.name + "</w>"]
    rgb = np.array([c.rgb for c in TOY_COLOURS], dtype=float)
    chroma = rgb / rgb.max(axis=1, keepdims=True)
    distances = np.linalg.norm(chroma[:, None] - chroma[None], axis=2)
    assert distances[~np.eye(len(rgb), dtype=bool)].min() > 0.49  # orange-red, purple-pink: 127/255


def test_caption_names_each_objects_colour():
    assert caption_for(["circle", "star"], ["red", "orange"]) == "a photo of a red circle and an orange star."
    assert caption_for(["arrow"]) == "a photo of an arrow."
    with pytest.raises(ValueError, match="one colour word per noun"):
        caption_for(["circle", "star"], ["red"])
    with pytest.raises(ValueError, match="unknown colour mode"):
        check_colour_mode("rainbow")


def test_attribute_scenes_draw_each_object_in_its_named_colour():
    rng = np.random.default_rng(3)
    for _ in range(20):
        scene = random_scene(rng, objects=(2, 4), colour_mode="attribute")
        assert scene.colours is not None and len(set(scene.colours)) == len(scene.names)
        for name, colour in zip(scene.names, scene.colours, strict=True):
            rgb = next(c.rgb for c in TOY_COLOURS if c.name == colour)
            assert (scene.image[scene.masks[name]] == rgb).all()
            assert f"{colour} {name}" in scene.caption


def test_identity_world_draws_nothing_more_than_before():
    """The first base's scenes stay what they were: in the identity world a scene is the count, the categories
    and the rendering, drawn in that order from one generator (no colour draw in between)."""
    for seed in range(5):
        scene = random_scene(np.random.default_rng(seed), objects=(1, 4), colour_mode="identity")
        rng = np.random.default_rng(seed)
        count = int(rng.choice(np.arange(1, 5), p=np.full(4, 0.25)))
        expected = render_scene(sample_categories(rng, count), rng)
        assert scene.caption == expected.caption and np.array_equal(scene.image, expected.image)
        assert scene.colours is None and "red" not in scene.caption


def test_attribute_detector_finds_the_shape_whatever_the_colour():
    rng = np.random.default_rng(0)
    detector = ToyDetector(colour_mode="attribute")
    for _ in range(40):
        scene = random_scene(rng, objects=(1, 4), colour_mode="attribute")
        found = sorted((d.name, d.attribute) for d in detector.detect(scene.image))
        assert found == sorted(zip(scene.names, scene.colours, strict=True)), scene.caption
        masks = detector.segment(scene.image)
        for name in scene.names:
            assert (masks[name] == scene.masks[name]).mean() > 0.97


def test_identity_detector_misreads_an_attribute_scene():
    # why the attribute world needs its own detector: a red square is not a circle
    rng = np.random.default_rng(1)
    square = get_category("square")
    scene = render_scene([square], rng, colours=[TOY_COLOURS[0]])  # a red square
    assert [d.name for d in ToyDetector().detect(scene.image)] != ["square"]
    assert [d.name for d in ToyDetector(colour_mode="attribute").detect(scene.image)] == ["square"]


def test_zero_padding_blanks_every_position_after_the_end_token(tmp_path):
    components = build_toy_model(padding="zero")
    ids = components.tokenizer(["a photo of a red circle.", ""], padding="max_length", max_length=77,
                               return_tensors="pt").input_ids
    context = encode_text(components.text_encoder, ids)
    full = components.text_encoder(ids)[0]
    # 'a photo of a red circle.' = start + 7 tokens + end: positions 0..8 kept, 9.. zero
    assert torch.equal(context[0, :9], full[0, :9]) and (context[0, 9:] == 0).all()
    assert torch.equal(context[1, :2], full[1, :2]) and (context[1, 2:] == 0).all()
    assert (full[0, 9:] != 0).any()  # the encoder itself writes there
    # the mode travels with the saved model
    save_toy_model(components, tmp_path / "m")
    loaded = load_components(str(tmp_path / "m"))
    star = encode_prompts(loaded, ["a photo of a star."])[0]  # start, 6 tokens, end: 0..7 kept
    assert (star[8:] == 0).all() and (star[7] != 0).any()
    assert not (encode_prompts(build_toy_model(), ["a photo of a star."])[0, 8:] == 0).all()


def test_model_colour_mode_reads_the_pretrain_settings(tmp_path):
    assert model_colour_mode(tmp_path) == "identity"
    (tmp_path / "pretrain_settings.json").write_text(json.dumps({"colour_mode": "attribute"}))
    assert model_colour_mode(tmp_path) == "attribute" and model_colour_mode(str(tmp_path)) == "attribute"
    # the shipped default base is the first (identity) world; a hub id or an object in memory has no file
    assert model_colour_mode("toy") == model_colour_mode(None) == model_colour_mode("owner/model") == "identity"
