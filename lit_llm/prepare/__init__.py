"""The data-preparation pipeline, raw text to token files: sources, cleaning, quality filters, exact and near
dedup, BPE tokenizer training, token shards. Importable without torch and Lightning (datasets' worker processes
load it)."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["PrepareConfig", "TokenizerConfig", "prepare"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("lit_llm.prepare.run"), name)
    raise AttributeError(f"module 'lit_llm.prepare' has no attribute {name!r}")
