"""What the direct preference stages (DPO, ORPO) share: one forward pass over a pair batch, per-response
log-probs, and metrics under the names TRL users read on W&B (`train/rewards/chosen`, `val/logps/rejected`, ...).

A pair batch (`lit_llm.data.preference.collate_pairs`) has 2B rows, the B chosen responses first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lit_llm.losses import IGNORE_INDEX, sequence_logps
from lit_llm.stages.sft import SFTModule


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


class PreferenceModule(SFTModule):
    """Base of DPOModule and ORPOModule: subclasses implement `_losses(batch, outputs) -> (loss, metrics)`.

    Validation logs the same metrics under `val/`, averaged over the validation pairs, then answers
    `eval_generations` validation prompts and logs the task verifiers' exact match, as SFT does.
    """

    def _losses(self, batch: dict[str, Any], out: SideOutputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def _step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = side_outputs(self(batch), batch["targets"])
        loss, metrics = self._losses(batch, out)
        h = out.half
        chosen_rewards, rejected_rewards = metrics.pop("chosen_rewards"), metrics.pop("rejected_rewards")
        metrics.update({
            "rewards/chosen": chosen_rewards.mean(),
            "rewards/rejected": rejected_rewards.mean(),
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
            "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
            "logps/chosen": out.logps[:h].detach().mean(),
            "logps/rejected": out.logps[h:].detach().mean(),
            "logits/chosen": out.mean_logits[:h].mean(),
            "logits/rejected": out.mean_logits[h:].mean(),
        })  # fmt: skip
        return loss, metrics

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, metrics = self._step(batch)
        if self._logging_step() or self.trainer.progress_bar_callback is not None:
            self.log("train/loss", loss, prog_bar=True)
        if self._logging_step():
            self.log_dict({f"train/{k}": v for k, v in metrics.items()})
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def _eval_step(self, batch: dict[str, Any]) -> None:
        loss, metrics = self._step(batch)
        prefix = "test" if self.trainer.testing else "val"
        pairs = batch["input_ids"].size(0) // 2
        values = {f"{prefix}/loss": loss, **{f"{prefix}/{k}": v for k, v in metrics.items()}}
        self.log_dict(values, batch_size=pairs, sync_dist=True, prog_bar=False)

    def _eval_epoch_end(self, prefix: str) -> None:
        if prefix == "val":
            self._answer_eval_prompts()
