#!/usr/bin/env python
"""Where a PPO step's time goes: generating the rollouts, scoring them (policy, reference and value forward passes
and the reward), and training (num_ppo_epochs x num_mini_batches forward/backward/AdamW steps).

`PPOModule` runs `--steps` rollout batches (after one untimed) of `--batch` prompts of the built-in tasks, Alpaca
style, reward `lit_llm.tasks.verify`, through the Lightning Trainer; the module's own timers (logged as
time/generate, time/score, time/train) are read after each step. The model is a random `--preset` (or the
checkpoint given with `--init_from`, e.g. runs/sft/tiny after `make demo`): a random model never emits its stop
token, so every response is `--max_new_tokens` long, the most generation a step can cost. The last line is the
median share of the step spent generating.

    python benchmarks/ppo_step.py [--steps 8] [--batch 64] [--max_new_tokens 24] [--value_model critic]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer

from dpo_reference import make_checkpoint  # a random model and a tokenizer trained here, as a checkpoint

from lit_llm.data.rl_prompts import PromptDataModule
from lit_llm.stages import PPOModule


class StepTimes(Callback):
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        m = trainer.callback_metrics
        self.rows.append({k: float(m[k]) for k in ("time/generate", "time/score", "time/train",
                                                   "completions/mean_length")})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--max_new_tokens", type=int, default=24)
    parser.add_argument("--value_model", default="critic", choices=["critic", "head"])
    parser.add_argument("--num_ppo_epochs", type=int, default=4)
    parser.add_argument("--num_mini_batches", type=int, default=2)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--init_from", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        init = args.init_from or str(make_checkpoint(Path(folder), args.preset)[0])
        module = PPOModule(
            init_from=init, reward_function="lit_llm.tasks.verify", value_model=args.value_model,
            max_new_tokens=args.max_new_tokens, num_ppo_epochs=args.num_ppo_epochs,
            num_mini_batches=args.num_mini_batches, eval_generations=0,
        )  # fmt: skip
        dm = PromptDataModule(prompt_style=None if args.init_from else "alpaca", batch_size=args.batch,
                              examples_per_task=args.batch * (args.steps + 1), val_examples_per_task=1)  # fmt: skip
        times = StepTimes()
        optimizer_steps = (args.steps + 1) * args.num_ppo_epochs * args.num_mini_batches
        trainer = Trainer(
            accelerator="auto", devices=1, max_steps=optimizer_steps, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[times],
            default_root_dir=folder,
        )  # fmt: skip
        trainer.fit(module, datamodule=dm)
    rows = times.rows[1:]
    print(f"device {trainer.strategy.root_device}, threads {torch.get_num_threads()}, "
          f"{'checkpoint ' + args.init_from if args.init_from else 'random ' + args.preset}, {args.batch} prompts per "
          f"step, max_new_tokens {args.max_new_tokens}, value model {args.value_model}, "
          f"{args.num_ppo_epochs} epochs x {args.num_mini_batches} minibatches; {len(rows)} timed steps")  # fmt: skip
    fractions = []
    for i, r in enumerate(rows):
        total = r["time/generate"] + r["time/score"] + r["time/train"]
        fractions.append(r["time/generate"] / total)
        print(f"  step {i + 1}: generate {r['time/generate']:6.2f} s   score {r['time/score']:6.2f} s   "
              f"train {r['time/train']:6.2f} s   mean response {r['completions/mean_length']:5.1f} tokens")  # fmt: skip
    med = {k: statistics.median(r[k] for r in rows) for k in ("time/generate", "time/score", "time/train")}
    print("medians: " + "   ".join(f"{k.split('/')[1]} {v:.2f} s" for k, v in med.items()))
    print(f"share of a PPO step spent generating: {statistics.median(fractions):.2f} "
          f"(median of {len(rows)} steps)")  # fmt: skip


if __name__ == "__main__":
    main()
