"""OWLv2 / OWL-ViT behind the Detector interface: tiny random-weight models, real plumbing and post-processing."""

import numpy as np
import pytest
import torch

from tokencompose.evaluate.detectors import (
    QUERY_TEMPLATE,
    Detection,
    Detector,
    OwlDetector,
    draw_detections,
    owl_postprocess,
)


def test_postprocess_by_hand():
    # 3 predicted boxes, 2 queries; sigmoid(0) = 0.5, sigmoid(-10) ~ 4.5e-5, sigmoid(2) ~ 0.881
    logits = torch.tensor([[0.0, -3.0], [-10.0, -12.0], [1.0, 2.0]])
    boxes = torch.tensor([[0.5, 0.25, 0.5, 0.5],   # (cx, cy, w, h) relative
                          [0.5, 0.5, 1.0, 1.0],
                          [0.25, 0.5, 0.5, 1.0]])
    # OWL-ViT: the image is stretched, x scales by width 60, y by height 40
    found = owl_postprocess(logits, boxes, ["cat", "dog"], (60, 40), padded_to_square=False, threshold=0.01)
    assert [d.name for d in found] == ["dog", "cat"]  # best first; the 4.5e-5 box is dropped
    assert found[0].score == pytest.approx(1 / (1 + np.exp(-2)))
    assert found[1].score == pytest.approx(0.5)
    assert found[1].box == pytest.approx((15.0, 0.0, 45.0, 20.0))
    assert found[0].box == pytest.approx((0.0, 0.0, 30.0, 40.0))
    # OWLv2: padded to a 60 x 60 square, both axes scale by 60; y clipped to the 40-pixel image
    found = owl_postprocess(logits, boxes, ["cat", "dog"], (60, 40), padded_to_square=True, threshold=0.6)
    assert len(found) == 1 and found[0].name == "dog"
    assert found[0].box == pytest.approx((0.0, 0.0, 30.0, 40.0))  # (0, 0, 30, 60) clipped
    with pytest.raises(ValueError, match="queries"):
        owl_postprocess(logits, boxes, ["cat"], (60, 40), padded_to_square=False)


@pytest.mark.parametrize("kind", ["owlv2", "owlvit"])
def test_tiny_owl_plumbing(kind, monkeypatch):
    detector = OwlDetector.tiny(kind, threshold=0.0)
    assert isinstance(detector, Detector)
    seen = []
    tokenize = detector.tokenizer.__call__

    class Spy:
        def __call__(self, texts, **kwargs):
            seen.append(list(texts))
            return tokenize(texts, **kwargs)

    monkeypatch.setattr(detector, "tokenizer", Spy())
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)  # H 40, W 60: not square
    found = detector.detect(image, ["cat", "traffic light"])
    assert seen == [["a photo of a cat", "a photo of a traffic light"]]
    assert QUERY_TEMPLATE == "a photo of a {name}"
    assert len(found) == (32 // 8) ** 2  # threshold 0: every patch's box, one label each
    for d in found:
        assert isinstance(d, Detection) and d.name in ("cat", "traffic light")
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 <= x1 <= 60 and 0 <= y0 <= y1 <= 40
    # the same as transformers' own post-processing of the same outputs (scores, labels)
    processor = detector.image_processor
    pil = [__import__("PIL.Image").Image.fromarray(image)]
    pixels = processor(images=pil, return_tensors="pt")["pixel_values"]
    text = tokenize(detector.queries(["cat", "traffic light"]), padding="max_length", max_length=16,
                    truncation=True, return_tensors="pt")
    with torch.no_grad():
        outputs = detector.model(input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                                 pixel_values=pixels)
    reference = processor.post_process_object_detection(outputs, threshold=0.5, target_sizes=[(40, 60)])[0]
    detector.threshold = 0.5
    mine = detector.detect(image, ["cat", "traffic light"])
    assert sorted(d.score for d in mine) == pytest.approx(sorted(reference["scores"].tolist()), abs=1e-5)
    assert len(mine) == int((reference["scores"] > 0.5).sum())
    # batched detection equals one-by-one
    many = detector.detect_many([image, image[:, ::-1].copy()], ["cat", "traffic light"])
    assert [(d.name, round(d.score, 5)) for d in many[0]] == [(d.name, round(d.score, 5)) for d in mine]


def test_owl_errors():
    detector = OwlDetector.tiny("owlvit")
    with pytest.raises(ValueError, match="category names"):
        detector.detect(np.zeros((32, 32, 3), np.uint8), None)
    from tokencompose.models import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match="huggingface-cli download"):
        OwlDetector.from_pretrained("/nonexistent/owlv2-folder")


def test_draw_detections():
    image = np.zeros((20, 20, 3), np.uint8)
    picture = draw_detections(image, [Detection("cat", 0.9, (2.0, 2.0, 10.0, 10.0))], scale=4)
    assert picture.size == (80, 80)
    assert np.asarray(picture).reshape(-1, 3).max() > 0  # something was drawn
