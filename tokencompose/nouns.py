"""Noun phrases of a caption: the words whose cross-attention TokenCompose supervises.

TokenCompose builds its training data in two steps (the paper's data pipeline; authors' code
``preprocess_data/gen_noun_tgt.py``): a part-of-speech tagger marks the nouns of each COCO caption,
then Grounded-SAM segments each noun phrase in the image. This module is the first step:

    caption --tokenize--> tokens --tagger--> Penn Treebank tags --chunk_noun_phrases--> phrases

The chunking rule is the authors': a token is a noun when its tag contains ``"NN"`` (on the Penn
Treebank tag set that is exactly NN, NNS, NNP, NNPS), consecutive nouns merge into one phrase joined
by a space ("chocolate spread", "teddy bear"), and sub-word pieces re-join ("##" prefix or "@@"
suffix). Where we differ from their code, on purpose:

* duplicates are removed keeping the order of first appearance (they used ``set``, whose order
  changes from run to run, so their ``attn_list`` order is not reproducible);
* a sub-word marker with no piece to join (a stray ``"##"`` starting a phrase, a dangling ``"@@"``
  ending one) is dropped instead of being kept in the phrase text;
* case is kept, as they kept it ("Plate", "Silk"); ``tokens.py`` lower-cases when it looks the
  phrase up in the CLIP tokenisation, as their ``tokenizer_check.py`` did.

Taggers (one interface: a callable ``tokens -> tags``):

* ``"flair"``: flair's ``flair/pos-english`` (the paper's choice). flair pins ``transformers<5``, so it
  lives in its own environment (``bash scripts/test_flair.sh`` builds ``.venv-flair``); its weights
  come from the Hugging Face hub.
* ``"perceptron"``: the offline default, a greedy averaged-perceptron Penn Treebank tagger (Honnibal's
  ``trontagger-0.1.0.pickle``, shipped by the PyPI package ``textblob-aptagger``), run by nltk's
  ``PerceptronTagger``. On the authors' 4526 COCO captions its phrases agree with flair's at about
  0.9 F1 (``benchmarks/noun_agreement.py``).
* ``"auto"`` (the default of :func:`noun_phrases`): flair when it imports and its weights load,
  otherwise the perceptron; the choice is logged at INFO level. Name a tagger for runs that must
  give the same phrases on every machine.
* any callable ``(tokens: Sequence[str]) -> Sequence[str]`` of your own.

usage: ``python -c "from tokencompose.nouns import noun_phrases; print(noun_phrases('a dog on a wooden chair'))"``
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import pickle
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import REFERENCE_DIR

logger = logging.getLogger(__name__)

#: The Penn Treebank noun tags; the authors' test ``"NN" in tag`` accepts exactly these on that tag set.
NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})

#: Hugging Face hub id of the tagger the paper used.
FLAIR_MODEL = "flair/pos-english"

#: Names :func:`get_tagger` understands.
TAGGER_NAMES = ("auto", "flair", "perceptron")

#: A tagger: Penn Treebank tags for a list of tokens, one tag a token.
Tagger = Callable[[Sequence[str]], Sequence[str]]

_PERCEPTRON_PACKAGE = "textblob_aptagger"
_PERCEPTRON_FILE = "trontagger-0.1.0.pickle"


class TaggerUnavailableError(RuntimeError):
    """A named tagger cannot run here (package or weights missing); the message says what to do."""


# --------------------------------------------------------------------------------------------------
# Tokenisation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """One token of a caption: its text and where it is (``caption[start:end] == text``)."""

    text: str
    start: int
    end: int


# Penn-Treebank-like: punctuation apart, "man's" -> "man" "'s", "don't" -> "do" "n't", hyphenated
# words, initialisms ("T.V."), titles ("Dr.") and numbers ("3.5", "1,000") kept whole.
_TOKEN_PATTERN = re.compile(
    r"""
      (?:[^\W\d_]\.){2,}                                   # initialisms: T.V., U.S.
    | \b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Mt|Ft|vs|etc)\.           # titles and abbreviations
    | \d+(?:[.,:]\d+)+                                     # numbers with separators: 3.5, 1,000, 10:30
    | [^\W_]+(?:[-'’/&][^\W_]+)*                           # words, hyphenated, with inner apostrophes
    | \S                                                   # any other character: punctuation, symbols
    """,
    re.VERBOSE,
)
_CLITIC_PATTERN = re.compile(r"^(.+?)((?:n['’]t)|(?:['’](?:s|re|ve|ll|m|d)))$", re.IGNORECASE)


def tokenize(caption: str) -> list[Token]:
    """Split a caption into Penn-Treebank-like tokens that keep their character offsets.

    >>> [t.text for t in tokenize("A man's t-shirt, a T.V. and 2.5 cats.")]
    ['A', 'man', "'s", 't-shirt', ',', 'a', 'T.V.', 'and', '2.5', 'cats', '.']
    """
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str, got {type(caption).__name__}: {caption!r}")
    tokens: list[Token] = []
    for match in _TOKEN_PATTERN.finditer(caption):
        text, start = match.group(), match.start()
        clitic = _CLITIC_PATTERN.match(text) if len(text) > 2 else None
        if clitic is not None:
            head = clitic.group(1)
            tokens.append(Token(head, start, start + len(head)))
            tokens.append(Token(clitic.group(2), start + len(head), match.end()))
        else:
            tokens.append(Token(text, start, match.end()))
    return tokens


# --------------------------------------------------------------------------------------------------
# Chunking: a pure function of (tokens, tags)
# --------------------------------------------------------------------------------------------------


def is_noun_tag(tag: str) -> bool:
    """The authors' noun test, ``"NN" in tag``: true for NN, NNS, NNP, NNPS (Penn Treebank)."""
    return "NN" in tag


def chunk_noun_phrases(tokens: Sequence[str], tags: Sequence[str]) -> list[str]:
    """Merge consecutive noun tokens into phrases; duplicates removed, order of first appearance kept.

    The authors' rule (``get_nouns`` in their ``gen_noun_tgt.py``): a noun that follows a noun joins
    its phrase, with a space, or with no space when it is a sub-word piece (``"##bear"`` after
    ``"teddy"``, or any piece after one ending in ``"@@"``); a noun after a non-noun starts a phrase.

    >>> chunk_noun_phrases(["a", "teddy", "bear", "on", "a", "chair"], ["DT", "NN", "NN", "IN", "DT", "NN"])
    ['teddy bear', 'chair']
    """
    tokens, tags = list(tokens), list(tags)
    if len(tokens) != len(tags):
        raise ValueError(
            f"chunk_noun_phrases needs one tag a token, got {len(tokens)} tokens and {len(tags)} tags: "
            f"tokens={tokens!r}, tags={tags!r}"
        )
    runs: list[str] = []
    previous_is_noun = False
    for token, tag in zip(tokens, tags, strict=True):
        noun = is_noun_tag(tag)
        if noun and previous_is_noun:
            if token.startswith("##"):
                runs[-1] = runs[-1] + token[2:]
            elif runs[-1].endswith("@@"):
                runs[-1] = runs[-1][:-2] + token
            else:
                runs[-1] = runs[-1] + " " + token
        elif noun:
            runs.append(token[2:] if token.startswith("##") else token)
        previous_is_noun = noun
    phrases = (run[:-2] if run.endswith("@@") else run for run in runs)
    return list(dict.fromkeys(phrase for phrase in phrases if phrase))


# --------------------------------------------------------------------------------------------------
# Taggers
# --------------------------------------------------------------------------------------------------


_BRACKETS = {"(": "-LRB-", "[": "-LRB-", "{": "-LRB-", ")": "-RRB-", "]": "-RRB-", "}": "-RRB-"}
_QUOTES = {"“": "``", "”": "''", "‘": "`", "``": "``", "''": "''"}


def penn_treebank_forms(tokens: Sequence[str]) -> list[str]:
    """Write brackets and quotes as the Penn Treebank does, the only forms a WSJ-trained tagger knows.

    ``(`` -> ``-LRB-``, ``)`` -> ``-RRB-``, a straight ``"`` -> ```` `` ```` when it opens a quote and
    ``''`` when it closes one (alternating, as in the treebank's conversion), curly quotes likewise.
    Without this the perceptron tags an unknown ``"`` or ``(`` as NN, and it would become a "phrase".
    """
    forms: list[str] = []
    quote_open = False
    for token in tokens:
        if token == '"':
            forms.append("''" if quote_open else "``")
            quote_open = not quote_open
        else:
            forms.append(_BRACKETS.get(token, _QUOTES.get(token, token)))
    return forms


class PerceptronPosTagger:
    """The offline tagger: an averaged perceptron trained on the Penn Treebank (WSJ), run by nltk.

    ``PerceptronPosTagger(nltk_tagger)(tokens) -> tags``. Build it with :func:`perceptron_tagger`.
    """

    def __init__(self, nltk_tagger: Any) -> None:
        self.nltk_tagger = nltk_tagger

    def __call__(self, tokens: Sequence[str]) -> list[str]:
        return [tag for _, tag in self.nltk_tagger.tag(penn_treebank_forms(tokens))]

    def __repr__(self) -> str:
        return f"PerceptronPosTagger({len(self.nltk_tagger.model.weights)} features)"


def _perceptron_model_path() -> Path:
    """Where ``textblob-aptagger`` put its model file (found without importing its Python 2 era code)."""
    hint = (
        "the offline 'perceptron' tagger needs the PyPI packages nltk and textblob-aptagger "
        "(`pip install nltk textblob-aptagger`; the model file is 8 MB, MIT licence)"
    )
    spec = importlib.util.find_spec(_PERCEPTRON_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TaggerUnavailableError(f"{hint}: package {_PERCEPTRON_PACKAGE} is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / _PERCEPTRON_FILE
    if not path.is_file():
        raise TaggerUnavailableError(f"{hint}: {path} is missing; reinstall textblob-aptagger")
    return path


@functools.lru_cache(maxsize=1)
def perceptron_tagger() -> PerceptronPosTagger:
    """Load the averaged-perceptron tagger once per process (0.6 s warm, ~4 s from a cold disk; logged).

    The pickle holds ``(weights, tagdict, classes)``: feature -> {tag: weight}, the tag of frequent
    unambiguous words, and the 45 Penn Treebank tags. nltk's ``PerceptronTagger`` uses the same
    features as the code that trained it, so we load the three into ``PerceptronTagger(load=False)``.
    """
    path = _perceptron_model_path()
    try:
        from nltk.tag.perceptron import PerceptronTagger  # lazy: only the perceptron tagger needs nltk
    except ImportError as error:
        raise TaggerUnavailableError(
            "the offline 'perceptron' tagger runs on nltk: `pip install nltk textblob-aptagger`"
        ) from error
    started = time.perf_counter()
    with path.open("rb") as handle:
        # A Python 2 pickle of plain dicts and a set; latin1 decodes its byte strings unchanged.
        weights, tagdict, classes = pickle.load(handle, encoding="latin1")
    nltk_tagger = PerceptronTagger(load=False)
    nltk_tagger.model.weights = weights
    nltk_tagger.tagdict = tagdict
    nltk_tagger.classes = set(classes)
    nltk_tagger.model.classes = nltk_tagger.classes
    logger.info(
        "loaded the perceptron POS tagger from %s in %.2f s (%d features, %d tags)",
        path,
        time.perf_counter() - started,
        len(weights),
        len(classes),
    )
    return PerceptronPosTagger(nltk_tagger)


class FlairPosTagger:
    """Adapter: a flair ``SequenceTagger`` as a tagger, ``FlairPosTagger(sequence_tagger)(tokens) -> tags``.

    The tokens are given to flair already split (``Sentence(list_of_tokens)``), so every tag lines up
    with one of our tokens and phrases map back to the caption. (The authors let flair split the
    raw caption with segtok; the two splits agree on plain captions.)
    """

    def __init__(self, sequence_tagger: Any, label_type: str | None = None) -> None:
        self.sequence_tagger = sequence_tagger
        self.label_type = label_type or sequence_tagger.label_type

    def __call__(self, tokens: Sequence[str]) -> list[str]:
        from flair.data import Sentence  # lazy: optional (the flair extra)

        tokens = list(tokens)
        if not tokens:
            return []
        sentence = Sentence(tokens)
        if len(sentence) != len(tokens):
            raise ValueError(
                f"flair split the tokens {tokens!r} into {len(sentence)} tokens, not {len(tokens)}"
            )
        self.sequence_tagger.predict(sentence, label_name=self.label_type)
        return [token.get_label(self.label_type).value for token in sentence]

    def __repr__(self) -> str:
        return f"FlairPosTagger({type(self.sequence_tagger).__name__}, label_type={self.label_type!r})"


@functools.lru_cache(maxsize=4)
def flair_tagger(model: str = FLAIR_MODEL) -> FlairPosTagger:
    """Load flair's part-of-speech tagger once per process: the hub id ``flair/pos-english`` or a local file.

    Raises :class:`TaggerUnavailableError` that says what to do when flair or the weights are missing.
    """
    try:
        from flair.models import SequenceTagger  # lazy: optional (the flair extra)
    except ImportError as error:
        raise TaggerUnavailableError(
            f"the 'flair' tagger needs the flair package, which is not importable here ({error}). flair "
            "pins transformers<5, so install it in its own environment: `bash scripts/test_flair.sh` "
            "builds .venv-flair (or `pip install flair` in a venv without diffusers). "
            "Offline alternative: tagger='perceptron'."
        ) from error
    started = time.perf_counter()
    try:
        sequence_tagger = SequenceTagger.load(model)
    except Exception as error:  # flair raises many kinds here: network, missing file, bad pickle
        raise TaggerUnavailableError(
            f"could not load flair's tagger {model!r} ({type(error).__name__}: {error}). Its weights "
            'come from the Hugging Face hub: run `python -c "from flair.models import SequenceTagger; '
            f"SequenceTagger.load('{FLAIR_MODEL}')\"` once on a machine that reaches huggingface.co "
            "(they are cached under ~/.flair), or download pytorch_model.bin from "
            f"https://huggingface.co/{FLAIR_MODEL} and pass its path: flair_tagger('/path/pytorch_model.bin'). "
            "Offline alternative: tagger='perceptron'."
        ) from error
    logger.info("loaded flair tagger %s in %.1f s", model, time.perf_counter() - started)
    return FlairPosTagger(sequence_tagger)


@functools.lru_cache(maxsize=1)
def _auto_tagger() -> Tagger:
    try:
        tagger = flair_tagger()
    except TaggerUnavailableError as error:
        logger.info("tagger='auto': flair unavailable (%s); using the offline perceptron tagger", error)
        return perceptron_tagger()
    logger.info("tagger='auto': using flair's %s (the paper's tagger)", FLAIR_MODEL)
    return tagger


def get_tagger(tagger: str | Tagger = "auto") -> Tagger:
    """Resolve a tagger name (``"auto"``, ``"flair"``, ``"perceptron"``) or pass a callable through."""
    if callable(tagger):
        return tagger
    if tagger == "perceptron":
        return perceptron_tagger()
    if tagger == "flair":
        return flair_tagger()
    if tagger == "auto":
        return _auto_tagger()
    raise ValueError(
        f"unknown tagger {tagger!r}: use one of {', '.join(map(repr, TAGGER_NAMES))} "
        "or a callable that maps a list of tokens to a list of Penn Treebank tags"
    )


def noun_phrases(caption: str, tagger: str | Tagger = "auto") -> list[str]:
    """The noun phrases of ``caption`` in order of first appearance, as written in it.

    ``tagger``: ``"auto"`` (flair if it imports and its weights load, else the offline perceptron;
    logged), ``"flair"`` (the paper's), ``"perceptron"`` (offline), or a callable ``tokens -> tags``.

    >>> noun_phrases("A double-decker bus driving down a city street.", tagger="perceptron")
    ['double-decker bus', 'city street']
    """
    tokens = [token.text for token in tokenize(caption)]
    if not tokens:
        return []
    tags = list(get_tagger(tagger)(tokens))
    if len(tags) != len(tokens):
        raise ValueError(
            f"tagger {tagger!r} returned {len(tags)} tags for the {len(tokens)} tokens of caption "
            f"{caption!r}; a tagger must return one tag a token"
        )
    return chunk_noun_phrases(tokens, tags)


# --------------------------------------------------------------------------------------------------
# Agreement with the authors' phrases
# --------------------------------------------------------------------------------------------------


def reference_metadata_path() -> Path:
    """The authors' COCO training metadata, carried in the repository: ``data/reference/coco_gsam_metadata.jsonl``."""
    return REFERENCE_DIR / "coco_gsam_metadata.jsonl"


def read_reference_phrases(
    path: str | Path | None = None, limit: int | None = None
) -> list[tuple[str, list[str]]]:
    """``(caption, phrases)`` pairs from a metadata.jsonl in the authors' format (``text``, ``attn_list``)."""
    path = Path(path) if path is not None else reference_metadata_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"reference metadata {path} not found: it is the authors' coco_gsam_metadata.jsonl "
            "(github.com/mlpc-ucsd/TokenCompose), carried in data/reference/ of a clone of this repository; "
            "pass the path of a copy (a pip-installed package does not carry it)"
        )
    examples: list[tuple[str, list[str]]] = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if limit is not None and len(examples) >= limit:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                examples.append((record["text"], [phrase for phrase, _ in record["attn_list"]]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise ValueError(
                    f"{path}, line {line_number}: expected a JSON object with 'text' and 'attn_list' "
                    f"([[phrase, mask_or_null], ...]): {type(error).__name__}: {error}"
                ) from error
    return examples


@dataclass(frozen=True)
class Disagreement:
    """One caption where our phrases differ from the reference ones."""

    caption: str
    ours: list[str]
    theirs: list[str]
    missing: list[str]  # in theirs, not in ours (false negatives)
    extra: list[str]  # in ours, not in theirs (false positives)


@dataclass(frozen=True)
class Agreement:
    """Phrase-level agreement, micro-averaged over captions (exact, case-sensitive string match)."""

    n_captions: int
    true_positives: int
    false_positives: int
    false_negatives: int
    seconds: float
    disagreements: list[Disagreement] = field(repr=False)

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 0.0

    @property
    def recall(self) -> float:
        expected = self.true_positives + self.false_negatives
        return self.true_positives / expected if expected else 0.0

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0

    @property
    def exact_captions(self) -> int:
        """Captions whose phrase sets are identical."""
        return self.n_captions - len(self.disagreements)


def phrase_agreement(
    examples: Iterable[tuple[str, Sequence[str]]], tagger: str | Tagger = "perceptron"
) -> Agreement:
    """Compare our phrases with reference ones, caption by caption, as sets of strings.

    ``examples``: ``(caption, reference_phrases)`` pairs, e.g. from :func:`read_reference_phrases`.
    Returns counts, precision / recall / F1 and every caption that disagrees (for notebook 01).
    """
    resolved = get_tagger(tagger)
    true_positives = false_positives = false_negatives = n_captions = 0
    disagreements: list[Disagreement] = []
    started = time.perf_counter()
    for caption, reference in examples:
        ours = noun_phrases(caption, tagger=resolved)
        theirs = list(dict.fromkeys(reference))
        ours_set, theirs_set = set(ours), set(theirs)
        n_captions += 1
        true_positives += len(ours_set & theirs_set)
        false_positives += len(ours_set - theirs_set)
        false_negatives += len(theirs_set - ours_set)
        if ours_set != theirs_set:
            disagreements.append(
                Disagreement(
                    caption=caption,
                    ours=ours,
                    theirs=theirs,
                    missing=[phrase for phrase in theirs if phrase not in ours_set],
                    extra=[phrase for phrase in ours if phrase not in theirs_set],
                )
            )
    return Agreement(
        n_captions=n_captions,
        true_positives=true_positives,
        false_positives=false_positives,
        false_negatives=false_negatives,
        seconds=time.perf_counter() - started,
        disagreements=disagreements,
    )
