"""DPOModule: direct preference optimization against a frozen reference, the policy's starting point."""

from __future__ import annotations

import math
from typing import Any

import torch

from lit_llm.errors import ConfigError
from lit_llm.losses import DPO_LOSSES, dpo_loss, next_token_loss
from lit_llm.stages.preference import PreferenceModule, SideOutputs, side_outputs
from lit_llm.stages.reference import FrozenReference


class DPOModule(FrozenReference, PreferenceModule):
    """Align a policy with DPO-family losses on preference pairs; the reference is the `init_from` model.

    The reference is a second copy of the starting weights: in eval mode, without gradients, outside the
    optimizer and, under FSDP, sharded like the policy. With `precompute_reference`, the reference log-probs of
    every training and validation pair are computed in one pass before training (each rank scores a share, then
    all ranks gather them) and the reference is freed, so training holds one model. Being a function of the
    `init_from` weights only, they are recomputed identically on resume. Reference weights are not written to
    checkpoints.

    Logged (train/ and val/): loss, rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins,
    logps/chosen, logps/rejected, logits/chosen, logits/rejected, plus the verifier scores of SFT.

    Args:
        init_from: the lit_llm checkpoint (usually SFT) the policy and the reference start from.
        beta: strength of the KL penalty towards the reference (DPO's beta).
        loss_type: "sigmoid" (DPO; with label_smoothing, conservative cDPO), "robust" (rDPO), "hinge" (SLiC) or
            "ipo" (on per-token mean log-probs).
        label_smoothing: assumed share of flipped labels, for "sigmoid" and "robust".
        sft_weight: weight of an added NLL loss on the chosen responses (RPO's alpha); 0 turns it off.
        precompute_reference: score the pairs with the reference once before training instead of every step.
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
        compile: compile the policy with torch.compile.
        lora: low-rank adapters instead of full fine-tuning ({r, alpha, dropout, targets}); see `CausalLM`. The
            reference is then the policy with its adapters disabled: no second copy is held.
    """

    stage_name = "dpo"

    def __init__(
        self,
        init_from: str | None = None,
        beta: float = 0.1,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
        sft_weight: float = 0.0,
        precompute_reference: bool = False,
        model_config: dict[str, Any] | None = None,
        learning_rate: float = 5e-6,
        min_lr: float = 5e-7,
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
            init_from=init_from, model_config=model_config, learning_rate=learning_rate, min_lr=min_lr,
            warmup_steps=warmup_steps, lr_decay_steps=lr_decay_steps, weight_decay=weight_decay, betas=betas,
            eval_generations=eval_generations, sample_generations=sample_generations, max_new_tokens=max_new_tokens,
            compile=compile, lora=lora,
        )  # fmt: skip
        if init_from is None:
            raise ConfigError("model.init_from is required: DPO starts the policy and its reference from a checkpoint")
        if loss_type not in DPO_LOSSES:
            raise ConfigError(f"model.loss_type must be one of {', '.join(DPO_LOSSES)}, got {loss_type!r}")
        if beta <= 0 or not 0 <= label_smoothing < 0.5 or sft_weight < 0:
            raise ConfigError("model.beta must be > 0, label_smoothing in [0, 0.5) and sft_weight >= 0")
        self.save_hyperparameters()
        self.reference: torch.nn.Module | None = None

    # ---- the reference ----------------------------------------------------------------------------

    @property
    def _average(self) -> bool:
        return self.hparams.loss_type == "ipo"

    @torch.no_grad()
    def _reference_logps(self, batch: dict[str, Any]) -> torch.Tensor:
        with self.reference_network() as reference:
            out = side_outputs(reference(batch["input_ids"]), batch["targets"])
        return out.mean_logps if self._average else out.logps

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.hparams.precompute_reference:
            self._precompute_reference()

    @torch.no_grad()
    def _precompute_reference(self) -> None:
        """Reference log-probs for every train and val pair, stored on the pairs; then the reference is freed."""
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
        for r in range(world):
            for j, i in enumerate(range(r, len(pairs), world)):
                pairs[i].reference_logps = (float(gathered[r, j, 0]), float(gathered[r, j, 1]))
        self.free_reference()

    # ---- the loss ---------------------------------------------------------------------------------

    def _losses(self, batch: dict[str, Any], out: SideOutputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = out.half
        if "reference_logps" in batch:
            reference = batch["reference_logps"]
        elif self.has_reference():
            reference = self._reference_logps(batch)
        else:
            raise RuntimeError("no reference log-probs: the batch has none and the reference model was freed")
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
