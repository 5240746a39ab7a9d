"""Shared by the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_llm.data.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok_path(tok: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's `tok` fixture saved as a tokenizer.json."""
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(path)
    return path
