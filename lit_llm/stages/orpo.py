"""ORPOModule: odds-ratio preference optimization, SFT and preference alignment in one loss, no reference model."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from lit_llm.errors import ConfigError
from lit_llm.losses import next_token_loss, orpo_loss
from lit_llm.stages.base import Stage
from lit_llm.stages.pairs import SideOutputs, evaluate_pairs, train_on_pairs


class ORPOModule(Stage):
    """Align with ORPO (Hong et al. 2024): NLL on the chosen response minus beta * log sigmoid of the log odds ratio
    of chosen over rejected, on per-token mean log-probs. No reference model is held.

    Logged (train/ and val/): loss, nll_loss, log_odds_ratio (mean log sigmoid of the log odds ratio),
    log_odds_chosen (mean log odds ratio), rewards/chosen and rewards/rejected (beta * mean log-probs),
    rewards/accuracies, rewards/margins, logps/..., logits/..., plus the verifier scores of the answers to
    `eval_generations` validation prompts.

    Args:
        beta: weight of the odds-ratio term (the paper's lambda).
        **kwargs: the options every stage takes (`lit_llm.stages.base.Stage`); `init_from` is an SFT model, or a
            pretrained one (ORPO also teaches the format). This stage's defaults are learning_rate 8e-6, min_lr
            8e-7, warmup_steps 10, eval_generations 60, max_new_tokens 32.
    """

    stage_name = "orpo"
    defaults: ClassVar[dict[str, Any]] = {**Stage.defaults, "learning_rate": 8e-6, "min_lr": 8e-7,
                                          "warmup_steps": 10, "eval_generations": 60}  # fmt: skip

    def __init__(self, beta: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if beta < 0:
            raise ConfigError(f"model.beta must be >= 0, got {beta}")

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.model(batch["input_ids"])

    def _losses(self, batch: dict[str, Any], out: SideOutputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h, beta = out.half, self.hparams.beta
        nll = next_token_loss(out.logits[:h], batch["targets"][:h])
        loss, ratio, difference = orpo_loss(out.mean_logps[:h], out.mean_logps[h:], nll, beta)
        return loss, {
            "nll_loss": nll.detach(),
            "log_odds_ratio": ratio.mean(),
            "log_odds_chosen": difference.mean(),
            "chosen_rewards": beta * out.mean_logps[:h].detach(),
            "rejected_rewards": beta * out.mean_logps[h:].detach(),
        }

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return train_on_pairs(self, batch, self._losses)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        evaluate_pairs(self, batch, self._losses)

    test_step = validation_step

    def on_validation_epoch_end(self) -> None:
        self.answer_eval_prompts()
