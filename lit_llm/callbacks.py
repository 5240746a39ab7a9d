"""Trainer callbacks: token throughput and MFU, periodic sample generations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch import callbacks as lightning_callbacks
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lit_llm.generation import generate_text


def _batch_size(batch: dict[str, Any]) -> int:
    return batch["input_ids"].size(0)


def _num_tokens(batch: dict[str, Any]) -> int:
    # Padded batches (SFT) say how many of their positions are real tokens; padding is not throughput.
    return int(batch.get("num_tokens", batch["input_ids"].numel()))


class TokenThroughput(ThroughputMonitor):
    """Lightning's ThroughputMonitor for token batches: samples/s, tokens/s, FLOP/s and MFU.

    MFU needs the module's `flops_per_batch` (stages measure it with `measure_flops`) and the
    device's peak, which Lightning looks up from the device name and precision; on a CPU there is
    no known peak, so MFU is not logged there.
    """

    def __init__(self, window_size: int = 50, separator: str = "/") -> None:
        super().__init__(batch_size_fn=_batch_size, length_fn=_num_tokens, window_size=window_size, separator=separator)


class SampleGeneration(pl.Callback):
    """Generate from fixed prompts every `every_n_steps` optimizer steps and at the end of training.

    Samples are printed, appended to `samples.jsonl` in the run's log folder, and sent to the logger
    as a text table when it supports one (W&B).
    """

    def __init__(
        self,
        prompts: list[str],
        every_n_steps: int = 200,
        max_new_tokens: int = 48,
        temperature: float = 0.8,
        top_k: int | None = 50,
        seed: int = 0,
    ) -> None:
        self.prompts = prompts
        self.every_n_steps = every_n_steps
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.seed = seed
        self._last_step = -1

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.generate(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self._last_step:
            self.generate(trainer, pl_module)

    def generate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[str]:
        # Every rank generates (a sharded model all-gathers in lockstep) and every rank reads log_dir
        # (it is a collective); only rank 0 reports.
        self._last_step = trainer.global_step
        log_dir = trainer.log_dir or trainer.default_root_dir
        tokenizer = getattr(pl_module, "tokenizer", None)
        if tokenizer is None or not self.prompts:
            return []
        model = pl_module.model
        if type(model).__name__ == "FullyShardedDataParallel":
            # Decoding calls the blocks outside the root module's forward, which FSDP does not allow.
            rank_zero_warn("SampleGeneration is skipped under FSDP; generate from a consolidated checkpoint")
            self.every_n_steps = 0
            return []
        texts = generate_text(
            model,
            tokenizer,
            self.prompts,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            seed=self.seed,
        )
        if trainer.is_global_zero:
            self._report(trainer, log_dir, texts)
        return texts

    def _report(self, trainer: pl.Trainer, log_dir: str | None, texts: list[str]) -> None:
        rank_zero_info(f"samples at step {trainer.global_step}:")
        for prompt, text in zip(self.prompts, texts):
            rank_zero_info(f"  {prompt!r} -> {text!r}")
        rows = [[trainer.global_step, p, t] for p, t in zip(self.prompts, texts)]
        write_samples(trainer, log_dir, ["step", "prompt", "completion"], rows)


def write_samples(
    trainer: pl.Trainer, log_dir: str | None, columns: list[str], rows: list[list[Any]], key: str = "samples"
) -> None:
    """Append generated samples to `log_dir/{key}.jsonl` and send them to loggers with a text table (W&B)."""
    if log_dir:
        path = Path(log_dir) / f"{key}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            for row in rows:
                f.write(json.dumps(dict(zip(columns, row))) + "\n")
    for logger in trainer.loggers:
        if hasattr(logger, "log_text"):
            logger.log_text(key=key, columns=columns, data=rows)


class ValidationSummary(pl.Callback):
    """Print one line per validation run (readable in logs where a progress bar is not)."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if not values:
            return
        when = "sanity check" if trainer.sanity_checking else f"step {trainer.global_step}"
        rank_zero_info(f"validation ({when}): " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(values.items())))


class ModelSummary(lightning_callbacks.ModelSummary):
    """Lightning's model summary, without its FLOPs column and total when Lightning could not count them.

    Lightning counts FLOPs only for a module with an `example_input_array` and prints "0 Total Flops" otherwise;
    lit_llm's stages measure the FLOPs of a training micro-batch themselves (`flops_per_batch`, on the meta device)
    for TokenThroughput's FLOP/s and MFU."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int,
                  **summarize_kwargs: Any) -> None:
        from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

        if total_flops:
            return lightning_callbacks.ModelSummary.summarize(
                summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                total_flops=total_flops, **summarize_kwargs,
            )
        columns = [column for column in summary_data if column[0] != "FLOPs"]
        table = _format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, *columns
        )
        rank_zero_info("\n" + "\n".join(line for line in table.splitlines() if not line.endswith("Total Flops")))


class RichProgressBar(lightning_callbacks.RichProgressBar):
    """Lightning's rich progress bar; a run bounded by steps shows "Epoch 1 · step 120/500", not "Epoch 1/-2"."""

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        description = f"Epoch {current_epoch}"
        if trainer.max_steps > 0:
            description += f" · step {trainer.global_step}/{trainer.max_steps}"
        if len(self.validation_description) > len(description):
            description = f"{description:{len(self.validation_description)}}"
        return description


def use_lit_llm_displays(trainer: pl.Trainer) -> None:
    """Give Lightning's own model summaries (plain or rich) and rich progress bar, as the Trainer made them or the
    config named them, the corrected displays above; their settings stay (the classes add no state; a rich summary
    becomes the plain table, whose FLOPs figures can be left out)."""
    swaps = {lightning_callbacks.ModelSummary: ModelSummary, lightning_callbacks.RichModelSummary: ModelSummary,
             lightning_callbacks.RichProgressBar: RichProgressBar}
    for callback in trainer.callbacks:
        if type(callback) in swaps:
            callback.__class__ = swaps[type(callback)]
