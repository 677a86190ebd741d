"""Noun -> CLIP token positions (paper Sec. 3.2, step 3: "each noun is mapped to its token indices").

The grounding losses supervise the cross-attention column of every BPE token of a noun. A word can be
several tokens ("skateboard" -> "skate", "board</w>"), a noun phrase several words ("teddy bear"), a word
can carry punctuation ("kite,") or a plural ending, and a prompt longer than 77 tokens is truncated. This
module finds the positions in the padded 77-token sequence (position 0 = ``<|startoftext|>``) and raises
``PhraseNotFoundError`` with the prompt and the phrase when it cannot.

The authors' code finds a word by comparing decoded token strings and stops with
``assert first_token_idx != -1``; here the matching is done on words with character spans, and each span is
mapped to tokens by tokenizing the prefix before it (CLIP's pre-tokenizer splits at every letter/non-letter
boundary, so the tokens of a prefix ending at a word boundary are a prefix of the prompt's tokens).

The real CLIP tokenizer offline: ``clip_tokenizer()`` builds a ``transformers.CLIPTokenizer`` from CLIP's
BPE file ``bpe_simple_vocab_16e6.txt.gz`` (found in an installed ``open_clip``/``clip`` package, or taken
from the ``clip-anytorch`` wheel on PyPI with ``pip download --no-deps``), deriving ``vocab.json`` and
``merges.txt`` into a cache folder once. Usage::

    python -m tokencompose setup-tokenizer      # once, at set-up time (make does it)
    python -m tokencompose setup-tokenizer --bpe PATH/bpe_simple_vocab_16e6.txt.gz   # offline: from this file

The cache checks itself: on build, in a temporary folder before it replaces anything, and on load
(``cache_fault``: CLIP's 49408 ids, 48894 merges, each merge's token at its id; ``KNOWN_IDS``: CLIP's published
ids of "a photo of a cat."). A damaged cache (an emptied ``merges.txt`` gives character-level ids) is rebuilt
when a BPE file is at hand, and refused otherwise; ``--bpe`` always rebuilds from that file. Every fault of the
cache (no BPE file offline, a ``--bpe`` that is missing, not gzip or not CLIP's, a folder that cannot be
written) is a ``TokenizerError`` (a ``UserError``: one line from the command line).

Scripts written without spaces between words (Chinese, Japanese, Thai) or with particles attached to nouns
(Korean) have no word boundary around a noun: there the noun is found inside the word and its tokens are those
the tokenizer's character offsets put on it, or a ``PhraseNotFoundError`` says which token it shares with its
neighbour.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

from .cli_args import UserError

logger = logging.getLogger(__name__)

#: CLIP's context length: <|startoftext|>, at most 75 content tokens, <|endoftext|>
MAX_LENGTH = 77
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
#: a loaded tokenizer with fewer tokens than this is not a CLIP tokenizer (CLIP's has 49408)
MIN_VOCAB = 49_000
#: the PyPI distribution whose wheel carries CLIP's BPE file (MIT licence, OpenAI's vocabulary)
BPE_WHEEL = "clip-anytorch==2.6.0"
#: CLIP keeps the first 49152 - 256 - 2 merges of the file (its first line is a version header)
N_MERGES = 49152 - 256 - 2

#: a word: a run of letters and digits of any script ("cat", "café", "İstanbul", "猫"), compared in lower case;
#: found in the prompt itself, so that their spans index the prompt (not ``prompt.lower()``)
_WORD = re.compile(r"[^\W_]+")


class PhraseNotFoundError(ValueError):
    """A phrase is absent from its prompt, or lies past CLIP's 77-token truncation."""


# --------------------------------------------------------------------------------------------------
# token positions
# --------------------------------------------------------------------------------------------------

def _same_word(prompt_word: str, phrase_word: str) -> bool:
    """Equal, or equal up to an English plural ending (kite/kites, bus/buses, puppy/puppies)."""
    if prompt_word == phrase_word:
        return True
    short, long = sorted((prompt_word, phrase_word), key=len)
    return long in (short + "s", short + "es") or (short.endswith("y") and long == short[:-1] + "ies")


def _count_tokens(text: str, tokenizer) -> int:
    return len(tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])


#: Unicode name prefixes of the scripts written without spaces between words (Chinese, Japanese, Thai, ...) or
#: with particles attached to a noun (Korean "고양이가" = "cat" + subject particle): in these a noun is looked
#: for inside a word too, not only as a whole word
_UNSPACED_SCRIPTS = ("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH", "HIRAGANA", "KATAKANA",
                     "HALFWIDTH KATAKANA", "HANGUL", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN")


def _unspaced(char: str) -> bool:
    """Whether ``char`` is a letter of a script in ``_UNSPACED_SCRIPTS``."""
    return unicodedata.name(char, "").startswith(_UNSPACED_SCRIPTS)


def _word_spans(prompt: str, phrase_words: list[str]) -> list[tuple[int, int]]:
    """Spans of ``prompt`` whose whole words are the phrase's words (up to a plural ending)."""
    # words of the prompt itself, compared in lower case: their spans index ``prompt`` (``prompt.lower()`` can
    # be longer than ``prompt``, e.g. "İ" -> "i̇", which would shift every span after it)
    words = [(m.group().lower(), m.start(), m.end()) for m in _WORD.finditer(prompt)]
    n = len(phrase_words)
    return [
        (words[i][1], words[i + n - 1][2])
        for i in range(len(words) - n + 1)
        if all(_same_word(words[i + k][0], phrase_words[k]) for k in range(n))
    ]


def _edge_ok(prompt: str, index: int) -> bool:
    """Whether a match may start or end at ``index``: a word boundary, or between two unspaced-script letters."""
    if index <= 0 or index >= len(prompt):
        return True
    left, right = prompt[index - 1], prompt[index]
    return not (_WORD.match(left) and _WORD.match(right)) or (_unspaced(left) and _unspaced(right))


def _inner_spans(prompt: str, phrase_words: list[str]) -> list[tuple[int, int]]:
    """Spans of ``prompt`` where a phrase of an unspaced script stands inside a longer word (猫 in 一只猫和一只狗,
    고양이 in 고양이가), each edge a word boundary or between two letters of such a script."""
    if not any(_unspaced(char) for word in phrase_words for char in word):
        return []
    pattern = re.compile(r"[\W_]*".join(re.escape(word) for word in phrase_words), re.IGNORECASE)
    return [(m.start(), m.end()) for m in pattern.finditer(prompt)
            if m.end() > m.start() and _edge_ok(prompt, m.start()) and _edge_ok(prompt, m.end())]


def _positions_inside_word(prompt: str, phrase: str, start: int, end: int, tokenizer) -> list[int]:
    """Positions of the tokens of ``prompt[start:end]``, a span inside a word, from the tokenizer's character
    offsets (a prefix that ends inside a word is not tokenized as the prompt is, so ``_count_tokens`` cannot be
    used). ``PhraseNotFoundError`` when a token is shared with a neighbouring character (byte-pair merges can
    cross the noun's edge) or the tokenizer gives no offsets."""
    if not getattr(tokenizer, "is_fast", False):
        raise PhraseNotFoundError(
            f"phrase {phrase!r} stands inside the word {prompt[max(0, start - 3):end + 3]!r} of prompt {prompt!r}; "
            f"finding its tokens there needs a fast tokenizer's character offsets, and {type(tokenizer).__name__} "
            "gives none: use the offline CLIP tokenizer (tokens.clip_tokenizer()) or write the noun between spaces")
    encoding = tokenizer(prompt, add_special_tokens=False, truncation=False, return_offsets_mapping=True)
    tokens = [(i, a, b) for i, (a, b) in enumerate(encoding["offset_mapping"]) if a < end and b > start]
    shared = [(i, a, b) for i, a, b in tokens if a < start or b > end]
    if shared or not tokens:
        i, a, b = shared[0] if shared else (None, start, end)
        token = tokenizer.convert_ids_to_tokens(encoding["input_ids"][i]) if i is not None else None
        raise PhraseNotFoundError(
            f"phrase {phrase!r} (characters {start}-{end} of prompt {prompt!r}) has no tokens of its own: CLIP's "
            f"byte-pair encoding merged its edge with a neighbouring character into token {token!r} (characters "
            f"{prompt[a:b]!r}); write the noun between spaces, or choose the noun with its particle")
    return [1 + i for i, _, _ in tokens]


def token_positions(prompt: str, phrase: str, tokenizer, occurrence: int = 0) -> list[int]:
    """Positions of every BPE token of ``phrase`` in the padded 77-token encoding of ``prompt``.

    Args:
        prompt: the caption fed to the text encoder.
        phrase: a noun or noun phrase of the caption ("cat", "teddy bear"); case-insensitive; a plural in the
            prompt matches a singular phrase and vice versa; punctuation next to the word is ignored. A phrase
            of a script written without spaces (Chinese, Japanese, Thai) or with attached particles (Korean) is
            found inside a word too ("猫" in "一只猫和一只狗", "고양이" in "고양이가"): its tokens are those the
            tokenizer's character offsets put on it. (A noun inside a longer noun, 猫 in 熊猫, matches there
            too: no word segmenter is used.)
        tokenizer: a CLIP tokenizer (``clip_tokenizer()``).
        occurrence: which occurrence to take when the phrase appears several times (0 = first).

    Returns:
        Sorted positions in ``[1, 75]`` (position 0 is ``<|startoftext|>``).

    Raises:
        PhraseNotFoundError: the phrase is not in the prompt, has fewer than ``occurrence + 1`` occurrences,
            (part of) it lies past the 77-token truncation, or, inside a word, it shares a token with its
            neighbour (the message says which).
    """
    phrase_words = [word.lower() for word in _WORD.findall(phrase)]
    if not phrase_words:
        raise PhraseNotFoundError(f"phrase {phrase!r} has no letters or digits to look for in prompt {prompt!r}")
    if occurrence < 0:
        raise ValueError(f"occurrence must be >= 0, got {occurrence}")
    whole = _word_spans(prompt, phrase_words)
    spans = sorted(set(whole) | set(_inner_spans(prompt, phrase_words)))
    if len(spans) <= occurrence:
        found = "is not in" if not spans else f"occurs {len(spans)} time(s) in"
        raise PhraseNotFoundError(
            f"phrase {phrase!r} {found} prompt {prompt!r} (wanted occurrence {occurrence}); check that the noun "
            "list was extracted from this caption"
        )
    start, end = spans[occurrence]
    if (start, end) in whole:  # word boundaries: the tokens of the prefix are a prefix of the prompt's tokens
        before = _count_tokens(prompt[:start], tokenizer)
        through = _count_tokens(prompt[:end], tokenizer)
        positions = list(range(1 + before, 1 + through))
    else:
        positions = _positions_inside_word(prompt, phrase, start, end, tokenizer)
    if positions[-1] > MAX_LENGTH - 2:
        raise PhraseNotFoundError(
            f"phrase {phrase!r} lies at tokens {positions[0]}-{positions[-1]} of prompt {prompt!r}, past CLIP's "
            f"{MAX_LENGTH}-token truncation (content tokens are 1-{MAX_LENGTH - 2}); shorten the caption"
        )
    return positions


def prompt_length(prompt: str, tokenizer) -> int:
    """Tokens of ``prompt`` with CLIP's start and end tokens, untruncated (CLIP reads at most ``MAX_LENGTH``)."""
    return _count_tokens(prompt, tokenizer) + 2


def warn_long_prompts(prompts: Sequence[str], tokenizer, what: str = "prompt") -> list[int]:
    """Log one warning naming the prompts longer than CLIP's 77 tokens (their tail is cut off before the text
    encoder, as ``validate`` reports for captions); returns their indices. Nothing when ``tokenizer`` is None."""
    if tokenizer is None:
        return []
    lengths = {prompt: prompt_length(prompt, tokenizer) for prompt in dict.fromkeys(prompts)}  # each text once
    long = [i for i, prompt in enumerate(prompts) if lengths[prompt] > MAX_LENGTH]
    if long:
        shown = "; ".join(f"{what} {i} ({prompts[i][:40]!r}..., {len(prompts[i]):,} characters) is "
                          f"{lengths[prompts[i]]:,} tokens" for i in long[:3])
        more = f"; and {len(long) - 3} more" if len(long) > 3 else ""
        logger.warning("%s%s: CLIP reads the first %d tokens (start + %d + end), the rest is cut off and does not "
                       "reach the image; shorten them", shown, more, MAX_LENGTH, MAX_LENGTH - 2)
    return long


def noun_token_positions(prompt: str, nouns: Sequence[str], tokenizer) -> list[list[int]]:
    """``token_positions`` of each noun of a caption; a noun listed twice takes its next occurrence."""
    seen: dict[str, int] = {}
    result = []
    for noun in nouns:
        key = noun.lower()
        result.append(token_positions(prompt, noun, tokenizer, occurrence=seen.get(key, 0)))
        seen[key] = seen.get(key, 0) + 1
    return result


# --------------------------------------------------------------------------------------------------
# the CLIP tokenizer, offline
# --------------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """Where derived files live: ``$TOKENCOMPOSE_CACHE`` or ``~/.cache/tokencompose``."""
    root = os.environ.get("TOKENCOMPOSE_CACHE") or Path.home() / ".cache" / "tokencompose"
    return Path(root)


def _byte_to_unicode() -> dict[int, str]:
    """The reversible byte -> printable character table of byte-level BPE (GPT-2, CLIP).

    Printable Latin-1 bytes map to themselves; the other 68 bytes map, in order, to chr(256), chr(257), ...
    The table's order (printable bytes first) is the order of CLIP's first 256 ids.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def clip_vocab_from_bpe(bpe_text: str) -> tuple[dict[str, int], list[str]]:
    """CLIP's token -> id table and merge list from the text of ``bpe_simple_vocab_16e6.txt``.

    Ids, as CLIP assigns them: the 256 byte symbols, the same with ``</w>``, one per merge (in file order),
    then ``<|startoftext|>`` = 49406 and ``<|endoftext|>`` = 49407.
    """
    merges = _bpe_merges(bpe_text)
    symbols = list(_byte_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def _find_bpe_file() -> Path | None:
    """CLIP's BPE file inside an installed ``open_clip`` or ``clip`` package (found without importing them)."""
    for package in ("open_clip", "clip"):
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                candidate = Path(location) / BPE_FILE
                if candidate.is_file():
                    return candidate
    return None


def _download_bpe_text() -> str:
    """Read CLIP's BPE file from the ``clip-anytorch`` wheel, fetched from PyPI without its dependencies."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, BPE_WHEEL]
        logger.info("fetching CLIP's BPE vocabulary: %s", " ".join(command))
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            reason = (result.stderr or "").strip().splitlines()
            raise TokenizerError(
                f"no copy of CLIP's {BPE_FILE} here: no open_clip/clip package carries it and pip could not fetch "
                f"{BPE_WHEEL} ({reason[-1] if reason else 'no wheel'}). Fix: run `python -m tokencompose setup-tokenizer --bpe PATH/{BPE_FILE}` with a copy of "
                f"CLIP's file, or `pip install open-clip-torch` (or `pip install --no-deps {BPE_WHEEL}`) once online")
        with zipfile.ZipFile(wheels[0]) as wheel:
            name = next(n for n in wheel.namelist() if n.endswith(BPE_FILE))
            return _decode_bpe(wheel.read(name), f"{BPE_FILE} of {wheels[0].name}")


# --------------------------------------------------------------------------------------------------
# the offline tokenizer checks itself: its files agree with CLIP's, and it encodes CLIP's known ids
# --------------------------------------------------------------------------------------------------

#: CLIP's vocabulary size: 256 byte symbols, the same with ``</w>``, ``N_MERGES`` merges, two special tokens
VOCAB_SIZE = 2 * 256 + N_MERGES + 2
#: ids published with CLIP (its README's example, SD 1.4's tokenizer): a tokenizer that encodes these otherwise
#: is not CLIP's, whatever its files say
KNOWN_IDS: dict[str, list[int]] = {"a photo of a cat.": [49406, 320, 1125, 539, 320, 2368, 269, 49407]}
#: the files of the offline tokenizer's cache folder
CACHE_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")


class TokenizerError(UserError):
    """The CLIP tokenizer cannot be built, loaded or found: a damaged cache that cannot be rebuilt, a BPE file
    that is missing or not CLIP's, a cache folder that cannot be written, a ``--tokenizer`` that is not there.
    The message names the file or folder and what to do."""


def _bpe_merges(text: str) -> list[str]:
    """The merge lines of a BPE file's text that CLIP uses (after the version header, at most ``N_MERGES``)."""
    return [line for line in text.split("\n")[1 : N_MERGES + 1] if line.strip()]


def _decode_bpe(data: bytes, where: str) -> str:
    """The text of a gzip-compressed CLIP BPE file; ``TokenizerError`` when it is not gzip, not UTF-8, or holds
    fewer merges than CLIP uses (a truncated file, or another vocabulary)."""
    try:
        text = gzip.decompress(data).decode("utf-8")
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise TokenizerError(f"BPE file {where} is not a gzip file ({error}); pass CLIP's {BPE_FILE} as it ships "
                             "(gzip-compressed), e.g. from the open_clip or clip-anytorch package") from None
    except UnicodeDecodeError as error:
        raise TokenizerError(f"BPE file {where} is not UTF-8 text once unzipped ({error.reason} at byte "
                             f"{error.start}); pass CLIP's {BPE_FILE}") from None
    found = len(_bpe_merges(text))
    if found < N_MERGES:
        raise TokenizerError(f"BPE file {where} holds {found} merges, CLIP's holds at least {N_MERGES}: it is "
                             f"truncated or not CLIP's; pass CLIP's {BPE_FILE}")
    return text


def _read_bpe_file(path: Path) -> str:
    """The text of the BPE file ``path`` (``--bpe``); ``TokenizerError`` when it is missing or unreadable."""
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "not found"
        raise TokenizerError(f"BPE file {str(path)!r} {what}; pass the path of CLIP's {BPE_FILE}")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TokenizerError(f"BPE file {str(path)!r} cannot be read ({error.strerror}); pass a readable copy of "
                             f"CLIP's {BPE_FILE}") from None
    return _decode_bpe(data, repr(str(path)))


def _vocab_fault(vocab: object) -> str | None:
    """What is wrong with a loaded ``vocab.json`` (not CLIP's ``VOCAB_SIZE`` tokens with ids 0..size-1), or None."""
    if not isinstance(vocab, dict):
        return f"vocab.json holds a JSON {type(vocab).__name__}, not a token -> id object"
    if len(vocab) != VOCAB_SIZE or sorted(vocab.values()) != list(range(VOCAB_SIZE)):
        return f"vocab.json holds {len(vocab)} tokens, CLIP's has {VOCAB_SIZE} with ids 0..{VOCAB_SIZE - 1}"
    return None


def cache_fault(folder: str | Path) -> str | None:
    """What is wrong with the offline tokenizer's files in ``folder``, or ``None`` when they are CLIP's.

    Checked: every file of ``CACHE_FILES`` is there and readable; ``vocab.json`` holds ``VOCAB_SIZE`` tokens
    with ids 0..49407; ``merges.txt`` holds ``N_MERGES`` merges after its header, each merge's token having id
    512 + its rank in ``vocab.json`` (as ``clip_vocab_from_bpe`` derives them). An emptied or truncated file,
    or files of two different builds, fail here. About 0.1 s.
    """
    folder = Path(folder)
    missing = [name for name in CACHE_FILES if not (folder / name).is_file()]
    if missing:
        return f"{', '.join(missing)} missing"
    texts = {}
    for name in CACHE_FILES:
        try:
            texts[name] = (folder / name).read_text(encoding="utf-8")
            if name.endswith(".json"):
                texts[name] = json.loads(texts[name])
        except (OSError, UnicodeDecodeError, ValueError) as error:
            return f"{name} cannot be read ({type(error).__name__}: {error}): truncated or damaged"
    vocab, lines = texts["vocab.json"], texts["merges.txt"].split("\n")
    fault = _vocab_fault(vocab)
    if fault:
        return fault
    merges = [line for line in lines[1:] if line.strip()]
    if len(merges) != N_MERGES:
        return f"merges.txt holds {len(merges)} merges, CLIP's has {N_MERGES}"
    for rank, merge in enumerate(merges):
        if vocab.get("".join(merge.split())) != 2 * 256 + rank:
            return (f"merges.txt line {rank + 2} ({merge!r}) does not match vocab.json (its token should have id "
                    f"{2 * 256 + rank})")
    return None


def known_ids_fault(tokenizer) -> str | None:
    """How ``tokenizer`` encodes ``KNOWN_IDS`` differently from CLIP, or ``None`` when it encodes them as CLIP."""
    for text, ids in KNOWN_IDS.items():
        got = list(tokenizer(text)["input_ids"])
        if got != ids:
            return f"it encodes {text!r} as {got}, CLIP's ids are {ids}"
    return None


def _write_problem(folder: Path, error: OSError) -> str:
    """A one-line ``TokenizerError`` message for a cache folder that cannot be created or written."""
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        return (f"the tokenizer cache {folder} cannot be made: {blocker} is a file, not a folder; move it away, or "
                "set TOKENCOMPOSE_CACHE to a folder")
    return (f"cannot write the tokenizer cache {folder} ({error.strerror or error}); set TOKENCOMPOSE_CACHE to a "
            "folder you can write to (or make this one writable) and run `python -m tokencompose setup-tokenizer`")


def _load_folder(folder: Path):
    """``(CLIPTokenizer of a folder of tokenizer files, None)``, or ``(None, why)`` when transformers cannot read
    them (the tokenizers backend raises a bare ``Exception`` for a merge whose parts are not in the vocabulary)."""
    from transformers import CLIPTokenizer  # lazy: seconds to import

    try:
        return CLIPTokenizer.from_pretrained(str(folder), model_max_length=MAX_LENGTH), None
    except Exception as error:  # noqa: BLE001 - any failure is a damaged or foreign vocabulary, said as such
        return None, (f"transformers cannot load it ({type(error).__name__}: "
                      f"{str(error).splitlines()[0][:200] if str(error) else ''})")


def _build(folder: Path, text: str, source: str) -> None:
    """Derive the tokenizer files from a BPE file's ``text`` into ``folder``: written to a temporary folder,
    checked there (``cache_fault``, ``KNOWN_IDS``), then moved in file by file (``os.replace``, atomic): a crash or
    a BPE file that is not CLIP's never replaces the files in ``folder``."""
    vocab, merges = clip_vocab_from_bpe(text)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".clip_tokenizer-"))
    except OSError as error:
        raise TokenizerError(_write_problem(folder, error)) from None
    try:
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        (tmp / "tokenizer_config.json").write_text(json.dumps({"model_max_length": MAX_LENGTH}), encoding="utf-8")
        fault = cache_fault(tmp)
        if fault is None:
            tokenizer, fault = _load_folder(tmp)
            fault = fault or known_ids_fault(tokenizer)
        if fault:
            raise TokenizerError(f"the tokenizer built from {source} is not CLIP's: {fault}; pass CLIP's {BPE_FILE} "
                                 "(nothing in the cache was changed)")
        for name in CACHE_FILES:
            os.replace(tmp / name, folder / name)
    except OSError as error:
        raise TokenizerError(_write_problem(folder, error)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("built the offline CLIP tokenizer in %s from %s (%d tokens)", folder, source, len(vocab))


def _bpe_source(bpe_file: str | Path | None) -> tuple[str, str]:
    """``(text, where from)`` of CLIP's BPE file: ``bpe_file``, else an installed package's, else PyPI's."""
    if bpe_file is not None:
        return _read_bpe_file(Path(bpe_file)), str(bpe_file)
    found = _find_bpe_file()
    if found is not None:
        return _read_bpe_file(found), str(found)
    return _download_bpe_text(), BPE_WHEEL


#: folders whose files passed ``cache_fault`` in this process, keyed by their files' (size, mtime)
_CHECKED: dict[str, tuple] = {}


def _file_stamp(folder: Path) -> tuple:
    """``(size, mtime)`` of each cache file (``None`` for one that is not a readable file)."""
    stamps = []
    for name in CACHE_FILES:
        try:
            stat = (folder / name).stat()
        except OSError:
            stamps.append(None)
            continue
        stamps.append((stat.st_size, stat.st_mtime_ns))
    return tuple(stamps)


def offline_tokenizer_dir(bpe_file: str | Path | None = None) -> Path:
    """The cached folder with ``vocab.json`` and ``merges.txt`` of CLIP's tokenizer, built on first use.

    ``bpe_file`` (``setup-tokenizer --bpe``) always builds the cache from that file, even over an existing one.
    Without it an existing cache is checked (``cache_fault``) and, when damaged (an emptied ``merges.txt``, a
    truncated ``vocab.json``), rebuilt from an installed package's BPE file or PyPI's, with a warning.

    Raises:
        TokenizerError: no BPE file can be found or fetched, the one given is missing or not CLIP's, or the
            cache folder cannot be written (a file in its place, no permission); one line naming what to do.
    """
    folder = cache_dir() / "clip_tokenizer"
    if bpe_file is None and any((folder / name).exists() for name in CACHE_FILES):
        if _CHECKED.get(str(folder)) == _file_stamp(folder):
            return folder
        fault = cache_fault(folder)
        if fault is None:
            _CHECKED[str(folder)] = _file_stamp(folder)
            return folder
        logger.warning("the offline CLIP tokenizer in %s is damaged (%s): rebuilding it", folder, fault)
        try:
            _build(folder, *_bpe_source(None))
        except TokenizerError as error:
            raise TokenizerError(f"the offline CLIP tokenizer in {folder} is damaged ({fault}) and cannot be "
                                 f"rebuilt: {error}") from None
        return folder
    _build(folder, *_bpe_source(bpe_file))
    return folder


def load_offline_tokenizer():
    """The offline CLIP tokenizer (``offline_tokenizer_dir``), checked against ``KNOWN_IDS`` once loaded."""
    folder = offline_tokenizer_dir()
    tokenizer, fault = _load_folder(folder)
    fault = fault or known_ids_fault(tokenizer)
    if fault:
        raise TokenizerError(f"the offline CLIP tokenizer in {folder} is not CLIP's: {fault}; delete the folder and "
                             f"run `python -m tokencompose setup-tokenizer` (with --bpe PATH/{BPE_FILE} offline)")
    return tokenizer


def clip_tokenizer(model: str | None = None, fallback: bool = True):
    """The CLIP tokenizer of ``model`` (hub id or folder, ``tokenizer/`` subfolder or not), else the offline one.

    The offline tokenizer is OpenAI CLIP's (ViT-L/14, SD 1.4's text encoder), padding with ``<|endoftext|>``.
    SD 2.1's OpenCLIP tokenizer has the same vocabulary and merges but pads with ``!`` (id 0): token positions
    are the same, padding ids differ. Which tokenizer was returned is logged.

    ``fallback=False`` (a tokenizer the user named, ``validate --tokenizer``): a ``model`` without a tokenizer
    is a ``TokenizerError``, not the offline tokenizer in its place.
    """
    from transformers import CLIPTokenizer  # lazy: seconds to import

    if model:
        for kwargs in ({"subfolder": "tokenizer"}, {}):
            try:
                tokenizer = CLIPTokenizer.from_pretrained(model, **kwargs)
            except Exception as error:  # noqa: BLE001 - any failure means "not available here"
                last_error = error
                continue
            if len(tokenizer) < MIN_VOCAB:
                # transformers 5 builds an empty tokenizer from a folder without vocabulary files
                last_error = FileNotFoundError(f"no tokenizer files in {model} {kwargs.get('subfolder', '')}")
                continue
            logger.info("CLIP tokenizer: the model's own, from %s %s", model, kwargs.get("subfolder", ""))
            return tokenizer
        if not fallback:
            raise TokenizerError(_missing_tokenizer(model, last_error))
        logger.info("CLIP tokenizer: %s has none here (%s); using the offline CLIP tokenizer",
                    model, type(last_error).__name__)
    tokenizer = load_offline_tokenizer()
    logger.info("CLIP tokenizer: offline, built from CLIP's BPE vocabulary in %s", cache_dir() / "clip_tokenizer")
    return tokenizer


def _missing_tokenizer(model: str, error: Exception) -> str:
    """The ``TokenizerError`` message for a named tokenizer that cannot be loaded."""
    path = Path(model)
    if path.is_dir():
        found = f"folder {model!r} holds no CLIP tokenizer files (vocab.json, merges.txt), nor a tokenizer/ subfolder"
    elif path.exists():
        found = f"{model!r} is a file, not a tokenizer folder"
    else:
        found = (f"{model!r} is not a folder here, nor a hub id that loads ({type(error).__name__}: "
                 f"{str(error).splitlines()[0][:120] if str(error) else ''})")
    return (f"tokenizer {found}; pass a folder with the tokenizer files or a model folder with tokenizer/, or leave "
            "the flag out to use the offline CLIP tokenizer")
