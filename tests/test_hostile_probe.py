"""Issue 37, items 4 and 7: the command line probed afresh as a hostile but realistic user, one case a test.

Each case runs ``python -m tokencompose ...`` in-process (``__main__.main``) and is filed under the class the probe
found it in (on the main of 2026-12-08, before the fixes of this file's commit); every case now ends in a named
error (status 2, one line, no traceback) or a correct result:

- **traceback** (8): symlink loops (image, mask), NUL bytes in metadata paths (image, mask), ``evaluate fid`` on
  empty folders, a full disk in ``sample`` and in ``train``, ``pretrain-toy --init-from`` a folder that is no model;
- **vague** (20): a ``file_name`` or ``metadata.jsonl`` that is a folder ("not found"), 300-byte names (image,
  mask; no line named, the scan stopped), negative values taken for flags (``--learning-rate -1e-4``, ``--lr
  -1e-3``, ``--guidance -inf``, ``--object-weights -1,1,1,1``: "expected one argument"), a seed past 64 bits and
  ``--steps 5000`` (named after the model loaded, the folder claimed), a truncated, missing or pickled weight file
  and a truncated fine-tuned UNet (the hub's "log in" hint), ``--pretrained`` and ``--model`` paths that do not
  exist (the hub's hints), ``--presence-weight nan`` (a non-finite loss after training began), ``prepare
  --captions`` a folder ("not found"), a misspelt command, ``--debug`` after the command;
- **silent or wrong** (8): ``--grounding-timesteps`` past the schedule (no step grounded), ``--loss-spike-factor
  0.5``, ``--num-objects ''`` (the default, silently), ``--num-prompts 1000000000`` and ``toy-data -n
  1000000000000`` (ran for hours or years, the folder claimed), ``evaluate segmentation --masks`` a missing folder
  (ignored; sampling began), ``evaluate fid`` of a folder against itself, ``prepare`` on an empty captions file
  (the models loaded);
- **clear error** (31): already named well; pinned so that they stay so (flags, files and settings of every
  command);
- **correct** (6): odd but valid input that works as it should.

73 cases in all (a parametrized test counts each of its cases). Permission cases are not here: the tests run as
root on CI, where every file is readable. No case loads a real model; the model cases use a 16 px toy model.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from cli_run import assert_named, run
from PIL import Image

from tokencompose.__main__ import main
from tokencompose.cli_args import MAX_PROMPTS, MAX_SAMPLING_STEPS, NOISE_LEVELS


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 16 px toy model folder (unet/, text_encoder/, scheduler/), written once for the module."""
    from tokencompose.models import build_toy_model, save_toy_model

    return save_toy_model(build_toy_model(sample_size=16), tmp_path_factory.mktemp("models") / "tiny")


def _image(path: Path, size: int = 16) -> Path:
    Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(path)
    return path


def _mask(path: Path, size: int = 16) -> Path:
    mask = np.zeros((size, size), np.uint8)
    mask[4:12, 4:12] = 255
    Image.fromarray(mask).save(path)
    return path


def _dataset(root: Path, records: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def _record(file_name: str = "0.png", mask: str | None = None) -> dict:
    return {"file_name": file_name, "text": "a square.", "attn_list": [["square", mask]]}


def validate(capsys, root: Path) -> tuple[int, str]:
    """``(status, stdout)`` of ``validate root``: the report is on stdout."""
    status = main(["validate", str(root)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return status, captured.out


# ==================================================================================================
# class: traceback (8)
# ==================================================================================================

def _loop(path: Path) -> None:
    os.symlink(path.name, path)  # a link to itself: resolving it loops


def _image_loop(root: Path) -> list[dict]:
    _loop(root / "0.png")
    return [_record()]


def _mask_loop(root: Path) -> list[dict]:
    _image(root / "0.png")
    _loop(root / "m.png")
    return [_record(mask="m.png")]


def _image_nul(root: Path) -> list[dict]:
    return [_record(file_name="0\0.png")]


def _mask_nul(root: Path) -> list[dict]:
    _image(root / "0.png")
    return [_record(mask="m\0.png")]


DATASET_TRACEBACKS = {
    # id: (files and records, words of the line-1 problem)
    "image symlink loop": (_image_loop, ["image path '0.png'", "symlink loop"]),
    "mask symlink loop": (_mask_loop, ["mask path 'm.png' of noun 'square'", "symlink loop"]),
    "NUL byte in file_name": (_image_nul, ["image path '0\\x00.png'", "NUL byte"]),
    "NUL byte in a mask path": (_mask_nul, ["mask path 'm\\x00.png'", "NUL byte"]),
}


@pytest.mark.parametrize("case", sorted(DATASET_TRACEBACKS))
def test_traceback_bad_paths_in_metadata_are_problems_of_their_line(tmp_path, capsys, case):
    build, needles = DATASET_TRACEBACKS[case]
    root = tmp_path / "ds"
    root.mkdir()
    _dataset(root, build(root))
    status, out = validate(capsys, root)
    assert status == 1
    line = next(line for line in out.splitlines() if "metadata.jsonl:1:" in line)
    for needle in needles:
        assert needle in line, (needle, out)


def test_traceback_fid_on_empty_folders(tmp_path, capsys):
    (tmp_path / "real").mkdir()
    (tmp_path / "fake").mkdir()
    status, err = run(capsys, "evaluate", "fid", "--real", tmp_path / "real", "--generated", tmp_path / "fake")
    assert_named(status, err, "error:", "at least 2 images", "found 0 in", "--real", "--generated")


def _disk_full(after: int):
    """A replacement for a write function that works ``after`` times, then raises ENOSPC as a full disk does."""
    calls = []

    def wrap(original):
        def write(*args, **kwargs):
            calls.append(1)
            if len(calls) > after:
                raise OSError(errno.ENOSPC, "No space left on device")
            return original(*args, **kwargs)
        return write
    return wrap


def test_traceback_disk_full_in_sample_keeps_whole_images_and_resumes(tmp_path, capsys, monkeypatch, tiny_model):
    from tokencompose.provenance import written_files

    out = tmp_path / "out"
    argv = ["sample", "--model", tiny_model, "--prompts", "a circle.", "--seeds", "0-3", "--steps", "2",
            "--batch-size", "2", "--out", out]
    monkeypatch.setattr(Image.Image, "save", _disk_full(after=2)(Image.Image.save))  # the second batch fails
    status, err = run(capsys, *argv)
    assert_named(status, err, "error:", "the disk is full", f"could not write {out / '0_2.png'}",
                 "finished images are skipped")
    assert sorted(p.name for p in out.glob("*.png")) == ["0_0.png", "0_1.png"]  # whole; no partial file left
    assert set(written_files(out)) >= {"0_0.png", "0_1.png"} and "0_2.png" not in written_files(out)
    monkeypatch.undo()
    assert run(capsys, *argv)[0] == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["0_0.png", "0_1.png", "0_2.png", "0_3.png"]


def test_traceback_disk_full_in_train_names_the_last_whole_checkpoint(tmp_path, capsys, monkeypatch, tiny_model):
    import tokencompose.train as train

    run_dir = tmp_path / "run"
    monkeypatch.setattr(train, "save_file", _disk_full(after=2)(train.save_file))  # checkpoint-2's first file
    status, err = run(capsys, "train", "--pretrained", tiny_model, "--toy-scenes", "--resolution", "16", "--groups",
                      "mid_4", "--max-train-steps", "2", "--checkpointing-steps", "1", "--train-batch-size", "2",
                      "--output-dir", run_dir, "--no-progress")
    assert_named(status, err, "error:", "the disk is full", str(run_dir / "checkpoints" / "checkpoint-2"),
                 "the latest is",
                 str(run_dir / "checkpoints" / "checkpoint-1"), "--resume latest")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["checkpoint-1"]  # no half folder


def test_traceback_pretrain_init_from_a_folder_that_is_no_model(tmp_path, capsys):
    status, err = run(capsys, "pretrain-toy", "--out", tmp_path / "out", "--work-dir", tmp_path / "work",
                      "--init-from", tmp_path, "--steps", "2", "--eval-images", "1")
    assert_named(status, err, "error:", "--init-from", "pretrain_settings.json", "pretrain-toy run")


# ==================================================================================================
# class: vague (20)
# ==================================================================================================

def test_vague_a_file_name_that_is_a_folder(tmp_path, capsys):
    root = _dataset(tmp_path / "ds", [_record(file_name="sub")])
    (root / "sub").mkdir()
    status, out = validate(capsys, root)
    assert status == 1 and "metadata.jsonl:1: image 'sub' is a folder, not a file" in out, out


def test_vague_metadata_jsonl_that_is_a_folder(tmp_path, capsys):
    (tmp_path / "ds" / "metadata.jsonl").mkdir(parents=True)
    status, out = validate(capsys, tmp_path / "ds")
    assert status == 1 and "metadata.jsonl is a folder, not a file" in out and "no metadata.jsonl" not in out


@pytest.mark.parametrize("where", ["file_name", "mask"])
def test_vague_a_300_byte_name_is_named_with_its_line_and_the_scan_goes_on(tmp_path, capsys, where):
    long_name = "x" * 300 + ".png"
    first = _record(file_name=long_name) if where == "file_name" else _record(mask=long_name)
    root = _dataset(tmp_path / "ds", [first, _record(file_name="missing.png")])
    _image(root / "0.png")
    status, out = validate(capsys, root)
    assert status == 1
    assert "metadata.jsonl:1:" in out and "304 bytes" in out and "at most 255" in out, out
    assert "metadata.jsonl:2: image 'missing.png' not found" in out, "the scan stopped at line 1"


NEGATIVE_VALUES = {
    # id: (argv, words): argparse took these values for flags ("expected one argument")
    "train --learning-rate -1e-4": (["train", "--learning-rate", "-1e-4"], ["--learning-rate", "> 0", "'-1e-4'"]),
    "pretrain-toy --lr -1e-3": (["pretrain-toy", "--lr", "-1e-3"], ["--lr", "> 0", "'-1e-3'"]),
    "sample --guidance -inf": (["sample", "--prompts", "a cat.", "--out", "o", "--guidance", "-inf"],
                               ["--guidance", "finite", "'-inf'"]),
    "toy-data --object-weights -1,1,1,1": (["toy-data", "--out", "o", "-n", "2", "--object-weights", "-1,1,1,1"],
                                           ["--object-weights"]),
}


@pytest.mark.parametrize("case", sorted(NEGATIVE_VALUES))
def test_vague_a_negative_value_is_read_as_a_value(capsys, case):
    argv, needles = NEGATIVE_VALUES[case]
    status, err = run(capsys, *argv)
    assert_named(status, err, *needles)
    assert "expected one argument" not in err, err


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if ``sample`` loads a model; the list of loads (empty)."""
    loads = []
    monkeypatch.setattr("tokencompose.sample.load_model", lambda *a, **k: loads.append(a))
    return loads


def test_vague_a_seed_past_64_bits_is_refused_before_the_model_loads(tmp_path, capsys, no_model_load):
    status, err = run(capsys, "sample", "--prompts", "a cat.", "--seeds", "99999999999999999999",
                      "--out", tmp_path / "out")
    assert_named(status, err, "error:", "seed 99999999999999999999", "largest seed")
    assert no_model_load == [] and not (tmp_path / "out").exists()


def test_vague_more_sampling_steps_than_noise_levels_refused_at_parse(tmp_path, capsys, no_model_load):
    status, err = run(capsys, "sample", "--prompts", "a cat.", "--steps", "5000", "--out", tmp_path / "out")
    assert_named(status, err, "argument --steps", f"at most {NOISE_LEVELS}", "'5000'")
    assert no_model_load == [] and not (tmp_path / "out").exists()
    assert MAX_SAMPLING_STEPS == 1000  # the schedules of SD 1.4 / 2.1 and the toy preset: 1000 timesteps


def _copy_model(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


def _truncated(folder: Path) -> str:
    path = folder / UNET_WEIGHTS
    path.write_bytes(path.read_bytes()[:1000])
    return "cut short"


def _missing(folder: Path) -> str:
    (folder / UNET_WEIGHTS).unlink()
    return "holds no weights file"


class _NotWeights:
    """Something a pickle can hold that plain weights are not."""


def _pickled(folder: Path) -> str:
    import torch

    (folder / UNET_WEIGHTS).unlink()
    torch.save({"weights": _NotWeights()}, folder / "unet" / "diffusion_pytorch_model.bin")
    return "pickle file that torch.load(weights_only=True) refuses"


WEIGHT_FAULTS = {"truncated safetensors": (_truncated, UNET_WEIGHTS), "missing weights": (_missing, "unet"),
                 "pickle that is not weights": (_pickled, "unet/diffusion_pytorch_model.bin")}


@pytest.mark.parametrize("case", sorted(WEIGHT_FAULTS))
def test_vague_a_bad_weight_file_is_named_without_the_hub_hint(tmp_path, capsys, tiny_model, case):
    damage, file = WEIGHT_FAULTS[case]
    model = _copy_model(tiny_model, tmp_path / "model")
    words = damage(model)
    status, err = run(capsys, "sample", "--model", model, "--prompts", "a circle.", "--seeds", "0", "--steps", "2",
                      "--out", tmp_path / "out")
    assert_named(status, err, "error:", str(model / file), words, "copy it again whole")
    assert "huggingface-cli login" not in err and not (tmp_path / "out").exists()


def test_vague_a_truncated_fine_tuned_unet_is_named(tmp_path, capsys, tiny_model):
    unet = _copy_model(tiny_model / "unet", tmp_path / "ft_unet")
    weights = unet / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    status, err = run(capsys, "sample", "--model", unet, "--base", tiny_model, "--prompts", "a circle.", "--seeds",
                      "0", "--steps", "2", "--out", tmp_path / "out")
    assert_named(status, err, "error:", "fine-tuned UNet", str(weights), "cut short")
    assert "huggingface-cli login" not in err


def test_vague_pretrained_path_that_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "no_such_model"
    status, err = run(capsys, "train", "--pretrained", missing, "--toy-scenes", "--output-dir", tmp_path / "run",
                      "--no-progress")
    assert_named(status, err, "error:", f"no model folder {str(missing)!r}", "does not exist", "check the path")
    assert "huggingface-cli" not in err


def test_vague_a_model_path_read_as_a_hub_id_says_no_such_folder(tmp_path, capsys, monkeypatch):
    import diffusers

    def offline(*args, **kwargs):
        raise OSError("the model is not cached locally and outgoing traffic has been disabled")

    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_pretrained", offline)
    monkeypatch.chdir(tmp_path)
    status, err = run(capsys, "sample", "--model", "outputs/my_run", "--prompts", "a cat.", "--out", "out")
    message = err[err.index("error:"):]  # (importing the pipeline may log to a stream an earlier test closed)
    assert_named(status, message, "read as a hub id", "there is no folder 'outputs/my_run' here", "check the path")


def test_vague_presence_weight_nan_is_refused_at_parse(tmp_path, capsys):
    status, err = run(capsys, "train", "--toy-scenes", "--own-samples", "--presence-weight", "nan",
                      "--output-dir", tmp_path / "run")
    assert_named(status, err, "argument --presence-weight", "finite", "'nan'")
    assert not (tmp_path / "run").exists()


def test_vague_prepare_captions_that_is_a_folder(tmp_path, caplog):
    (tmp_path / "images").mkdir()
    status = main(["prepare", "--images", str(tmp_path / "images"), "--captions", str(tmp_path / "images"),
                   "--out", str(tmp_path / "out")])
    assert status == 2 and "is a folder" in caplog.text and "not found" not in caplog.text, caplog.text


def test_vague_a_misspelt_command_gets_a_suggestion(capsys):
    status, err = run(capsys, "trian")
    assert status == 2 and "unknown command 'trian'; did you mean 'train'?" in err, err


def test_vague_debug_after_the_command_is_taken(capsys, monkeypatch):
    def fail(argv):
        from tokencompose.cli_args import UserError

        raise UserError(f"bad input; argv {argv}")

    monkeypatch.setattr("tokencompose.evaluate.cli.multigen_cli", fail)
    with pytest.raises(Exception, match=r"bad input; argv \['--out', 'x'\]"):
        main(["evaluate", "multigen", "--out", "x", "--debug"])
    status, err = run(capsys, "evaluate", "multigen", "--out", "x")
    assert_named(status, err, "error: bad input")


# ==================================================================================================
# class: silent or wrong (8)
# ==================================================================================================

SILENT_FLAGS = {
    # id: (argv, words of the refusal)
    "train --grounding-timesteps 2000:3000": (["train", "--grounding-timesteps", "2000:3000"],
                                              ["--grounding-timesteps", f"at most {NOISE_LEVELS}"]),
    "train --loss-spike-factor 0.5": (["train", "--loss-spike-factor", "0.5"],
                                      ["--loss-spike-factor", "0 (off) or larger than 1"]),
    "evaluate multigen --num-objects ''": (["evaluate", "multigen", "--prompts", "toy", "--model", "toy",
                                            "--detector", "toy", "--num-objects", ""], ["--num-objects", "got ''"]),
    "evaluate multigen --num-prompts 1000000000": (["evaluate", "multigen", "--prompts", "toy", "--model", "toy",
                                                    "--detector", "toy", "--num-prompts", "1000000000"],
                                                   ["argument --num-prompts", f"at most {MAX_PROMPTS:,}"]),
    "toy-data -n 1000000000000": (["toy-data", "-n", "1000000000000"], ["argument -n", "at most 1,000,000"]),
    "evaluate segmentation --masks missing": (["evaluate", "segmentation", "--model", "toy", "--masks", "nowhere"],
                                              ["argument --masks", "not found"]),
}


@pytest.mark.parametrize("case", sorted(SILENT_FLAGS))
def test_silent_a_value_that_did_nothing_or_ran_forever_is_refused(tmp_path, capsys, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    argv, needles = SILENT_FLAGS[case]
    status, err = run(capsys, *argv, "--out", tmp_path / "out")
    assert_named(status, err, *needles)
    assert not (tmp_path / "out").exists()


def test_silent_fid_of_a_folder_against_itself(tmp_path, capsys):
    for index in range(2):
        _image(tmp_path / f"{index}.png")
    status, err = run(capsys, "evaluate", "fid", "--real", tmp_path, "--generated", tmp_path)
    assert_named(status, err, "error:", "--real and --generated are the same folder")


def test_silent_prepare_on_empty_captions_stops_before_the_models(tmp_path, caplog, monkeypatch):
    loads = []
    monkeypatch.setattr("tokencompose.prepare.GroundedSAM.from_pretrained", lambda *a, **k: loads.append(a))
    (tmp_path / "images").mkdir()
    (tmp_path / "captions.jsonl").write_text("\n\n")
    status = main(["prepare", "--images", str(tmp_path / "images"), "--captions", str(tmp_path / "captions.jsonl"),
                   "--out", str(tmp_path / "out")])
    assert status == 2 and "holds no captions" in caplog.text and loads == [], caplog.text


# ==================================================================================================
# class: clear error (31), pinned
# ==================================================================================================

CLEAR = {
    # id: (argv builder on tmp_path, words of the message)
    "sample --seeds ''": (lambda t: ["sample", "--prompts", "a cat.", "--seeds", "", "--out", t / "o"],
                          ["cannot read seeds ''"]),
    "sample --seeds 0x10": (lambda t: ["sample", "--prompts", "a cat.", "--seeds", "0x10", "--out", t / "o"],
                            ["cannot read seeds '0x10'"]),
    "sample --seeds -5": (lambda t: ["sample", "--prompts", "a cat.", "--seeds", "-5", "--out", t / "o"],
                          ["cannot read seeds '-5'"]),
    "sample --model nothing_here": (lambda t: ["sample", "--prompts", "a cat.", "--model", "nothing_here", "--out",
                                               t / "o"], ["'nothing_here' is neither a preset"]),
    "multigen --num-objects a,b": (lambda t: ["evaluate", "multigen", "--prompts", "toy", "--model", "toy",
                                              "--num-objects", "a,b", "--out", t / "o"],
                                   ["--num-objects must be whole numbers"]),
    "multigen without --model or --images": (lambda t: ["evaluate", "multigen", "--prompts", "toy", "--out", t / "o"],
                                             ["pass either --model", "or --images"]),
    "multigen with --model and --images": (lambda t: ["evaluate", "multigen", "--prompts", "toy", "--model", "toy",
                                                      "--images", t, "--out", t / "o"], ["pass either --model"]),
    "visor --categories missing": (lambda t: ["evaluate", "visor", "--categories", t / "missing.txt", "--model",
                                              "toy", "--out", t / "o"], ["missing.txt not found"]),
    "visor --categories empty": (lambda t: ["evaluate", "visor", "--categories", _text(t / "c.txt", ""),
                                            "--model", "toy", "--out", t / "o"], ["two or more distinct category"]),
    "segmentation --seeds abc": (lambda t: ["evaluate", "segmentation", "--model", "toy", "--seeds", "abc"],
                                 ["cannot read seeds 'abc'"]),
    "latency --finetuned missing": (lambda t: ["evaluate", "latency", "--finetuned", t / "nowhere", "--runs", "1"],
                                    ["is neither a preset"]),
    "evaluate nonsense": (lambda t: ["evaluate", "nonsense"], ["unknown command 'nonsense'"]),
    "toy-data min > max objects": (lambda t: ["toy-data", "--out", t / "o", "-n", "2", "--min-objects", "5",
                                              "--max-objects", "2"], ["1 <= min <= max", "(5, 2)"]),
    "toy-data --max-objects 100": (lambda t: ["toy-data", "--out", t / "o", "-n", "2", "--max-objects", "100"],
                                   ["100 distinct categories"]),
    "toy-data --num-categories 1000": (lambda t: ["toy-data", "--out", t / "o", "-n", "2", "--num-categories",
                                                  "1000"], ["--num-categories must be in 1..10"]),
    "toy-data --object-weights 1,2": (lambda t: ["toy-data", "--out", t / "o", "-n", "2", "--object-weights", "1,2"],
                                      ["must be 4 non-negative numbers"]),
    "toy-data --size 1": (lambda t: ["toy-data", "--out", t / "o", "-n", "2", "--size", "1"], [">= 16, got 1"]),
    "train --toy-objects 3 2": (lambda t: ["train", "--toy-scenes", "--toy-objects", "3", "2", "--output-dir",
                                           t / "o"], ["1 <= min <= max", "(3, 2)"]),
    "train --grounding-timesteps 900:100": (lambda t: ["train", "--grounding-timesteps", "900:100"],
                                            ["0 <= LOW < HIGH", "'900:100'"]),
    "train --own-prompts -5": (lambda t: ["train", "--own-samples", "--own-prompts", "-5"],
                               ["argument --own-prompts", ">= 1"]),
    "train --own-sample-steps 5000": (lambda t: ["train", "--own-samples", "--own-sample-steps", "5000"],
                                      ["argument --own-sample-steps", "at most 1000"]),
    "train --gradient-accumulation-steps 0": (lambda t: ["train", "--gradient-accumulation-steps", "0"],
                                              ["--gradient-accumulation-steps", ">= 1"]),
    "train without data": (lambda t: ["train", "--output-dir", t / "o", "--no-progress"],
                           ["no training data", "--toy-scenes"]),
    "train --preset sd14 --toy-scenes": (lambda t: ["train", "--preset", "sd14", "--toy-scenes", "--output-dir",
                                                    t / "o"], ["only the pixel-space toy model"]),
    "demo --base missing": (lambda t: ["demo", "--out", t / "o", "--base", t / "nowhere"], ["no toy base model in"]),
    "demo --base a folder without a model": (lambda t: ["demo", "--out", t / "o", "--base", t],
                                             ["no toy base model in"]),
    "validate --seg-dir a file": (lambda t: ["validate", t, "--seg-dir", _text(t / "f.txt", "x")],
                                  ["argument --seg-dir", "is a file"]),
    "pretrain-toy --eval-steps 5000": (lambda t: ["pretrain-toy", "--out", t / "o", "--eval-steps", "5000"],
                                       ["argument --eval-steps", "at most 1000"]),
}


def _text(path: Path, content: str) -> Path:
    path.write_text(content)
    return path


@pytest.mark.parametrize("case", sorted(CLEAR))
def test_clear_error_stays_one_named_line(tmp_path, capsys, case):
    build, needles = CLEAR[case]
    status, err = run(capsys, *build(tmp_path))
    assert_named(status, err, *needles)
    assert not (tmp_path / "o").exists()


def test_clear_evaluate_without_a_subcommand_lists_them(capsys):
    assert main(["evaluate"]) == 2
    captured = capsys.readouterr()
    assert "multigen" in captured.out and "fid" in captured.out and "Traceback" not in captured.err


def test_clear_train_resume_from_a_folder_that_is_no_checkpoint(tmp_path, capsys, tiny_model):
    status, err = run(capsys, "train", "--pretrained", tiny_model, "--toy-scenes", "--resolution", "16", "--groups",
                      "mid_4", "--resume", tmp_path / "nowhere", "--output-dir", tmp_path / "run", "--no-progress")
    assert_named(status, err, "error:", "is not a checkpoint folder (no state.json)", "pass 'latest'")


def test_clear_prepare_captions_missing(tmp_path, caplog):
    (tmp_path / "images").mkdir()
    status = main(["prepare", "--images", str(tmp_path / "images"), "--captions", str(tmp_path / "c.jsonl"),
                   "--out", str(tmp_path / "out")])
    assert status == 2 and "'" + str(tmp_path / "c.jsonl") + "' not found" in caplog.text, caplog.text


# ==================================================================================================
# class: correct (6)
# ==================================================================================================

@pytest.mark.parametrize("text, seeds", [(" 1, 2 ", [1, 2]), ("0-2,1", [0, 1, 2]), ("7", [7])])
def test_correct_seed_lists_with_spaces_and_repeats(text, seeds):
    from tokencompose.sample import parse_seeds

    assert parse_seeds(text) == seeds


def test_correct_debug_alone_prints_the_commands(capsys):
    assert main(["--debug"]) == 0 and "commands:" in capsys.readouterr().out


def test_correct_a_file_name_with_dot_slash_is_the_same_image(tmp_path, capsys):
    root = _dataset(tmp_path / "ds", [_record(file_name="./0.png", mask="./m.png")])
    _image(root / "0.png")
    _mask(root / "m.png")
    assert validate(capsys, root) == (0, "1 records, 0 problems\n")


def test_correct_a_grounding_window_up_to_the_last_timestep_is_taken():
    from tokencompose.train import build_parser

    assert build_parser().parse_args(["--grounding-timesteps", f"0:{NOISE_LEVELS}"]).grounding_timesteps == (0, 1000)
