"""Stages under FSDP, on one CPU process (tests.fsdp_cpu): weights from `init_from` load through the wrapped root
and train as without FSDP, with norm clipping (which Lightning refuses under FSDP); the RL stages under FSDP need
the vLLM engine and say so. The vLLM runs are in tests/rollout/test_vllm_engine.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import seed_everything

from lit_llm.errors import ConfigError
from lit_llm.stages import GRPOModule, PPOModule, RewardModule
from tests.fsdp_cpu import CPUFSDPStrategy, own_process_group
from tests.stages.conftest import e_share, trainer
from tests.stages.test_preference import data


def _reward_run(tmp_path: Path, base_checkpoint: Path, strategy) -> RewardModule:
    seed_everything(0)
    module = RewardModule(init_from=str(base_checkpoint), learning_rate=2e-3, warmup_steps=1)
    kwargs = {"strategy": strategy} if strategy is not None else {}
    fit = trainer(tmp_path, 3, limit_val_batches=0, gradient_clip_val=0.05, **kwargs)
    fit.fit(module, data(tasks=["upper"], examples_per_task=24, batch_size=4))
    return module


def _plain_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    if type(model).__name__ != "FullyShardedDataParallel":
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with FSDP.summon_full_params(model, writeback=False):
        return {n.replace("_fsdp_wrapped_module.", ""): p.detach().clone() for n, p in model.named_parameters()}


def test_a_stage_from_a_checkpoint_trains_under_fsdp_with_norm_clipping_as_without(tmp_path, base_checkpoint):
    """The reward model from init_from, three steps with gradient_clip_val: the same weights with and without
    FSDP (one rank, so the same arithmetic). Before, a sharded model loaded Block by Block broke at its first
    forward pass, and Lightning refused gradient_clip_val under FSDP."""
    plain = _reward_run(tmp_path / "plain", base_checkpoint, None)
    with own_process_group():
        sharded = _reward_run(tmp_path / "fsdp", base_checkpoint, CPUFSDPStrategy())
    assert type(sharded.model).__name__ == "FullyShardedDataParallel"
    ours, theirs = _plain_state(sharded.model), _plain_state(plain.model)
    assert ours.keys() <= theirs.keys() and len(ours) > 10
    moved = 0.0
    start = torch.load(base_checkpoint, weights_only=True)["state_dict"]
    for name, tensor in ours.items():
        torch.testing.assert_close(tensor, theirs[name], rtol=1e-4, atol=5e-5, msg=name)  # Adam: 4e-3 moved
        if f"model.{name}" in start:
            moved = max(moved, float((tensor - start[f"model.{name}"]).abs().max()))
    assert moved > 1e-4, "the weights should have trained"


@pytest.mark.parametrize("stage", ["grpo", "ppo"])
def test_rl_stages_under_fsdp_on_the_native_engine_say_to_use_vllm(tmp_path, base_checkpoint, stage):
    from lit_llm.data.rl_prompts import PromptDataModule

    if stage == "grpo":
        module = GRPOModule(init_from=str(base_checkpoint), reward_functions=[e_share], num_generations=2)
    else:
        module = PPOModule(init_from=str(base_checkpoint), reward_function=e_share, value_model="head")
    dm = PromptDataModule(tokenizer=str(base_checkpoint), batch_size=2, examples_per_task=4, val_examples_per_task=1)
    with own_process_group(), pytest.raises(ConfigError, match="under FSDP generates with vLLM: set "
                                                                "model.rollout_engine vllm"):
        trainer(tmp_path, 1, strategy=CPUFSDPStrategy()).fit(module, dm)
