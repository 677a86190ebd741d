"""What a user can get wrong, and what they are told: one line, exit status 2, never a traceback.

The catalogue of issue 17: each case runs ``python -m tokencompose ...`` in-process (``__main__.main``) and
checks the exit status, that the message names the problem, and that no traceback reaches the user. Then the
dataset checks of ``validate`` (each a file a real pipeline can produce), and that ``skip_bad`` skips exactly
what ``validate`` reports. Nothing here loads a real model; the one training case uses a 16 px toy model.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from cli_run import assert_named, run
from PIL import Image

from tokencompose.__main__ import USER_ERRORS, main
from tokencompose.data import TokenComposeDataset, validate_dataset


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a_file.txt"
    path.write_text("not a folder")
    return path


# --------------------------------------------------------------------------------------------------
# flags: ranges, finite numbers, output folders (argparse stops before any work)
# --------------------------------------------------------------------------------------------------

def _out(tmp_path):
    return tmp_path / "out"


def _a_file(folder: Path) -> Path:
    path = folder / "a_file.txt"
    path.write_text("not a folder")
    return path


FLAG_CASES = {
    # id: (argv builder, words the message must contain)
    "toy-data -n 0": (lambda t: ["toy-data", "--out", _out(t), "-n", "0"], ["argument -n", ">= 1", "'0'"]),
    "toy-data --seed -1": (lambda t: ["toy-data", "--out", _out(t), "-n", "2", "--seed", "-1"],
                           ["argument --seed", ">= 0", "'-1'"]),
    "toy-data --object-weights nan": (lambda t: ["toy-data", "--out", _out(t), "-n", "2", "--object-weights",
                                                 "0.5,nan,0.1,0.1"], ["--object-weights", "finite"]),
    "pretrain-toy --steps -3": (lambda t: ["pretrain-toy", "--out", _out(t), "--steps", "-3"],
                                ["argument --steps", ">= 1", "'-3'"]),
    "pretrain-toy --batch-size 0": (lambda t: ["pretrain-toy", "--out", _out(t), "--batch-size", "0"],
                                    ["argument --batch-size", ">= 1"]),
    "pretrain-toy --lr inf": (lambda t: ["pretrain-toy", "--out", _out(t), "--lr", "inf"],
                              ["argument --lr", "finite", "'inf'"]),
    "pretrain-toy --size 30": (lambda t: ["pretrain-toy", "--out", _out(t), "--size", "30"],
                               ["--size", "multiple of 4"]),
    "train --learning-rate nan": (lambda t: ["train", "--learning-rate", "nan"],
                                  ["argument --learning-rate", "finite", "'nan'"]),
    "train --max-train-steps 0": (lambda t: ["train", "--max-train-steps", "0"],
                                  ["argument --max-train-steps", ">= 1"]),
    "train --lambda -1": (lambda t: ["train", "--lambda", "-1"], ["argument --token-weight/--lambda", ">= 0"]),
    "train --ema-decay 2": (lambda t: ["train", "--ema-decay", "2"], ["argument --ema-decay", "[0, 1]"]),
    "train --train-data-dir missing": (lambda t: ["train", "--train-data-dir", t / "nowhere"],
                                       ["argument --train-data-dir", "not found"]),
    "sample --batch-size 0": (lambda t: ["sample", "--prompts", "a cat.", "--out", _out(t), "--batch-size", "0"],
                              ["argument --batch-size", ">= 1"]),
    "sample --limit 0": (lambda t: ["sample", "--prompts", "a cat.", "--out", _out(t), "--limit", "0"],
                         ["argument --limit", ">= 1"]),
    "sample --steps x": (lambda t: ["sample", "--prompts", "a cat.", "--out", _out(t), "--steps", "x"],
                         ["argument --steps", "whole number"]),
    "sample --guidance nan": (lambda t: ["sample", "--prompts", "a cat.", "--out", _out(t), "--guidance", "nan"],
                              ["argument --guidance", "finite"]),
    "prepare --box-threshold 1.5": (lambda t: ["prepare", "--images", t, "--captions", t / "c.jsonl", "--out",
                                               _out(t), "--box-threshold", "1.5"], ["--box-threshold", "[0, 1]"]),
    "prepare --limit 0": (lambda t: ["prepare", "--images", t, "--captions", t / "c.jsonl", "--out", _out(t),
                                     "--limit", "0"], ["argument --limit", ">= 1"]),
    "prepare --images missing": (lambda t: ["prepare", "--images", t / "nowhere", "--captions", t / "c.jsonl",
                                            "--out", _out(t)], ["argument --images", "not found"]),
    "evaluate multigen --n-images 0": (lambda t: ["evaluate", "multigen", "--prompts", "toy", "--model", "toy",
                                                  "--out", _out(t), "--n-images", "0"],
                                       ["argument --n-images", ">= 1"]),
    "evaluate multigen --threshold 1.5": (lambda t: ["evaluate", "multigen", "--prompts", "toy", "--model", "toy",
                                                     "--out", _out(t), "--threshold", "1.5"],
                                          ["argument --threshold", "[0, 1]"]),
    "evaluate multigen --threshold nan": (lambda t: ["evaluate", "multigen", "--prompts", "toy", "--model", "toy",
                                                     "--out", _out(t), "--threshold", "nan"],
                                          ["argument --threshold", "finite"]),
    "evaluate multigen --num-objects 2,0": (lambda t: ["evaluate", "multigen", "--prompts", "toy", "--model", "toy",
                                                       "--out", _out(t), "--num-objects", "2,0"],
                                            ["--num-objects", ">= 1"]),
    "evaluate fid --real missing": (lambda t: ["evaluate", "fid", "--real", t / "nowhere", "--generated", t],
                                    ["argument --real", "not found"]),
    "evaluate fid --generated a file": (lambda t: ["evaluate", "fid", "--real", t, "--generated", _a_file(t)],
                                        ["argument --generated", "not a folder"]),
    "evaluate multigen --mode turbo": (lambda t: ["evaluate", "multigen", "--prompts", "toy", "--model", "toy",
                                                  "--out", _out(t), "--mode", "turbo"],
                                       ["argument --mode", "unknown sampling mode 'turbo'"]),
    "evaluate multigen --mode authors --batch-size 4": (
        lambda t: ["evaluate", "multigen", "--prompts", "toy", "--model", "toy", "--out", _out(t), "--mode",
                   "authors", "--batch-size", "4"], ["authors", "batch"]),
    "evaluate visor --num-categories 11": (lambda t: ["evaluate", "visor", "--categories", "toy", "--model", "toy",
                                                      "--out", _out(t), "--num-categories", "11"],
                                           ["--num-categories", "1..10"]),
    "evaluate visor --limit 0": (lambda t: ["evaluate", "visor", "--model", "toy", "--out", _out(t), "--limit", "0"],
                                 ["argument --limit", ">= 1"]),
    "demo --steps 0": (lambda t: ["demo", "--out", _out(t), "--steps", "0"], ["argument --steps", ">= 1"]),
    "validate missing folder": (lambda t: ["validate", t / "nowhere"], ["argument DIR", "not found"]),
    "sample --device banana": (lambda t: ["sample", "--prompts", "a cat.", "--out", _out(t), "--device", "banana"],
                               ["argument --device", "unknown device 'banana'"]),
    "sample --device cuda:99": (lambda t: ["sample", "--prompts", "a cat.", "--out", _out(t), "--device", "cuda:99"],
                                ["argument --device", "'cuda:99'"]),
    "train --device cuda:99": (lambda t: ["train", "--output-dir", _out(t), "--device", "cuda:99"],
                               ["argument --device", "'cuda:99'"]),
    "pretrain-toy --device cuda:99": (lambda t: ["pretrain-toy", "--out", _out(t), "--device", "cuda:99"],
                                      ["argument --device", "'cuda:99'"]),
    "sample --out 300-byte name": (lambda t: ["sample", "--prompts", "a cat.", "--out", _out(t) / ("x" * 300)],
                                   ["argument --out", "300 bytes long", "at most 255"]),
    "toy-data --out NUL byte": (lambda t: ["toy-data", "--out", f"{_out(t)}\0x", "-n", "2"],
                                ["argument --out", "NUL byte"]),
    "validate 300-byte name": (lambda t: ["validate", t / ("x" * 300)], ["argument DIR", "300 bytes long"]),
    "evaluate segmentation --out a folder": (lambda t: ["evaluate", "segmentation", "--model", "toy", "--out", t],
                                             ["argument --out", "is a folder"]),
    "evaluate segmentation --out below a file": (
        lambda t: ["evaluate", "segmentation", "--model", "toy", "--out", _a_file(t) / "result.json"],
        ["argument --out", "is a file"]),
    "evaluate segmentation --out x.md": (lambda t: ["evaluate", "segmentation", "--model", "toy", "--out",
                                                    t / "result.md"], ["argument --out", "ends in .md"]),
    "evaluate latency --out x.md": (lambda t: ["evaluate", "latency", "--base", "toy", "--finetuned", "toy", "--out",
                                               t / "result.md"], ["argument --out", "ends in .md"]),
}


@pytest.mark.parametrize("case", sorted(FLAG_CASES))
def test_a_bad_flag_is_one_message_and_status_2(tmp_path, capsys, case):
    build, needles = FLAG_CASES[case]
    status, err = run(capsys, *build(tmp_path))
    assert_named(status, err, *needles)
    assert len([line for line in err.splitlines() if "error:" in line]) == 1, err
    assert not _out(tmp_path).exists(), "a refused command wrote its output folder"


OUTPUT_COMMANDS = {
    "toy-data": lambda out: ["toy-data", "--out", out, "-n", "2"],
    "sample": lambda out: ["sample", "--prompts", "a cat.", "--out", out],
    "pretrain-toy": lambda out: ["pretrain-toy", "--out", out],
    "train": lambda out: ["train", "--output-dir", out],
    "evaluate multigen": lambda out: ["evaluate", "multigen", "--prompts", "toy", "--model", "toy", "--out", out],
    "demo": lambda out: ["demo", "--out", out],
}


@pytest.mark.parametrize("command", sorted(OUTPUT_COMMANDS))
@pytest.mark.parametrize("where", ["is a file", "below a file"])
def test_an_output_folder_that_cannot_be_a_folder(capsys, a_file, command, where):
    out = a_file if where == "is a file" else a_file / "sub"
    status, err = run(capsys, *OUTPUT_COMMANDS[command](out))
    assert_named(status, err, str(out), "is a file")


# --------------------------------------------------------------------------------------------------
# files and values found after parsing: `error: <message>`, status 2
# --------------------------------------------------------------------------------------------------

def test_malformed_json_prompt_file_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "prompts.json"
    bad.write_text('[\n  "a cat.",\n  "a dog." oops\n]\n')
    status, err = run(capsys, "sample", "--prompts", bad, "--out", tmp_path / "out")
    assert_named(status, err, "error:", f"{bad}:3", "malformed JSON")
    assert not (tmp_path / "out").exists()


def test_malformed_jsonl_prompt_file_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"text": "a cat."}\n\n{"text": "a dog."\n')
    status, err = run(capsys, "sample", "--prompts", bad, "--out", tmp_path / "out")
    assert_named(status, err, "error:", f"{bad}:3", "malformed JSON")


def test_prompt_entry_without_text_is_named(tmp_path, capsys):
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"text": "a cat."}\n{"prompt": "a dog."}\n')
    status, err = run(capsys, "sample", "--prompts", bad, "--out", tmp_path / "out")
    assert_named(status, err, "error:", "line 2 has no 'text'")


def test_missing_prompt_file_and_bad_seeds(tmp_path, capsys):
    status, err = run(capsys, "sample", "--prompts", tmp_path / "nope.json", "--out", tmp_path / "out")
    assert_named(status, err, "error:", "nope.json", "does not exist")
    status, err = run(capsys, "sample", "--prompts", "a cat.", "--seeds", "-1", "--out", tmp_path / "out")
    assert_named(status, err, "error:", "cannot read seeds '-1'")


def test_malformed_multigen_prompt_file_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "set.json"
    bad.write_text('[{"unique_id": 0, "num_objects": 1,\n "obj_1_attributes": ["cat"], "text": "a cat"},,]\n')
    status, err = run(capsys, "evaluate", "multigen", "--prompts", bad, "--images", tmp_path, "--detector", "toy",
                      "--out", tmp_path / "out")
    assert_named(status, err, "error:", f"{bad}:2", "malformed JSON")
    assert not (tmp_path / "out").exists()
    status, err = run(capsys, "evaluate", "multigen", "--prompts", "toy", "--images", tmp_path, "--detector", "toy",
                      "--compare", tmp_path / "earlier.json", "--out", tmp_path / "out")
    assert_named(status, err, "error:", "--compare file", "earlier.json", "not found")


PROMPT_CASES = {
    # id: (--prompts builder, words of the message)
    "a folder": (lambda t: t, ["is a folder"]),
    "blank text": (lambda t: "   ", ["the prompt is blank"]),
    "an empty .txt": (lambda t: _write(t / "p.txt", b"\n  \n"), ["holds no prompts"]),
    "a .txt that is not UTF-8": (lambda t: _write(t / "p.txt", b"\xff\xfe bad"), ["is not UTF-8"]),
    "a missing path without suffix": (lambda t: "data/my_prompts", ["'data/my_prompts' does not exist"]),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", sorted(PROMPT_CASES))
def test_a_bad_prompt_source_is_named_before_any_model_loads(tmp_path, capsys, monkeypatch, case):
    loaded = []
    monkeypatch.setattr("tokencompose.sample.load_model", lambda *a, **k: loaded.append(a))
    build, needles = PROMPT_CASES[case]
    status, err = run(capsys, "sample", "--prompts", build(tmp_path), "--out", tmp_path / "out")
    assert_named(status, err, "error:", *needles)
    assert loaded == [], "the model was loaded before the prompts were read"


def test_a_file_name_too_long_for_an_untyped_path_is_one_line(tmp_path, capsys):
    status, err = run(capsys, "sample", "--prompts", tmp_path / ("p" * 300 + ".json"), "--out", tmp_path / "out")
    assert_named(status, err, "error:", "too long", "pass a shorter path")


def test_ctrl_c_is_one_line_and_status_130(capsys, monkeypatch):
    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr("tokencompose.evaluate.cli.multigen_cli", interrupted)
    assert main(["evaluate", "multigen"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "interrupted (Ctrl-C)" in err and "--resume latest" in err
    with pytest.raises(KeyboardInterrupt):
        main(["--debug", "evaluate", "multigen"])


def _toy_images(folder: Path, ids, value: int = 0, manifest: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in ids:
        Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(folder / f"{i}_0.png")
    if manifest is not None:
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _multigen_on(images, out, capsys):
    return run(capsys, "evaluate", "multigen", "--prompts", "toy", "--num-prompts", "2", "--images", images,
               "--detector", "toy", "--n-images", "1", "--out", out, "--quiet", "--examples", "0")


def test_multigen_on_an_images_folder_without_the_images(tmp_path, capsys):
    status, err = _multigen_on(_toy_images(tmp_path / "images", []), tmp_path / "out", capsys)
    assert_named(status, err, "error:", "2 images are missing from", "0_0.png", "pass a model")


def test_multigen_refuses_images_that_sample_made_for_other_prompts(tmp_path, capsys):
    images = _toy_images(tmp_path / "images", [0, 1])
    (images / "prompts.json").write_text(json.dumps({"prompts": ["a photo of a bar.", "a photo of a ring."]}))
    status, err = _multigen_on(images, tmp_path / "out", capsys)
    assert_named(status, err, "error:", "prompts.json says images 0_*.png are of prompt 'a photo of a bar.'")
    assert not (tmp_path / "out" / "detections").exists()


@pytest.mark.parametrize("evaluation", ["multigen", "visor"])
def test_a_model_that_cannot_load_leaves_no_output_folder(tmp_path, capsys, evaluation):
    """--model that cannot be loaded (a missing folder here; offline SD weights alike) is one line, and --out is
    not created: a later run with a good model starts from a clean folder, not from a stray prompts.json."""
    source = ["--prompts", "toy", "--num-prompts", "2"] if evaluation == "multigen" else ["--categories", "toy"]
    out = tmp_path / "out"
    status, err = run(capsys, "evaluate", evaluation, *source, "--model", tmp_path / "no_such_model",
                      "--detector", "toy", "--n-images", "1", "--out", out, "--quiet")
    assert_named(status, err, "error:", "cannot load --model", "no_such_model")
    assert not out.exists(), sorted(p.name for p in out.iterdir())


@pytest.mark.parametrize("made_by", ["a manifest", "no manifest"])
def test_multigen_redetects_images_replaced_in_an_images_folder(tmp_path, capsys, caplog, made_by):
    """--images: detections are keyed on what made the images (their manifest, else names, sizes and times),
    so images regenerated in place by another model are detected again, not scored on the old detections."""
    manifest = {"model": "first"} if made_by == "a manifest" else None
    images = _toy_images(tmp_path / "images", [0, 1], manifest=manifest)
    out = tmp_path / "out"
    assert _multigen_on(images, out, capsys)[0] == 0
    before = json.loads((out / "detections" / "manifest.json").read_text())["images"]
    for path in images.glob("*_0.png"):  # another model's images, with their own manifest (or none)
        path.unlink()
    _toy_images(images, [0, 1], value=255, manifest={"model": "second"} if manifest else None)
    status, err = _multigen_on(images, out, capsys)
    assert status == 0, err
    after = json.loads((out / "detections" / "manifest.json").read_text())["images"]
    assert after != before and after["images_dir"] == before["images_dir"]
    assert "out/detections: 1 results of another model or settings removed" in caplog.text


def test_resume_from_an_unreadable_checkpoint_is_named(tmp_path, capsys):
    from tokencompose.models import build_toy_model, save_toy_model

    save_toy_model(build_toy_model(sample_size=16), tmp_path / "base")
    for broken, content in (("empty_state", b""), ("cut_weights", b"{}")):
        checkpoint = tmp_path / broken
        checkpoint.mkdir()
        (checkpoint / "state.json").write_bytes(content)
        (checkpoint / "unet.safetensors").write_bytes(b"\x08\x00")
        status, err = run(capsys, "train", "--pretrained", tmp_path / "base", "--toy-scenes", "--resolution", "16",
                          "--groups", "mid_2", "--output-dir", tmp_path / "run", "--resume", checkpoint,
                          "--no-progress")
        assert_named(status, err, "error:", f"checkpoint {checkpoint} cannot be read", "--resume latest")


@pytest.mark.parametrize("prompt, phrase, word", [
    ("a photo of İstanbul and a dog.", "İstanbul", "i̇stanbul"),
    ("İİİ a photo of a cat and a dog.", "dog", "dog"),
    ("a café and a dog.", "café", "café"),
])
def test_token_positions_of_non_ascii_words(tokenizer, prompt, phrase, word):
    from tokencompose.tokens import token_positions

    ids = tokenizer(prompt)["input_ids"]
    positions = token_positions(prompt, phrase, tokenizer)
    assert tokenizer.decode([ids[i] for i in positions]).replace(" ", "") == word


def test_unknown_toy_categories_are_refused_before_any_image(tmp_path, capsys, monkeypatch):
    made = []
    monkeypatch.setattr("tokencompose.evaluate.cli.make_generate_fn", lambda *a: made.append(a))
    status, err = run(capsys, "evaluate", "multigen", "--prompts", "coco", "--num-prompts", "3", "--model", "toy",
                      "--detector", "toy", "--out", tmp_path / "out")
    assert_named(status, err, "error:", "toy detector knows only", "--detector owlv2")
    assert made == [] and not (tmp_path / "out").exists()


def test_unknown_visor_categories_for_the_toy_detector(tmp_path, capsys, monkeypatch):
    made = []
    monkeypatch.setattr("tokencompose.evaluate.cli.make_generate_fn", lambda *a: made.append(a))
    status, err = run(capsys, "evaluate", "visor", "--categories", "coco", "--model", "toy", "--detector", "toy",
                      "--out", tmp_path / "out")
    assert_named(status, err, "error:", "toy detector knows only", "'airplane'")
    assert made == [] and not (tmp_path / "out").exists()


def test_train_setting_the_run_cannot_use(tmp_path, capsys):
    status, err = run(capsys, "train", "--toy-scenes", "--groups", "mid_99", "--output-dir", tmp_path / "run")
    assert_named(status, err, "error:", "group 'mid_99' does not exist")


def test_train_on_a_dataset_that_fails_validation(tmp_path, capsys):
    from tokencompose.models import build_toy_model, save_toy_model

    save_toy_model(build_toy_model(sample_size=16), tmp_path / "base")
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(data / "0.png")
    (data / "metadata.jsonl").write_text(json.dumps({"file_name": "0.png", "text": "a circle.",
                                                     "attn_list": [["circle", "missing.png"]]}) + "\n")
    status, err = run(capsys, "train", "--pretrained", tmp_path / "base", "--train-data-dir", data,
                      "--output-dir", tmp_path / "run", "--no-progress")
    assert_named(status, err, "error:", "metadata.jsonl:1", "mask 'missing.png'", "validate")


# --------------------------------------------------------------------------------------------------
# one place: every named error -> `error: <message>`, status 2; --debug shows the traceback
# --------------------------------------------------------------------------------------------------

def _named_error(module_name, class_name):
    import importlib

    cls = getattr(importlib.import_module(module_name), class_name)
    if class_name == "NonFiniteLossError":
        return cls("step 3: the weights diverged; the last good checkpoint is checkpoint-2", step=3, captions=[],
                   checkpoint=None)
    return cls(f"{class_name} says what, where and how to fix it")


@pytest.mark.parametrize("named", sorted(USER_ERRORS), ids=lambda named: named[1])
def test_every_named_error_is_one_line_and_status_2(capsys, monkeypatch, named):
    error = _named_error(*named)

    def fail(argv):
        raise error

    monkeypatch.setattr("tokencompose.evaluate.cli.multigen_cli", fail)
    status, err = run(capsys, "evaluate", "multigen")
    assert_named(status, err)
    assert err == f"error: {error}\n"
    with pytest.raises(type(error)):
        main(["--debug", "evaluate", "multigen"])
    monkeypatch.setenv("TOKENCOMPOSE_DEBUG", "1")
    with pytest.raises(type(error)):
        main(["evaluate", "multigen"])


def test_a_bug_keeps_its_traceback(monkeypatch):
    def fail(argv):
        raise KeyError("a bug, not the user's doing")

    monkeypatch.setattr("tokencompose.evaluate.cli.multigen_cli", fail)
    with pytest.raises(KeyError):
        main(["evaluate", "multigen"])


def test_debug_flag_is_listed_and_help_still_exits_0(capsys):
    assert main(["--help"]) == 0 and "--debug" in capsys.readouterr().out
    assert main(["sample", "--help"]) == 0
    assert main(["--debug", "sample", "--help"]) == 0


# --------------------------------------------------------------------------------------------------
# validate: every file is decoded, masks must be binary 8-bit, duplicates and empty metadata are problems
# --------------------------------------------------------------------------------------------------

SIZE = 16


def _mask():
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[4:12, 4:12] = 255
    return mask


def _dataset(root, mask_writer=None, image_writer=None, lines=None):
    """A one-record dataset (line 1 good); ``mask_writer(path_stem) -> file name`` replaces the good mask PNG."""
    root.mkdir(parents=True, exist_ok=True)
    (image_writer or (lambda p: Image.fromarray(np.stack([_mask()] * 3, axis=2)).save(p)))(root / "0.png")
    mask_name = mask_writer(root / "mask") if mask_writer else "mask.png"
    if not mask_writer:
        Image.fromarray(_mask()).save(root / mask_name)
    record = {"file_name": "0.png", "text": "a square.", "attn_list": [["square", mask_name]]}
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (lines or [record])))
    return root


def _truncated_image(path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:-60])


def _sixteen_bit(stem):
    Image.fromarray(_mask().astype(np.uint16) * 257).save(f"{stem}.png")  # PIL mode I;16
    return "mask.png"


def _faint(stem):
    Image.fromarray((_mask() > 0).astype(np.uint8) * 3).save(f"{stem}.png")  # values 0 and 3
    return "mask.png"


def _jpeg(stem):
    Image.fromarray(_mask()).save(f"{stem}.jpg", quality=75)
    return "mask.jpg"


def _grey_edge(stem):
    mask = _mask()
    mask[4, 4:12] = 128  # 8 of 256 pixels
    Image.fromarray(mask).save(f"{stem}.png")
    return "mask.png"


def _zero_one(stem):
    Image.fromarray((_mask() > 0).astype(np.uint8)).save(f"{stem}.png")
    return "mask.png"


VALIDATE_CASES = {
    "truncated_image": (dict(image_writer=_truncated_image), "truncated"),
    "mask_bit_depth": (dict(mask_writer=_sixteen_bit), "16-bit"),
    "non_binary_mask": (dict(mask_writer=_faint), "25% of its pixels are neither 0 nor 255"),
    "jpeg_mask": (dict(mask_writer=_jpeg), "is a JPEG"),
}


@pytest.mark.parametrize("kind", sorted(VALIDATE_CASES))
def test_validate_names_each_bad_file(tmp_path, tokenizer, capsys, kind):
    options, words = VALIDATE_CASES[kind]
    root = _dataset(tmp_path / "ds", **options)
    problems = validate_dataset(root, tokenizer)
    assert [(p.kind, p.line) for p in problems] == [(kind, 1)], problems
    assert words in problems[0].message and problems[0].fix
    status = main(["validate", str(root)])
    out = capsys.readouterr().out
    assert status == 1 and f"metadata.jsonl:1: {problems[0].message}" in out


def test_validate_counts_the_odd_pixels_and_accepts_zero_one(tmp_path, tokenizer):
    problems = validate_dataset(_dataset(tmp_path / "grey", mask_writer=_grey_edge), tokenizer)
    assert [p.kind for p in problems] == ["non_binary_mask"] and "3.12% of its pixels" in problems[0].message
    assert validate_dataset(_dataset(tmp_path / "good"), tokenizer) == []
    assert validate_dataset(_dataset(tmp_path / "zero_one", mask_writer=_zero_one), tokenizer) == []


def test_validate_reports_duplicates_and_empty_metadata(tmp_path, tokenizer):
    record = {"file_name": "0.png", "text": "a square.", "attn_list": [["square", "mask.png"]]}
    other = {**record, "text": "a square on black."}
    root = _dataset(tmp_path / "dup", lines=[record, other, record])
    problems = validate_dataset(root, tokenizer)
    assert [(p.kind, p.line) for p in problems] == [("duplicate_record", 3)]
    assert "repeats line 1" in problems[0].message
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metadata.jsonl").write_text("\n\n")
    assert [(p.kind, p.line) for p in validate_dataset(empty, tokenizer)] == [("empty_metadata", None)]
    assert main(["validate", str(empty)]) == 1


def test_validate_turns_a_decompression_bomb_into_a_problem(tmp_path, tokenizer, monkeypatch):
    root = _dataset(tmp_path / "ds")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # 16 x 16 = 256 > 2 * 50: PIL refuses to decode
    problems = validate_dataset(root, tokenizer)
    assert [(p.kind, p.line) for p in problems] == [("image_too_large", 1), ("mask_too_large", 1)], problems
    assert "decompression bomb" in problems[0].message.lower()


def test_skip_bad_skips_exactly_what_validate_reports(tmp_path, tokenizer):
    root = tmp_path / "ds"
    _dataset(root)
    _truncated_image(root / "cut.png")
    Image.fromarray((_mask() > 0).astype(np.uint8) * 3).save(root / "faint.png")
    good = {"file_name": "0.png", "text": "a square.", "attn_list": [["square", "mask.png"]]}
    lines = [good, {**good, "file_name": "cut.png"}, {**good, "text": "a square on black."}, good,
             {**good, "attn_list": [["square", "faint.png"]]}, {**good, "text": "one more square."}]
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    reported = {p.line for p in validate_dataset(root, tokenizer)}
    assert reported == {2, 4, 5}
    dataset = TokenComposeDataset(root, tokenizer, 8, skip_bad=True)
    assert [r.line for r in dataset.records] == [1, 3, 6]
    assert all(dataset[i]["masks"].shape == (1, 8, 8) for i in range(len(dataset)))


@pytest.mark.parametrize("argv, flag", [
    (["evaluate", "segmentation", "--model", "toy", "--n-prompts", "0"], "--n-prompts"),
    (["evaluate", "segmentation", "--model", "toy", "--threshold", "1.5"], "--threshold"),
    (["evaluate", "segmentation", "--model", "toy", "--guidance", "nan"], "--guidance"),
    (["evaluate", "latency", "--model", "toy", "--runs", "0"], "--runs"),
    (["evaluate", "latency", "--model", "toy", "--height", "-8"], "--height"),
])
def test_evaluate_segmentation_and_latency_check_their_flags(argv, flag, capsys):
    from tokencompose.__main__ import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err


# --------------------------------------------------------------------------------------------------
# the output-folder rule in every command that writes (issue 37, item 1): a user's files survive, by digest
# --------------------------------------------------------------------------------------------------

USERS_FILES = {"notes.txt": b"my notes", "holiday.jpg": b"\xff\xd8 a photo", "drafts/plan.md": b"# my plan"}


def digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative path."""
    import hashlib

    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def users_folder(folder: Path, extra: dict[str, bytes] | None = None) -> Path:
    """A folder of the user's files (``USERS_FILES`` and ``extra``)."""
    for name, data in {**USERS_FILES, **(extra or {})}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A 16 px toy model folder (seconds to sample and train)."""
    from tokencompose.models import build_toy_model, save_toy_model

    folder = tmp_path_factory.mktemp("tiny") / "base"
    save_toy_model(build_toy_model(sample_size=16, seed=0), folder)
    return folder


class _FakeGroundedSAM:
    """Grounded-SAM's stand-in for ``prepare``: the top half of the image for every noun."""

    class settings:  # noqa: N801 - what the command logs of the real one's settings
        name, detector_id, segmenter_id, box_threshold, text_threshold = "fake", "-", "-", 0.3, 0.25

    def masks_for_nouns(self, image, nouns):
        mask = np.zeros((image.height, image.width), dtype=bool)
        mask[: image.height // 2] = True
        return {noun: mask for noun in nouns}


def _prepare_inputs(root: Path) -> list:
    images = root / "in"
    images.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (200, 10, 10)).save(images / "cat.png")
    captions = root / "captions.jsonl"
    captions.write_text(json.dumps({"file_name": "cat.png", "text": "a cat on a table"}) + "\n")
    return ["--images", images, "--captions", captions, "--tagger", "perceptron", "--no-progress"]


#: command -> (argv builder of (tmp_path, base, output folder), a name the command writes in that folder, the exit
#: status of a whole run, or None where a whole run takes too long here: only the refusal is run). Every command that writes: sample, evaluate *, train, toy-data, demo, prepare,
#: pretrain-toy, setup-tokenizer (evaluate fid writes nothing).
WRITERS = {
    "sample": (lambda t, b, o: ["sample", "--model", b, "--prompts", "a photo of a circle.", "--seeds", "0",
                                "--steps", "1", "--out", o], "0_0.png", 0),
    "evaluate multigen": (lambda t, b, o: ["evaluate", "multigen", "--prompts", "toy", "--num-prompts", "1",
                                           "--images", _toy_images(t / "imgs", [0]), "--detector", "toy",
                                           "--n-images", "1", "--out", o, "--quiet"], "multigen.md", 0),
    "evaluate visor": (lambda t, b, o: ["evaluate", "visor", "--categories", "toy", "--limit", "1", "--model", b,
                                        "--steps", "1", "--detector", "toy", "--n-images", "1", "--out", o,
                                        "--quiet", "--examples", "0"], "visor.json", 0),
    "evaluate segmentation": (lambda t, b, o: ["evaluate", "segmentation", "--model", b, "--n-prompts", "1",
                                               "--steps", "1", "--out", o / "seg.json"], "seg.md", 1),  # 1: nothing scored
    "evaluate latency": (lambda t, b, o: ["evaluate", "latency", "--base", b, "--finetuned", b, "--runs", "1",
                                          "--warmup", "0", "--steps", "1", "--out", o / "lat.json"], "lat.json", 0),
    "train": (lambda t, b, o: ["train", "--pretrained", b, "--toy-scenes", "--resolution", "16", "--groups", "mid_4",
                               "up_8", "--max-train-steps", "1", "--train-batch-size", "1", "--no-progress",
                               "--output-dir", o], "training_config.json", 0),
    "toy-data": (lambda t, b, o: ["toy-data", "--out", o, "-n", "2", "--size", "16"], "images/00000.png", 0),
    "prepare": (lambda t, b, o: ["prepare", *_prepare_inputs(t), "--out", o], "seg/cat/mask_cat.png", 0),
    "demo": (lambda t, b, o: ["demo", "--base", b, "--steps", "1", "--prompts", "1", "--out", o], "report.md", None),
    "pretrain-toy": (lambda t, b, o: ["pretrain-toy", "--out", o, "--work-dir", t / "work", "--steps", "1",
                                      "--batch-size", "2", "--size", "16"], "README.md", None),
}


def _with_overwrite(argv: list) -> list:
    """``argv`` with ``--overwrite`` where the command has it (it must not hand a user's file over either)."""
    has_it = argv[0] in ("sample", "train", "toy-data", "pretrain-toy") or argv[:2] in (["evaluate", "multigen"],
                                                                                         ["evaluate", "visor"])
    return [*argv, "--overwrite"] if has_it else argv


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_every_writing_command_keeps_the_users_files(tmp_path, tiny_base, capsys, monkeypatch, command):
    """The output-folder rule, command by command: the user's files in the output folder survive a run (by
    digest); a user's file under a name the command writes is refused, --overwrite included, naming it, and
    nothing under the folder changes before the refusal."""
    from tokencompose import prepare

    monkeypatch.setattr(prepare.GroundedSAM, "from_pretrained", staticmethod(lambda *a, **k: _FakeGroundedSAM()))
    build, ours, finishes = WRITERS[command]
    if finishes is not None:
        kept = users_folder(tmp_path / "kept")
        before = digests(kept)
        status, err = run(capsys, *build(tmp_path, tiny_base, kept))
        assert status == finishes, err
        after = digests(kept)
        assert {name: after.get(name) for name in before} == before  # every file of the user's, unchanged
        assert set(after) - set(before), "the command wrote nothing: the case tests nothing"
    clash = users_folder(tmp_path / "clash", {ours: b"the user's own file under our name"})
    before = digests(clash)
    status, err = run(capsys, *_with_overwrite(build(tmp_path, tiny_base, clash)))
    assert_named(status, err, "error:", Path(ours).name, "did not write", "Move them out")
    assert digests(clash) == before  # nothing deleted, overwritten or added (not even a manifest)


def test_setup_tokenizer_keeps_the_users_files_in_its_cache_folder(tmp_path, monkeypatch):
    """setup-tokenizer writes only its ``clip_tokenizer/`` folder under ``$TOKENCOMPOSE_CACHE``."""
    import gzip

    from tokencompose import tokens

    bpe = tmp_path / tokens.BPE_FILE
    bpe.write_bytes(gzip.compress((tokens.offline_tokenizer_dir() / "merges.txt").read_bytes()))
    cache = users_folder(tmp_path / "cache")
    before = digests(cache)
    monkeypatch.setenv("TOKENCOMPOSE_CACHE", str(cache))
    assert main(["setup-tokenizer", "--bpe", str(bpe)]) == 0
    after = digests(cache)
    assert {name: after[name] for name in before} == before and "clip_tokenizer/vocab.json" in after
