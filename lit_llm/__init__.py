"""lit_llm: a Lightning-native framework from raw text to an aligned language model."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["GPT", "CausalLM", "Config", "PretrainDataModule", "SFTDataModule", "SFTModule", "__version__"]

# Loaded on first use: `lit-llm prepare` and datasets' worker processes need neither torch nor Lightning.
_LAZY = {"GPT": "lit_llm.model", "Config": "lit_llm.model", "CausalLM": "lit_llm.stages",
         "PretrainDataModule": "lit_llm.data", "SFTModule": "lit_llm.stages", "SFTDataModule": "lit_llm.data"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lit_llm' has no attribute {name!r}")
