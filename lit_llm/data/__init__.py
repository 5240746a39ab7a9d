"""LightningDataModules, one per kind of training data: token files (pretraining), instructions and chats (SFT),
preference pairs (reward model, DPO, ORPO) and prompts (PPO); a stage hands its data module what the model knows
with `connect(DataSpec(...))` (`lit_llm.data.connect`). The preparation pipeline that writes token files is
`lit_llm.prepare`; text formats (tokenizer, prompt styles, conversations) are `lit_llm.text`."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DataInfo", "DataSpec", "PreferenceDataModule", "PretrainDataModule", "PromptDataModule", "SFTDataModule"]

# Loaded on first use, so that importing lit_llm.data does not import torch and Lightning.
_LAZY = {
    "PretrainDataModule": "lit_llm.data.pretrain",
    "SFTDataModule": "lit_llm.data.sft",
    "PreferenceDataModule": "lit_llm.data.preference",
    "PromptDataModule": "lit_llm.data.rl_prompts",
    "DataSpec": "lit_llm.data.connect",
    "DataInfo": "lit_llm.data.connect",
}
# Names this package held before the preparation pipeline and the text formats moved out of it.
_MOVED = {
    "PrepareConfig": "lit_llm.prepare", "TokenizerConfig": "lit_llm.prepare", "prepare": "lit_llm.prepare",
    "Tokenizer": "lit_llm.text", "train_bpe": "lit_llm.text",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _MOVED:
        raise AttributeError(f"lit_llm.data.{name} moved to {_MOVED[name]}.{name}")
    raise AttributeError(f"module 'lit_llm.data' has no attribute {name!r}")
