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
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

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


def token_positions(prompt: str, phrase: str, tokenizer, occurrence: int = 0) -> list[int]:
    """Positions of every BPE token of ``phrase`` in the padded 77-token encoding of ``prompt``.

    Args:
        prompt: the caption fed to the text encoder.
        phrase: a noun or noun phrase of the caption ("cat", "teddy bear"); case-insensitive; a plural in the
            prompt matches a singular phrase and vice versa; punctuation next to the word is ignored.
        tokenizer: a CLIP tokenizer (``clip_tokenizer()``).
        occurrence: which occurrence to take when the phrase appears several times (0 = first).

    Returns:
        Sorted positions in ``[1, 75]`` (position 0 is ``<|startoftext|>``).

    Raises:
        PhraseNotFoundError: the phrase is not in the prompt, has fewer than ``occurrence + 1`` occurrences,
            or (part of) it lies past the 77-token truncation.
    """
    phrase_words = [word.lower() for word in _WORD.findall(phrase)]
    if not phrase_words:
        raise PhraseNotFoundError(f"phrase {phrase!r} has no letters or digits to look for in prompt {prompt!r}")
    if occurrence < 0:
        raise ValueError(f"occurrence must be >= 0, got {occurrence}")
    # words of the prompt itself, compared in lower case: their spans index ``prompt`` (``prompt.lower()`` can
    # be longer than ``prompt``, e.g. "İ" -> "i̇", which would shift every span after it)
    words = [(m.group().lower(), m.start(), m.end()) for m in _WORD.finditer(prompt)]
    n = len(phrase_words)
    spans = [
        (words[i][1], words[i + n - 1][2])
        for i in range(len(words) - n + 1)
        if all(_same_word(words[i + k][0], phrase_words[k]) for k in range(n))
    ]
    if len(spans) <= occurrence:
        found = "is not in" if not spans else f"occurs {len(spans)} time(s) in"
        raise PhraseNotFoundError(
            f"phrase {phrase!r} {found} prompt {prompt!r} (wanted occurrence {occurrence}); check that the noun "
            "list was extracted from this caption"
        )
    start, end = spans[occurrence]
    before = _count_tokens(prompt[:start], tokenizer)
    through = _count_tokens(prompt[:end], tokenizer)
    positions = list(range(1 + before, 1 + through))
    if positions[-1] > MAX_LENGTH - 2:
        raise PhraseNotFoundError(
            f"phrase {phrase!r} lies at tokens {positions[0]}-{positions[-1]} of prompt {prompt!r}, past CLIP's "
            f"{MAX_LENGTH}-token truncation (content tokens are 1-{MAX_LENGTH - 2}); shorten the caption"
        )
    return positions


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
    merges = [line for line in bpe_text.split("\n")[1 : N_MERGES + 1] if line.strip()]
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
            raise RuntimeError(
                f"could not fetch {BPE_WHEEL} from PyPI to build the offline CLIP tokenizer:\n{result.stderr}\n"
                f"Fix: install open-clip-torch or `pip install --no-deps {BPE_WHEEL}`, or pass a model folder "
                "that has a tokenizer/ subfolder."
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            name = next(n for n in wheel.namelist() if n.endswith(BPE_FILE))
            return gzip.decompress(wheel.read(name)).decode("utf-8")


def offline_tokenizer_dir(bpe_file: str | Path | None = None) -> Path:
    """The cached folder with ``vocab.json`` and ``merges.txt`` of CLIP's tokenizer, built on first use."""
    folder = cache_dir() / "clip_tokenizer"
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return folder
    source = Path(bpe_file) if bpe_file else _find_bpe_file()
    text = gzip.decompress(source.read_bytes()).decode("utf-8") if source else _download_bpe_text()
    vocab, merges = clip_vocab_from_bpe(text)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent))
    (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (tmp / "tokenizer_config.json").write_text(json.dumps({"model_max_length": MAX_LENGTH}), encoding="utf-8")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        os.replace(tmp / name, folder / name)  # atomic: a crash never leaves a half-written vocabulary
    tmp.rmdir()
    logger.info("built the offline CLIP tokenizer in %s (%d tokens)", folder, len(vocab))
    return folder


def clip_tokenizer(model: str | None = None):
    """The CLIP tokenizer of ``model`` (hub id or folder, ``tokenizer/`` subfolder or not), else the offline one.

    The offline tokenizer is OpenAI CLIP's (ViT-L/14, SD 1.4's text encoder), padding with ``<|endoftext|>``.
    SD 2.1's OpenCLIP tokenizer has the same vocabulary and merges but pads with ``!`` (id 0): token positions
    are the same, padding ids differ. Which tokenizer was returned is logged.
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
        logger.info("CLIP tokenizer: %s has none here (%s); using the offline CLIP tokenizer",
                    model, type(last_error).__name__)
    folder = offline_tokenizer_dir()
    logger.info("CLIP tokenizer: offline, built from CLIP's BPE vocabulary in %s", folder)
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=MAX_LENGTH)

