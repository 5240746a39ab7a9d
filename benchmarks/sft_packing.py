#!/usr/bin/env python
"""SFT throughput: padded batches against packed batches on the built-in verifiable tasks.

Both runs train the `tiny` preset (n_layer 4, n_embd 128, block 128) through `SFTModule.forward`, with the same
examples (Alpaca style, `--per_task` examples of each task), AdamW and `next_token_loss`:

  (A) padded: each row is one example, padded to the longest in its batch of `--batch_size` rows;
  (B) packed: examples are packed best-fit into rows of at most `--max_length` tokens, with per-example
      positions and a document mask (`packed_attention_mask`).

Throughput counts real tokens only (padding is not work done for the model). Runs alternate A B A B and the
medians over rounds are reported; the last line is the median within-round ratio packed/padded.
A tokenizer is trained in the script on the built-in corpus and task prompts: nothing is downloaded.

    python benchmarks/sft_packing.py [--rounds 5] [--steps 30] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lit_llm.prepare.corpus import generate_corpus
from lit_llm.data.sft import build_examples, collate, pack
from lit_llm.tasks import task_records
from lit_llm.text.templates import load_style
from lit_llm.text.tokenizer import train_bpe
from lit_llm.losses import next_token_loss
from lit_llm.stages import SFTModule
from lit_llm.stages.optim import build_adamw


def batches(rows: list, batch_size: int, pad_id: int, packed: bool) -> list[dict]:
    return [collate(rows[i : i + batch_size], pad_id, packed) for i in range(0, len(rows) - batch_size + 1, batch_size)]


def run(module: SFTModule, data: list[dict], steps: int, warmup: int = 3) -> tuple[float, float]:
    """(real tokens per second, share of positions that are padding) over `steps` timed steps."""
    optimizer = build_adamw(module.model, 1e-3, 0.0, (0.9, 0.95))
    tokens, positions = 0, 0
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        batch = data[i % len(data)]
        loss = next_token_loss(module(batch), batch["targets"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            tokens += batch["num_tokens"]
            positions += batch["input_ids"].numel()
    return tokens / (time.perf_counter() - start), 1 - tokens / positions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--per_task", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    records = task_records("train", per_task=args.per_task, seed=0)
    tokenizer = train_bpe(list(generate_corpus(2000, seed=0)) + [r["instruction"] for r in records], vocab_size=2048)
    examples = build_examples(((str(i), r) for i, r in enumerate(records)), tokenizer, load_style("alpaca"),
                              args.max_length)
    padded_rows = [[e] for e in examples]
    packed_rows = [[examples[i] for i in b] for b in pack([len(e.input_ids) for e in examples], args.max_length)]
    data = {
        "padded": batches(padded_rows, args.batch_size, tokenizer.pad_id, packed=False),
        "packed": batches(packed_rows, args.batch_size, tokenizer.pad_id, packed=True),
    }
    lengths = [len(e.input_ids) for e in examples]
    print(f"{len(examples)} examples, {statistics.mean(lengths):.1f} tokens on average (max {max(lengths)}); "
          f"{len(packed_rows)} packed rows of <= {args.max_length} ({len(examples) / len(packed_rows):.2f} per row)")

    results: dict[str, list[float]] = {"padded": [], "packed": []}
    ratios = []
    print(f"{'round':>5}  {'padded tok/s':>12}  {'pad %':>6}  {'packed tok/s':>12}  {'pad %':>6}")
    for r in range(args.rounds):
        row = {}
        for name in ("padded", "packed"):
            torch.manual_seed(0)
            module = SFTModule(model="tiny", model_config={"vocab_size": tokenizer.vocab_size})
            module.configure_model()
            row[name] = run(module, data[name], args.steps)
            results[name].append(row[name][0])
        ratios.append(row["packed"][0] / row["padded"][0])
        print(f"{r:>5}  {row['padded'][0]:>12,.0f}  {100 * row['padded'][1]:>5.1f}%  "
              f"{row['packed'][0]:>12,.0f}  {100 * row['packed'][1]:>5.1f}%")
    padded, packed = statistics.median(results["padded"]), statistics.median(results["packed"])
    print(f"median real tokens/s: padded {padded:,.0f}, packed {packed:,.0f}")
    print(f"SFT packed/padded real-token throughput ratio: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
