"""The flair adapter of tokencompose.nouns against a real flair SequenceTagger, built and trained offline.

flair cannot share the main environment (it pins transformers<5): run these with
``bash scripts/test_flair.sh``, which builds ``.venv-flair``. In the main suite they are skipped.

The tagger is the same class as the paper's ``flair/pos-english`` (a ``SequenceTagger``), with one-hot
word embeddings and a small BiLSTM instead of Flair embeddings, trained for a few steps on a
hand-tagged corpus so its tags are known; then it goes through our adapter, ``save`` and
``flair_tagger(path)`` (the loading path the real weights take).
"""

from __future__ import annotations

import pytest

# "flair.models", not "flair": this folder is itself named flair, and where the real package is absent,
# `import flair` would find it as a namespace package.
pytest.importorskip("flair.models", reason="flair is not installed here: run bash scripts/test_flair.sh")

import torch  # noqa: E402
from flair.data import Corpus, Sentence  # noqa: E402
from flair.datasets import FlairDatapointDataset  # noqa: E402
from flair.embeddings import OneHotEmbeddings  # noqa: E402
from flair.models import SequenceTagger  # noqa: E402

from tokencompose import nouns  # noqa: E402
from tokencompose.nouns import FlairPosTagger, TaggerUnavailableError, flair_tagger, noun_phrases  # noqa: E402

# Penn Treebank tags written by hand.
CORPUS = [
    ("a teddy bear sitting on a wooden chair .", "DT NN NN VBG IN DT JJ NN ."),
    ("a cat and a kite .", "DT NN CC DT NN ."),
    ("the chocolate spread on a plate .", "DT NN NN IN DT NN ."),
    ("a man 's lap", "DT NN POS NN"),
    ("a red kite on a wooden table .", "DT JJ NN IN DT JJ NN ."),
]


def _hand_tagged_sentences() -> list[Sentence]:
    sentences = []
    for text, tags in CORPUS:
        sentence = Sentence(text.split())
        for token, tag in zip(sentence, tags.split(), strict=True):
            token.add_label("pos", tag)
        sentences.append(sentence)
    return sentences


@pytest.fixture(scope="module")
def trained_tagger() -> SequenceTagger:
    torch.manual_seed(0)
    sentences = _hand_tagged_sentences()
    corpus = Corpus(train=FlairDatapointDataset(sentences), sample_missing_splits=False)
    tag_dictionary = corpus.make_label_dictionary("pos", add_unk=False)
    embeddings = OneHotEmbeddings.from_corpus(corpus, min_freq=1, embedding_length=16)
    tagger = SequenceTagger(
        embeddings=embeddings,
        tag_dictionary=tag_dictionary,
        tag_type="pos",
        hidden_size=16,
        use_crf=False,
        word_dropout=0.0,
        locked_dropout=0.0,
    )
    optimizer = torch.optim.Adam(tagger.parameters(), lr=0.05)
    tagger.train()
    for _ in range(60):
        loss, count = tagger.forward_loss(sentences)
        optimizer.zero_grad()
        (loss / count).backward()
        optimizer.step()
        for sentence in sentences:
            sentence.clear_embeddings()
    tagger.eval()
    return tagger


def test_adapter_returns_one_penn_tag_a_token(trained_tagger):
    adapter = FlairPosTagger(trained_tagger)
    assert adapter.label_type == "pos"
    for text, tags in CORPUS:
        assert adapter(text.split()) == tags.split(), text
    assert adapter([]) == []


def test_noun_phrases_through_a_real_flair_tagger(trained_tagger):
    adapter = FlairPosTagger(trained_tagger)
    assert noun_phrases("a teddy bear sitting on a wooden chair.", tagger=adapter) == ["teddy bear", "chair"]
    assert noun_phrases("the chocolate spread on a plate.", tagger=adapter) == ["chocolate spread", "plate"]
    # our tokeniser splits "man's" as flair's training data does: "man" "'s"
    assert noun_phrases("a man's lap", tagger=adapter) == ["man", "lap"]


def test_flair_tagger_loads_a_saved_model_file(trained_tagger, tmp_path):
    path = tmp_path / "pos-tiny.pt"
    trained_tagger.save(path)
    nouns.flair_tagger.cache_clear()
    try:
        loaded = flair_tagger(str(path))
        assert isinstance(loaded, FlairPosTagger)
        assert flair_tagger(str(path)) is loaded  # cached per process
        assert noun_phrases("a cat and a kite.", tagger=loaded) == ["cat", "kite"]
    finally:
        nouns.flair_tagger.cache_clear()


def test_missing_weights_error_says_how_to_get_them(tmp_path):
    missing = tmp_path / "no-such-model.pt"
    nouns.flair_tagger.cache_clear()
    with pytest.raises(TaggerUnavailableError) as raised:
        flair_tagger(str(missing))
    message = str(raised.value)
    assert str(missing) in message
    assert "huggingface.co/flair/pos-english" in message
    assert "tagger='perceptron'" in message
