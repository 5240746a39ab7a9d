#!/usr/bin/env python
"""Where a GRPO step's time goes (generating, scoring, training) and its tokens/s, against PPO at the same batch.

For each shape of `--shapes` (tiny, llama-125m), a random model of that preset and a tokenizer trained here are
saved as a checkpoint (nothing is downloaded). Both stages answer prompts of the built-in tasks, Alpaca style,
reward `lit_llm.tasks.verify`, at the same rollout batch of `--prompts` x `--generations` answers of at most
`--max-completion-length` tokens, with one optimizer step per rollout batch:

  (A) GRPOModule: num_generations answers per prompt, num_iterations 1, num_mini_batches 1 (beta 0: no reference);
  (B) PPOModule: samples_per_prompt the same, a value head, num_ppo_epochs 1, num_mini_batches 1 (with reference).

Each run goes through the Lightning Trainer for `--steps` rollout batches after one untimed; the modules' own
timers (time/generate, time/score, time/train) are read after every step and their medians taken. Note the split:
GRPO's score is the reward alone and its train holds the experience pass; PPO's score holds the policy, reference
and value forward passes as well as the reward. A random model never emits its stop token, so every answer is
max-completion-length long. Runs alternate A B A B (`--repeats` rounds); the table gives the medians over rounds,
gen tok/s (answer tokens per second of generating) and train tok/s (prompt + answer tokens per second of
training), and the median within-round GRPO/PPO ratio of the step time. The last line is the headline.

    python benchmarks/grpo_step.py [--shapes tiny,llama-125m] [--repeats 3] [--steps 4] [--prompts 4]
                                   [--generations 8] [--max-completion-length 16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from dpo_reference import make_checkpoint  # a random model and a tokenizer trained here, as a checkpoint

from lit_llm.data.rl_prompts import PromptDataModule
from lit_llm.stages import GRPOModule, PPOModule

PHASES = ("generate", "score", "train")
METHODS = ("grpo", "ppo")


class StepTimes(Callback):
    """Per rollout batch: the three phase times, answer tokens and prompt tokens."""

    def __init__(self, answers_per_prompt: int) -> None:
        self.k = answers_per_prompt
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        m = trainer.callback_metrics
        row = {p: float(m[f"time/{p}"]) for p in PHASES}
        answers = len(batch["prompt_ids"]) * self.k
        row["answer_tokens"] = float(m["completions/mean_length"]) * answers
        row["prompt_tokens"] = float(sum(len(p) for p in batch["prompt_ids"]) * self.k)
        self.rows.append(row)


def run(method: str, init: Path, args: argparse.Namespace, folder: str) -> dict[str, float]:
    """Medians over the timed steps of one run: seconds per phase, total, gen tok/s and train tok/s."""
    common: dict[str, Any] = dict(init_from=str(init), eval_generations=0)
    if method == "grpo":
        module: LightningModule = GRPOModule(
            reward_functions=["lit_llm.tasks.verify"], num_generations=args.generations, num_iterations=1,
            num_mini_batches=1, max_completion_length=args.max_completion_length, **common,
        )  # fmt: skip
    else:
        module = PPOModule(
            reward_function="lit_llm.tasks.verify", value_model="head", samples_per_prompt=args.generations,
            num_ppo_epochs=1, num_mini_batches=1, max_new_tokens=args.max_completion_length, **common,
        )  # fmt: skip
    dm = PromptDataModule(train="builtin:tasks", tokenizer=str(init), prompt_style="alpaca", batch_size=args.prompts,
                          examples_per_task=args.prompts * (args.steps + 1), val_examples_per_task=1)  # fmt: skip
    times = StepTimes(args.generations)
    trainer = Trainer(
        accelerator=args.accelerator, devices=1, max_steps=args.steps + 1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=[times], default_root_dir=folder,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    rows = times.rows[1:]  # the first step warms up
    assert rows, f"{method}: no timed step (raise --steps)"
    out = {p: statistics.median(r[p] for r in rows) for p in PHASES}
    out["total"] = statistics.median(sum(r[p] for p in PHASES) for r in rows)
    out["gen_tok_s"] = statistics.median(r["answer_tokens"] / r["generate"] for r in rows)
    out["train_tok_s"] = statistics.median((r["answer_tokens"] + r["prompt_tokens"]) / r["train"] for r in rows)
    out["answer_len"] = statistics.median(r["answer_tokens"] for r in rows) / (args.prompts * args.generations)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="tiny,llama-125m", help="comma-separated presets")
    parser.add_argument("--repeats", type=int, default=3, help="A B rounds (GRPO then PPO)")
    parser.add_argument("--steps", type=int, default=4, help="timed rollout batches per run (after one untimed)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per rollout batch")
    parser.add_argument("--generations", type=int, default=8, help="answers per prompt (GRPO's group)")
    parser.add_argument("--max-completion-length", type=int, default=16)
    parser.add_argument("--accelerator", default="cpu")
    args = parser.parse_args()
    answers = args.prompts * args.generations
    print(f"{args.accelerator}, threads {torch.get_num_threads()}, {args.prompts} prompts x {args.generations} = "
          f"{answers} rollouts per step, max {args.max_completion_length} answer tokens, one optimizer step per "
          f"rollout batch; {args.steps} timed steps per run, {args.repeats} rounds of GRPO, PPO")  # fmt: skip
    header = (f"{'shape':<12}{'method':<7}{'generate s':>11}{'score s':>9}{'train s':>9}{'total s':>9}"
              f"{'gen tok/s':>11}{'train tok/s':>13}{'answer len':>12}{'grpo/ppo':>10}")  # fmt: skip
    table: list[str] = []
    headline = ""
    for shape in args.shapes.split(","):
        with tempfile.TemporaryDirectory() as folder:
            init = make_checkpoint(Path(folder), shape)[0]
            results: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
            for r in range(args.repeats):
                for method in METHODS:
                    start = time.perf_counter()
                    results[method].append(run(method, init, args, folder))
                    print(f"  {shape} round {r + 1} {method}: step {results[method][-1]['total']:.2f} s "
                          f"(run {time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
        ratio = statistics.median(g["total"] / p["total"] for g, p in zip(results["grpo"], results["ppo"]))
        med = {m: {k: statistics.median(x[k] for x in results[m]) for k in results[m][0]} for m in METHODS}
        for m in METHODS:
            x = med[m]
            table.append(f"{shape:<12}{m:<7}{x['generate']:>11.3f}{x['score']:>9.3f}{x['train']:>9.3f}"
                         f"{x['total']:>9.3f}{x['gen_tok_s']:>11.0f}{x['train_tok_s']:>13.0f}{x['answer_len']:>12.1f}"
                         f"{ratio if m == 'grpo' else 1.0:>10.2f}")  # fmt: skip
        if not headline:  # the first shape's
            g, p = med["grpo"], med["ppo"]
            headline = (f"headline: grpo step {g['total']:.2f} s (generate {g['generate']:.2f}, score "
                        f"{g['score']:.2f}, train {g['train']:.2f}) vs ppo {p['total']:.2f} s (generate "
                        f"{p['generate']:.2f}, score {p['score']:.2f}, train {p['train']:.2f}), grpo/ppo {ratio:.2f}"
                        f" at {answers} rollouts, {shape} shape, {args.accelerator.upper()}")  # fmt: skip
    print(header)
    print("\n".join(table))
    print(headline)


if __name__ == "__main__":
    main()
