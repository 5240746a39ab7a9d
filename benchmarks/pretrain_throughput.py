#!/usr/bin/env python
"""Pretraining throughput: the Lightning Trainer path against a plain PyTorch loop.

Both paths train nanoGPT's CPU "baby GPT" (preset `baby-gpt`: n_layer 4, n_head 4, n_embd 128,
block_size 64, vocab 65) at micro-batch 12 on the same batches, with the same optimizer
(`build_adamw` + `warmup_cosine_scheduler`), the same loss (`next_token_loss`) and the same gradient
clipping (norm 1.0). Runs alternate A B A B ... and the medians over rounds are reported.

  (A) trainer: `CausalLM` fitted by `lightning.pytorch.Trainer` on a `PretrainDataModule`;
      a callback records `time.perf_counter()` in `on_train_batch_start`.
  (B) plain:   a hand-written loop over the same data module's `train_dataloader()`;
      the time is recorded as each batch is obtained.

Each run executes `--warmup + --iters` steps. Time per iteration is measured from the start of batch
`warmup` to the start of the last batch (`iters - 1` intervals), identically for both paths, so
data loading, forward, backward, clipping, the optimizer and the scheduler step are all inside it.

Per run the table also shows `step-med` (the median single step, robust to a stall), `cpu` (process
CPU time / wall time over the timed window) and the 1-minute load average: on a small shared machine
single runs drift by 10% or more, so trust the medians over several rounds, not one round.

The token file is generated (deterministic random ids) in a temporary folder: nothing is downloaded.
The last line printed is `trainer/plain time ratio: X`: the median over rounds of the ratio of the two
paths' per-step medians (ratios are taken within a round, so the machine's slow phases cancel).

    python benchmarks/pretrain_throughput.py [--rounds 9] [--warmup 20] [--iters 150] [--threads N]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

from lit_llm.data import PretrainDataModule
from lit_llm.prepare.shards import TokenWriter
from lit_llm.losses import next_token_loss
from lit_llm.model import GPT, Config
from lit_llm.stages import CausalLM
from lit_llm.stages.optim import build_adamw, warmup_cosine_scheduler

MODEL = "baby-gpt"
VOCAB = 65
BLOCK = 64
BATCH = 12
# nanoGPT's Shakespeare-char settings, scaled to the short run; they do not affect the speed.
LR, MIN_LR, WARMUP_LR_STEPS, WEIGHT_DECAY, BETAS = 1e-3, 1e-4, 10, 0.1, (0.9, 0.99)
GRAD_CLIP = 1.0


def write_tokens(data_dir: Path, num_tokens: int, seed: int) -> None:
    """A deterministic, random-ish token stream: a noisy walk over the vocabulary (not i.i.d. noise)."""
    rng = np.random.default_rng(seed)
    steps = rng.integers(-3, 4, size=num_tokens)
    ids = np.mod(np.cumsum(steps), VOCAB)
    noise = rng.random(num_tokens) < 0.1
    ids[noise] = rng.integers(0, VOCAB, size=int(noise.sum()))
    with TokenWriter(data_dir / "train.bin", vocab_size=VOCAB) as writer:
        writer.write(ids, documents=1)


def make_datamodule(data_dir: Path) -> PretrainDataModule:
    return PretrainDataModule(data_dir=str(data_dir), block_size=BLOCK, batch_size=BATCH, val_file=None)


def seconds_per_iter(stamps: list[float], warmup: int) -> float:
    """From the start of batch `warmup` to the start of the last batch recorded."""
    timed = stamps[warmup:]
    return (timed[-1] - timed[0]) / (len(timed) - 1)


# ---- (A) the Lightning Trainer path --------------------------------------------------------------


class BatchTimer(Callback):
    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.cpu_stamps: list[float] = []
        self.first_loss: float | None = None
        self.threads: int | None = None

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        self.stamps.append(time.perf_counter())
        self.cpu_stamps.append(time.process_time())

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            self.first_loss = float(outputs["loss"])
            self.threads = torch.get_num_threads()


def run_trainer(data_dir: Path, steps: int, seed: int, threads: int) -> tuple[list[float], list[float], float, int]:
    torch.set_num_threads(threads)
    seed_everything(seed, verbose=False)
    module = CausalLM(
        model=MODEL,
        vocab_size=VOCAB,
        learning_rate=LR,
        min_lr=MIN_LR,
        warmup_steps=WARMUP_LR_STEPS,
        weight_decay=WEIGHT_DECAY,
        betas=BETAS,
    )
    timer = BatchTimer()
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        max_steps=steps,
        gradient_clip_val=GRAD_CLIP,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        logger=False,
        callbacks=[timer],
        default_root_dir=str(data_dir / "trainer_root"),
    )
    trainer.fit(module, datamodule=make_datamodule(data_dir))
    assert len(timer.stamps) == steps, (len(timer.stamps), steps)
    return timer.stamps, timer.cpu_stamps, timer.first_loss, timer.threads


# ---- (B) the plain PyTorch loop ------------------------------------------------------------------


def run_plain(data_dir: Path, steps: int, seed: int, threads: int) -> tuple[list[float], list[float], float, int]:
    torch.set_num_threads(threads)
    seed_everything(seed, verbose=False)
    config = Config.from_name(MODEL, vocab_size=VOCAB)
    model = GPT(config)
    model.train()
    optimizer = build_adamw(model, LR, WEIGHT_DECAY, BETAS)
    scheduler = warmup_cosine_scheduler(optimizer, LR, MIN_LR, WARMUP_LR_STEPS, steps)
    dm = make_datamodule(data_dir)
    dm.setup("fit")
    loader = dm.train_dataloader()

    stamps: list[float] = []
    cpu_stamps: list[float] = []
    first_loss = None
    step, epoch = 0, 0
    while step < steps:
        loader.sampler.set_epoch(epoch)  # what the Trainer does at each epoch start
        for batch in loader:
            stamps.append(time.perf_counter())
            cpu_stamps.append(time.process_time())
            logits = model(batch["input_ids"])
            loss = next_token_loss(logits, batch["targets"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
            scheduler.step()
            if step == 0:
                first_loss = loss.item()
            step += 1
            if step >= steps:
                break
        epoch += 1
    return stamps, cpu_stamps, first_loss, torch.get_num_threads()


# ---- driver ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="A B rounds (each runs both paths once)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps at the start of every run")
    parser.add_argument("--iters", type=int, default=150, help="timed steps per run")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--tokens", type=int, default=500_000, help="tokens in the generated train file")
    args = parser.parse_args()
    if args.rounds < 1 or args.warmup < 0 or args.iters < 2:
        parser.error("need --rounds >= 1, --warmup >= 0 and --iters >= 2")

    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)

    steps = args.warmup + args.iters
    tokens_per_iter = BATCH * BLOCK
    config = Config.from_name(MODEL, vocab_size=VOCAB)
    with torch.device("meta"):
        n_params = GPT(config).num_parameters()
    print(
        f"model {MODEL}: n_layer {config.n_layer}, n_head {config.n_head}, n_embd {config.n_embd}, "
        f"block_size {BLOCK}, vocab {VOCAB} (padded {config.padded_vocab_size}), {n_params:,} parameters"
    )
    print(
        f"micro-batch {BATCH} x {BLOCK} = {tokens_per_iter} tokens/iter; {args.warmup} warmup + {args.iters} "
        f"timed steps per run; {args.rounds} rounds; torch {torch.__version__}, {args.threads} threads"
    )

    results: dict[str, list[float]] = {"trainer": [], "plain": []}
    step_medians: dict[str, list[float]] = {"trainer": [], "plain": []}
    first_losses: dict[str, float] = {}
    runners = {"trainer": run_trainer, "plain": run_plain}
    with tempfile.TemporaryDirectory(prefix="lit_llm_bench_") as tmp:
        data_dir = Path(tmp)
        write_tokens(data_dir, args.tokens, args.seed)
        print(f"data: {args.tokens:,} generated tokens in {data_dir}")
        print()
        # step-med: median of the single steps (robust to stalls); cpu: process CPU time / wall time
        # over the timed window; far below `threads` x 100% means the CPU was shared with other work.
        print(f"{'round':>5}  {'path':<8} {'ms/iter':>9} {'step-med':>9} {'tokens/s':>9} {'cpu':>6} {'load':>5}")
        for r in range(1, args.rounds + 1):
            for name in ("trainer", "plain"):  # A B A B ...
                stamps, cpu_stamps, first_loss, threads = runners[name](data_dir, steps, args.seed, args.threads)
                if threads != args.threads:
                    raise RuntimeError(f"{name}: ran with {threads} threads, not {args.threads}")
                first_losses.setdefault(name, first_loss)
                sec = seconds_per_iter(stamps, args.warmup)
                step_median = statistics.median(b - a for a, b in zip(stamps[args.warmup :], stamps[args.warmup + 1 :]))
                cpu = (cpu_stamps[-1] - cpu_stamps[args.warmup]) / (stamps[-1] - stamps[args.warmup])
                results[name].append(sec)
                step_medians[name].append(step_median)
                print(
                    f"{r:>5}  {name:<8} {sec * 1e3:>9.3f} {step_median * 1e3:>9.3f} {tokens_per_iter / sec:>9.0f} "
                    f"{cpu:>6.0%} {os.getloadavg()[0]:>5.2f}",
                    flush=True,
                )

    print()
    print(
        f"first-step loss: trainer {first_losses['trainer']:.6f}, plain {first_losses['plain']:.6f} "
        f"(|diff| {abs(first_losses['trainer'] - first_losses['plain']):.2e})"
    )
    medians = {name: statistics.median(v) for name, v in results.items()}
    for name, sec in medians.items():
        print(f"median {name:<8} {sec * 1e3:8.3f} ms/iter  {tokens_per_iter / sec:9.0f} tokens/s")
    print(f"ratio of the medians above: {medians['trainer'] / medians['plain']:.3f}")
    print(f"median of per-round ratios of ms/iter: {paired_median(results):.3f}")
    # Headline: each round pairs a trainer run with the plain run right after it, so a slow phase of
    # the machine hits both; the per-step median keeps one stall from deciding a round.
    print(f"trainer/plain time ratio: {paired_median(step_medians):.3f}")


def paired_median(values: dict[str, list[float]]) -> float:
    return statistics.median(t / p for t, p in zip(values["trainer"], values["plain"]))


if __name__ == "__main__":
    main()
