"""DPOModule: direct preference optimization against a frozen reference, the policy's starting point."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from lit_llm.errors import ConfigError
from lit_llm.losses import DPO_LOSSES, dpo_loss, next_token_loss
from lit_llm.stages.base import Stage
from lit_llm.stages.pairs import SideOutputs, evaluate_pairs, side_outputs, train_on_pairs
from lit_llm.stages.reference import FrozenReference


class DPOModule(Stage):
    """Align a policy with DPO-family losses on preference pairs; the reference is the `init_from` model.

    The reference (`self.reference`, a `FrozenReference`) is a second copy of the starting weights: in eval mode,
    without gradients, outside the optimizer and, under FSDP, sharded like the policy. With
    `precompute_reference`, the reference log-probs of every training and validation pair are computed in one pass
    before training (each rank scores a share, then all ranks gather them), kept by this stage in a table indexed
    by the pairs' ids, and the reference is freed, so training holds one model. Being a function of the
    `init_from` weights only, they are recomputed identically on resume. Reference weights are not written to
    checkpoints.

    Logged (train/ and val/): loss, rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins,
    logps/chosen, logps/rejected (summed response log-probs), logits/chosen, logits/rejected, plus the verifier
    scores of the answers to `eval_generations` validation prompts.

    Args:
        beta: strength of the KL penalty towards the reference (DPO's beta).
        loss_type: "sigmoid" (DPO; with label_smoothing, conservative cDPO), "robust" (rDPO), "hinge" (SLiC) or
            "ipo" (on per-token mean log-probs).
        label_smoothing: assumed share of flipped labels, for "sigmoid" and "robust".
        sft_weight: weight of an added NLL loss on the chosen responses (RPO's alpha); 0 turns it off.
        precompute_reference: score the pairs with the reference once before training instead of every step.
        **kwargs: the options every stage takes (`lit_llm.stages.base.Stage`); `init_from` is required. With
            `lora`, the reference is the policy with its adapters disabled: no second copy is held. This stage's
            defaults are learning_rate 5e-6, min_lr 5e-7, warmup_steps 10, eval_generations 60, max_new_tokens 32.
    """

    stage_name = "dpo"
    defaults: ClassVar[dict[str, Any]] = {**Stage.defaults, "learning_rate": 5e-6, "min_lr": 5e-7,
                                          "warmup_steps": 10, "eval_generations": 60}  # fmt: skip

    def __init__(
        self,
        beta: float = 0.1,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
        sft_weight: float = 0.0,
        precompute_reference: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.hparams.init_from is None:
            raise ConfigError("model.init_from is required: DPO starts the policy and its reference from a checkpoint")
        if loss_type not in DPO_LOSSES:
            raise ConfigError(f"model.loss_type must be one of {', '.join(DPO_LOSSES)}, got {loss_type!r}")
        if beta <= 0 or not 0 <= label_smoothing < 0.5 or sft_weight < 0:
            raise ConfigError("model.beta must be > 0, label_smoothing in [0, 0.5) and sft_weight >= 0")
        self.reference: FrozenReference | None = None
        # (pairs, 2) reference log-probs of chosen and rejected, indexed by the pairs' ids, when precomputed.
        self.reference_table: torch.Tensor | None = None

    def configure_components(self, wrap: Any = None) -> None:
        self.reference = FrozenReference.of_stage(self, wrap)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.model(batch["input_ids"])

    # ---- the reference ----------------------------------------------------------------------------

    @property
    def _average(self) -> bool:
        return self.hparams.loss_type == "ipo"

    @torch.no_grad()
    def _reference_logps(self, batch: dict[str, Any]) -> torch.Tensor:
        with self.reference.network() as reference:
            out = side_outputs(reference(batch["input_ids"]), batch["targets"])
        return out.mean_logps if self._average else out.logps

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.hparams.precompute_reference:
            self._precompute_reference()

    @torch.no_grad()
    def _precompute_reference(self) -> None:
        """Reference log-probs of every train and val pair (ids 0..N-1 and N..N+M-1), then the reference is freed."""
        from lit_llm.data.preference import collate_pairs

        dm = self.trainer.datamodule
        pairs = list(dm.train_examples) + list(dm.val_examples)
        world, rank = self.trainer.world_size, self.trainer.global_rank
        per_rank = math.ceil(len(pairs) / world)
        mine = list(range(rank, len(pairs), world))
        # Every rank runs as many forward passes (FSDP gathers shards in lockstep): pad with a repeated pair.
        mine += [mine[-1] if mine else 0] * (per_rank - len(mine))
        values = torch.zeros(per_rank, 2, device=self.device)
        step = 2 * dm.batch_size
        with self.trainer.precision_plugin.forward_context():
            for start in range(0, len(mine), step):
                chunk = mine[start : start + step]
                batch = collate_pairs([pairs[i] for i in chunk], dm.pad_id)
                batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                logps = self._reference_logps(batch)
                values[start : start + len(chunk)] = torch.stack([logps[: len(chunk)], logps[len(chunk) :]], dim=1)
        gathered = self.all_gather(values).reshape(world, -1, 2).cpu() if world > 1 else values[None].cpu()
        table = torch.zeros(len(pairs), 2, dtype=torch.float32)
        for r in range(world):
            for j, i in enumerate(range(r, len(pairs), world)):
                table[i] = gathered[r, j].float()
        self.reference_table = table
        self.reference.free()

    def _batch_reference(self, batch: dict[str, Any]) -> torch.Tensor:
        if self.reference_table is not None:
            ref = self.reference_table[batch["pair_ids"].cpu()]
            return torch.cat([ref[:, 0], ref[:, 1]]).to(self.device)
        if self.reference is not None and self.reference.available:
            return self._reference_logps(batch)
        raise RuntimeError("no reference log-probs: none were precomputed and the reference model was freed")

    # ---- the loss ---------------------------------------------------------------------------------

    def _losses(self, batch: dict[str, Any], out: SideOutputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = out.half
        reference = self._batch_reference(batch)
        policy = out.mean_logps if self._average else out.logps
        hp = self.hparams
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            policy[:h], policy[h:], reference[:h], reference[h:], hp.beta, hp.loss_type, hp.label_smoothing
        )
        loss = losses.mean()
        metrics = {"chosen_rewards": chosen_rewards, "rejected_rewards": rejected_rewards}
        if hp.sft_weight:
            nll = next_token_loss(out.logits[:h], batch["targets"][:h])
            loss = loss + hp.sft_weight * nll
            metrics["nll_loss"] = nll.detach()
        return loss, metrics

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return train_on_pairs(self, batch, self._losses)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        evaluate_pairs(self, batch, self._losses)

    test_step = validation_step

    def on_validation_epoch_end(self) -> None:
        self.answer_eval_prompts()

    # ---- checkpoints ------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        FrozenReference.strip(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.reference is not None:
            self.reference.fill(checkpoint)
