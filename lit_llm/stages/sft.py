"""SFTModule: supervised fine-tuning — next-token loss on response tokens only, packed or padded batches."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from lit_llm.errors import ConfigError
from lit_llm.losses import next_token_loss
from lit_llm.metrics import token_accuracy
from lit_llm.model import packed_attention_mask
from lit_llm.stages.causal_lm import CausalLM


class SFTModule(CausalLM):
    """Fine-tune a GPT on instruction or chat data: the loss covers the response tokens the data module marks.

    Args:
        init_from: the lit_llm checkpoint (pretraining or an earlier stage) to start from; None trains from scratch.
        model: preset used only without `init_from`.
        model_config: fields of the model config to override (e.g. {dropout: 0.1}).
        learning_rate: peak learning rate, reached at the end of warmup.
        min_lr: floor the cosine decays to.
        warmup_steps: optimizer steps of linear warmup.
        lr_decay_steps: step at which the cosine reaches `min_lr`; None uses the Trainer's max_steps.
        weight_decay: AdamW decay of matrices.
        betas: AdamW betas.
        eval_generations: validation prompts answered greedily at each validation run; for prompts of the
            built-in tasks, the verifier's exact match and reward are logged per task (val/exact_match/...).
        sample_generations: how many of those answers are printed and logged as text.
        max_new_tokens: longest generated answer.
        compile: compile the model with torch.compile.
        lora: low-rank adapters instead of full fine-tuning ({r, alpha, dropout, targets}); see `CausalLM`.
    """

    stage_name = "sft"

    def __init__(
        self,
        init_from: str | None = None,
        model: str = "tiny",
        model_config: dict[str, Any] | None = None,
        learning_rate: float = 3e-4,
        min_lr: float = 3e-5,
        warmup_steps: int = 50,
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
            model=model,
            model_config=model_config,
            learning_rate=learning_rate,
            min_lr=min_lr,
            warmup_steps=warmup_steps,
            lr_decay_steps=lr_decay_steps,
            weight_decay=weight_decay,
            betas=betas,
            init_from=init_from,
            compile=compile,
            lora=lora,
        )
        if eval_generations < 0 or sample_generations < 0 or max_new_tokens < 1:
            raise ConfigError("model.eval_generations and sample_generations must be >= 0, max_new_tokens >= 1")

    # ---- steps ------------------------------------------------------------------------------------

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "segment_ids" in batch:
            mask = packed_attention_mask(batch["segment_ids"])
            return self.model(batch["input_ids"], position_ids=batch["position_ids"], attention_mask=mask)
        return self.model(batch["input_ids"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        loss = next_token_loss(logits, batch["targets"])
        logging_step = self._logging_step()
        if logging_step or self.trainer.progress_bar_callback is not None:
            self.log("train/loss", loss, prog_bar=True)
        if logging_step:
            correct, counted = token_accuracy(logits.detach(), batch["targets"])
            self.log("train/token_accuracy", correct / counted.clamp(min=1))
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def _eval_step(self, batch: dict[str, Any]) -> None:
        logits = self(batch)
        targets = batch["targets"]
        correct, _ = token_accuracy(logits, targets)
        self.val_metrics.update(next_token_loss(logits, targets, reduction="sum"), targets, correct)

    def _eval_epoch_end(self, prefix: str) -> None:
        super()._eval_epoch_end(prefix)
        if prefix == "val":
            self._answer_eval_prompts()

    def _answer_eval_prompts(self) -> None:
        dm = self.trainer.datamodule
        limit = self.hparams.eval_generations
        if not limit or self.tokenizer is None or self.prompt_style is None or not hasattr(dm, "eval_prompts"):
            return
        if type(self.model).__name__ == "FullyShardedDataParallel":
            return  # decoding calls blocks outside the root forward, which FSDP forbids
        from lit_llm.eval.tasks import score_answers

        items = dm.eval_prompts(limit)
        conversations = [messages for messages, _, _ in items]
        result = score_answers(
            self.model, self.tokenizer, self.prompt_style, conversations, [task for _, _, task in items],
            max_new_tokens=self.hparams.max_new_tokens,
        )
        for task, scores in result.scores.items():
            name = "val/exact_match" if task == "all" else f"val/exact_match/{task}"
            self.log(name, scores["exact_match"])
            if task == "all":
                self.log("val/reward", scores["reward"])
        log_dir = self.trainer.log_dir  # a collective under DDP: every rank asks
        if self.trainer.is_global_zero:
            self._report_samples(items, result.responses, log_dir)

    def _report_samples(self, items: list, responses: list[str], log_dir: str | None) -> None:
        from lit_llm.callbacks import write_samples

        shown = list(zip(items, responses))[: self.hparams.sample_generations]
        if not shown:
            return
        step = self.trainer.global_step
        rank_zero_info(f"answers at step {step}:")
        rows = []
        for (messages, reference, _), response in shown:
            prompt = messages[-1]["content"]
            rank_zero_info(f"  {prompt!r} -> {response!r} (reference {reference!r})")
            rows.append([step, prompt, response, reference])
        write_samples(self.trainer, log_dir, ["step", "prompt", "response", "reference"], rows)
