"""sample.py: the toy DDIM path and the plain diffusers path, file naming, resume, seeds, loading errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from sd_parts import tiny_pipeline

from tokencompose.models import WeightsNotFoundError, build_toy_model, save_toy_model
from tokencompose.sample import (
    cli,
    ddim_sample,
    generate,
    image_name,
    initial_noise,
    load_model,
    load_pipeline,
    parse_seeds,
    read_prompts,
)

PROMPTS = ["a photo of a circle.", "a photo of a star and a ring."]


@pytest.fixture(scope="module")
def toy():
    return build_toy_model(sample_size=16, seed=0)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


# ---------------------------------------------------------------------------------------------- parsing

def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]
    assert parse_seeds("5, 5,1") == [5, 1]
    with pytest.raises(ValueError, match="backwards"):
        parse_seeds("5-2")
    with pytest.raises(ValueError, match="cannot read seeds"):
        parse_seeds("a-b")
    with pytest.raises(ValueError, match="more than 100,000 images a prompt"):
        parse_seeds("0-99999999")  # a typo: refused at once, not a silent hour of list building
    assert len(parse_seeds("0-99999")) == 100_000


def test_read_prompts(tmp_path):
    multigen = tmp_path / "set.json"
    multigen.write_text(json.dumps([{"unique_id": 0, "text": "a photo of a cat."}, {"text": "a dog."}]))
    assert read_prompts(multigen) == ["a photo of a cat.", "a dog."]
    metadata = tmp_path / "metadata.jsonl"
    metadata.write_text('{"file_name": "1.png", "text": "a kite."}\n\n{"file_name": "2.png", "text": "a bus."}\n')
    assert read_prompts(metadata) == ["a kite.", "a bus."]
    lines = tmp_path / "p.txt"
    lines.write_text("a cat.\n\n  a dog.  \n")
    assert read_prompts(lines) == ["a cat.", "a dog."]
    assert read_prompts("a photo of a star.") == ["a photo of a star."]
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_prompts(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"prompt": "x"}]))
    with pytest.raises(ValueError, match="entry 0 has no 'text'"):
        read_prompts(bad)


# ---------------------------------------------------------------------------------------------- toy path

def test_ddim_callback_sees_every_step_in_order(toy):
    calls = []
    cond = torch.zeros(1, 77, 32)
    ddim_sample(toy.unet, toy.scheduler, cond, cond, initial_noise([0], (3, 16, 16)), steps=4, guidance=2.0,
                callback=lambda i, t: calls.append((i, t)))
    # 4 timesteps evenly spaced from 999 to 0: 999, 666, 333, 0
    assert calls == [(0, 999), (1, 666), (2, 333), (3, 0)]


def test_generate_toy_files_naming_and_resume(toy, tmp_path):
    out = tmp_path / "images"
    paths = generate(toy, PROMPTS, [3, 5], steps=2, out_dir=out, batch_size=3, progress=False)
    names = [p.name for p in paths]
    assert names == ["0_3.png", "0_5.png", "1_3.png", "1_5.png"]
    assert all(p.is_file() for p in paths)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(names)  # no leftover partial files
    first = np.asarray(Image.open(out / "1_5.png"))
    assert first.shape == (16, 16, 3) and first.dtype == np.uint8

    # resume: an existing file is not regenerated (overwrite it with white to see), a deleted one is
    Image.fromarray(np.full((16, 16, 3), 255, np.uint8)).save(out / "0_3.png")
    (out / "1_5.png").unlink()
    generate(toy, PROMPTS, [3, 5], steps=2, out_dir=out, progress=False)
    assert (np.asarray(Image.open(out / "0_3.png")) == 255).all()
    regenerated = np.asarray(Image.open(out / "1_5.png"))
    assert np.abs(regenerated.astype(int) - first.astype(int)).max() <= 1  # same seed, same image


def test_generate_never_keeps_images_of_other_weights_or_settings(toy, tmp_path):
    """`--steps 0` noise kept by a rerun with `--steps 20`, a second model scored on the first one's images:
    the folder's manifest (weights digest + settings) decides whether an image on disk may be reused."""
    first = generate(toy, PROMPTS[:1], [0], steps=1, out_dir=tmp_path, progress=False)[0].read_bytes()
    assert generate(toy, PROMPTS[:1], [0], steps=1, out_dir=tmp_path, progress=False)[0].read_bytes() == first
    more_steps = generate(toy, PROMPTS[:1], [0], steps=3, out_dir=tmp_path, progress=False)[0].read_bytes()
    assert more_steps != first
    other = build_toy_model(sample_size=16, seed=5)
    other_model = generate(other, PROMPTS[:1], [0], steps=3, out_dir=tmp_path, progress=False)[0].read_bytes()
    assert other_model != more_steps
    assert json.loads((tmp_path / "manifest.json").read_text())["steps"] == 3


def test_generate_keeps_the_sampling_mode_apart(toy, tmp_path):
    """The authors' batch-1 mode must not reuse a batched run's images (they may differ in the last bits):
    an image planted in a 'fast' folder survives a 'fast' rerun and is replaced by an 'authors' run."""
    from PIL import Image

    path = generate(toy, PROMPTS[:1], [0], steps=1, out_dir=tmp_path, progress=False)[0]
    made = path.read_bytes()
    Image.new("RGB", (16, 16), (255, 0, 255)).save(path)  # not what the model makes
    planted = path.read_bytes()
    assert generate(toy, PROMPTS[:1], [0], steps=1, out_dir=tmp_path, progress=False)[0].read_bytes() == planted
    authors = generate(toy, PROMPTS[:1], [0], steps=1, out_dir=tmp_path, progress=False, mode="authors")[0]
    assert authors.read_bytes() == made
    assert json.loads((tmp_path / "manifest.json").read_text())["mode"] == "authors"
    with pytest.raises(ValueError, match="unknown sampling mode"):
        generate(toy, PROMPTS[:1], [0], steps=1, out_dir=tmp_path, progress=False, mode="slow")


def test_generate_refuses_other_prompts_in_same_folder(toy, tmp_path):
    generate(toy, PROMPTS[:1], [0], steps=1, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="another --out folder"):
        generate(toy, ["a photo of a heart."], [0], steps=1, out_dir=tmp_path, progress=False)


def test_generate_toy_arrays_do_not_depend_on_batching(toy):
    together = generate(toy, PROMPTS, [0, 1], steps=2, batch_size=4, progress=False)
    alone = generate(toy, PROMPTS, [0, 1], steps=2, batch_size=1, progress=False)
    assert together.shape == (4, 16, 16, 3) and together.dtype == np.uint8
    # float rounding differs between batch sizes and x0 = (x - sqrt(1 - a) eps) / sqrt(a) at t = 999
    # (a = 2e-9) magnifies it 2e4 times, so a rare pixel may flip; a batch-dependent noise would change all
    differing = np.abs(together.astype(int) - alone.astype(int)) > 1
    assert differing.mean() < 0.01
    # prompt-major order: image 1 is prompt 0 with seed 1, which differs from seed 0
    assert not np.array_equal(together[0], together[1])


def test_generate_rejects_bad_input(toy):
    with pytest.raises(TypeError, match="not the string"):
        generate(toy, "a photo of a circle.", [0], steps=1)
    with pytest.raises(ValueError, match="toy model samples 16 x 16"):
        generate(toy, PROMPTS, [0], steps=1, height=32, progress=False)
    with pytest.raises(TypeError, match="cannot sample from a UNet2DConditionModel"):
        generate(toy.unet, PROMPTS, [0], steps=1, progress=False)


def test_cli_on_a_toy_folder(toy, tmp_path):
    folder = save_toy_model(build_toy_model(sample_size=16, seed=1), tmp_path / "model")
    out = tmp_path / "out"
    assert cli(["--model", str(folder), "--prompts", "a photo of a circle.", "--seeds", "0-1", "--out", str(out),
                "--steps", "1"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["0_0.png", "0_1.png"]
    assert json.loads((out / "prompts.json").read_text())["prompts"] == ["a photo of a circle."]


def test_load_model_bare_unet_needs_base(toy, tmp_path):
    toy.unet.save_pretrained(tmp_path / "unet_only")
    with pytest.raises(ValueError, match="--base"):
        load_model(tmp_path / "unet_only")
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        load_model(tmp_path / "nothing here")


def test_load_model_bare_unet_into_toy_base(tmp_path):
    base = save_toy_model(build_toy_model(sample_size=16, seed=1), tmp_path / "base")
    tuned = build_toy_model(sample_size=16, seed=2).unet
    tuned.save_pretrained(tmp_path / "run" / "unet")
    model = load_model(tmp_path / "run", base=str(base), device="cpu")
    loaded = dict(model.unet.named_parameters())
    for name, weight in tuned.named_parameters():
        assert torch.equal(loaded[name], weight), name


# ---------------------------------------------------------------------------------------------- SD path

def test_sd_pipeline_two_steps_named_files(pipe, tmp_path):
    paths = generate(pipe, PROMPTS, [0, 1], steps=2, out_dir=tmp_path, batch_size=4, progress=False)
    assert [p.name for p in paths] == [image_name(0, 0), image_name(0, 1), image_name(1, 0), image_name(1, 1)]
    image = np.asarray(Image.open(paths[0]))
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8


def test_sd_pipeline_seeds_are_per_image(pipe):
    batch = generate(pipe, PROMPTS, [7], steps=2, batch_size=2, progress=False)
    single = generate(pipe, PROMPTS[1:], [7], steps=2, batch_size=1, progress=False)
    assert batch.shape == (2, 32, 32, 3)
    assert np.abs(batch[1].astype(int) - single[0].astype(int)).max() <= 1
    other_seed = generate(pipe, PROMPTS[1:], [8], steps=2, progress=False)
    assert not np.array_equal(other_seed[0], single[0])


def test_load_pipeline_without_weights_says_how_to_get_them(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="huggingface-cli download"):
        load_pipeline(str(tmp_path / "no" / "such" / "model"), device="cpu")
    with pytest.raises(WeightsNotFoundError, match="no UNet in"):
        load_pipeline(str(tmp_path), unet_dir=tmp_path / "missing_unet", device="cpu")


def test_load_pipeline_swaps_in_the_finetuned_unet(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "base")
    tuned = tiny_pipeline(seed=1).unet
    tuned.save_pretrained(tmp_path / "tuned")
    loaded = load_pipeline(str(tmp_path / "base"), unet_dir=tmp_path / "tuned", device="cpu", scheduler="ddim")
    assert type(loaded.scheduler).__name__ == "DDIMScheduler"
    tuned_weights = dict(tuned.named_parameters())
    base_weights = dict(pipe.unet.named_parameters())
    changed = 0
    for name, weight in loaded.unet.named_parameters():
        assert torch.equal(weight, tuned_weights[name]), name
        changed += not torch.equal(weight, base_weights[name])
    assert changed > 0
    # the rest of the pipeline is the base's
    for name, weight in loaded.vae.named_parameters():
        assert torch.equal(weight, dict(pipe.vae.named_parameters())[name]), name


def test_load_finetuned_takes_the_authors_layouts(pipe, tmp_path, monkeypatch):
    """A full pipeline folder (the layout of the authors' mlpc-lab/TokenCompose_SD14_A), a train run folder with
    unet/, and a bare UNet folder all load; a missing model says what it accepts."""
    from tokencompose.sample import AUTHORS_CHECKPOINTS, load_finetuned

    tuned = tiny_pipeline(seed=1)
    tuned.save_pretrained(tmp_path / "authors")  # a full pipeline, as the authors publish theirs
    pipe.save_pretrained(tmp_path / "base")
    tuned.unet.save_pretrained(tmp_path / "run" / "unet")
    tuned.unet.save_pretrained(tmp_path / "bare_unet")
    expected = dict(tuned.unet.named_parameters())
    for source in ("authors", "run", "bare_unet"):
        loaded = load_finetuned(tmp_path / source, base=str(tmp_path / "base"), device="cpu")
        for name, weight in loaded.unet.named_parameters():
            assert torch.equal(weight, expected[name]), (source, name)
    assert AUTHORS_CHECKPOINTS["sd14"] == "mlpc-lab/TokenCompose_SD14_A"
    with pytest.raises(WeightsNotFoundError, match="TokenCompose_SD14_A"):
        load_finetuned(tmp_path / "nothing here", base=str(tmp_path / "base"), device="cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="huggingface-cli"):
        load_finetuned("someone/not-a-model", base=str(tmp_path / "base"), device="cpu")
