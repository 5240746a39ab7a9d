"""Trainer callbacks: token throughput and MFU, periodic sample generations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
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
