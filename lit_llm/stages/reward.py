"""RewardModule: a pairwise Bradley-Terry reward model, a language model's backbone with a scalar head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lit_llm.checkpoint import META_KEY, checkpoint_meta, load_checkpoint, meta_tokenizer, model_state
from lit_llm.data.templates import encode_parts, load_style
from lit_llm.errors import CheckpointError, ConfigError
from lit_llm.losses import bradley_terry_loss
from lit_llm.model import Config, RewardModel
from lit_llm.stages.causal_lm import CausalLM


class RewardModule(CausalLM):
    """Train a reward model on preference pairs: -log sigmoid(r(chosen) - r(rejected) [- margin]).

    The reward of a prompt and response is a linear head on the backbone's hidden state at the response's last
    token (its stop token). Logged: `train/loss`, `train/accuracy` (share of pairs ranked right), `train/margin`
    (mean r(chosen) - r(rejected)) and the same under `val/`, with `val/reward_mean`, `val/reward_std`,
    `val/reward_min` and `val/reward_max` over both sides of the validation pairs.

    Args:
        init_from: the lit_llm checkpoint (usually SFT) whose backbone, tokenizer and model config to start from.
        model: preset used only without `init_from`.
        model_config: fields of the model config to override (e.g. {dropout: 0.1}).
        learning_rate: peak learning rate, reached at the end of warmup.
        min_lr: floor the cosine decays to.
        warmup_steps: optimizer steps of linear warmup.
        lr_decay_steps: step at which the cosine reaches `min_lr`; None uses the Trainer's max_steps.
        weight_decay: AdamW decay of matrices.
        betas: AdamW betas.
        center_coef: weight of the reward-centering term mean((r_chosen + r_rejected)^2); 0 turns it off.
        normalize: store the mean and standard deviation of the validation rewards in the checkpoint, so that
            `score` (used by PPO and evaluation) returns rewards with mean 0 and deviation 1 on them.
        compile: compile the model with torch.compile.
        lora: low-rank adapters on the backbone ({r, alpha, dropout, targets}, see `CausalLM`); the scalar head
            trains in full.
    """

    stage_name = "reward"
    lora_trainable = RewardModel.heads

    def __init__(
        self,
        init_from: str | None = None,
        model: str = "tiny",
        model_config: dict[str, Any] | None = None,
        learning_rate: float = 1e-4,
        min_lr: float = 1e-5,
        warmup_steps: int = 20,
        lr_decay_steps: int | None = None,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.95),
        center_coef: float = 0.0,
        normalize: bool = True,
        compile: bool = False,
        lora: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            model=model, model_config=model_config, learning_rate=learning_rate, min_lr=min_lr,
            warmup_steps=warmup_steps, lr_decay_steps=lr_decay_steps, weight_decay=weight_decay, betas=betas,
            init_from=init_from, compile=compile, lora=lora,
        )  # fmt: skip
        if center_coef < 0:
            raise ConfigError(f"model.center_coef must be >= 0, got {center_coef}")
        self.save_hyperparameters()
        # Mean and std of the validation rewards, measured at each validation run when `normalize` is on.
        self.normalization: tuple[float, float] | None = None
        self._val_rewards: list[torch.Tensor] = []

    def _build_model(self, wrap: Any = None) -> torch.nn.Module:
        model = RewardModel(self.config, wrap=wrap)
        if self._init_state is not None:
            model.load_language_model(self._init_state, source=self.hparams.init_from)
        return wrap(model) if wrap is not None else model

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
        if self._logging_step() or self.trainer.progress_bar_callback is not None:
            self.log("train/loss", loss, prog_bar=True)
        if self._logging_step():
            self.log("train/accuracy", (chosen > rejected).float().mean())
            self.log("train/margin", (chosen - rejected).mean())
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def _eval_step(self, batch: dict[str, Any]) -> None:
        chosen, rejected = self(batch)
        prefix = "test" if self.trainer.testing else "val"
        self.log(f"{prefix}/loss", self._loss(batch, chosen, rejected), batch_size=chosen.numel(), sync_dist=True)
        self._val_rewards.append(torch.stack([chosen, rejected], dim=1).detach())

    def _eval_epoch_end(self, prefix: str) -> None:
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

    @torch.no_grad()
    def score_tokens(self, rows: list[list[int]], batch_size: int = 32, normalize: bool = True) -> torch.Tensor:
        """(N,) rewards of token sequences (prompt + response + stop token), read at each one's last token.

        Sequences longer than the block keep their last block_size tokens. With `normalize` and a stored
        normalization, rewards are (r - mean) / std of the validation rewards."""
        block = self.config.block_size
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out = []
        try:
            for start in range(0, len(rows), batch_size):
                chunk = [list(r)[-block:] for r in rows[start : start + batch_size]]
                if any(not r for r in chunk):
                    raise ValueError("cannot score an empty sequence")
                ids = torch.zeros((len(chunk), max(map(len, chunk))), dtype=torch.long, device=device)
                for i, r in enumerate(chunk):
                    ids[i, : len(r)] = torch.tensor(r, device=device)
                last = torch.tensor([len(r) - 1 for r in chunk], device=device)
                out.append(self.model(ids, last_index=last))
        finally:
            self.model.train(was_training)
        rewards = torch.cat(out) if out else torch.zeros(0, device=device)
        if normalize and self.normalization is not None:
            mean, std = self.normalization
            rewards = (rewards - mean) / std
        return rewards

    def score(
        self, prompts: list[str | list[dict[str, Any]]], responses: list[str], batch_size: int = 32,
        normalize: bool = True,
    ) -> torch.Tensor:  # fmt: skip
        """(N,) rewards of responses to prompts (user messages, or conversations), in the training prompt style."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if self.tokenizer is None or self.prompt_style is None:
            raise ValueError("score needs the model's tokenizer and prompt style (set when trained or loaded)")
        rows = []
        for prompt, response in zip(prompts, responses):
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            parts = self.prompt_style.render(messages + [{"role": "assistant", "content": response}])
            rows.append(encode_parts(self.tokenizer, parts))
        return self.score_tokens(rows, batch_size=batch_size, normalize=normalize)

    # ---- checkpoints ----------------------------------------------------------------------------

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


def load_reward_model(path: str | Path, map_location: str | torch.device = "cpu") -> RewardModule:
    """A trained reward model from its lit_llm checkpoint, in eval mode, ready to `score` (no Trainer needed)."""
    ckpt = load_checkpoint(path, map_location=map_location)
    meta = checkpoint_meta(ckpt, path)
    if meta.get("stage") != RewardModule.stage_name:
        raise CheckpointError(f"{path} is a {meta.get('stage')!r} checkpoint, not a reward model")
    module = RewardModule()
    module.config = Config.from_dict(meta["model_config"])
    module.model = RewardModel(module.config)
    try:
        module.model.load_state_dict(model_state(ckpt, path, map_location=map_location))
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the reward model: {str(exc).splitlines()[0]}") from None
    module.tokenizer = meta_tokenizer(meta, path)
    module.prompt_style = load_style(meta["prompt_style"]) if meta.get("prompt_style") else None
    module.on_load_checkpoint(ckpt)
    return module.eval()
