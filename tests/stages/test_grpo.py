"""GRPOModule: a short CPU run raises a learnable reward; each estimator trains; beta 0 loads no reference; bad
rewards are skipped and counted; dynamic sampling drops and counts groups of equal rewards; a resumed run equals a
continuous one; bad options give one message naming the option."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lit_llm.checkpoint import load_checkpoint, load_model, submodule_state
from lit_llm.data.rl_prompts import PromptDataModule
from lit_llm.errors import ConfigError
from lit_llm.model import GPT
from lit_llm.stages import GRPOModule
from lit_llm.text.tokenizer import train_bpe
from tests.stages.conftest import Recorder, e_share, trainer

TRL_METRICS = {
    "reward", "reward_std", "rewards/e_share/mean", "frac_reward_zero_std", "entropy", "clip_ratio/low_mean",
    "clip_ratio/high_mean", "clip_ratio/region_mean", "completions/mean_length", "completions/clipped_ratio",
    "completions/mean_terminated_length", "time/generate", "time/score", "time/train", "loss",
}  # fmt: skip


def prompts(checkpoint: Path, **kwargs) -> PromptDataModule:
    defaults = dict(prompt_style="alpaca", batch_size=8, examples_per_task=40, val_examples_per_task=4, seed=3)
    return PromptDataModule(tokenizer=str(checkpoint), **{**defaults, **kwargs})


def grpo(checkpoint: Path, **kwargs) -> GRPOModule:
    defaults = dict(
        init_from=str(checkpoint), reward_functions=[e_share], max_completion_length=8, num_generations=4,
        learning_rate=1e-2, min_lr=1e-2, eval_generations=24, samples_every_n_steps=1000,
    )  # fmt: skip
    return GRPOModule(**{**defaults, **kwargs})


def test_grpo_raises_a_learnable_reward_on_held_out_prompts(base_checkpoint, tmp_path):
    """24 rollout batches from an untrained model: the held-out score (greedy answers to unseen prompts) and the
    training reward rise clearly; the first update's ratio is 1 (the sampler is the policy), so nothing clips."""
    torch.manual_seed(0)
    module, recorder = grpo(base_checkpoint, num_iterations=2, num_mini_batches=2), Recorder()
    dm = prompts(base_checkpoint)
    run = trainer(tmp_path, max_steps=24 * 4, callbacks=[recorder], val_check_interval=24,
                  check_val_every_n_epoch=None, log_every_n_steps=1)  # fmt: skip
    run.validate(module, datamodule=dm)
    before = recorder.validations[-1]["val/score"]
    run.fit(module, datamodule=dm)
    after = recorder.validations[-1]["val/score"]
    first, last = recorder.steps[0], recorder.steps[-4:]
    print(f"held-out score {before:.3f} -> {after:.3f}; reward {first['reward']:.3f} -> "
          f"{[round(s['reward'], 3) for s in last]}")  # fmt: skip
    assert after > before + 0.1
    assert sum(s["reward"] for s in last) / 4 > first["reward"] + 0.1
    assert TRL_METRICS <= set(first) and "kl" not in first  # beta 0: no reference, no KL
    assert module.reference is None
    assert all(math.isfinite(v) for s in recorder.steps for v in s.values())


@pytest.mark.parametrize("estimator", ["grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"])
@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo"])
def test_every_estimator_trains_with_a_reference_and_logs_its_kl(base_checkpoint, tmp_path, estimator, loss_type):
    """With beta > 0 the reference is the frozen init weights (KL 0 at the first step); the policy moves."""
    torch.manual_seed(0)
    module, recorder = grpo(base_checkpoint, advantage_estimator=estimator, loss_type=loss_type, beta=0.1), Recorder()
    run = trainer(tmp_path, max_steps=3, limit_val_batches=0, callbacks=[recorder], log_every_n_steps=1)
    run.fit(module, datamodule=prompts(base_checkpoint))
    init = submodule_state(load_checkpoint(base_checkpoint)["state_dict"])
    for name, p in module.reference.copy.named_parameters():
        assert torch.equal(p, init[name]) and not p.requires_grad, name
    assert recorder.steps[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert not torch.equal(module.model.lm_head.weight, init["lm_head.weight"])
    assert all(math.isfinite(v) for s in recorder.steps for v in s.values())


def test_bad_rewards_are_skipped_and_counted_and_weights_combine_rewards(base_checkpoint, tmp_path):
    """Two rewards with weights: the logged reward is the weighted sum; answers a reward raises on or returns NaN
    for are skipped, counted per reward and in `skipped`."""

    def flaky(prompt: str, response: str) -> float:
        if "Reverse" in prompt:
            raise RuntimeError("cannot score this")
        if "Sort" in prompt:
            return float("nan")
        return 1.0

    def constant(prompt: str, response: str) -> float:
        return 0.5

    torch.manual_seed(0)
    module = grpo(base_checkpoint, reward_functions=[flaky, constant], reward_weights=[2.0, -1.0])
    recorder = Recorder()
    run = trainer(tmp_path, max_steps=4, limit_val_batches=0, callbacks=[recorder], log_every_n_steps=1)
    with pytest.warns(UserWarning, match="cannot score this"):
        run.fit(module, datamodule=prompts(base_checkpoint))
    counts = module.rewards.counts[0]
    assert counts.responses == 4 * 8 * 4 and counts.raised > 0 and counts.not_a_number > 0
    assert sum(s["skipped"] for s in recorder.steps) == counts.skipped
    for step in recorder.steps:
        assert step["reward"] == pytest.approx(2.0 * 1.0 - 0.5)  # the answers that count
        assert step["rewards/flaky/mean"] == 1.0 and step["rewards/constant/mean"] == 0.5
        assert step["frac_reward_zero_std"] == 1.0  # equal rewards everywhere


def test_dynamic_sampling_drops_groups_of_equal_rewards_and_the_counts_add_up(base_checkpoint, tmp_path):
    """Prompts of two tasks always score 0 (their groups carry no signal): they are dropped and counted, further
    prompt batches fill the batch, and generated = dropped + trained + still held."""

    def some_tasks(prompt: str, response: str) -> float:
        if "capital" in prompt or "Reverse" in prompt:
            return 0.0
        return e_share(prompt, response)

    torch.manual_seed(0)
    module = grpo(base_checkpoint, reward_functions=[some_tasks], dynamic_sampling=True, max_generation_batches=3)
    recorder = Recorder()
    run = trainer(tmp_path, max_steps=4, limit_val_batches=0, callbacks=[recorder], log_every_n_steps=1)
    run.fit(module, datamodule=prompts(base_checkpoint))
    buffer = module.buffer
    stepped = {}
    for s in recorder.steps:
        if "dynamic_sampling/trained_groups" in s:
            stepped[s["episode"]] = s
    trained = sum(s["dynamic_sampling/trained_groups"] for s in stepped.values())
    assert run.global_step == 4 and len(stepped) == 4
    assert buffer.dropped > 0 and buffer.generated > 4 * 8  # some batches were topped up
    assert buffer.generated == buffer.dropped + trained + buffer.held_count
    assert all(s["dynamic_sampling/trained_groups"] == 8 for s in stepped.values())


def test_truncated_answers_carry_no_loss_and_the_overlong_penalty_lowers_rewards(base_checkpoint, tmp_path):
    """With a 3-token limit an untrained model never stops: every answer is truncated, so with
    mask_truncated_completions no token carries loss and the weights stay put; the overlong penalty at the limit
    is -factor on a constant reward."""
    torch.manual_seed(0)
    module = grpo(base_checkpoint, reward_functions=[lambda prompt, response: 1.0], max_completion_length=3,
                  mask_truncated_completions=True, overlong_buffer=2, overlong_penalty_factor=0.5)  # fmt: skip
    recorder = Recorder()
    run = trainer(tmp_path, max_steps=2, limit_val_batches=0, callbacks=[recorder], log_every_n_steps=1)
    run.fit(module, datamodule=prompts(base_checkpoint))
    init = submodule_state(load_checkpoint(base_checkpoint)["state_dict"])
    for step in recorder.steps:
        assert step["completions/clipped_ratio"] == 1.0
        assert step["reward"] == pytest.approx(1.0 - 0.5)
        assert step["loss"] == 0.0
    for name, p in module.model.named_parameters():
        assert torch.equal(p, init[name]), name


def test_resumed_run_matches_a_continuous_run_and_the_checkpoint_chains(base_checkpoint, tmp_path):
    """Answers are seeded by (sampling_seed, generation batch, prompt, index) and the loader resumes mid-epoch, so
    resuming from the checkpoint after 2 of 4 steps gives the continuous run's weights; the checkpoint holds no
    reference and loads as a plain GPT; the run writes its rollout table."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(ckpt_path=None, callbacks=()):
        torch.manual_seed(0)
        module = grpo(base_checkpoint, beta=0.05, num_iterations=2, dynamic_sampling=True,
                      samples_every_n_steps=1)  # fmt: skip
        fit = trainer(tmp_path, max_steps=4, limit_val_batches=0, callbacks=list(callbacks), enable_checkpointing=True)
        fit.fit(module, datamodule=prompts(base_checkpoint), ckpt_path=ckpt_path, weights_only=True)
        return module

    every_2 = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="s{step}", auto_insert_metric_name=False,
                              every_n_train_steps=2, save_top_k=-1)  # fmt: skip
    continuous = run(callbacks=[every_2])
    ckpt = load_checkpoint(tmp_path / "ckpt" / "s2.ckpt")
    assert ckpt["lit_llm"]["stage"] == "grpo" and not any(k.startswith("reference.") for k in ckpt["state_dict"])
    resumed = run(ckpt_path=str(tmp_path / "ckpt" / "s2.ckpt"))
    assert resumed.episodes == continuous.episodes and resumed.generation_batches == continuous.generation_batches
    assert resumed.rewards.counts[0].responses == continuous.rewards.counts[0].responses > 0
    for (name, a), b in zip(continuous.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    model, _ = load_model(tmp_path / "ckpt" / "s2.ckpt")
    assert isinstance(model, GPT)
    rollouts = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    assert rollouts and set(rollouts[0]) == {"step", "prompt", "response", "score"}


def takes_three(prompt: str, response: str, extra: str) -> float:
    return 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_generations=1), "num_generations must be >= 2 for advantage_estimator 'grpo'"),
        (dict(num_generations=1, advantage_estimator="rloo"), "num_generations must be >= 2"),
        (dict(epsilon_low=0.2, epsilon_high=0.1), r"epsilon_high \(0.1\) must be >= epsilon_low \(0.2\)"),
        (dict(delta=1.1), "delta"),
        (dict(reward_functions=["no_such_module.score"]), r"model.reward_functions\[0\] 'no_such_module.score'"),
        (dict(reward_functions=["lit_llm.tasks:nothing"]), "has no function 'nothing'"),
        (dict(reward_functions=[]), "needs at least one reward"),
        (dict(reward_weights=[1.0, 2.0]), "reward_weights has 2 weights for 1 rewards"),
        (dict(loss_type="sum"), "loss_type"),
        (dict(max_new_tokens=8), "max_completion_length"),
        (dict(temperature=0.0), "temperature must be > 0"),
        (dict(rollout_engine="sglang"), "model.rollout_engine must be 'native' or 'vllm', got 'sglang'"),
        (dict(rollout_engine="vllm", vllm={"gpu_util": 0.5}), r"model.vllm: unknown key\(s\) gpu_util; valid keys"),
        (dict(vllm={"enforce_eager": True}), "model.vllm options are set but model.rollout_engine is 'native'"),
        (dict(sync_every=0), "model.sync_every must be an integer >= 1, got 0"),
        (dict(tis_cap=2.0), "model.tis_cap corrects for the vLLM engine's sampling"),
        (dict(rollout_engine="vllm", tis_cap=0.0), "model.tis_cap must be a number > 0 or null, got 0.0"),
    ],
)
def test_bad_options_are_rejected_naming_the_option(base_checkpoint, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        grpo(base_checkpoint, **kwargs)


def test_wrong_signatures_batch_sizes_and_tokenizers_are_refused(base_checkpoint, reward_checkpoint,
                                                                          tmp_path):  # fmt: skip
    with pytest.raises(ConfigError, match=r"model.reward_functions\[0\]: .*takes_three.* must be callable as f"):
        grpo(base_checkpoint, reward_functions=[takes_three])
    with pytest.raises(ConfigError, match="data.batch_size .* must be a multiple of model.num_mini_batches"):
        trainer(tmp_path, max_steps=1).fit(grpo(base_checkpoint, num_mini_batches=3),
                                           datamodule=prompts(base_checkpoint))  # fmt: skip
    other = load_checkpoint(reward_checkpoint)
    other["lit_llm"]["tokenizer"] = train_bpe(["a different corpus entirely"] * 20, vocab_size=300).to_json()
    path = tmp_path / "other.ckpt"
    torch.save(other, path)
    with pytest.raises(ConfigError, match=r"model.reward_models\[0\]: reward model .* different tokenizer"):
        trainer(tmp_path, max_steps=1).fit(grpo(base_checkpoint, reward_models=[str(path)]),
                                           datamodule=prompts(base_checkpoint))  # fmt: skip


def test_prompts_that_leave_no_room_for_the_answer_are_skipped_and_counted(base_checkpoint, tmp_path):
    records = tmp_path / "prompts.jsonl"
    records.write_text('{"prompt": "What is 2 + 2?"}\n{"prompt": "' + "word " * 200 + '"}\n')
    dm = prompts(base_checkpoint, train=str(records), val=str(records), batch_size=1)
    trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(grpo(base_checkpoint, max_completion_length=16),
                                                            datamodule=dm)  # fmt: skip
    stats = dm.stats["train"]
    assert (stats.records, stats.examples, stats.skips.skipped) == (2, 1, {"prompt_too_long": 1})


def test_reference_answers_reach_reward_functions_that_take_them(base_checkpoint, tmp_path):
    """A reward with a `reference` parameter gets each record's reference answer (the built-in tasks' answers)."""
    seen: list[str | None] = []

    def with_reference(prompt: str, response: str, reference: str | None = None) -> float:
        seen.append(reference)
        return float(reference is not None and response.strip() == reference)

    module = grpo(base_checkpoint, reward_functions=[with_reference])
    trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(module, datamodule=prompts(base_checkpoint))
    assert len(seen) == 32 and all(isinstance(r, str) and r for r in seen)


def test_tis_weights_align_the_engines_log_probs_with_the_answers_tokens() -> None:
    """Each answer's engine log-probs fill its row from the first response token; tokens without one (past the
    engine's answer, or the native engine's empty rows) get weight 1, as do those off the mask."""
    import math

    from lit_llm.stages.engine_sync import RolloutEngines

    engines = RolloutEngines("vllm", None, 1, tis_cap=1.5)
    train = torch.log(torch.tensor([[0.5, 0.2, 0.3], [0.4, 0.9, 0.1]]))
    engine = [[math.log(0.25), math.log(0.4)], []]  # row 0: two tokens known; row 1: none
    mask = torch.tensor([[True, True, True], [True, True, False]])
    weights, stats = engines.tis_weights(train, engine, mask)
    # Row 0: 0.5 / 0.25 = 2 -> cap 1.5, 0.2 / 0.4 = 0.5, third token not covered -> 1; row 1 uncovered -> 1.
    torch.testing.assert_close(weights, torch.tensor([[1.5, 0.5, 1.0], [1.0, 1.0, 1.0]]))
    assert float(stats["rollout/tis_weight_mean"]) == pytest.approx(1.0)  # (1.5 + 0.5) / 2 covered tokens
    assert float(stats["rollout/tis_truncated_frac"]) == pytest.approx(0.5)
    assert RolloutEngines("native", None, 1).tis_weights(train, engine, mask) == (None, {})


def test_the_vllm_engine_is_marked_for_a_sync_at_fit_start_and_every_sync_every_updates() -> None:
    """The engine reloads the policy before it next generates: at the start of a fit (after any restore) and once
    `sync_every` optimizer steps have passed; nothing is synced here (vLLM is not needed)."""
    from lit_llm.stages.engine_sync import RolloutEngines

    engines = RolloutEngines("vllm", None, sync_every=2)
    assert not engines.engine._stale
    engines.start()
    assert engines.engine._stale
    engines.engine._stale = False  # as a sync leaves it
    engines.after_step()
    assert not engines.engine._stale and engines.updates == 1
    engines.after_step()
    assert engines.engine._stale and engines.updates == 2
    RolloutEngines("native", None, 1).after_step()  # no engine: nothing to mark
