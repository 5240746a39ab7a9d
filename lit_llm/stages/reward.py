"""RewardModule: a pairwise Bradley-Terry reward model, a language model's backbone with a scalar head."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from lit_llm.checkpoint import META_KEY
from lit_llm.errors import ConfigError
from lit_llm.losses import bradley_terry_loss
from lit_llm.model import RewardModel
from lit_llm.rewards import RewardScorer, load_reward_model
from lit_llm.stages.base import Stage

__all__ = ["RewardModule", "load_reward_model"]


class RewardModule(Stage):
    """Train a reward model on preference pairs: -log sigmoid(r(chosen) - r(rejected) [- margin]).

    The reward of a prompt and response is a linear head on the backbone's hidden state at the response's last
    token (its stop token). Logged: `train/loss`, `train/accuracy` (share of pairs ranked right), `train/margin`
    (mean r(chosen) - r(rejected)) and the same under `val/`, with `val/reward_mean`, `val/reward_std`,
    `val/reward_min` and `val/reward_max` over both sides of the validation pairs. A trained checkpoint is read
    back with `lit_llm.rewards.load_reward_model`.

    Args:
        center_coef: weight of the reward-centering term mean((r_chosen + r_rejected)^2); 0 turns it off.
        normalize: store the mean and standard deviation of the validation rewards in the checkpoint, so that
            `score` (used by PPO and evaluation) returns rewards with mean 0 and deviation 1 on them.
        **kwargs: the options every stage takes (`lit_llm.stages.base.Stage`); `init_from` is usually SFT, whose
            backbone, tokenizer and model config the reward model starts from. With `lora`, adapters go on the
            backbone and the scalar head trains in full. This stage's defaults are learning_rate 1e-4, min_lr
            1e-5, warmup_steps 20.
    """

    stage_name = "reward"
    lora_trainable = RewardModel.heads
    defaults: ClassVar[dict[str, Any]] = {**Stage.defaults, "learning_rate": 1e-4, "min_lr": 1e-5,
                                          "warmup_steps": 20}  # fmt: skip

    def __init__(self, center_coef: float = 0.0, normalize: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if center_coef < 0:
            raise ConfigError(f"model.center_coef must be >= 0, got {center_coef}")
        # Mean and std of the validation rewards, measured at each validation run when `normalize` is on.
        self.normalization: tuple[float, float] | None = None
        self._val_rewards: list[torch.Tensor] = []

    def _build_network(self, wrap: Any = None) -> torch.nn.Module:
        # Unbound, so that under FSDP the weights load through the wrapped root (`m`), not the module inside it.
        return self.policy.build(RewardModel, wrap, load=lambda m, state, source: RewardModel.load_language_model(
            m, state, source))

    # ---- steps ------------------------------------------------------------------------------------

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Rewards of the chosen and of the rejected responses of a preference batch, (B,) each."""
        rewards = self.model(batch["input_ids"], last_index=batch["last_index"])
        half = rewards.size(0) // 2
        return rewards[:half], rewards[half:]

    def _loss(self, batch: dict[str, Any], chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        return bradley_terry_loss(chosen, rejected, batch.get("margin"), self.hparams.center_coef)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        chosen, rejected = self(batch)
        loss = self._loss(batch, chosen, rejected)
        metrics = None
        if self._logging_step():
            metrics = {"accuracy": (chosen > rejected).float().mean(), "margin": (chosen - rejected).mean()}
        self.log_train_step(loss, metrics)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        chosen, rejected = self(batch)
        prefix = "test" if self.trainer.testing else "val"
        self.log(f"{prefix}/loss", self._loss(batch, chosen, rejected), batch_size=chosen.numel(), sync_dist=True)
        self._val_rewards.append(torch.stack([chosen, rejected], dim=1).detach())

    test_step = validation_step

    def on_validation_epoch_end(self) -> None:
        self._log_rewards("val")

    def on_test_epoch_end(self) -> None:
        self._log_rewards("test")

    def _log_rewards(self, prefix: str) -> None:
        if not self._val_rewards:
            return
        rewards = torch.cat(self._val_rewards)
        self._val_rewards.clear()
        if self.trainer.world_size > 1:
            rewards = self.all_gather(rewards).reshape(-1, 2)
        chosen, rejected = rewards[:, 0], rewards[:, 1]
        both = rewards.flatten()
        values = {
            "accuracy": (chosen > rejected).float().mean(),
            "margin": (chosen - rejected).mean(),
            "reward_mean": both.mean(),
            "reward_std": both.std() if both.numel() > 1 else torch.zeros(()),
            "reward_min": both.min(),
            "reward_max": both.max(),
        }
        self.log_dict({f"{prefix}/{k}": v for k, v in values.items()}, prog_bar=prefix == "val")
        if prefix == "val" and self.hparams.normalize and both.numel() > 1:
            self.normalization = (float(values["reward_mean"]), max(float(values["reward_std"]), 1e-6))

    # ---- scoring ----------------------------------------------------------------------------------

    def scorer(self) -> RewardScorer:
        return RewardScorer(self.model, self.tokenizer, self.prompt_style, self.normalization)

    def score_tokens(self, rows: list[list[int]], batch_size: int = 32, normalize: bool = True) -> torch.Tensor:
        """`RewardScorer.score_tokens` with this model."""
        return self.scorer().score_tokens(rows, batch_size, normalize)

    def score(self, prompts: list[Any], responses: list[str], batch_size: int = 32, normalize: bool = True) -> Any:
        """`RewardScorer.score` with this model."""
        return self.scorer().score(prompts, responses, batch_size, normalize)

    # ---- checkpoints ------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.normalization is not None:
            mean, std = self.normalization
            checkpoint[META_KEY]["reward_normalization"] = {"mean": mean, "std": std}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        stored = checkpoint.get(META_KEY, {}).get("reward_normalization")
        if stored:
            self.normalization = (float(stored["mean"]), float(stored["std"]))
