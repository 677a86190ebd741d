"""Inputs read right or refused (issue 37, items 2, 3, 5 and 6).

Each case is one a user met: a file read wrongly without a word (a 16-bit image clipped, a missing prompt file
taken as the prompt, ``"num_objects": true`` scored as 1), the offline tokenizer's cache damaged or built from
the wrong file, a divergence the guard waited 20 steps to see, a noun of a caption without spaces. Each ends
in the right result or in one named error (``error: ...``, exit status 2, no traceback).
"""

import errno
import gzip
import json
import shutil
import subprocess
from pathlib import Path

import cli_run
import pytest
from cli_run import run

from tokencompose import tokens
from tokencompose.__main__ import main
from tokencompose.tokens import MAX_LENGTH, N_MERGES, PhraseNotFoundError, TokenizerError, token_positions

#: ids published with CLIP (its README's example; SD 1.4's tokenizer gives the same)
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 269, 49407]


def assert_named(status, err, *needles):
    """One line ``error: ...`` with exit status 2, no traceback, naming each of ``needles``."""
    cli_run.assert_named(status, err, *needles, one_line=True)


# --------------------------------------------------------------------------------------------------
# item 3: the tokenizer checks itself
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_cache():
    """The offline tokenizer's files as built from CLIP's BPE file (the user's cache, read only here)."""
    return tokens.offline_tokenizer_dir()


@pytest.fixture(scope="module")
def clip_bpe(real_cache, tmp_path_factory):
    """A gzip BPE file with CLIP's merges (its header and the merges CLIP uses, from the cache's merges.txt)."""
    path = tmp_path_factory.mktemp("bpe") / tokens.BPE_FILE
    path.write_bytes(gzip.compress((real_cache / "merges.txt").read_bytes()))
    return path


@pytest.fixture
def offline(monkeypatch):
    """No installed open_clip/clip BPE file, and pip cannot reach PyPI."""
    monkeypatch.setattr(tokens, "_find_bpe_file", lambda: None)
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: Could not find a version (network is unreachable)")
    monkeypatch.setattr(tokens.subprocess, "run", lambda *a, **k: failed)


@pytest.fixture
def cache(tmp_path, monkeypatch, real_cache, offline):
    """A private copy of the cache (``TOKENCOMPOSE_CACHE``), offline; returns its ``clip_tokenizer`` folder."""
    monkeypatch.setenv("TOKENCOMPOSE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "clip_tokenizer"
    shutil.copytree(real_cache, folder)
    return folder


def test_emptied_merges_is_refused_offline_not_ready(cache, capsys):
    (cache / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(TokenizerError, match=f"merges.txt holds 0 merges, CLIP's has {N_MERGES}"):
        tokens.clip_tokenizer()
    status, err = run(capsys, "setup-tokenizer")
    assert_named(status, err, "damaged", "merges.txt", "--bpe")


def test_emptied_merges_is_rebuilt_when_clip_bpe_is_installed(cache, clip_bpe, monkeypatch):
    (cache / "merges.txt").write_text("#version: 0.2\n")
    monkeypatch.setattr(tokens, "_find_bpe_file", lambda: clip_bpe)
    tokenizer = tokens.clip_tokenizer()
    assert tokenizer("a photo of a cat.")["input_ids"] == CAT_IDS
    assert len((cache / "merges.txt").read_text().splitlines()) == 1 + N_MERGES


def test_truncated_vocab_is_refused(cache, capsys):
    data = (cache / "vocab.json").read_bytes()
    (cache / "vocab.json").write_bytes(data[: len(data) // 2])
    status, err = run(capsys, "validate", cache)  # any command that needs the tokenizer
    assert_named(status, err, "vocab.json", "damaged")


def test_vocab_of_another_size_is_refused(cache):
    vocab = json.loads((cache / "vocab.json").read_text())
    vocab.pop("<|endoftext|>")
    (cache / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(TokenizerError, match="vocab.json holds 49407 tokens"):
        tokens.clip_tokenizer()


def test_bpe_flag_is_honoured_over_an_existing_cache(cache, tmp_path, capsys):
    # a good cache is there; --bpe names a file that is not: refused (it used to be ignored, "ready")
    status, err = run(capsys, "setup-tokenizer", "--bpe", tmp_path / "nowhere.txt.gz")
    assert_named(status, err, "nowhere.txt.gz", "not found")


def test_bpe_flag_rebuilds_a_damaged_cache(cache, clip_bpe, capsys):
    (cache / "vocab.json").write_text("{}")
    assert main(["setup-tokenizer", "--bpe", str(clip_bpe)]) == 0
    assert tokens.cache_fault(cache) is None
    assert tokens.clip_tokenizer()("a photo of a cat.")["input_ids"] == CAT_IDS


def test_bpe_of_another_vocabulary_is_refused_and_the_cache_kept(cache, real_cache, tmp_path, capsys):
    # a consistent vocabulary, but not CLIP's: the merge that makes "photo</w>" swapped with the next one, so
    # that "photo" still encodes as one token, under another id
    lines = (real_cache / "merges.txt").read_text().split("\n")
    i = next(k for k, line in enumerate(lines) if "".join(line.split()) == "photo</w>")
    assert "photo</w>" not in lines[i + 1].split()
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    other = tmp_path / "other.txt.gz"
    other.write_bytes(gzip.compress("\n".join(lines).encode()))
    before = (cache / "vocab.json").read_bytes()
    status, err = run(capsys, "setup-tokenizer", "--bpe", other)
    assert_named(status, err, "not CLIP's", "'a photo of a cat.'")
    assert (cache / "vocab.json").read_bytes() == before


def test_bpe_that_is_not_gzip_is_named(cache, tmp_path, capsys):
    plain = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    plain.write_text("#version: 0.2\nh e\n")
    status, err = run(capsys, "setup-tokenizer", "--bpe", plain)
    assert_named(status, err, "not a gzip file", str(plain))


def test_truncated_bpe_is_named(cache, tmp_path, capsys):
    short = tmp_path / "short.txt.gz"
    short.write_bytes(gzip.compress(b"#version: 0.2\nh e\nhe llo</w>\n"))
    status, err = run(capsys, "setup-tokenizer", "--bpe", short)
    assert_named(status, err, "holds 2 merges")


def test_offline_without_cache_is_one_named_error(tmp_path, monkeypatch, offline, capsys):
    monkeypatch.setenv("TOKENCOMPOSE_CACHE", str(tmp_path / "empty"))
    status, err = run(capsys, "setup-tokenizer")
    assert_named(status, err, "could not fetch", "--bpe")


def test_cache_path_that_is_a_file(tmp_path, monkeypatch, clip_bpe, capsys):
    (tmp_path / "cache").write_text("a file where the cache folder goes")
    monkeypatch.setenv("TOKENCOMPOSE_CACHE", str(tmp_path / "cache"))
    status, err = run(capsys, "setup-tokenizer", "--bpe", clip_bpe)
    assert_named(status, err, "is a file, not a folder", "TOKENCOMPOSE_CACHE")


def test_read_only_home(tmp_path, monkeypatch, clip_bpe, capsys):
    monkeypatch.delenv("TOKENCOMPOSE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def refused(self, *args, **kwargs):  # a read-only file system (root ignores chmod, so it is simulated)
        raise PermissionError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", refused)
    status, err = run(capsys, "setup-tokenizer", "--bpe", clip_bpe)
    assert_named(status, err, "cannot write the tokenizer cache", "Read-only file system", "TOKENCOMPOSE_CACHE")


def test_validate_with_a_missing_tokenizer_folder_is_refused(tmp_path, capsys):
    missing = tmp_path / "my_tokenizer"
    status, err = run(capsys, "validate", tmp_path, "--tokenizer", missing)
    assert_named(status, err, str(missing), "not a folder")


def test_validate_with_a_folder_without_tokenizer_files_is_refused(tmp_path, capsys):
    (tmp_path / "model" / "unet").mkdir(parents=True)
    status, err = run(capsys, "validate", tmp_path, "--tokenizer", tmp_path / "model")
    assert_named(status, err, "holds no CLIP tokenizer files")


# --------------------------------------------------------------------------------------------------
# item 6: token positions in captions without spaces, and with attached particles
# --------------------------------------------------------------------------------------------------

def _text_at(tokenizer, prompt, positions):
    """The text of the prompt's tokens at ``positions`` (bytes of byte-level tokens joined, ``</w>`` dropped)."""
    ids = tokenizer(prompt, padding="max_length", max_length=MAX_LENGTH, truncation=True)["input_ids"]
    text = tokenizer.convert_tokens_to_string(tokenizer.convert_ids_to_tokens([ids[p] for p in positions]))
    return text.replace("</w>", " ").strip()


@pytest.mark.parametrize(("prompt", "noun"), [
    ("一只猫和一只狗", "猫"),  # Chinese: no spaces at all
    ("一只猫和一只狗", "狗"),
    ("猫が魚を食べる", "魚"),  # Japanese: particles attached (が, を)
    ("고양이가 공을 가지고 논다", "고양이"),  # Korean: spaces between words, particles attached (가, 을)
    ("고양이가 공을 가지고 논다", "공"),
    ("สวัสดีครับแมว", "แมว"),  # Thai: no spaces
    ("İİ 一只猫和一只狗", "猫"),  # a prefix whose lower case is longer does not shift the span
])
def test_nouns_without_spaces_are_found_in_token_space(tokenizer, prompt, noun):
    positions = token_positions(prompt, noun, tokenizer)
    assert _text_at(tokenizer, prompt, positions) == noun
    assert positions == list(range(positions[0], positions[-1] + 1))


def test_noun_sharing_a_token_with_its_neighbour_says_why(tokenizer):
    # "テキスト": CLIP's BPE merges the bytes of ス with the first bytes of ト into one token
    with pytest.raises(PhraseNotFoundError, match="no tokens of its own.*'スト'"):
        token_positions("日本語のテキスト", "テキス", tokenizer)
    assert _text_at(tokenizer, "日本語のテキスト", token_positions("日本語のテキスト", "テキスト", tokenizer)) == "テキスト"


def test_latin_words_still_match_whole_words_only(tokenizer):
    with pytest.raises(PhraseNotFoundError, match="is not in"):
        token_positions("a photo of a category.", "cat", tokenizer)


def test_validate_accepts_a_cjk_caption(tokenizer, tmp_path):
    from PIL import Image

    from tokencompose.data import validate_dataset

    Image.new("RGB", (8, 8)).save(tmp_path / "0.png")
    Image.new("L", (8, 8), 255).save(tmp_path / "m.png")
    record = {"file_name": "0.png", "text": "一只猫在草地上", "attn_list": [["猫", "m.png"]]}
    (tmp_path / "metadata.jsonl").write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    assert validate_dataset(tmp_path, tokenizer) == []


# --------------------------------------------------------------------------------------------------
# item 5: the divergence guard judges a jump from the first steps on
# --------------------------------------------------------------------------------------------------

def _rows(*totals):
    return [{"step": i + 1, "total": t} for i, t in enumerate(totals)]


def test_a_jump_at_step_two_is_seen_against_the_starting_loss():
    from tokencompose.train import first_jump

    assert first_jump(_rows(0.004, 313.0), 100) == 2
    assert first_jump(_rows(0.004, 0.3, 313.0), 100) == 3  # 1000x the largest since the start
    # a healthy start is noisy (single-sample diffusion losses differ 10x from step to step): no jump
    assert first_jump(_rows(0.004, 0.05, 0.3, 0.01, 0.2, 0.02), 100) is None


@pytest.fixture(scope="module")
def toy_base(tmp_path_factory):
    import torch

    from tokencompose.models import build_toy_model, save_toy_model

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest on a shared machine
    folder = tmp_path_factory.mktemp("toy_base")
    save_toy_model(build_toy_model(seed=0), folder)
    yield folder
    torch.set_num_threads(before)


def _train_with_losses(monkeypatch, toy_base, out, scale, factor=100.0, steps=3):
    """A toy run of ``steps`` steps, each checkpointed, whose step ``k`` total loss is multiplied by ``scale(k)`` (1-based)."""
    import tokencompose.train as train_module
    from tokencompose.config import get_config
    from tokencompose.toy.world import scene_batches

    real = train_module.compute_losses
    calls = []

    def scaled(*args, **kwargs):
        losses = real(*args, **kwargs)
        calls.append(1)
        return {**losses, "total": losses["total"] * scale(len(calls))}

    monkeypatch.setattr(train_module, "compute_losses", scaled)
    config = get_config("toy", pretrained=str(toy_base), output_dir=str(out), learning_rate=1e-4,
                        train_batch_size=1, gradient_accumulation_steps=1, max_train_steps=steps,
                        checkpointing_steps=1, checkpoints_total_limit=10)
    options = train_module.TrainOptions(progress=False, tensorboard=False, loss_spike_factor=factor)
    return train_module.train(config, options, batches=scene_batches(config))


def test_a_loss_that_jumps_at_step_two_stops_the_run(tmp_path, monkeypatch, toy_base):
    from tokencompose.train import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match=r"step 2: the loss jumped .* the largest loss of the 1 step") as caught:
        _train_with_losses(monkeypatch, toy_base, tmp_path / "run", lambda k: 1e5 if k == 2 else 1.0)
    # the loss of step 2 is that of checkpoint-1's weights: no checkpoint is good, none of step 2 is written
    assert caught.value.checkpoint is None and "no checkpoint before the jump" in str(caught.value)
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["checkpoint-1"]
    assert not (tmp_path / "run" / "unet").exists()


def test_a_checkpoint_after_a_jump_is_never_named_good(tmp_path, monkeypatch, toy_base):
    """The guard off (0): a jump at step 3 goes on, checkpoints 3 and 4 are written with the jumped weights; a
    NaN at step 5 then names checkpoint-1, the last one from before the jump, not checkpoint-4."""
    from tokencompose.train import NonFiniteLossError

    def scale(k):
        return float("nan") if k == 5 else 1e5 if k >= 3 else 1.0

    with pytest.raises(NonFiniteLossError, match="step 5") as caught:
        _train_with_losses(monkeypatch, toy_base, tmp_path / "run", scale, factor=0, steps=6)
    assert caught.value.checkpoint is not None and caught.value.checkpoint.name == "checkpoint-1"
    assert "checkpoint-1" in str(caught.value) and "checkpoint-4" not in str(caught.value)


# --------------------------------------------------------------------------------------------------
# item 2: inputs read right or refused
# --------------------------------------------------------------------------------------------------

def _grey16(path, values):
    """A 16-bit greyscale PNG (PIL mode I;16) of the uint16 ``values``."""
    import numpy as np
    from PIL import Image

    Image.fromarray(np.asarray(values, dtype=np.uint16)).save(path)
    return path


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    import numpy as np
    from PIL import Image

    from tokencompose.images import open_rgb

    path = _grey16(tmp_path / "g16.png", [[0, 257 * 10, 32896, 65535]])
    assert Image.open(path).mode == "I;16"
    assert np.asarray(open_rgb(path))[0, :, 0].tolist() == [0, 10, 128, 255]  # v / 257


def test_a_sixteen_bit_training_image_keeps_its_grey(tokenizer, tmp_path):
    from PIL import Image

    from tokencompose.data import TokenComposeDataset

    _grey16(tmp_path / "0.png", [[32896] * 8] * 8)  # mid grey in 16 bits: 128 / 255 in 8 bits
    Image.new("L", (8, 8), 255).save(tmp_path / "m.png")
    record = {"file_name": "0.png", "text": "a photo of a cat.", "attn_list": [["cat", "m.png"]]}
    (tmp_path / "metadata.jsonl").write_text(json.dumps(record) + "\n")
    pixels = TokenComposeDataset(tmp_path, tokenizer, 8, value_range=(0.0, 1.0))[0]["pixel_values"]
    assert float(pixels.min()) == pytest.approx(128 / 255, abs=1e-6)
    assert float(pixels.max()) == pytest.approx(128 / 255, abs=1e-6)


def test_a_float_image_is_a_validation_problem_naming_its_mode(tokenizer, tmp_path):
    import numpy as np
    from PIL import Image

    from tokencompose.data import validate_dataset

    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32)).save(tmp_path / "0.tif")
    Image.new("L", (8, 8), 255).save(tmp_path / "m.png")
    record = {"file_name": "0.tif", "text": "a photo of a cat.", "attn_list": [["cat", "m.png"]]}
    (tmp_path / "metadata.jsonl").write_text(json.dumps(record) + "\n")
    problems = validate_dataset(tmp_path, tokenizer)
    assert [p.kind for p in problems] == ["image_mode"]
    assert "mode F" in problems[0].message and "'0.tif'" in problems[0].message


@pytest.mark.parametrize("name", ["x.csv", "UP.JSON", "prompts.dat", "data/prompts"])
def test_a_missing_prompt_file_is_not_taken_as_the_prompt(tmp_path, capsys, name):
    from tokencompose.sample import read_prompts

    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_prompts(name)
    status, err = run(capsys, "sample", "--prompts", name, "--out", tmp_path / "out")
    assert_named(status, err, repr(name), "does not exist")
    assert not (tmp_path / "out").exists()


def test_prompt_files_are_read_by_suffix_in_any_case_and_by_content(tmp_path):
    from tokencompose.sample import read_prompts

    upper = tmp_path / "UP.JSON"
    upper.write_text(json.dumps([{"text": "a cat."}, "a dog."]))
    assert read_prompts(upper) == ["a cat.", "a dog."]
    no_suffix = tmp_path / "prompts"
    no_suffix.write_text(json.dumps(["a kite."]))
    assert read_prompts(no_suffix) == ["a kite."]
    lines = tmp_path / "meta.data"
    lines.write_text('{"text": "a bus."}\n{"text": "a car."}\n')
    assert read_prompts(lines) == ["a bus.", "a car."]
    table = tmp_path / "p.CSV"
    table.write_text('id,prompt\n0,"a cat, a dog and a kite."\n1,a bus.\n')
    assert read_prompts(table) == ["a cat, a dog and a kite.", "a bus."]
    wide = tmp_path / "wide.csv"
    wide.write_text("a,b\nc,d\n")
    with pytest.raises(ValueError, match="no column headed text / prompt / caption"):
        read_prompts(wide)
    assert read_prompts("a photo of a cat.") == ["a photo of a cat."]  # a prompt is still a prompt


@pytest.mark.parametrize(("field", "value", "words"), [
    ("num_objects", True, ["item 1", "num_objects", "true"]),
    ("text", None, ["item 1", "text", "null"]),
    ("unique_id", "zero", ["item 1", "unique_id", '"zero"']),
    ("obj_1_attributes", [""], ["item 1", "obj_1_attributes"]),
])
def test_multigen_fields_are_type_checked(tmp_path, capsys, field, value, words):
    from tokencompose.evaluate import multigen

    good = {"unique_id": 0, "num_objects": 1, "obj_1_attributes": ["circle"], "text": "a photo of a circle."}
    bad = {**good, "unique_id": 1, field: value}
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps([good, bad]))
    with pytest.raises(ValueError) as caught:
        multigen.load_prompts(path)
    for word in words:
        assert word in str(caught.value), (word, caught.value)
    images = tmp_path / "images"
    images.mkdir()
    status, err = run(capsys, "evaluate", "multigen", "--prompts", path, "--images", images, "--detector", "toy",
                      "--out", tmp_path / "out")
    assert_named(status, err, *words)


def test_an_upper_case_prompt_set_is_not_read_as_a_category_list(tmp_path):
    from tokencompose.evaluate import multigen

    entry = {"unique_id": 0, "num_objects": 2, "obj_1_attributes": ["cat"], "obj_2_attributes": ["dog"],
             "text": "a photo of a cat and a dog."}
    for name in ("SET.JSON", "set_without_suffix"):
        path = tmp_path / name
        path.write_text(json.dumps([entry]))
        assert multigen.is_prompt_set(path)
        assert multigen.load_categories(path) == ["cat", "dog"]
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n")
    assert not multigen.is_prompt_set(names)


def test_a_prompt_past_77_tokens_is_warned_at_sampling(caplog):
    from tokencompose.models import build_toy_model
    from tokencompose.sample import generate

    long = "a cat " * 100  # "a" and "cat" are one CLIP token each: 200 + start + end
    caplog.set_level("WARNING", logger="tokencompose.tokens")
    images = generate(build_toy_model(sample_size=8, seed=0), ["a cat.", long], [0], steps=1, progress=False)
    assert images.shape[0] == 2
    warned = [r.getMessage() for r in caplog.records if "tokens" in r.getMessage()]
    assert len(warned) == 1 and "prompt 1 " in warned[0] and "202 tokens" in warned[0]
    assert "prompt 0 " not in warned[0] and "first 77" in warned[0]


def _finetuned_unet(folder, base):
    """A run folder as ``train`` leaves it for SD: ``unet/`` and the ``training_config.json`` naming its base."""
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "config.json").write_text("{}")  # refused before any weight is read
    (folder / "training_config.json").write_text(json.dumps({"preset": "toy", "pretrained": str(base)}))
    return folder / "unet"


def test_a_finetuned_unet_samples_with_the_base_its_config_names(tmp_path, capsys):
    from tokencompose.sample import base_of_finetune

    base_a, base_b = tmp_path / "base_a", tmp_path / "base_b"
    base_a.mkdir()
    base_b.mkdir()
    unet = _finetuned_unet(tmp_path / "run", base_a)
    assert base_of_finetune(unet, None) == str(base_a)
    assert base_of_finetune(unet, str(base_a)) == str(base_a)
    with pytest.raises(ValueError, match="fine-tuned from .*base_a.* but base .*base_b"):
        base_of_finetune(unet, str(base_b))
    status, err = run(capsys, "sample", "--model", unet, "--base", base_b, "--prompts", "a photo of a cat.",
                      "--out", tmp_path / "out")
    assert_named(status, err, "base_a", "base_b", "training_config.json")


def test_a_recorded_base_that_is_gone(tmp_path, caplog):
    from tokencompose.sample import base_of_finetune

    unet = _finetuned_unet(tmp_path / "run", tmp_path / "moved_away")
    with pytest.raises(ValueError, match="moved_away.*not here.*--base"):
        base_of_finetune(unet, None)
    caplog.set_level("WARNING", logger="tokencompose.sample")
    assert base_of_finetune(unet, "sd14") == "sd14"  # the user's copy, with a warning
    assert "moved_away" in caplog.text
