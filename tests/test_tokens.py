"""tokens.py: the offline CLIP tokenizer encodes like CLIP; noun -> token positions."""

import pytest

from tokencompose.tokens import (
    MAX_LENGTH,
    PhraseNotFoundError,
    clip_tokenizer,
    clip_vocab_from_bpe,
    noun_token_positions,
    token_positions,
)


def tokens_at(tokenizer, prompt, positions):
    ids = tokenizer(prompt, padding="max_length", max_length=MAX_LENGTH, truncation=True)["input_ids"]
    return tokenizer.convert_ids_to_tokens([ids[p] for p in positions])


def test_offline_tokenizer_encodes_like_clip(tokenizer):
    # ids published with CLIP / used by SD 1.4's tokenizer
    assert tokenizer("a photo of a cat.")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    assert len(tokenizer.get_vocab()) == 49408
    padded = tokenizer("a cat", padding="max_length", max_length=MAX_LENGTH)["input_ids"]
    assert len(padded) == 77 and padded[-1] == 49407


def test_vocab_derivation_on_a_tiny_bpe_file():
    text = "#version: 0.2\nh e\nhe llo</w>\n"
    vocab, merges = clip_vocab_from_bpe(text)
    assert merges == ["h e", "he llo</w>"]
    # 256 byte symbols, 256 with </w>, then the merges in order, then the two specials
    assert vocab["he"] == 512 and vocab["hello</w>"] == 513
    assert vocab["<|startoftext|>"] == 514 and vocab["<|endoftext|>"] == 515
    assert vocab["!"] == 0 and vocab["!</w>"] == 256


@pytest.mark.parametrize(
    ("prompt", "phrase", "expected"),
    [
        ("a photo of a cat.", "cat", ["cat</w>"]),
        ("A photo of a CAT and a kite, a pizza.", "kite", ["kite</w>"]),
        ("a teddy bear sitting on a chair", "teddy bear", ["teddy</w>", "bear</w>"]),
        ("chocolate spread on toast", "Chocolate Spread", ["chocolate</w>", "spread</w>"]),
        ("two kites flying.", "kite", ["kites</w>"]),
        ("a puppy and two puppies", "puppies", ["puppy</w>"]),
    ],
)
def test_positions_point_at_the_phrase(tokenizer, prompt, phrase, expected):
    positions = token_positions(prompt, phrase, tokenizer)
    assert tokens_at(tokenizer, prompt, positions) == expected
    assert positions == sorted(positions) and positions[0] >= 1


def test_multi_token_word(tokenizer):
    prompt = "a photo of a zebracorn."
    positions = token_positions(prompt, "zebracorn", tokenizer)
    assert len(positions) >= 2
    assert "".join(tokens_at(tokenizer, prompt, positions)).replace("</w>", "") == "zebracorn"
    assert positions == list(range(positions[0], positions[-1] + 1))


def test_nth_occurrence_and_repeated_nouns(tokenizer):
    prompt = "a cat next to a dog and a cat"
    first = token_positions(prompt, "cat", tokenizer)
    second = token_positions(prompt, "cat", tokenizer, occurrence=1)
    assert first == [2] and second == [9]
    assert noun_token_positions(prompt, ["cat", "dog", "cat"], tokenizer) == [[2], [6], [9]]
    with pytest.raises(PhraseNotFoundError, match="occurs 2 time"):
        token_positions(prompt, "cat", tokenizer, occurrence=2)


def test_absent_phrase_names_prompt_and_phrase(tokenizer):
    with pytest.raises(PhraseNotFoundError) as info:
        token_positions("a photo of a cat.", "giraffe", tokenizer)
    assert "giraffe" in str(info.value) and "a photo of a cat." in str(info.value)
    # a word inside another word is not a match
    with pytest.raises(PhraseNotFoundError):
        token_positions("a photo of a category.", "cat", tokenizer)


def test_phrase_past_truncation(tokenizer):
    prompt = "a photo of " + "a red box, " * 30 + "and a giraffe."
    with pytest.raises(PhraseNotFoundError, match="truncation"):
        token_positions(prompt, "giraffe", tokenizer)
    assert token_positions(prompt, "photo", tokenizer) == [2]


def test_offline_fallback_when_model_has_no_tokenizer(tmp_path, caplog):
    caplog.set_level("INFO", logger="tokencompose.tokens")
    tokenizer = clip_tokenizer(str(tmp_path / "no-such-model"))
    assert tokenizer("a photo of a cat.")["input_ids"][5] == 2368
    assert "offline" in caplog.text


def test_model_folder_without_tokenizer_files_falls_back(tmp_path, caplog):
    # a toy-layout model folder (unet/, text_encoder/) has no tokenizer: transformers 5 would build an
    # empty tokenizer from it; clip_tokenizer must notice and use the offline one
    (tmp_path / "unet").mkdir()
    caplog.set_level("INFO", logger="tokencompose.tokens")
    tokenizer = clip_tokenizer(str(tmp_path))
    assert tokenizer("a photo of a cat.")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    assert "offline" in caplog.text


def test_model_folder_tokenizer_is_preferred(tokenizer, tmp_path, caplog):
    folder = tmp_path / "model" / "tokenizer"
    tokenizer.save_pretrained(folder)
    caplog.set_level("INFO", logger="tokencompose.tokens")
    own = clip_tokenizer(str(tmp_path / "model"))
    assert own("a cat")["input_ids"] == [49406, 320, 2368, 49407]
    assert "the model's own" in caplog.text


def test_positions_are_right_after_any_unicode_prefix(tokenizer):
    """Search and slice the same string: a prefix whose lower case is longer ("İ" -> "i̇") or shorter, or that
    the tokenizer splits oddly, never shifts a noun onto its neighbours (property over random prefixes)."""
    import random

    alphabet = ["İ", "ß", "ẞ", "K", "ſ", "ﬁ", "É", "ö", "Σ", "ς", "日本", "😀", "-", " ", "A", "z", "0", "'", "\u200b"]
    rng = random.Random(0)
    for _ in range(150):
        prefix = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
        prompt = f"{prefix} a photo of a Cat and a kite."
        ids = tokenizer(prompt, padding="max_length", max_length=77)["input_ids"]
        for noun in ("cat", "kite"):
            tokens = [tokenizer.convert_ids_to_tokens(ids[p]) for p in token_positions(prompt, noun, tokenizer)]
            assert "".join(tokens).replace("</w>", "") == noun, (prompt, noun, tokens)
