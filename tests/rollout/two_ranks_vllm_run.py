"""GRPO under FSDP or DDP on two CPU ranks with the vLLM engine, one engine per rank; run by
tests/rollout/test_vllm_engine.py as `python tests/rollout/two_ranks_vllm_run.py CHECKPOINT OUT_DIR fsdp|ddp` (Lightning
starts the second rank by running this script again). Each rank writes what the test checks to OUT_DIR/rank<N>.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer

from lit_llm.data.rl_prompts import PromptDataModule
from lit_llm.model import GPT
from lit_llm.rollout.sampler import RolloutSampler
from lit_llm.stages import GRPOModule
from tests.fsdp_cpu import CPUFSDPStrategy
from tests.stages.conftest import e_share

QUESTIONS = ["What is 2 + 3?", "Sort from smallest to largest: 3 1 2", "Spell the word 'fox'.", "Count the hens."]


class Gaps(Callback):
    def __init__(self) -> None:
        self.gaps: list[float] = []

    def on_train_batch_end(self, trainer, *args) -> None:
        if "rollout/logprob_diff_max" in trainer.callback_metrics:
            self.gaps.append(float(trainer.callback_metrics["rollout/logprob_diff_max"]))


def full_policy(module: GRPOModule) -> GPT:
    """The policy as a plain GPT: under FSDP gathered from both ranks (a collective), under DDP each rank's own."""
    if type(module.model).__name__ != "FullyShardedDataParallel":
        return module.model
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    plain = GPT(module.config)
    with FSDP.summon_full_params(module.model, writeback=False):
        state = {n.replace("_fsdp_wrapped_module.", ""): p.detach().clone() for n, p in module.model.named_parameters()}
    plain.load_state_dict(state, strict=False)
    return plain


def main(checkpoint: str, out: Path, strategy: str) -> None:
    torch.set_num_threads(1)
    module = GRPOModule(init_from=checkpoint, reward_functions=[e_share], max_completion_length=8, num_generations=4,
                        learning_rate=1e-2, min_lr=1e-2, eval_generations=0, samples_every_n_steps=1000,
                        rollout_engine="vllm", vllm={"gpu_memory_utilization": 0.05, "enforce_eager": True})
    dm = PromptDataModule(tokenizer=checkpoint, prompt_style="alpaca", batch_size=2, examples_per_task=10,
                          val_examples_per_task=1, seed=3)
    gaps = Gaps()
    trainer = Trainer(accelerator="cpu", devices=2, strategy=CPUFSDPStrategy() if strategy == "fsdp" else "ddp",
                      max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, callbacks=[gaps],
                      log_every_n_steps=1)  # fmt: skip
    trainer.fit(module, dm)

    plain = full_policy(module).eval()
    state = plain.state_dict()
    prompts = [module.tokenizer.encode(q) for q in QUESTIONS]
    native = RolloutSampler.for_style(module.tokenizer, None, max_new_tokens=8)
    engine_answers = module.sampler.generate(module.model, prompts, seed=0, greedy=True)
    result = {
        "rank": trainer.global_rank, "world_size": trainer.world_size, "updates": module.rollout_engines.updates,
        "gaps": gaps.gaps, "engine": engine_answers, "native": native.generate(plain, prompts, seed=0, greedy=True),
        "fingerprint": float(sum(t.double().sum() for t in state.values())),
    }  # fmt: skip
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), sys.argv[3])
