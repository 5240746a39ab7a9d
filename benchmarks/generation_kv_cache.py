#!/usr/bin/env python
"""Generation with the KV cache against recomputing the whole sequence at every new token.

Both paths decode greedily from the same random model (`--preset`, block_size raised to fit), the same batch of
`--batch` prompts of `--prompt` tokens, for `--new_tokens` tokens:

  (A) cache: `lit_llm.generation.generate`: one forward over the prompts fills the cache, then one token per step;
  (B) recompute: every step runs the model over the prompt and all tokens generated so far (what generation costs
      without a cache, as in nanoGPT's `generate`).

The tokens of both paths must be identical (checked). Runs alternate A B A B; the last line is the median over
rounds of recompute/cache time, i.e. how many times faster the cache is.

    python benchmarks/generation_kv_cache.py [--rounds 5] [--new_tokens 256] [--preset tiny] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lit_llm.generation import generate
from lit_llm.model import GPT, Config


@torch.inference_mode()
def generate_recompute(model: GPT, prompts: torch.Tensor, new_tokens: int) -> torch.Tensor:
    idx = prompts
    for _ in range(new_tokens):
        logits = model(idx)[:, -1, : model.config.vocab_size]
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    return idx[:, prompts.size(1) :]


def timed(fn) -> tuple[float, object]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new_tokens", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    config = Config.from_name(args.preset, block_size=args.prompt + args.new_tokens)
    model = GPT(config).to(device).eval()
    prompts = torch.randint(0, config.vocab_size, (args.batch, args.prompt), device=device)
    print(f"device {device}, threads {torch.get_num_threads()}, preset {args.preset} "
          f"({model.num_parameters() / 1e6:.1f}M parameters), batch {args.batch}, prompt {args.prompt} tokens, "
          f"{args.new_tokens} new tokens, greedy; {args.rounds} rounds (A B A B)")  # fmt: skip
    generate(model, prompts[:, :4], max_new_tokens=4, temperature=0)  # warm up both paths
    generate_recompute(model, prompts[:, :4], 4)
    cache_t, recompute_t, ratios = [], [], []
    for r in range(args.rounds):
        a, cached = timed(lambda: generate(model, prompts, max_new_tokens=args.new_tokens, temperature=0))
        b, recomputed = timed(lambda: generate_recompute(model, prompts, args.new_tokens))
        if cached != recomputed.tolist():
            raise SystemExit("the two paths generated different tokens")
        cache_t.append(a), recompute_t.append(b), ratios.append(b / a)
        tokens = args.batch * args.new_tokens
        print(f"  round {r + 1}: cache {a:6.2f} s ({tokens / a:7.0f} tok/s)   recompute {b:6.2f} s "
              f"({tokens / b:7.0f} tok/s)   speed-up {b / a:5.1f}x")  # fmt: skip
    print(f"cache: {statistics.median(cache_t):.2f} s, recompute: {statistics.median(recompute_t):.2f} s "
          "(medians; identical tokens)")  # fmt: skip
    print(f"KV cache speed-up at {args.new_tokens} new tokens: {statistics.median(ratios):.1f}x "
          f"(median of {args.rounds} rounds)")  # fmt: skip


if __name__ == "__main__":
    main()
