"""Grounded-SAM masks: pure helpers on hand-written cases, the real Grounding DINO + SAM architectures
(tiny configs, random weights) end to end, and loading from folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tokencompose import masks as masks_module
from tokencompose.masks import (
    DEFAULT_GROUNDING_SETTINGS,
    GROUNDING_SETTINGS,
    Detection,
    GroundedSAM,
    ModelLoadError,
    build_random_tiny_models,
    detections_from_outputs,
    grounding_prompt,
    mask_file_name,
    match_phrase,
    resolve_grounding_settings,
    sam_hq_available,
    save_mask,
    union_masks,
)

WORDS = ["cat", "kite", "table", "dump", "truck"]
HEIGHT, WIDTH = 48, 64  # not square: a transposed mask would be caught


@pytest.fixture(scope="module")
def tiny_parts():
    return build_random_tiny_models(WORDS, seed=0)


@pytest.fixture()
def gsam(tiny_parts):
    detector, detector_processor, segmenter, segmenter_processor = tiny_parts
    return GroundedSAM(device="cpu", box_threshold=0.0, text_threshold=0.0, detector=detector,
                       detector_processor=detector_processor, segmenter=segmenter,
                       segmenter_processor=segmenter_processor)


@pytest.fixture(scope="module")
def image():
    pixels = np.random.default_rng(0).integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# ---- pure helpers -------------------------------------------------------------------------------

def test_grounding_prompt_is_the_authors_format():
    assert grounding_prompt(["cat", "kite", "table"]) == "cat . kite . table ."
    assert grounding_prompt(["Teddy  Bear", "TV"]) == "teddy bear . tv ."


@pytest.mark.parametrize("nouns, error", [([], ValueError), (["cat", "st. bernard"], ValueError),
                                          (["cat", ""], ValueError), ("cat", TypeError)])
def test_grounding_prompt_rejects_bad_nouns(nouns, error):
    with pytest.raises(error):
        grounding_prompt(nouns)


@pytest.mark.parametrize("phrase, nouns, expected", [
    ("cat", ["cat", "kite"], "cat"),                                   # exact
    ("tv", ["TV", "remote"], "TV"),                                    # upper case
    ("plate", ["bread", "Plate"], "Plate"),                            # case, found by containment
    ("tv", ["tv stand", "TV"], "TV"),                                  # case rules come before containment
    ("Dog", ["hotdog", "dog"], "dog"),
    ("t - shirt", ["shirt", "t-shirt"], "t-shirt"),                    # hyphen rule before containment
    ("dump - truck", ["man", "dump-truck"], "dump-truck"),             # BERT's hyphen spacing undone
    ("top horse", ["man", "horse"], "horse"),                          # noun inside the phrase
    ("horse", ["man", "top horse"], "top horse"),                      # phrase inside the noun
    ("birthday cake", ["table", "tank birthday cake"], "tank birthday cake"),
    ("hot dog bun", ["bun", "dog"], "bun"),                            # first noun in caption order wins
    ("catalog", ["cat"], "cat"),                                       # the authors' substring rule, as is
    ("red dump truck", ["a red and blue dump truck", "ardula", "a city street"],
     "a red and blue dump truck"),                                     # every token inside one noun
    ("dog", ["cat", "kite"], None),
    ("", ["cat"], None),
    ("   ", ["cat"], None),
])
def test_match_phrase_follows_the_authors_rules(phrase, nouns, expected):
    assert match_phrase(phrase, nouns) == expected


def test_union_masks():
    a = np.array([[1, 0], [0, 0]], dtype=bool)
    b = np.array([[0, 0], [0, 1]], dtype=np.uint8)
    np.testing.assert_array_equal(union_masks([a, b]), [[True, False], [False, True]])
    assert union_masks([a]).dtype == bool
    with pytest.raises(ValueError, match="shape"):
        union_masks([a, np.zeros((3, 2), dtype=bool)])
    with pytest.raises(ValueError, match="at least one"):
        union_masks([])


def test_mask_file_name_is_file_system_safe():
    assert mask_file_name("cat") == "mask_cat.png"
    assert mask_file_name("teddy bear") == "mask_teddy_bear.png"
    assert mask_file_name("a/c unit") == "mask_a_c_unit.png"
    assert mask_file_name("hot-dog") == "mask_hot-dog.png"
    assert mask_file_name("..") == "mask___.png"


def test_save_mask_writes_0_255_png(tmp_path):
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[10:20, 5:30] = True
    path = save_mask(mask, tmp_path / "seg" / "img" / "mask_cat.png")
    with Image.open(path) as png:
        assert png.format == "PNG" and png.mode == "L" and png.size == (WIDTH, HEIGHT)
        pixels = np.asarray(png)
    assert set(np.unique(pixels)) == {0, 255}
    assert (pixels == 255).sum() == 10 * 25 and pixels[10, 5] == 255 and pixels[9, 5] == 0
    assert sorted(p.name for p in path.parent.iterdir()) == ["mask_cat.png"]  # no temporary left
    save_mask(mask.astype(np.uint8), tmp_path / "ones.png")  # 0/1 integers are accepted
    with pytest.raises(ValueError, match="2-D"):
        save_mask(np.zeros((2, 2, 3), dtype=bool), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="not binary"):
        save_mask(np.array([[0, 7]]), tmp_path / "bad.png")


# ---- Grounding DINO post-processing on hand-made outputs ----------------------------------------

def test_detections_from_hand_made_outputs(tiny_parts):
    tokenizer = tiny_parts[1].tokenizer
    tokens = ["[CLS]", "cat", ".", "kite", ".", "dump", "-", "truck", ".", "[SEP]"]
    input_ids = tokenizer.convert_tokens_to_ids(tokens)
    assert tokenizer("cat . kite . dump-truck .")["input_ids"] == input_ids  # the prompt tokenises so
    logits = torch.full((3, 12), -5.0)  # 3 queries, 12 text positions (2 past the prompt)
    logits[0, 1] = 3.0                  # "cat": score sigmoid(3) = 0.953
    logits[1, 3] = -1.0                 # "kite" at sigmoid(-1) = 0.269 < 0.3: dropped
    logits[2, 5:8] = 2.0                # "dump - truck"
    logits[2, 9] = 10.0                 # [SEP]: never part of a phrase
    logits[2, 11] = 10.0                # past the prompt: ignored for the phrase
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.1, 0.1], [0.25, 0.75, 0.5, 0.5]])
    found = detections_from_outputs(logits, boxes, input_ids, tokenizer, (WIDTH, HEIGHT),
                                    box_threshold=0.3, text_threshold=0.25)
    assert [d.phrase for d in found] == ["cat", "dump - truck"]
    assert found[0].score == pytest.approx(1 / (1 + np.exp(-3.0)), rel=1e-6)
    assert found[1].score == pytest.approx(1 / (1 + np.exp(-10.0)), rel=1e-6)
    assert found[0].box == pytest.approx((16.0, 12.0, 48.0, 36.0))  # cx, cy, w, h (0-1) -> x0, y0, x1, y1 px
    assert found[1].box == pytest.approx((0.0, 24.0, 32.0, 48.0))
    assert match_phrase(found[1].phrase, ["cat", "dump-truck"]) == "dump-truck"
    # a text threshold above every token keeps the box with an empty phrase, which matches nothing
    strict = detections_from_outputs(logits, boxes, input_ids, tokenizer, (WIDTH, HEIGHT), 0.3, 0.99)
    assert [d.phrase for d in strict] == ["", ""]


# ---- the real architectures, tiny and random ---------------------------------------------------

def test_detect_and_segment_shapes(gsam, image):
    found = gsam.detect(image, ["cat", "kite"])
    assert len(found) == 10  # box threshold 0 keeps all 10 queries of the tiny config
    assert all(isinstance(d, Detection) and len(d.box) == 4 for d in found)
    # text threshold 0: every prompt token is in every phrase ([CLS]/[SEP] left out)
    assert {d.phrase for d in found} == {"cat. kite."}
    masks = gsam.segment(image, [d.box for d in found])
    assert masks.shape == (10, HEIGHT, WIDTH) and masks.dtype == bool
    assert gsam.segment(image, []).shape == (0, HEIGHT, WIDTH)


def test_masks_for_nouns_unites_per_noun(gsam, image):
    result = gsam.masks_for_nouns(image, ["cat", "kite"])
    assert list(result) == ["cat", "kite"]
    # every phrase is "cat. kite.", which the containment rule gives to the first noun, "cat"
    assert result["kite"] is None
    assert result["cat"].shape == (HEIGHT, WIDTH) and result["cat"].dtype == bool
    boxes = [d.box for d in gsam.detect(image, ["cat", "kite"])]
    np.testing.assert_array_equal(result["cat"], gsam.segment(image, boxes).any(axis=0))


def test_nothing_detected_gives_none(gsam, image):
    gsam.box_threshold = 1.0  # a sigmoid score never exceeds 1
    assert gsam.masks_for_nouns(image, ["cat", "table"]) == {"cat": None, "table": None}
    assert gsam.masks_for_nouns(image, []) == {}


def test_grayscale_image_is_accepted(gsam, image):
    result = gsam.masks_for_nouns(image.convert("L"), ["table"])
    assert result["table"].shape == (HEIGHT, WIDTH)


def test_constructor_checks(tiny_parts):
    detector, detector_processor, segmenter, segmenter_processor = tiny_parts
    with pytest.raises(ValueError, match="all four"):
        GroundedSAM(detector=detector, detector_processor=detector_processor)
    with pytest.raises(ValueError, match="box_threshold"):
        GroundedSAM(box_threshold=1.5, detector=detector, detector_processor=detector_processor,
                    segmenter=segmenter, segmenter_processor=segmenter_processor)
    with pytest.raises(ValueError, match="SAM"):
        GroundedSAM(detector=detector, detector_processor=detector_processor, segmenter=detector,
                    segmenter_processor=segmenter_processor)


# ---- settings: the authors' run by default -------------------------------------------------------

def test_default_settings_are_the_authors_run():
    # preprocess_data/run_pipeline.sh: GroundingDINO_SwinT_OGC, sam_hq_vit_h, --box_threshold 0.25 --text_threshold 0.25
    assert DEFAULT_GROUNDING_SETTINGS == "authors"
    authors = GROUNDING_SETTINGS["authors"]
    assert authors.detector_id == "IDEA-Research/grounding-dino-tiny"
    assert authors.segmenter_id == "syscv-community/sam-hq-vit-huge"
    assert (authors.box_threshold, authors.text_threshold) == (0.25, 0.25)
    assert (masks_module.DEFAULT_DETECTOR_ID, masks_module.DEFAULT_SEGMENTER_ID) == (
        authors.detector_id, authors.segmenter_id)
    assert (masks_module.BOX_THRESHOLD, masks_module.TEXT_THRESHOLD) == (0.25, 0.25)


def test_grounded_sam_script_preset_is_the_previous_defaults():
    script = GROUNDING_SETTINGS["grounded-sam-script"]
    assert script.detector_id == "IDEA-Research/grounding-dino-base"
    assert script.segmenter_id == "facebook/sam-vit-huge"
    assert (script.box_threshold, script.text_threshold) == (0.3, 0.25)
    with pytest.raises(ValueError, match="authors"):
        resolve_grounding_settings("no-such-preset")


def test_authors_settings_fall_back_to_sam_without_sam_hq(monkeypatch, caplog):
    from tokencompose import grounding

    monkeypatch.setattr(grounding, "sam_hq_available", lambda: False)  # where resolve_grounding_settings looks
    with caplog.at_level("WARNING", logger="tokencompose.masks"):
        resolved = resolve_grounding_settings("authors")
    assert resolved.segmenter_id == "facebook/sam-vit-huge"
    assert resolved.detector_id == "IDEA-Research/grounding-dino-tiny" and resolved.box_threshold == 0.25
    assert "SamHQModel" in caplog.text and "SAM ViT-H" in caplog.text
    caplog.clear()
    assert resolve_grounding_settings("grounded-sam-script") == GROUNDING_SETTINGS["grounded-sam-script"]
    assert caplog.text == ""  # nothing to fall back from
    gsam = GroundedSAM.random_tiny(WORDS, box_threshold=0.0, text_threshold=0.0)  # falls back to tiny SAM
    assert gsam.segmenter.config.model_type == "sam"


@pytest.mark.skipif(not sam_hq_available(), reason="this transformers has no SamHQModel")
def test_default_path_builds_sam_hq_and_segments(image):
    from transformers import SamHQModel, SamHQProcessor

    default = GroundedSAM.random_tiny(WORDS)
    assert default.settings.name == "authors"
    assert (default.box_threshold, default.text_threshold) == (0.25, 0.25)
    assert isinstance(default.segmenter, SamHQModel) and isinstance(default.segmenter_processor, SamHQProcessor)
    default.box_threshold = default.text_threshold = 0.0  # random weights: keep every box
    result = default.masks_for_nouns(image, ["cat", "kite"])
    assert result["cat"].shape == (HEIGHT, WIDTH) and result["cat"].dtype == bool
    masks = default.segment(image, [(4.0, 4.0, 40.0, 30.0)])
    assert masks.shape == (1, HEIGHT, WIDTH)


def test_grounded_sam_script_preset_builds_sam():
    from transformers import SamModel

    script = GroundedSAM.random_tiny(WORDS, settings="grounded-sam-script")
    assert isinstance(script.segmenter, SamModel) and script.segmenter.config.model_type == "sam"
    assert (script.box_threshold, script.text_threshold) == (0.3, 0.25)
    assert script.settings.detector_id == "IDEA-Research/grounding-dino-base"
    # a single value overrides the preset, the rest stays
    mixed = GroundedSAM.random_tiny(WORDS, box_threshold=0.5, settings="grounded-sam-script")
    assert (mixed.box_threshold, mixed.text_threshold) == (0.5, 0.25)


# ---- loading ------------------------------------------------------------------------------------

def test_from_pretrained_folders(tiny_parts, tmp_path, image):
    detector, detector_processor, segmenter, segmenter_processor = tiny_parts
    detector.save_pretrained(tmp_path / "det")
    detector_processor.save_pretrained(tmp_path / "det")
    segmenter.save_pretrained(tmp_path / "sam")
    segmenter_processor.save_pretrained(tmp_path / "sam")
    loaded = GroundedSAM.from_pretrained(str(tmp_path / "det"), str(tmp_path / "sam"), device="cpu",
                                         box_threshold=0.0, text_threshold=0.0, local_files_only=True)
    result = loaded.masks_for_nouns(image, ["cat", "kite"])
    assert result["cat"].shape == (HEIGHT, WIDTH) and result["kite"] is None
    # the segmenter comes back as what was saved (SAM-HQ by default, where transformers has it)
    assert type(loaded.segmenter) is type(segmenter)
    assert type(loaded.segmenter_processor) is type(segmenter_processor)

    with pytest.raises(ModelLoadError, match="not a Grounding DINO"):
        GroundedSAM.from_pretrained(str(tmp_path / "sam"), str(tmp_path / "det"), local_files_only=True)


def test_from_pretrained_says_how_to_get_weights(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(ModelLoadError) as error:
        GroundedSAM.from_pretrained(str(missing), str(missing), local_files_only=True)
    message = str(error.value)
    assert str(missing) in message and "no such folder" in message
    assert "huggingface-cli login" in message and "huggingface-cli download" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        GroundedSAM.from_pretrained(str(tmp_path / "empty"), local_files_only=True)


# --------------------------------------------------------------------------------------------------
# the example photographs (scikit-image's bundled ones), with a stand-in skimage module: the main environment
# has no scikit-image; Colab does
# --------------------------------------------------------------------------------------------------

def _fake_skimage(monkeypatch, pixels):
    import sys
    import types

    data = types.ModuleType("skimage.data")
    data.coffee = lambda: pixels
    package = types.ModuleType("skimage")
    package.data = data
    monkeypatch.setitem(sys.modules, "skimage", package)
    monkeypatch.setitem(sys.modules, "skimage.data", data)


def test_example_photo_gives_the_image_its_caption_and_licence(monkeypatch):
    from tokencompose.masks import EXAMPLE_PHOTOS, example_photo

    pixels = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    _fake_skimage(monkeypatch, pixels)
    photo = example_photo("coffee")
    assert photo.image.size == (8, 6) and photo.image.mode == "RGB"
    assert np.array_equal(np.asarray(photo.image), pixels)
    assert photo.caption == EXAMPLE_PHOTOS["coffee"][0] and "CC0" in photo.licence


def test_example_photo_names_the_choices_and_the_missing_package(monkeypatch):
    import sys

    from tokencompose.masks import example_photo

    with pytest.raises(KeyError, match="coffee"):
        example_photo("lena")
    monkeypatch.setitem(sys.modules, "skimage", None)  # import fails as if not installed
    with pytest.raises(ImportError, match="pip install scikit-image"):
        example_photo("coffee")
