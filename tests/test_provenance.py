"""provenance.py: a model folder's digest changes with its weights or settings, not with its location."""

import json
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


def test_claim_folder_removes_only_its_own_results_of_another_record(tmp_path):
    from tokencompose.provenance import StaleResultError, claim_folder, record_written, written_files

    folder = tmp_path / "images"
    claim_folder(folder, {"model": "a", "steps": 20}, patterns=("*_*.png",))
    (folder / "0_0.png").write_bytes(b"a's image")
    record_written(folder, {"0_0.png": "a photo of a cat."})
    (folder / "notes.txt").write_text("kept: not a result")
    claim_folder(folder, {"model": "a", "steps": 20}, patterns=("*_*.png",))
    assert (folder / "0_0.png").is_file() and written_files(folder) == {"0_0.png": "a photo of a cat."}  # resumed
    with pytest.raises(StaleResultError, match="model 'a' -> 'b'"):
        claim_folder(folder, {"model": "b", "steps": 20}, patterns=("*_*.png",), on_mismatch="refuse")
    assert (folder / "0_0.png").is_file()
    claim_folder(folder, {"model": "a", "steps": 0}, patterns=("*_*.png",))
    assert not (folder / "0_0.png").exists() and (folder / "notes.txt").is_file()
    assert written_files(folder) == {}  # the removed results are forgotten; nothing of the old record is listed


def test_claim_folder_never_touches_files_it_did_not_write(tmp_path):
    """The output-folder rule: a user's files under result names are refused, before anything changes."""
    from tokencompose.provenance import OutputFolderError, check_folder, claim_folder, record_written

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday_2019.png").write_bytes(b"a user's photo")
    before = sorted(p.name for p in photos.iterdir())
    with pytest.raises(OutputFolderError, match=r"1 file\(s\) this project did not write \(holiday_2019.png\)"):
        claim_folder(photos, {"model": "a"}, patterns=("*_*.png",))
    assert sorted(p.name for p in photos.iterdir()) == before  # nothing written, nothing deleted
    with pytest.raises(OutputFolderError, match="--overwrite included. Move them out"):
        check_folder(photos, ("*_*.png",))
    # a folder this project claimed, with one image of its own and one the user dropped in
    run = tmp_path / "run"
    claim_folder(run, {"model": "a"}, patterns=("*_*.png",))
    (run / "0_0.png").write_bytes(b"ours")
    record_written(run, {"0_0.png": None})
    (run / "1_0.png").write_bytes(b"the user's")
    with pytest.raises(OutputFolderError, match="1_0.png"):
        claim_folder(run, {"model": "b"}, patterns=("*_*.png",))
    assert (run / "0_0.png").read_bytes() == b"ours" and (run / "1_0.png").read_bytes() == b"the user's"
    # once the user moved their file away, only this project's own result is removed
    (run / "1_0.png").rename(tmp_path / "1_0.png")
    claim_folder(run, {"model": "b"}, patterns=("*_*.png",))
    assert not (run / "0_0.png").exists() and (tmp_path / "1_0.png").read_bytes() == b"the user's"
    with pytest.raises(OutputFolderError, match="is a file"):
        claim_folder(tmp_path / "run" / "manifest.json", {"model": "a"}, patterns=("*_*.png",))


def test_claim_folder_keeps_an_earlier_versions_results_as_its_own(tmp_path):
    """A folder claimed before the written list existed (a manifest, no list): its results are the project's."""
    from tokencompose import __version__
    from tokencompose.provenance import claim_folder, written_files

    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"model": "a", "tokencompose": __version__}))
    (folder / "0_0.png").write_bytes(b"old run")
    claim_folder(folder, {"model": "a"}, patterns=("*_*.png",))
    assert (folder / "0_0.png").is_file() and written_files(folder) == {"0_0.png": None}
    claim_folder(folder, {"model": "b"}, patterns=("*_*.png",))
    assert not (folder / "0_0.png").exists()
