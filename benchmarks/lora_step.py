"""LoRA against full fine-tuning: trainable parameters, optimizer state, checkpoint size and step time.

The same randomly initialized model, batch, loss and AdamW; "full" trains every parameter, "lora" trains rank-r
adapters on the chosen layers (`lit_llm.lora.apply_lora`) with the base frozen. A step is forward, backward and
optimizer step. Rounds alternate full, lora, full, lora, ...; each round times `--steps` steps after one untimed
warm-up step, and the headline is the median within-round ratio.

    python benchmarks/lora_step.py [--model llama-125m] [--targets qkv,attn_proj,fc,mlp_proj] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def build(args, lora: bool):
    from lit_llm.lora import LoRAConfig, apply_lora
    from lit_llm.model import GPT, Config

    torch.manual_seed(0)
    model = GPT(Config.from_name(args.model, block_size=args.seq))
    if lora:
        apply_lora(model, LoRAConfig(r=args.r, alpha=2 * args.r, targets=args.targets.split(",")))
    params = [p for p in model.parameters() if p.requires_grad]
    return model.train(), torch.optim.AdamW(params, lr=1e-4)


def time_steps(model, optimizer, batch, steps: int) -> float:
    from lit_llm.losses import next_token_loss

    idx, targets = batch
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        loss = next_token_loss(model(idx), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i:  # the first step allocates optimizer state
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llama-125m")
    parser.add_argument("--targets", default="qkv,attn_proj,fc,mlp_proj")
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    full, full_opt = build(args, lora=False)
    vocab = full.config.vocab_size
    batch = (torch.randint(0, vocab, (args.batch, args.seq), generator=g),
             torch.randint(0, vocab, (args.batch, args.seq), generator=g))  # fmt: skip
    lora, lora_opt = build(args, lora=True)
    total = sum(p.numel() for p in full.parameters())
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    print(f"model {args.model} ({total / 1e6:.1f}M parameters), batch {args.batch} x {args.seq}, "
          f"LoRA r={args.r} on {args.targets}, torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"trainable parameters: full {total:,}, lora {trainable:,} ({100 * trainable / total:.2f}%)")
    print(f"saved state (trainable fp32 + 2 AdamW moments): full {12 * total / 2**20:.1f} MiB, "
          f"lora {12 * trainable / 2**20:.2f} MiB")  # fmt: skip
    ratios, full_times, lora_times = [], [], []
    for round_ in range(args.rounds):
        a = time_steps(full, full_opt, batch, args.steps)
        b = time_steps(lora, lora_opt, batch, args.steps)
        full_times.append(a)
        lora_times.append(b)
        ratios.append(b / a)
        print(f"round {round_ + 1}: full {1000 * a:.0f} ms/step, lora {1000 * b:.0f} ms/step, ratio {b / a:.2f}")
    print(f"median: full {1000 * statistics.median(full_times):.0f} ms/step, "
          f"lora {1000 * statistics.median(lora_times):.0f} ms/step")  # fmt: skip
    print(f"headline: LoRA trains {100 * trainable / total:.2f}% of the parameters at "
          f"{statistics.median(ratios):.2f}x the step time of full fine-tuning")  # fmt: skip


if __name__ == "__main__":
    main()
