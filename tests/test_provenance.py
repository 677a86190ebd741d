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


def test_model_digest_follows_the_loaded_weights_and_padding():
    from tokencompose.provenance import model_digest

    first, again = build_toy_model(sample_size=16, seed=0), build_toy_model(sample_size=16, seed=0)
    assert model_digest(first) == model_digest(again)
    assert model_digest(build_toy_model(sample_size=16, seed=1)) != model_digest(first)
    assert model_digest(build_toy_model(sample_size=16, seed=0, padding="zero")) != model_digest(first)


def test_claim_folder_removes_results_of_another_record(tmp_path):
    from tokencompose.provenance import StaleResultError, claim_folder

    folder = tmp_path / "images"
    claim_folder(folder, {"model": "a", "steps": 20}, patterns=("*_*.png",))
    (folder / "0_0.png").write_bytes(b"a's image")
    (folder / "notes.txt").write_text("kept: not a result")
    claim_folder(folder, {"model": "a", "steps": 20}, patterns=("*_*.png",))
    assert (folder / "0_0.png").is_file()  # the same record: resumed
    with pytest.raises(StaleResultError, match="model 'a' -> 'b'"):
        claim_folder(folder, {"model": "b", "steps": 20}, patterns=("*_*.png",), on_mismatch="refuse")
    assert (folder / "0_0.png").is_file()
    claim_folder(folder, {"model": "a", "steps": 0}, patterns=("*_*.png",))
    assert not (folder / "0_0.png").exists() and (folder / "notes.txt").is_file()
    # results of unknown origin (no manifest) are not trusted either
    other = tmp_path / "old"
    other.mkdir()
    (other / "1_0.png").write_bytes(b"?")
    claim_folder(other, {"model": "a"}, patterns=("*_*.png",))
    assert not (other / "1_0.png").exists()
