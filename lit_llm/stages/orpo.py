"""ORPOModule: odds-ratio preference optimization, SFT and preference alignment in one loss, no reference model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

from lit_llm.errors import ConfigError
from lit_llm.losses import next_token_loss, orpo_loss
from lit_llm.stages.base import Stage
from lit_llm.stages.pairs import SideOutputs, evaluate_pairs, pair_step, train_on_pairs


def orpo_losses(batch: dict[str, Any], out: SideOutputs, beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ORPO's loss on a pair batch and its own metrics (a `lit_llm.stages.pairs.PairLoss` once `beta` is bound).

    The odds and the rewards use the per-token mean response log-probs (`out.mean_logps`), as in the paper and in
    TRL's ORPOTrainer."""
    h = out.half
    chosen, rejected = out.mean_logps[:h], out.mean_logps[h:]
    nll = next_token_loss(out.logits[:h], batch["targets"][:h])
    loss, ratio, difference = orpo_loss(chosen, rejected, nll, beta)
    return loss, {
        "nll_loss": nll.detach(),
        "log_odds_ratio": ratio.mean(),
        "log_odds_chosen": difference.mean(),
        "chosen_rewards": beta * chosen.detach(),
        "rejected_rewards": beta * rejected.detach(),
    }


def orpo_pair_step(
    model: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor], batch: dict[str, Any], beta: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The ORPO loss of a pair batch and the metrics ORPOModule logs (see its docstring): `logps/chosen|rejected`
    are per-token mean log-probs, what the names mean in TRL's ORPOTrainer and what the odds ratio is computed on."""
    return pair_step(model, batch, lambda b, out: orpo_losses(b, out, beta), mean_logps=True)


class ORPOModule(Stage):
    """Align with ORPO (Hong et al. 2024): NLL on the chosen response minus beta * log sigmoid of the log odds ratio
    of chosen over rejected, on per-token mean log-probs. No reference model is held.

    Logged under train/ and val/ (test/ in `test`), each a mean over the pairs of the batch (of the run, for val/),
    with the names and meanings of TRL's ORPOTrainer; "mean log-prob" is a response's log-prob averaged over its
    tokens (prompt and padding excluded):

    - loss: nll_loss - beta * log_odds_ratio.
    - nll_loss: the cross-entropy of the chosen responses, per response token.
    - log_odds_ratio: log sigmoid of the log odds ratio, log sigmoid(log odds(chosen) - log odds(rejected)), where
      log odds(y) = m - log(1 - exp(m)) and m is the response's mean log-prob.
    - log_odds_chosen: the log odds ratio itself, log odds(chosen) - log odds(rejected).
    - logps/chosen, logps/rejected: the mean log-prob of the chosen (rejected) responses (DPO logs sums here).
    - rewards/chosen, rewards/rejected: beta * logps/chosen (rejected).
    - rewards/margins: rewards/chosen - rewards/rejected; rewards/accuracies: the share of pairs whose chosen
      response has the higher mean log-prob.
    - logits/chosen, logits/rejected: the mean logit over the response positions and the vocabulary (TRL
      averages over every position of the sequence, prompt and padding included).
    - the verifier scores of the answers to `eval_generations` validation prompts (val/ only).

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

    def _loss(self, batch: dict[str, Any], out: SideOutputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return orpo_losses(batch, out, self.hparams.beta)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return train_on_pairs(self, batch, self._loss, mean_logps=True)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        evaluate_pairs(self, batch, self._loss, mean_logps=True)

    test_step = validation_step

    def on_validation_epoch_end(self) -> None:
        self.answer_eval_prompts()
