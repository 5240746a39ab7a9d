"""Shared fixtures: a small token corpus built once per session from the built-in generator."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_llm.prepare.corpus import generate_corpus
from lit_llm.prepare.shards import write_documents
from lit_llm.text.tokenizer import Tokenizer, train_bpe


@pytest.fixture(autouse=True)
def _single_thread_determinism():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def token_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.bin / val.bin / tokenizer.json from 600 built-in documents, vocabulary 512."""
    out = tmp_path_factory.mktemp("tokens")
    docs = list(generate_corpus(600, seed=1))
    tok = train_bpe(docs, vocab_size=512)
    write_documents(docs, tok, out, val_fraction=0.1)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Run torch on one thread: tiny matmuls are dominated by thread-pool overhead on a small, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok_path(tok: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test module's `tok` fixture saved as a tokenizer.json."""
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(path)
    return path
