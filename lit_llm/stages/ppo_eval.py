"""PPO's validation (greedy answers to held-out prompts, scored by the reward source and the task verifiers) and
its table of sample rollouts."""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from lit_llm.data.tasks import TASKS
from lit_llm.rewards import RewardCounts


class PPOValidation:
    """Mixin for `PPOModule`. Logs `val/score` (mean reward-source score), `val/response_length`, and for prompts of
    the built-in tasks `val/reward` (mean verifier reward), `val/exact_match` and `val/exact_match/<task>`.
    Sums are reduced over ranks, so every rank logs the same values."""

    _ROWS = [*TASKS, "all"]

    def on_validation_epoch_start(self) -> None:
        # Per task and overall: prompts, exact matches, verifier reward; then score sum, scored count, length sum.
        self._val_tasks = torch.zeros(len(self._ROWS), 3, dtype=torch.float64, device=self.device)
        self._val_totals = torch.zeros(4, dtype=torch.float64, device=self.device)
        self._val_samples: list[list[Any]] = []
        self._val_counts = RewardCounts()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        per_rank = math.ceil(self.hparams.eval_generations / self.trainer.world_size)
        n = len(batch["prompt_ids"])
        if batch_idx * n >= per_rank:
            return
        _, responses = self._rollout(batch["prompt_ids"], greedy=True)
        scores, scored, texts = self._score(batch, responses, self._val_counts)
        self._val_totals += torch.tensor(
            [float((scores * scored).sum()), float(scored.sum()), sum(map(len, responses)), n],
            dtype=torch.float64, device=self.device,
        )  # fmt: skip
        for messages, task, text, reference in zip(batch["messages"], batch["tasks"], texts, batch["references"]):
            if task in TASKS:
                reward = TASKS[task].verify(messages[-1]["content"], text)
                for row in (self._ROWS.index(task), -1):
                    self._val_tasks[row] += torch.tensor([1.0, reward == 1.0, reward], dtype=torch.float64,
                                                         device=self.device)  # fmt: skip
            if len(self._val_samples) < self.hparams.sample_generations:
                self._val_samples.append([self.global_step, messages[-1]["content"], text, reference])

    def on_validation_epoch_end(self) -> None:
        tasks, totals = self._reduce_sum(self._val_tasks), self._reduce_sum(self._val_totals)
        score_sum, scored, length_sum, prompts = totals.tolist()
        if prompts == 0:
            return
        self.log("val/score", score_sum / max(scored, 1), prog_bar=True)
        values = {"val/response_length": length_sum / prompts}
        for name, (n, exact, reward) in zip(self._ROWS, tasks.tolist()):
            if n == 0:
                continue
            if name == "all":
                values.update({"val/exact_match": exact / n, "val/reward": reward / n})
            else:
                values[f"val/exact_match/{name}"] = exact / n
        self.log_dict(values)
        log_dir = self.trainer.log_dir  # a collective under DDP: every rank asks
        if self.trainer.is_global_zero and self._val_samples:
            from lit_llm.callbacks import write_samples

            rank_zero_info(f"answers at step {self.global_step}:")
            for _, prompt, text, reference in self._val_samples:
                rank_zero_info(f"  {prompt!r} -> {text!r} (reference {reference!r})")
            write_samples(self.trainer, log_dir, ["step", "prompt", "response", "reference"], self._val_samples)

    def _write_rollouts(self, batch: dict[str, Any], exp: dict[str, Any]) -> None:
        from lit_llm.callbacks import write_samples

        log_dir = self.trainer.log_dir  # a collective under DDP: every rank asks
        if not self.trainer.is_global_zero:
            return
        rows = []
        for i in range(min(self.hparams.sample_generations, len(exp["texts"]))):
            prompt = batch["messages"][i][-1]["content"]
            score = float(exp["scores"][i]) if bool(exp["scored"][i]) else None
            rows.append([self.global_step, prompt, exp["texts"][i], score])
        write_samples(self.trainer, log_dir, ["step", "prompt", "response", "score"], rows, key="rollouts")
