"""What the language-model stages (pretraining, SFT) measure at validation: loss, perplexity, bits per byte."""

from __future__ import annotations

import torch

from lit_llm.metrics import LanguageModelMetrics
from lit_llm.stages.base import Stage


def language_model_metrics(stage: Stage) -> LanguageModelMetrics:
    """Loss, perplexity and bits per byte (from the tokenizer's token lengths, when it fits the model)."""
    token_bytes = None
    tokenizer, config = stage.tokenizer, stage.config
    if tokenizer is not None and tokenizer.vocab_size <= config.padded_vocab_size:
        lengths = tokenizer.token_byte_lengths()
        lengths += [0] * (config.padded_vocab_size - len(lengths))
        token_bytes = torch.tensor(lengths)
    return LanguageModelMetrics(token_bytes)


def log_language_model_metrics(stage: Stage, prefix: str) -> None:
    values = stage.val_metrics.compute()
    stage.val_metrics.reset()
    stage.log_dict({f"{prefix}/{k}": v for k, v in values.items()}, prog_bar=prefix == "val")
