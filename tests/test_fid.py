"""evaluate/fid.py: the Fréchet distance on Gaussians with known answers; clear errors offline."""

import json

import numpy as np
import pytest

from tokencompose.evaluate.fid import FIDUnavailableError, coco_captions, fid, frechet_distance


def test_identical_gaussians_have_distance_zero():
    sigma = np.array([[2.0, 0.3], [0.3, 1.0]])
    assert frechet_distance(np.zeros(2), sigma, np.zeros(2), sigma) == pytest.approx(0.0, abs=1e-9)


def test_diagonal_gaussians_by_hand():
    # |mu1 - mu2|^2 + sum (s1 + s2 - 2 sqrt(s1 s2)) = (1 + 4) + (1 + 4 - 4) + (9 + 1 - 6) = 10
    value = frechet_distance(np.array([0.0, 0.0]), np.diag([1.0, 9.0]), np.array([1.0, 2.0]), np.diag([4.0, 1.0]))
    assert value == pytest.approx(10.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_coco_captions_one_per_image_seeded(tmp_path):
    annotations = {"annotations": [{"image_id": i % 5, "caption": f" caption {i} "} for i in range(12)]}
    path = tmp_path / "captions_val2017.json"
    path.write_text(json.dumps(annotations))
    chosen = coco_captions(path, n=3, seed=1)
    assert len(chosen) == 3 and len({c["image_id"] for c in chosen}) == 3
    assert all(c["caption"] == f"caption {c['image_id']}" for c in chosen)  # the first caption of each image
    assert chosen == coco_captions(path, n=3, seed=1)
    with pytest.raises(FileNotFoundError, match="cocodataset.org"):
        coco_captions(tmp_path / "missing.json")


def test_fid_offline_says_what_is_missing(tmp_path):
    import importlib.util

    from PIL import Image

    if importlib.util.find_spec("torchmetrics") is not None:
        pytest.skip("torchmetrics is installed here: FID may really run, so there is no error to check")

    for folder in ("real", "fake"):
        (tmp_path / folder).mkdir()
        for i in range(2):
            Image.new("RGB", (8, 8), (i * 100, 0, 0)).save(tmp_path / folder / f"{i}.png")
    with pytest.raises(FIDUnavailableError, match="torchmetrics|Inception"):
        fid(tmp_path / "real", tmp_path / "fake")
