"""`RolloutValidation`: what an RL stage logs at validation — greedy answers to held-out prompts, scored by its
reward source and by the built-in tasks' verifiers — and its tables of sample answers and rollouts; with the checks
and the cross-rank sum the RL stages (PPO, GRPO) share."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from lit_llm.errors import ConfigError
from lit_llm.rewards import RewardCounts
from lit_llm.tasks import TASKS

# (batch, responses, counts) -> (scores, scored, texts): the stage's reward source on a batch of answers.
Scorer = Callable[[dict[str, Any], list[list[int]], RewardCounts], tuple[torch.Tensor, torch.Tensor, list[str]]]


def check_can_generate(stage: Any, name: str) -> None:
    """ConfigError unless `stage` can answer prompts: under FSDP only on the vLLM engine (lit_llm's own sampler
    decodes block by block outside the root's forward, which FSDP forbids), and with a tokenizer from its
    checkpoint."""
    if stage._sharded() and stage.rollout_engines.engine is None:
        raise ConfigError(f"{name} under FSDP generates with vLLM: set model.rollout_engine vllm (lit_llm's own "
                          "sampler runs on one device or with DDP)")
    if stage.tokenizer is None:
        raise ConfigError(f"{stage.hparams.init_from} stores no tokenizer, so prompts cannot be answered")


def reduce_sum(stage: Any, x: torch.Tensor) -> torch.Tensor:
    """`x` summed over the stage's ranks (itself on one process)."""
    if stage.trainer.world_size == 1:
        return x
    return stage.trainer.strategy.reduce(x, reduce_op="sum")


class RolloutValidation:
    """Logs `val/score` (mean reward-source score), `val/response_length`, and for prompts of the built-in tasks
    `val/reward` (mean verifier reward), `val/exact_match` and `val/exact_match/<task>`. Sums are reduced over
    ranks, so every rank logs the same values. The stage calls `start`, `step` per batch and `end`."""

    ROWS = [*TASKS, "all"]

    def __init__(self, eval_generations: int, sample_generations: int) -> None:
        self.eval_generations, self.sample_generations = eval_generations, sample_generations

    def start(self, device: torch.device) -> None:
        # Per task and overall: prompts, exact matches, verifier reward; then score sum, scored count, length sum.
        self.tasks = torch.zeros(len(self.ROWS), 3, dtype=torch.float64, device=device)
        self.totals = torch.zeros(4, dtype=torch.float64, device=device)
        self.samples: list[list[Any]] = []
        self.counts = RewardCounts()

    def step(self, stage: Any, batch: dict[str, Any], batch_idx: int, answer: Callable[[list[list[int]]], list],
             score: Scorer) -> None:  # fmt: skip
        """Answer a validation batch (`answer(prompt_ids) -> responses`), score it, and tally it."""
        per_rank = math.ceil(self.eval_generations / stage.trainer.world_size)
        n = len(batch["prompt_ids"])
        if batch_idx * n >= per_rank:
            return
        responses = answer(batch["prompt_ids"])
        scores, scored, texts = score(batch, responses, self.counts)
        device = self.totals.device
        self.totals += torch.tensor(
            [float((scores * scored).sum()), float(scored.sum()), sum(map(len, responses)), n],
            dtype=torch.float64, device=device,
        )  # fmt: skip
        for messages, task, text, reference in zip(batch["messages"], batch["tasks"], texts, batch["references"]):
            if task in TASKS:
                reward = TASKS[task].verify(messages[-1]["content"], text)
                for row in (self.ROWS.index(task), -1):
                    self.tasks[row] += torch.tensor([1.0, reward == 1.0, reward], dtype=torch.float64, device=device)
            if len(self.samples) < self.sample_generations:
                self.samples.append([stage.global_step, messages[-1]["content"], text, reference])

    def end(self, stage: Any, reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> None:
        tasks, totals = reduce_sum(self.tasks), reduce_sum(self.totals)
        score_sum, scored, length_sum, prompts = totals.tolist()
        if prompts == 0:
            return
        stage.log("val/score", score_sum / max(scored, 1), prog_bar=True)
        values = {"val/response_length": length_sum / prompts}
        for name, (n, exact, reward) in zip(self.ROWS, tasks.tolist()):
            if n == 0:
                continue
            if name == "all":
                values.update({"val/exact_match": exact / n, "val/reward": reward / n})
            else:
                values[f"val/exact_match/{name}"] = exact / n
        stage.log_dict(values)
        log_dir = stage.trainer.log_dir  # a collective under DDP: every rank asks
        if stage.trainer.is_global_zero and self.samples:
            from lit_llm.callbacks import write_samples

            rank_zero_info(f"answers at step {stage.global_step}:")
            for _, prompt, text, reference in self.samples:
                rank_zero_info(f"  {prompt!r} -> {text!r} (reference {reference!r})")
            write_samples(stage.trainer, log_dir, ["step", "prompt", "response", "reference"], self.samples)


def write_rollouts(stage: Any, batch: dict[str, Any], exp: dict[str, Any], count: int) -> None:
    """The first `count` rollouts of a training batch, with their scores, to the `rollouts` table."""
    from lit_llm.callbacks import write_samples

    log_dir = stage.trainer.log_dir  # a collective under DDP: every rank asks
    if not stage.trainer.is_global_zero:
        return
    rows = []
    for i in range(min(count, len(exp["texts"]))):
        prompt = batch["messages"][i][-1]["content"]
        score = float(exp["scores"][i]) if bool(exp["scored"][i]) else None
        rows.append([stage.global_step, prompt, exp["texts"][i], score])
    write_samples(stage.trainer, log_dir, ["step", "prompt", "response", "score"], rows, key="rollouts")
