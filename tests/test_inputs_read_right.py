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

import pytest

from tokencompose import tokens
from tokencompose.__main__ import main
from tokencompose.tokens import MAX_LENGTH, N_MERGES, PhraseNotFoundError, TokenizerError, token_positions

#: ids published with CLIP (its README's example; SD 1.4's tokenizer gives the same)
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 269, 49407]


def run(capsys, *argv):
    """``(exit status, stderr)`` of ``python -m tokencompose *argv``."""
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def assert_named(status, err, *needles):
    """One line ``error: ...`` with exit status 2, no traceback, naming each of ``needles``."""
    assert status == 2, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], (needle, err)


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
