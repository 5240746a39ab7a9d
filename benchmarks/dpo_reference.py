#!/usr/bin/env python
"""DPO step time and memory: a live reference model against reference log-probs precomputed in one pass.

Both runs train `DPOModule` (sigmoid loss, beta 0.1) on the same preference batches of the built-in tasks
(`--batch_size` pairs, so 2 x batch_size rows, Alpaca style) with AdamW:

  (A) live: every step also runs the frozen reference model forward over the batch;
  (B) precomputed: the reference log-probs were computed once before training (untimed, as in
      `precompute_reference: true`) and the reference model is freed.

Runs alternate A B A B; medians over rounds are reported, and the last line is the median within-round ratio
precomputed/live of the step time. Memory: on a GPU, the peak allocated memory of the timed steps; on a CPU, the
bytes of model state held while training (parameters, gradients, AdamW moments, and the reference's parameters).
The model is the `tiny` preset, or `--preset`; a tokenizer is trained in the script: nothing is downloaded.

    python benchmarks/dpo_reference.py [--rounds 5] [--steps 20] [--preset tiny] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lit_llm.prepare.corpus import generate_corpus
from lit_llm.data.preference import build_pairs, collate_pairs
from lit_llm.tasks import task_pairs, task_records
from lit_llm.text.templates import load_style
from lit_llm.text.tokenizer import train_bpe
from lit_llm.model import GPT, Config
from lit_llm.stages import DPOModule
from lit_llm.stages.optim import build_adamw
from lit_llm.stages.pairs import pair_step


def make_checkpoint(folder: Path, preset: str) -> tuple[Path, object]:
    texts = list(generate_corpus(300, seed=1)) + [r["instruction"] for r in task_records("train", per_task=200)]
    tokenizer = train_bpe(texts, vocab_size=1024)
    torch.manual_seed(0)
    model = GPT(Config.from_name(preset, vocab_size=tokenizer.vocab_size))
    meta = {"stage": "sft", "model_config": model.config.to_dict(), "tokenizer": tokenizer.to_json()}
    path = folder / "init.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "lit_llm": meta}, path)
    return path, tokenizer


def state_bytes(module: DPOModule, optimizer: torch.optim.Optimizer) -> int:
    params = list(module.model.parameters())
    tensors = params + [p.grad for p in params if p.grad is not None]
    tensors += [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    if module.reference is not None:
        tensors += list(module.reference.parameters())
    return sum(t.numel() * t.element_size() for t in tensors)


def run(
    init: Path, batches: list[dict], precomputed: bool, steps: int, device: str, warmup: int = 3
) -> tuple[float, int]:
    """(median seconds per step, memory bytes) of `steps` timed DPO steps."""
    module = DPOModule(init_from=str(init), precompute_reference=precomputed, eval_generations=0)
    module.setup("fit")
    module.configure_model()
    module.to(device).train()
    if precomputed:  # the stage's table of reference log-probs by pair id, then no reference model
        table = torch.zeros(sum(len(b["pair_ids"]) for b in batches), 2)
        for batch in batches:
            logps = module._reference_logps(batch).cpu()
            half = len(logps) // 2
            table[batch["pair_ids"].cpu()] = torch.stack([logps[:half], logps[half:]], dim=1)
        module.reference_table = table
        module.reference.free()
    optimizer = build_adamw(module.model, 1e-4, 0.0, (0.9, 0.95))
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss, _ = pair_step(module.model, batches[i % len(batches)], module._losses)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    memory = torch.cuda.max_memory_allocated() if device == "cuda" else state_bytes(module, optimizer)
    return statistics.median(times), memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as folder:
        init, tokenizer = make_checkpoint(Path(folder), args.preset)
        records = [(f"pair {i}", r) for i, r in enumerate(task_pairs("train", per_task=40))]
        pairs = build_pairs(records, tokenizer, load_style("alpaca"), max_length=128)
        for i, pair in enumerate(pairs):
            pair.pair_id = i  # as PreferenceDataModule numbers them
        pad = tokenizer.pad_id or 0
        batches = [collate_pairs(pairs[i : i + args.batch_size], pad) for i in range(0, len(pairs), args.batch_size)]
        batches = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()} for b in batches]
        print(f"device {device}, threads {torch.get_num_threads()}, preset {args.preset}, "
              f"{args.batch_size} pairs per step, {args.steps} timed steps x {args.rounds} rounds "
              "(A B A B)")  # fmt: skip
        live_t, pre_t, ratios, memory = [], [], [], {}
        for r in range(args.rounds):
            a, memory["live"] = run(init, batches, False, args.steps, device)
            b, memory["precomputed"] = run(init, batches, True, args.steps, device)
            live_t.append(a)
            pre_t.append(b)
            ratios.append(b / a)
            print(f"  round {r + 1}: live {a * 1000:7.1f} ms/step   precomputed {b * 1000:7.1f} ms/step   "
                  f"ratio {b / a:.2f}")  # fmt: skip
    what = "peak allocated" if device == "cuda" else "model state held"
    print(f"live reference:        {statistics.median(live_t) * 1000:7.1f} ms/step, {what} "
          f"{memory['live'] / 2**20:7.1f} MiB")  # fmt: skip
    print(f"precomputed reference: {statistics.median(pre_t) * 1000:7.1f} ms/step, {what} "
          f"{memory['precomputed'] / 2**20:7.1f} MiB")  # fmt: skip
    print(f"precomputed/live step time: {statistics.median(ratios):.2f}x (median of {args.rounds} rounds), memory "
          f"{memory['precomputed'] / memory['live']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
