"""Text formats every layer shares: the byte-level BPE tokenizer, prompt styles (chat templates) and
conversation records. No torch, no Lightning."""

from __future__ import annotations

from lit_llm.text.tokenizer import Tokenizer, train_bpe

__all__ = ["Tokenizer", "train_bpe"]
