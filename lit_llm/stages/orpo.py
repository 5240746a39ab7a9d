"""ORPOModule: odds-ratio preference optimization, SFT and preference alignment in one loss, no reference model."""

from __future__ import annotations

from typing import Any

import torch

from lit_llm.errors import ConfigError
from lit_llm.losses import next_token_loss, orpo_loss
from lit_llm.stages.preference import PreferenceModule, SideOutputs


class ORPOModule(PreferenceModule):
    """Align with ORPO (Hong et al. 2024): NLL on the chosen response minus beta * log sigmoid of the log odds ratio
    of chosen over rejected, on per-token mean log-probs. No reference model is held.

    Logged (train/ and val/): loss, nll_loss, log_odds_ratio (mean log sigmoid of the log odds ratio),
    log_odds_chosen (mean log odds ratio), rewards/chosen and rewards/rejected (beta * mean log-probs),
    rewards/accuracies, rewards/margins, logps/..., logits/..., plus the verifier scores of SFT.

    Args:
        init_from: the lit_llm checkpoint to start from (SFT, or a pretrained model: ORPO also teaches the format).
        beta: weight of the odds-ratio term (the paper's lambda).
        model: preset used only without `init_from`.
        model_config: fields of the model config to override (e.g. {dropout: 0.1}).
        learning_rate: peak learning rate, reached at the end of warmup.
        min_lr: floor the cosine decays to.
        warmup_steps: optimizer steps of linear warmup.
        lr_decay_steps: step at which the cosine reaches `min_lr`; None uses the Trainer's max_steps.
        weight_decay: AdamW decay of matrices.
        betas: AdamW betas.
        eval_generations: validation prompts answered greedily at each validation run and scored by the tasks'
            verifiers (val/exact_match...).
        sample_generations: how many of those answers are printed and logged as text.
        max_new_tokens: longest generated answer.
        compile: compile the model with torch.compile.
        lora: low-rank adapters instead of full fine-tuning ({r, alpha, dropout, targets}); see `CausalLM`.
    """

    stage_name = "orpo"

    def __init__(
        self,
        init_from: str | None = None,
        beta: float = 0.1,
        model: str = "tiny",
        model_config: dict[str, Any] | None = None,
        learning_rate: float = 8e-6,
        min_lr: float = 8e-7,
        warmup_steps: int = 10,
        lr_decay_steps: int | None = None,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.95),
        eval_generations: int = 60,
        sample_generations: int = 4,
        max_new_tokens: int = 32,
        compile: bool = False,
        lora: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            init_from=init_from, model=model, model_config=model_config, learning_rate=learning_rate, min_lr=min_lr,
            warmup_steps=warmup_steps, lr_decay_steps=lr_decay_steps, weight_decay=weight_decay, betas=betas,
            eval_generations=eval_generations, sample_generations=sample_generations, max_new_tokens=max_new_tokens,
            compile=compile, lora=lora,
        )  # fmt: skip
        if beta < 0:
            raise ConfigError(f"model.beta must be >= 0, got {beta}")
        self.save_hyperparameters()

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
