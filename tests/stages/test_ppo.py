"""PPOModule: a short CPU run raises a simple reward; frozen models stay frozen; bad rewards and configs are handled."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lit_llm.checkpoint import load_checkpoint, load_model, submodule_state
from lit_llm.data.rl_prompts import PromptDataModule
from lit_llm.text.tokenizer import Tokenizer
from lit_llm.errors import CheckpointError, ConfigError
from lit_llm.model import GPT
from lit_llm.stages import PPOModule
from tests.stages.conftest import SMALL, Recorder, e_share, trainer


def prompts(checkpoint: Path, **kwargs) -> PromptDataModule:
    defaults = dict(prompt_style="alpaca", batch_size=16, examples_per_task=40, val_examples_per_task=4, seed=3)
    return PromptDataModule(tokenizer=str(checkpoint), **{**defaults, **kwargs})


def ppo(checkpoint: Path, **kwargs) -> PPOModule:
    defaults = dict(
        init_from=str(checkpoint), reward_function=e_share, max_new_tokens=8, temperature=1.0, learning_rate=1e-2,
        min_lr=1e-2, kl_coef=0.01, num_ppo_epochs=2, num_mini_batches=2, eval_generations=24,
        samples_every_n_steps=1000,
    )  # fmt: skip
    return PPOModule(**{**defaults, **kwargs})


def test_ppo_raises_the_reward_on_held_out_prompts(base_checkpoint, tmp_path):
    """30 rollout batches on CPU: the held-out score rises well above the untrained model's while the KL to the
    reference stays bounded; the first rollout has exactly zero KL (the policy is the reference)."""
    torch.manual_seed(0)
    module, recorder = ppo(base_checkpoint), Recorder()
    dm = prompts(base_checkpoint)
    run = trainer(tmp_path, max_steps=30 * 4, callbacks=[recorder], val_check_interval=30, check_val_every_n_epoch=None,
                  log_every_n_steps=1)
    run.validate(module, datamodule=dm)
    before = recorder.validations[-1]["val/score"]
    run.fit(module, datamodule=dm)
    after = recorder.validations[-1]["val/score"]
    first, last = recorder.steps[0], recorder.steps[-5:]
    assert first["objective/kl"] == 0.0
    assert first["val/ratio"] == pytest.approx(1.0, abs=0.05)
    print(f"held-out score {before:.3f} -> {after:.3f}; KL {[round(s['objective/kl'], 2) for s in last]}")
    assert after > before + 0.1
    assert sum(s["objective/scores"] for s in last) / 5 > first["objective/scores"] + 0.1
    assert all(0 <= s["objective/kl"] < 20 for s in last)
    assert all(math.isfinite(v) for s in recorder.steps for v in s.values())


def test_frozen_models_never_change_and_the_optimizer_holds_policy_and_critic(base_checkpoint, reward_checkpoint,
                                                                              tmp_path):  # fmt: skip
    """With a reward model and a critic initialized from it: the reference equals the init weights and the reward
    model its checkpoint after training, neither has gradients or optimizer state; the critic and policy moved."""
    torch.manual_seed(0)
    module = ppo(base_checkpoint, reward_function=None, reward_model=str(reward_checkpoint), value_model="critic")
    run = trainer(tmp_path, max_steps=4, limit_val_batches=0)
    run.fit(module, datamodule=prompts(base_checkpoint))
    init = submodule_state(load_checkpoint(base_checkpoint)["state_dict"])
    reward_init = submodule_state(load_checkpoint(reward_checkpoint)["state_dict"])
    for name, p in module.reference.copy.named_parameters():
        assert torch.equal(p, init[name]) and not p.requires_grad and p.grad is None, name
    rm = module.reward_source.module.model
    for name, p in rm.named_parameters():
        assert torch.equal(p, reward_init[name]) and p.grad is None, name
    assert not module.reference.training and not rm.training
    optimized = {id(p) for group in run.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in [*module.model.parameters(), *module.critic.parameters()]}
    assert not torch.equal(module.critic.score_head.weight, reward_init["score_head.weight"])
    assert not torch.equal(module.model.lm_head.weight, init["lm_head.weight"])


def test_value_head_checkpoint_chains_and_resumes(base_checkpoint, tmp_path):
    """With a value head: the checkpoint holds policy and head but no reference, loads as a plain GPT for the
    next stage, and a resumed run restores the KL coefficient and episode count."""
    torch.manual_seed(0)
    module = ppo(base_checkpoint, value_model="head", kl_target=1.0, kl_horizon=100)
    run = trainer(tmp_path, max_steps=8, limit_val_batches=0, enable_checkpointing=True)
    run.fit(module, datamodule=prompts(base_checkpoint))
    path = tmp_path / "ppo.ckpt"
    run.save_checkpoint(path)
    ckpt = load_checkpoint(path)
    keys = ckpt["state_dict"].keys()
    assert "value_head.weight" in keys and not any(k.startswith(("reference.", "critic.")) for k in keys)
    assert ckpt["lit_llm"]["stage"] == "ppo" and ckpt["ppo"]["episodes"] == 32
    assert ckpt["ppo"]["kl_coef"] != 0.05  # the adaptive controller moved it
    model, _ = load_model(path)
    assert isinstance(model, GPT)
    torch.testing.assert_close(model.lm_head.weight, module.model.lm_head.weight)
    resumed = ppo(base_checkpoint, value_model="head", kl_target=1.0, kl_horizon=100)
    trainer(tmp_path / "resume", max_steps=8, limit_val_batches=0).fit(
        resumed, datamodule=prompts(base_checkpoint), ckpt_path=path
    )
    assert resumed.kl_coef == ckpt["ppo"]["kl_coef"] and resumed.episodes == 32


def test_missing_eos_penalty_and_bad_rewards_are_counted(base_checkpoint, tmp_path):
    """A function that raises on some prompts and returns NaN or inf on others: those rollouts are skipped or
    clipped and counted; responses that never stop lose missing_eos_penalty."""

    def flaky(prompt: str, response: str) -> float:
        if "Reverse" in prompt:
            raise RuntimeError("cannot score this")
        if "Sort" in prompt:
            return float("nan")
        if "capital" in prompt:
            return float("inf")
        return 1.0

    torch.manual_seed(0)
    module, recorder = ppo(base_checkpoint, reward_function=flaky, reward_clip=4.0), Recorder()
    run = trainer(tmp_path, max_steps=8, limit_val_batches=0, callbacks=[recorder], log_every_n_steps=1)
    with pytest.warns(UserWarning, match="cannot score this"):
        run.fit(module, datamodule=prompts(base_checkpoint))
    counts = module.reward_counts
    assert counts.responses == 32 and counts.raised > 0 and counts.not_a_number > 0 and counts.clipped > 0
    assert counts.skipped == counts.raised + counts.not_a_number
    skipped = sum(s["objective/skipped"] for s in recorder.steps)
    assert skipped == counts.skipped
    assert "cannot score this" in counts.first["raised"] and "Reverse" in counts.first["raised"]
    assert "Sort" in counts.first["not_a_number"] and "inf" in counts.first["clipped"]
    # The scored rollouts score 1.0, or 4.0 for a clipped inf.
    assert all(1.0 <= step["objective/scores"] <= 4.0 for step in recorder.steps)


def test_stop_strings_end_responses_and_missing_eos_penalty_applies_to_the_rest(base_checkpoint, tmp_path):
    """A response is cut after the token that completes a stop string and counts as ended; the others lose
    missing_eos_penalty from a constant score of 1."""
    torch.manual_seed(0)
    module = ppo(base_checkpoint, reward_function=lambda prompt, response: 1.0, missing_eos_penalty=0.5,
                 stop_strings=["e"])  # fmt: skip
    recorder = Recorder()
    run = trainer(tmp_path, max_steps=8, limit_val_batches=0, callbacks=[recorder], log_every_n_steps=1)
    run.fit(module, datamodule=prompts(base_checkpoint))
    for step in recorder.steps:
        ended = step["val/num_eos_tokens"]
        assert 0 < ended < 16
        assert step["objective/scores"] == pytest.approx(1.0 - 0.5 * (16 - ended) / 16, abs=1e-6)


def test_reward_model_with_another_tokenizer_is_refused(base_checkpoint, reward_checkpoint, tmp_path):
    other = load_checkpoint(reward_checkpoint)
    tokenizer = Tokenizer(json_str=other["lit_llm"]["tokenizer"])
    from lit_llm.text.tokenizer import train_bpe

    other["lit_llm"]["tokenizer"] = train_bpe(["a different corpus entirely"] * 20, vocab_size=300).to_json()
    path = tmp_path / "other.ckpt"
    torch.save(other, path)
    module = ppo(base_checkpoint, reward_function=None, reward_model=str(path))
    with pytest.raises(CheckpointError, match="different tokenizer"):
        trainer(tmp_path, max_steps=1).fit(module, datamodule=prompts(base_checkpoint))
    assert tokenizer.vocab_size == 512


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(init_from=None), "init_from is required"),
        (dict(reward_model="x.ckpt"), "exactly one of"),
        (dict(reward_function=None), "exactly one of"),
        (dict(reward_function="lit_llm.tasks:no_such_function"), "no function 'no_such_function'"),
        (dict(reward_function="no_such_module.verify"), "cannot import 'no_such_module'"),
        (dict(temperature=0.0), "temperature must be > 0"),
        (dict(value_model="both"), "value_model"),
        (dict(kl_estimator="k2"), "kl_estimator"),
        (dict(num_mini_batches=0), "num_mini_batches"),
    ],
)
def test_bad_configuration_is_rejected(base_checkpoint, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ppo(base_checkpoint, **kwargs)


def test_prompts_that_leave_no_room_and_odd_minibatches_are_rejected(base_checkpoint, tmp_path):
    too_long = prompts(base_checkpoint, max_prompt_length=SMALL["block_size"])
    with pytest.raises(ConfigError, match="exceeds the model's block_size"):
        trainer(tmp_path, max_steps=1).fit(ppo(base_checkpoint), datamodule=too_long)
    with pytest.raises(ConfigError, match="must be a multiple of model.num_mini_batches"):
        odd = ppo(base_checkpoint, num_mini_batches=3)
        trainer(tmp_path, max_steps=1).fit(odd, datamodule=prompts(base_checkpoint))


def test_default_prompt_room_skips_prompts_that_leave_no_room_for_a_response(base_checkpoint, tmp_path):
    """Without max_prompt_length, prompts longer than block_size - max_new_tokens are skipped and counted."""
    records = tmp_path / "prompts.jsonl"
    records.write_text('{"prompt": "What is 2 + 2?"}\n{"prompt": "' + "word " * 200 + '"}\n{"prompt": ""}\n')
    dm = prompts(base_checkpoint, train=str(records), val=str(records))
    module = ppo(base_checkpoint, max_new_tokens=16)
    trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(module, datamodule=dm)
    assert dm.max_prompt_length == SMALL["block_size"] - 16
    stats = dm.stats["train"]
    assert (stats.records, stats.examples, stats.skips.skipped) == (3, 1, {"prompt_too_long": 1, "empty_prompt": 1})


def test_cli_reports_a_bad_reward_function_in_one_message(capsys):
    """A stage that rejects its arguments while LightningCLI builds it gives one message, not a traceback."""
    from lit_llm.cli.commands import main

    config = Path(__file__).resolve().parents[2] / "configs" / "ppo" / "tiny.yaml"
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(config), "--model.init_args.reward_function", "no_such_module.score"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "lit-llm: error: invalid configuration" in err
    assert "model.reward_function 'no_such_module.score': cannot import 'no_such_module'" in err
    assert "Traceback" not in err and "Namespace(" not in err


def test_resumed_run_matches_a_continuous_run(base_checkpoint, tmp_path):
    """Rollouts are seeded by (sampling_seed, rollout batch, rank) and the prompt loader resumes mid-epoch, so
    resuming from the checkpoint written after 2 of 4 rollout batches trains to the same weights as the run that
    wrote it; the run also writes its sample rollouts."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(ckpt_path=None, callbacks=()):
        torch.manual_seed(0)
        module = ppo(base_checkpoint, value_model="critic")
        fit = trainer(tmp_path, max_steps=16, limit_val_batches=0, callbacks=list(callbacks), enable_checkpointing=True)
        fit.fit(module, datamodule=prompts(base_checkpoint), ckpt_path=ckpt_path, weights_only=True)
        return module

    every_2 = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="s{step}", auto_insert_metric_name=False,
                              every_n_train_steps=8, save_top_k=-1)  # fmt: skip
    continuous = run(callbacks=[every_2])
    rollouts = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    resumed = run(ckpt_path=str(tmp_path / "ckpt" / "s8.ckpt"))
    assert resumed.episodes == continuous.episodes == 64
    for (name, a), b in zip(continuous.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    for (name, a), b in zip(continuous.critic.state_dict().items(), resumed.critic.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert rollouts and set(rollouts[0]) == {"step", "prompt", "response", "score"}
