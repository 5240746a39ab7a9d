"""What the direct preference stages (DPO, ORPO) share, as functions: one forward pass over a pair batch,
per-response log-probs, and metrics under the names TRL users read on W&B (`train/rewards/chosen`,
`val/logps/rejected`, ...).

A pair batch (`lit_llm.data.preference.collate_pairs`) has 2B rows, the B chosen responses first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lit_llm.losses import IGNORE_INDEX, sequence_logps

# A stage's loss on a pair batch: (batch, outputs) -> (loss, metrics with chosen_rewards and rejected_rewards).
PairLoss = Callable[[dict[str, Any], "SideOutputs"], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class SideOutputs:
    """Per-row results of the policy on a pair batch (2B rows)."""

    logits: torch.Tensor
    logps: torch.Tensor  # (2B,) summed response log-probs
    mean_logps: torch.Tensor  # (2B,) per-token mean response log-probs
    mean_logits: torch.Tensor  # (2B,) mean logit over the response positions (detached)

    @property
    def half(self) -> int:
        return self.logps.size(0) // 2


def side_outputs(logits: torch.Tensor, targets: torch.Tensor) -> SideOutputs:
    mask = (targets != IGNORE_INDEX).unsqueeze(-1)
    counts = mask.sum(dim=(1, 2)).clamp(min=1)
    mean_logits = (logits.detach().float() * mask).sum(dim=(1, 2)) / (counts * logits.size(-1))
    return SideOutputs(logits, sequence_logps(logits, targets), sequence_logps(logits, targets, average=True),
                       mean_logits)  # fmt: skip


def pair_step(
    model: torch.nn.Module, batch: dict[str, Any], loss_fn: PairLoss, mean_logps: bool = False
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of a pair batch and its metrics: rewards/chosen|rejected|accuracies|margins, logps/..., logits/....
    `logps/chosen|rejected` are the batch means of the summed response log-probs (TRL's DPOTrainer), or with
    `mean_logps` of the per-token mean log-probs (TRL's ORPOTrainer)."""
    out = side_outputs(model(batch["input_ids"]), batch["targets"])
    logps = out.mean_logps if mean_logps else out.logps
    loss, metrics = loss_fn(batch, out)
    h = out.half
    chosen_rewards, rejected_rewards = metrics.pop("chosen_rewards"), metrics.pop("rejected_rewards")
    metrics.update({
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "logps/chosen": logps[:h].detach().mean(),
        "logps/rejected": logps[h:].detach().mean(),
        "logits/chosen": out.mean_logits[:h].mean(),
        "logits/rejected": out.mean_logits[h:].mean(),
    })  # fmt: skip
    return loss, metrics


def train_on_pairs(stage: Any, batch: dict[str, Any], loss_fn: PairLoss, mean_logps: bool = False) -> torch.Tensor:
    """A stage's training step on a pair batch: the loss, logged with its metrics under train/."""
    loss, metrics = pair_step(stage.model, batch, loss_fn, mean_logps)
    stage.log_train_step(loss, metrics if stage._logging_step() else None)
    return loss


def evaluate_pairs(stage: Any, batch: dict[str, Any], loss_fn: PairLoss, mean_logps: bool = False) -> None:
    """A stage's validation (or test) step on a pair batch: the loss and metrics, averaged over the pairs of the run
    and synced over ranks."""
    loss, metrics = pair_step(stage.model, batch, loss_fn, mean_logps)
    prefix = "test" if stage.trainer.testing else "val"
    pairs = batch["input_ids"].size(0) // 2
    values = {f"{prefix}/loss": loss, **{f"{prefix}/{k}": v for k, v in metrics.items()}}
    stage.log_dict(values, batch_size=pairs, sync_dist=True, prog_bar=False)
