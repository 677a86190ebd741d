"""Shared fixtures: the offline CLIP tokenizer (built once per session)."""

import pytest


@pytest.fixture(scope="session")
def tokenizer():
    from tokencompose.tokens import clip_tokenizer

    return clip_tokenizer()
