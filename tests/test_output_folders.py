"""The output-folder rule (provenance.claim_folder), command by command: a command deletes or overwrites only
files this project wrote, refuses before it changes anything, and never reuses a result of other inputs."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tokencompose.__main__ import main
from tokencompose.models import build_toy_model, save_toy_model
from tokencompose.sample import generate

PROMPTS = ["a photo of a circle.", "a photo of a star and a ring."]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base") / "toy"
    save_toy_model(build_toy_model(sample_size=16, seed=0), folder)
    return folder


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def test_sample_refuses_a_folder_of_the_users_photos(tmp_path, base, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(photos / "beach_2019.png")
    (photos / "notes.txt").write_text("mine")
    before = snapshot(photos)
    status, err = run(capsys, "sample", "--model", base, "--prompts", "a photo of a circle.", "--seeds", "0",
                      "--steps", "1", "--out", photos)
    assert status == 2 and "Traceback" not in err
    assert "beach_2019.png" in err and "--overwrite" in err and "did not write" in err
    assert snapshot(photos) == before  # nothing deleted, nothing written (not even a manifest)
    # files under other names are left alone, and the run goes ahead
    other = tmp_path / "mixed"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"jpeg")
    assert run(capsys, "sample", "--model", base, "--prompts", "a photo of a circle.", "--seeds", "0", "--steps",
               "1", "--out", other)[0] == 0
    assert (other / "holiday.jpg").read_bytes() == b"jpeg" and (other / "0_0.png").is_file()
    # --overwrite replaces this project's files only: the photos are still refused, and kept
    status, err = run(capsys, "sample", "--model", base, "--prompts", "a photo of a circle.", "--seeds", "0",
                      "--steps", "1", "--out", photos, "--overwrite")
    assert status == 2 and "beach_2019.png" in err and "--overwrite included" in err
    assert snapshot(photos) == before


def test_a_refused_sample_keeps_the_first_runs_images(tmp_path):
    toy = build_toy_model(sample_size=16, seed=0)
    out = tmp_path / "run"
    generate(toy, PROMPTS, [0], steps=1, out_dir=out, progress=False)
    before = snapshot(out)
    with pytest.raises(ValueError, match="prompt 0 is now"):  # other prompts: refused...
        generate(toy, ["a photo of a heart.", PROMPTS[1]], [0], steps=2, out_dir=out, progress=False)
    assert snapshot(out) == before  # ...before anything changed (other steps would have emptied the folder)


def test_an_image_is_reused_only_for_its_own_prompt(tmp_path):
    """A file this project wrote for another prompt under the same name is regenerated, not served."""
    from tokencompose.provenance import record_written, written_files

    toy = build_toy_model(sample_size=16, seed=0)
    out = tmp_path / "run"
    generate(toy, PROMPTS[:1], [0], steps=1, out_dir=out, progress=False)
    assert written_files(out)["0_0.png"] == PROMPTS[0]
    record_written(out, {"0_0.png": "a photo of something else."})  # as if made for another prompt
    Image.new("RGB", (16, 16), (255, 0, 255)).save(out / "0_0.png")
    generate(toy, PROMPTS[:1], [0], steps=1, out_dir=out, progress=False)
    assert not (np.asarray(Image.open(out / "0_0.png")) == [255, 0, 255]).all()
    assert written_files(out)["0_0.png"] == PROMPTS[0]


def test_multigen_never_scores_new_prompts_on_old_images(tmp_path):
    """The issue's case: another prompt file into the same --out was scored on the old images (MG1 0 vs 100)."""
    from tokencompose.evaluate.multigen import make_prompts, run_multigen
    from tokencompose.toy.detector import ToyDetector
    from tokencompose.toy.world import category_names, toy_caption

    detector = ToyDetector()
    first = make_prompts(category_names(), 2, 2, seed=0, template=toy_caption)
    second = make_prompts(category_names(), 2, 2, seed=1, template=toy_caption)
    assert [p.text for p in first] != [p.text for p in second]

    class Painter:
        """Draws the first named category of each prompt as a full square: what the detector sees is known."""
        provenance = {"model": "painter"}

        def __call__(self, texts, seeds):
            from tokencompose.toy.world import get_category, render_scene, toy_nouns

            images = []
            for text, seed in zip(texts, seeds, strict=True):
                scene = render_scene([get_category(toy_nouns(text)[0])], np.random.default_rng(seed), size=32)
                images.append(scene.image)
            return np.stack(images)

    shared = tmp_path / "shared"
    run_multigen(first, detector, shared, generate_fn=Painter(), images_per_prompt=1, progress=False)
    reused = run_multigen(second, detector, shared, generate_fn=Painter(), images_per_prompt=1, progress=False)
    fresh = run_multigen(second, detector, tmp_path / "fresh", generate_fn=Painter(), images_per_prompt=1,
                         progress=False)
    assert reused["scores"] == fresh["scores"]
    assert json.loads((shared / "images" / "written-0.json").read_text())["0_0.png"] == second[0].text


def test_train_refuses_to_write_over_its_inputs(tmp_path, base, capsys):
    before = snapshot(base)
    status, err = run(capsys, "train", "--pretrained", base, "--toy-scenes", "--resolution", "16", "--groups",
                      "mid_2", "up_4", "--max-train-steps", "1", "--output-dir", base)
    assert status == 2 and "Traceback" not in err and "would write its UNet and checkpoints over" in err
    assert snapshot(base) == before
    inside = base / "run"
    status, err = run(capsys, "train", "--pretrained", base, "--toy-scenes", "--resolution", "16", "--groups",
                      "mid_2", "up_4", "--max-train-steps", "1", "--output-dir", inside)
    assert status == 2 and "overlaps pretrained" in err and not inside.exists()
    from tokencompose.config import ASSETS_DIR

    status, err = run(capsys, "train", "--toy-scenes", "--max-train-steps", "1",
                      "--output-dir", ASSETS_DIR / "my_finetune")
    assert status == 2 and "shipped models" in err and not (ASSETS_DIR / "my_finetune").exists()


def test_evaluate_refuses_files_of_unknown_origin_before_any_model_loads(tmp_path, capsys):
    out = tmp_path / "mg"
    (out / "images").mkdir(parents=True)
    (out / "images" / "my_photo.png").write_bytes(b"png")
    for command in ("multigen", "visor"):
        extra = ["--prompts", "toy", "--num-prompts", "1"] if command == "multigen" else ["--categories", "toy"]
        status, err = run(capsys, "evaluate", command, *extra, "--model", tmp_path / "no_such_model",
                          "--detector", "toy", "--out", out)
        # the folder is named, not the missing model: the check comes first, and nothing was changed
        assert status == 2 and "my_photo.png" in err and "no_such_model" not in err, err
        assert sorted(p.name for p in out.rglob("*")) == ["images", "my_photo.png"]
