"""CausalLM: the pretraining stage — next-token prediction with warmup + cosine AdamW."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from lit_llm.losses import next_token_loss, prefix_lm_targets
from lit_llm.metrics import LanguageModelMetrics
from lit_llm.stages.base import Stage
from lit_llm.stages.lm_metrics import language_model_metrics, log_language_model_metrics


class CausalLM(Stage):
    """Pretrain a GPT on next-token prediction. Logged: train/loss, train/lr, train/grad_norm, and val/loss,
    val/ppl, val/bpb (bits per byte of the validation text).

    Args:
        vocab_size: model vocabulary; None takes it from the data module's token files (or `init_from`).
        prefix_length: positions at the start of each window that carry no loss (prefix-LM); 0 = all.
        **kwargs: the options every stage takes (`lit_llm.stages.base.Stage`); this stage's defaults are
            learning_rate 6e-4, min_lr 6e-5, warmup_steps 2000, weight_decay 0.1.
    """

    stage_name = "causal_lm"
    defaults: ClassVar[dict[str, Any]] = {**Stage.defaults, "learning_rate": 6e-4, "min_lr": 6e-5,
                                          "warmup_steps": 2000, "weight_decay": 0.1}  # fmt: skip

    def __init__(self, vocab_size: int | None = None, prefix_length: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if vocab_size is not None:
            self.policy = self.policy.with_vocab(vocab_size)
        self.val_metrics: LanguageModelMetrics | None = None

    def _sized_by_data(self) -> bool:
        return self.hparams.vocab_size is None and not self.hparams.init_from

    def setup(self, stage: str) -> None:
        if self.model is not None:
            return
        super().setup(stage)
        self.val_metrics = language_model_metrics(self)

    # ---- steps ------------------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)

    def _targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return prefix_lm_targets(batch["targets"], self.hparams.prefix_length)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = next_token_loss(self.model(batch["input_ids"]), self._targets(batch))
        self.log_train_step(loss)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        targets = self._targets(batch)
        self.val_metrics.update(next_token_loss(self.model(batch["input_ids"]), targets, reduction="sum"), targets)

    test_step = validation_step

    def on_validation_epoch_end(self) -> None:
        log_language_model_metrics(self, "val")

    def on_test_epoch_end(self) -> None:
        log_language_model_metrics(self, "test")

