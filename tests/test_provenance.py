"""provenance.py: a model folder's digest changes with its weights or settings, not with its location."""

import shutil

import pytest
import torch

from tokencompose.models import build_toy_model, save_toy_model
from tokencompose.provenance import weights_digest


def test_digest_follows_weights_not_location(tmp_path):
    components = build_toy_model(sample_size=16)
    save_toy_model(components, tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert weights_digest(tmp_path / "a") == weights_digest(tmp_path / "b")
    with torch.no_grad():
        next(components.unet.parameters()).add_(1.0)
    save_toy_model(components, tmp_path / "b")
    assert weights_digest(tmp_path / "a") != weights_digest(tmp_path / "b")
    (tmp_path / "a" / "pretrain_settings.json").write_text('{"colour_mode": "attribute"}')
    before = weights_digest(tmp_path / "a")
    (tmp_path / "a" / "pretrain_settings.json").write_text('{"colour_mode": "identity"}')
    assert weights_digest(tmp_path / "a") != before
    with pytest.raises(FileNotFoundError):
        weights_digest(tmp_path / "empty")
