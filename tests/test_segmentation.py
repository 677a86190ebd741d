"""evaluate/segmentation.py: IoU, heat-map aggregation, the mean-IoU interval, and recording while sampling."""


import numpy as np
import pytest
import torch
from fake_recorder import StepRecorder

from tokencompose.attention import RecordingAttnProcessor
from tokencompose.evaluate.segmentation import (
    iou,
    resize_reference,
    segmentation_table,
    segmentation_transfer,
)
from tokencompose.heatmaps import (
    AttentionSum,
    aggregate_attention,
    generate_with_attention,
    heat_maps,
    normalise,
    noun_heat_maps,
    recording,
)
from tokencompose.models import build_toy_model
from tokencompose.sample import generate
from tokencompose.toy.detector import ToySegmenter
from tokencompose.toy.world import toy_nouns


def square(size=10, top=2, left=2, side=4):
    mask = np.zeros((size, size), dtype=bool)
    mask[top:top + side, left:left + side] = True
    return mask


# ---------------------------------------------------------------------------------------------- IoU

def test_iou_of_the_true_mask_is_one():
    mask = square()
    assert iou(mask.astype(np.float32), mask) == 1.0


def test_iou_of_a_shifted_mask_by_hand():
    mask = square(left=2)  # rows 2-5, columns 2-5: 16 pixels
    shifted = square(left=4).astype(np.float32)  # columns 4-7: overlap 4 rows x 2 columns = 8
    assert iou(shifted, mask) == pytest.approx(8 / (16 + 16 - 8))


def test_iou_threshold_is_strict():
    mask = square()
    heat = np.where(mask, 1.0, 0.4).astype(np.float32)  # background exactly at the threshold: not predicted
    assert iou(heat, mask, threshold=0.4) == 1.0
    assert iou(heat, mask, threshold=0.39) == pytest.approx(16 / 100)


def test_reference_mask_resized_by_majority():
    mask = np.zeros((4, 4), dtype=bool)
    mask[0:2, 0:2] = True  # the whole top-left 2x2 block -> True
    mask[2, 2] = True  # 1 of the 4 pixels of the bottom-right block -> False
    mask[0, 2:4] = True  # 2 of 4 of the top-right block -> True (>= half)
    assert resize_reference(mask, (2, 2)).tolist() == [[True, True], [False, False]]


def test_iou_compares_at_the_heat_map_size():
    big = np.zeros((8, 8), dtype=bool)
    big[:4, :4] = True  # the top-left quarter of the image
    heat = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert iou(heat, big) == 1.0


# ---------------------------------------------------------------------------------------------- aggregation

def test_aggregate_two_resolutions_heads_and_layers():
    tokens = 3
    up = torch.zeros(1, 2, 16, tokens)  # 4x4, two heads: token 0 is 1 in head 0 and 3 in head 1 -> mean 2
    up[:, 0, :, 0] = 1.0
    up[:, 1, :, 0] = 3.0
    mid = torch.zeros(1, 1, 4, tokens)  # 2x2, token 0 constant 4: bicubic upsampling keeps a constant
    mid[..., 0] = 4.0
    aggregated = aggregate_attention({"up_4": [up], "mid_2": [mid], "up_4_self": [torch.ones(1, 1, 16, 16)]},
                                     size=(4, 4))
    assert aggregated.shape == (1, tokens, 4, 4)
    assert torch.allclose(aggregated[0, 0], torch.full((4, 4), (2.0 + 4.0) / 2))
    assert torch.allclose(aggregated[0, 1:], torch.zeros(tokens - 1, 4, 4))


def test_aggregate_non_square_key_and_errors():
    layer = torch.arange(6.0).reshape(1, 1, 6, 1)  # 2 x 3 map, one token
    aggregated = aggregate_attention({"up_2x3": [layer]}, size=(2, 3))
    assert aggregated[0, 0].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    with pytest.raises(ValueError, match="no cross-attention maps"):
        aggregate_attention({"up_4_self": [torch.ones(1, 1, 16, 16)]}, size=(4, 4))


def test_heat_maps_sum_tokens_and_normalise():
    attention = torch.zeros(4, 2, 2)  # [T, H, W]
    attention[1] = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    attention[2] = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    attention[3] = torch.tensor([[5.0, 5.0], [5.0, 5.0]])
    maps = heat_maps(attention, [[1, 2], [3]])
    # noun 0: tokens 1 + 2 = [[0, 1], [2, 0]] -> min-max [[0, .5], [1, 0]]; noun 1 constant -> zeros
    assert maps.shape == (2, 2, 2)
    assert torch.allclose(maps[0], torch.tensor([[0.0, 0.5], [1.0, 0.0]]))
    assert torch.equal(maps[1], torch.zeros(2, 2))
    raw = heat_maps(attention, [[1, 2]], normalised=False)
    assert torch.allclose(raw[0], torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
    with pytest.raises(ValueError, match="outside 0..3"):
        heat_maps(attention, [[4]])
    with pytest.raises(TypeError, match="one list of token positions per noun"):
        heat_maps(attention, [1, 2])


def test_heat_maps_from_recorder_format_in_unit_range():
    generator = torch.Generator().manual_seed(0)
    maps = {"mid_2": [torch.rand(2, 2, 4, 77, generator=generator)],
            "up_4": [torch.rand(2, 2, 16, 77, generator=generator) for _ in range(2)]}
    heat = heat_maps(maps, [[5], [6, 7]], size=(8, 8), sample=1)
    assert heat.shape == (2, 8, 8)
    for noun_map in heat:
        assert noun_map.min().item() == 0.0 and noun_map.max().item() == pytest.approx(1.0)
    assert heat_maps(maps, [[5]]).shape == (1, 4, 4)  # default size: the largest map


def test_normalise_range():
    maps = torch.tensor([[[1.0, 3.0], [2.0, 5.0]]])
    assert torch.allclose(normalise(maps), torch.tensor([[[0.0, 0.5], [0.25, 1.0]]]))


# ---------------------------------------------------------------------------------------------- recording

def test_attention_sum_adds_steps_and_averages_heads():
    first = {"up_2": [torch.full((1, 2, 4, 3), 1.0)]}
    second_layer = torch.zeros(1, 2, 4, 3)
    second_layer[:, 1] = 4.0  # heads 0 and 4 -> mean 2
    second = {"up_2": [second_layer]}
    recorder = StepRecorder([first, second])
    summed = AttentionSum(recorder)
    summed.step(0, 999)
    summed.step(1, 500)
    assert recorder.resets == 2 and summed.steps == 2
    (total,) = summed.maps()["up_2"]
    assert total.shape == (1, 1, 4, 3)
    assert torch.allclose(total, torch.full((1, 1, 4, 3), 1.0 + 2.0))


@pytest.fixture(scope="module")
def toy():
    return build_toy_model(sample_size=16, seed=0)


def test_recording_sampler_heat_maps_per_noun(toy):
    prompts = ["a photo of a circle and a star.", "a photo of a ring."]
    images, attention = generate_with_attention(toy, prompts, [0, 1], steps=2, progress=False)
    assert images.shape == (2, 16, 16, 3)
    assert attention.shape == (2, 77, 16, 16)  # conditional half only: one map set per image
    maps = noun_heat_maps(attention, prompts[0], ["circle", "star"], toy.tokenizer, sample=0)
    assert list(maps) == ["circle", "star"]
    for heat in maps.values():
        assert heat.shape == (16, 16)
        assert heat.min().item() >= 0.0 and heat.max().item() <= 1.0
    # the recorder was removed: the UNet runs its default processors again
    assert not any(isinstance(p, RecordingAttnProcessor) for p in toy.unet.attn_processors.values())


def test_nothing_recorded_when_not_asked(toy):
    with recording(toy.unet) as summed:
        pass
    generate(toy, ["a photo of a circle."], [0], steps=2, progress=False)
    assert summed.maps() == {} and summed.steps == 0


def test_segmentation_transfer_counts_pairs_and_missing(toy):
    def segmenter(image, nouns):  # "circle" covers the whole image, every other noun is absent
        return {noun: np.ones(image.size[::-1], dtype=bool) if noun == "circle" else None for noun in nouns}

    segmenter.nouns_of = toy_nouns  # a reference may name each prompt's nouns (else the perceptron tagger)
    prompts = ["a photo of a circle and a star.", "a photo of a circle."]
    result = segmentation_transfer(toy, prompts, seeds=[0, 1], reference=segmenter, steps=1, progress=False)
    assert result["pairs"] == 4 and result["missing"] == 2  # 4 images with a circle; the star twice
    assert list(result["per_noun"]) == ["circle"]
    assert len(result["records"]) == 6
    assert all(0.0 < r["iou"] <= 1.0 for r in result["records"] if r["iou"] is not None)
    assert result["interval"]["n"] == 4
    # DAAM's protocol by default: down + up layers recorded
    assert result["settings"]["protocol"] == "daam" and result["settings"]["groups"] == ["down", "up"]
    earlier = segmentation_transfer(toy, prompts, seeds=[0, 1], reference=segmenter, steps=1, progress=False,
                                    protocol="layer-mean")
    assert earlier["settings"]["protocol"] == "layer-mean" and earlier["settings"]["groups"] == ["mid", "up"]
    assert earlier["pairs"] == 4 and earlier["missing"] == 2
    assert "| layer-mean |" in segmentation_table(earlier) and "| daam |" in segmentation_table(result)
    with pytest.raises(ValueError, match="protocol"):
        segmentation_transfer(toy, prompts, reference=segmenter, steps=1, progress=False, protocol="DAAM")


def test_cli_protocol_flag(monkeypatch):
    import tokencompose.evaluate.cli as evaluate_cli
    import tokencompose.evaluate.segmentation as segmentation

    seen = []
    scored = {"mean": 0.5, "low": 0.4, "high": 0.6, "level": 0.95}

    def fake_transfer(model, prompts, seeds, **kwargs):
        seen.append(kwargs["protocol"])
        return {"interval": scored, "pairs": 2, "missing": 0,
                "settings": {"protocol": kwargs["protocol"], "threshold": 0.4}}

    monkeypatch.setattr(evaluate_cli, "load_model", lambda *args, **kwargs: "model")
    monkeypatch.setattr(segmentation, "segmentation_transfer", fake_transfer)
    assert evaluate_cli.segmentation_cli(["--n-prompts", "1"]) == 0
    assert evaluate_cli.segmentation_cli(["--n-prompts", "1", "--protocol", "layer-mean"]) == 0
    assert seen == ["daam", "layer-mean"]
    scored = None  # nothing scored (no object drawn): the status says so, not 0
    assert evaluate_cli.segmentation_cli(["--n-prompts", "1"]) == 1
    with pytest.raises(SystemExit):
        evaluate_cli.segmentation_cli(["--protocol", "mean"])


def test_toy_nouns_and_reference_errors(toy):
    assert toy_nouns("a photo of a star, a circle and a star.") == ["star", "circle"]
    assert toy_nouns("a photo of a dog.") == []
    assert ToySegmenter().nouns_of("a photo of a ring and a dog.") == ["ring"]
    with pytest.raises(ValueError, match="needs reference masks.*ToySegmenter"):  # no silent toy default
        segmentation_transfer(toy, ["a photo of a circle."], steps=1, progress=False)


def test_sd_pipeline_records_cond_half_at_latent_size():
    from sd_parts import tiny_pipeline

    pipe = tiny_pipeline()
    images, attention = generate_with_attention(pipe, ["a photo of a cat and a dog."], [0], steps=2,
                                                progress=False)
    assert images.shape == (1, 32, 32, 3)
    assert attention.shape == (1, 77, 16, 16)  # 32 px / VAE factor 2
    with pytest.raises(ValueError, match="mask folder or a segmenter"):
        segmentation_transfer(pipe, ["a photo of a cat."], steps=1)
