"""SFTModule: supervised fine-tuning — next-token loss on response tokens only, packed or padded batches."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from lit_llm.losses import next_token_loss
from lit_llm.metrics import LanguageModelMetrics, token_accuracy
from lit_llm.model import packed_attention_mask
from lit_llm.stages.base import Stage
from lit_llm.stages.lm_metrics import language_model_metrics, log_language_model_metrics


def lm_forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits of a batch, packed (segment ids: attention stays inside each example) or padded."""
    if "segment_ids" in batch:
        mask = packed_attention_mask(batch["segment_ids"])
        return model(batch["input_ids"], position_ids=batch["position_ids"], attention_mask=mask)
    return model(batch["input_ids"])


class SFTModule(Stage):
    """Fine-tune a GPT on instruction or chat data: the loss covers the response tokens the data module marks.
    Logged: train/loss, train/token_accuracy, and val/loss, val/ppl, val/bpb, val/token_accuracy, plus the
    verifiers' scores of the answers to `eval_generations` validation prompts.

    Args:
        **kwargs: the options every stage takes (`lit_llm.stages.base.Stage`: init_from, optimizer, LoRA, ...);
            this stage's defaults are learning_rate 3e-4, min_lr 3e-5, warmup_steps 50, weight_decay 0.0,
            eval_generations 60, max_new_tokens 32.
    """

    stage_name = "sft"
    defaults: ClassVar[dict[str, Any]] = {**Stage.defaults, "learning_rate": 3e-4, "min_lr": 3e-5,
                                          "warmup_steps": 50, "eval_generations": 60}  # fmt: skip

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.val_metrics: LanguageModelMetrics | None = None

    def setup(self, stage: str) -> None:
        if self.model is not None:
            return
        super().setup(stage)
        self.val_metrics = language_model_metrics(self)

    # ---- steps ------------------------------------------------------------------------------------

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return lm_forward(self.model, batch)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        loss = next_token_loss(logits, batch["targets"])
        metrics = None
        if self._logging_step():
            correct, counted = token_accuracy(logits.detach(), batch["targets"])
            metrics = {"token_accuracy": correct / counted.clamp(min=1)}
        self.log_train_step(loss, metrics)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self(batch)
        targets = batch["targets"]
        correct, _ = token_accuracy(logits, targets)
        self.val_metrics.update(next_token_loss(logits, targets, reduction="sum"), targets, correct)

    test_step = validation_step

    def on_validation_epoch_end(self) -> None:
        log_language_model_metrics(self, "val")
        self.answer_eval_prompts()

    def on_test_epoch_end(self) -> None:
        log_language_model_metrics(self, "test")
