"""masks_original where the authors' packages are absent (the main environment): clear errors, no import cost.

The backend itself runs against the real packages in tests/original (``bash scripts/test_original_masks.sh``).
"""

from __future__ import annotations

import importlib.util
import logging

import pytest

from tokencompose.masks import GroundedSAM, ModelLoadError
from tokencompose.masks_original import OriginalPackagesMissingError, import_original

pytestmark = pytest.mark.skipif(
    all(importlib.util.find_spec(name) is not None for name in ("torchvision", "groundingdino", "segment_anything_hq")),
    reason="the original packages are installed here: tests/original runs the backend itself")


def test_missing_packages_name_what_to_pip_install():
    with pytest.raises(OriginalPackagesMissingError) as caught:
        GroundedSAM.from_pretrained("groundingdino_swint_ogc.pth", "sam_hq_vit_h.pth", backend="original",
                                    device="cpu")
    message = str(caught.value)
    assert isinstance(caught.value, ModelLoadError)  # prepare reports it and exits 1
    assert "cannot be imported here" in message
    assert "pip install torchvision groundingdino-py==0.4.0 segment-anything-hq==0.3" in message
    # and what else the backend needs: the checkpoints, where they come from, the config and BERT
    for needed in ("groundingdino_swint_ogc.pth", "sam_hq_vit_h.pth", "GroundingDINO_SwinT_OGC.py",
                   "IDEA-Research/GroundingDINO/releases", "SysCV/sam-hq", "bert-base-uncased"):
        assert needed in message, needed
    with pytest.raises(OriginalPackagesMissingError, match="sam_vit_h_4b8939.pth"):
        import_original("sam", preset="grounded-sam-script")


def test_unknown_backend_and_segmenter_kind_are_refused():
    with pytest.raises(ValueError, match="unknown backend 'dino'.*'original'"):
        GroundedSAM.from_pretrained(backend="dino")
    with pytest.raises(ValueError, match="segmenter_kind"):
        import_original("sam2")


def test_prepare_cli_reports_the_missing_packages(tmp_path, caplog):
    from tokencompose.prepare import cli

    (tmp_path / "images").mkdir()
    captions = tmp_path / "captions.jsonl"
    captions.write_text('{"file_name": "a.png", "text": "a cat"}\n', encoding="utf-8")
    argv = ["--images", str(tmp_path / "images"), "--captions", str(captions), "--out", str(tmp_path / "out"),
            "--backend", "original", "--detector", "groundingdino_swint_ogc.pth", "--segmenter", "sam_hq_vit_h.pth",
            "--device", "cpu", "--no-progress"]
    with caplog.at_level(logging.ERROR):
        assert cli(argv) == 1
    assert "pip install torchvision groundingdino-py==0.4.0" in caplog.text
