"""Data modules and the preparation steps they call."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "PreferenceDataModule", "PrepareConfig", "PretrainDataModule", "PromptDataModule", "SFTDataModule", "Tokenizer",
    "TokenizerConfig", "prepare", "train_bpe",
]

# Loaded on first use, so that the data pipeline does not import torch and Lightning.
_LAZY = {
    "PretrainDataModule": "lit_llm.data.pretrain",
    "SFTDataModule": "lit_llm.data.sft",
    "PreferenceDataModule": "lit_llm.data.preference",
    "PromptDataModule": "lit_llm.data.prompts",
    "PrepareConfig": "lit_llm.data.prepare",
    "TokenizerConfig": "lit_llm.data.prepare",
    "prepare": "lit_llm.data.prepare",
    "Tokenizer": "lit_llm.data.tokenizer",
    "train_bpe": "lit_llm.data.tokenizer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lit_llm.data' has no attribute {name!r}")
