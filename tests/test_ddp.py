"""DDP with 2 CPU processes (gloo) equals one process at the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from lit_llm.checkpoint import load_checkpoint, submodule_state
from lit_llm.stages import PPOModule
from tests.cli.test_commands import write_config


def _fit(tmp_path, token_dir, name: str, devices: int, batch_size: int):
    run_dir = tmp_path / name
    run_dir.mkdir()
    config = write_config(run_dir, token_dir)
    cmd = [
        sys.executable, "-m", "lit_llm.cli.commands", "fit", "--config", str(config),
        "--trainer.devices", str(devices), "--trainer.strategy", "ddp" if devices > 1 else "auto",
        "--trainer.max_steps", "4", "--trainer.limit_val_batches", "0",
        "--data.init_args.batch_size", str(batch_size),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = load_checkpoint(run_dir / "run" / "checkpoints" / "last.ckpt")
    return submodule_state(ckpt["state_dict"]), ckpt


def test_ddp_two_processes_match_one_process(tmp_path, token_dir):
    ddp_state, ddp_ckpt = _fit(tmp_path, token_dir, "ddp", devices=2, batch_size=4)
    single_state, _ = _fit(tmp_path, token_dir, "single", devices=1, batch_size=8)
    assert ddp_ckpt["global_step"] == 4
    # Each rank consumed 4 micro-batches of 4 windows.
    assert ddp_ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["consumed"] == 16
    for name, tensor in single_state.items():
        torch.testing.assert_close(ddp_state[name], tensor, atol=2e-5, rtol=1e-4, msg=name)


def test_dpo_precomputed_reference_under_ddp_matches_one_process_with_a_live_reference(tmp_path):
    """Two ranks each score a share of the pairs with the reference and gather them; training on those equals one
    process that runs the reference every step."""
    import yaml

    from lit_llm.prepare.corpus import generate_corpus
    from lit_llm.tasks import task_records
    from lit_llm.text.tokenizer import train_bpe
    from tests.stages.conftest import save_model

    texts = list(generate_corpus(200, seed=1)) + [r["instruction"] for r in task_records("train", per_task=100)]
    init = save_model(tmp_path / "init.ckpt", train_bpe(texts, vocab_size=512), seed=0)
    states = {}
    for name, devices, batch_size, precompute in (("ddp", 2, 2, True), ("single", 1, 4, False)):
        run = tmp_path / name
        config = {
            "seed_everything": 1,
            "trainer": {"accelerator": "cpu", "devices": devices, "strategy": "ddp" if devices > 1 else "auto",
                        "max_steps": 3, "limit_val_batches": 0, "logger": False, "enable_progress_bar": False,
                        "default_root_dir": str(run),
                        "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                       "init_args": {"dirpath": str(run), "save_last": True}}]},
            "model": {"class_path": "lit_llm.stages.DPOModule",
                      "init_args": {"init_from": str(init), "precompute_reference": precompute, "learning_rate": 1e-3,
                                    "warmup_steps": 0, "eval_generations": 0}},
            "data": {"class_path": "lit_llm.data.PreferenceDataModule",
                     "init_args": {"tasks": ["upper", "add"], "examples_per_task": 7, "val_examples_per_task": 2,
                                   "batch_size": batch_size, "max_length": 96}},
        }  # fmt: skip
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
        cmd = [sys.executable, "-m", "lit_llm.cli.commands", "fit", "--config", str(tmp_path / f"{name}.yaml")]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        states[name] = submodule_state(load_checkpoint(run / "last.ckpt")["state_dict"])
    initial = submodule_state(load_checkpoint(init)["state_dict"])
    for name, tensor in states["single"].items():
        assert not torch.equal(tensor, initial[name]) or "norm" in name
        torch.testing.assert_close(states["ddp"][name], tensor, atol=2e-5, rtol=1e-4, msg=name)


class RecordingPPOModule(PPOModule):
    """Writes, per rank and rollout batch, its responses and the sums of its whitened advantages."""

    def _experience(self, batch):
        exp = super()._experience(batch)
        record = {"rank": self.global_rank, "texts": exp["texts"],
                  "advantage_sum": float((exp["advantages"] * exp["mask"]).sum()),
                  "advantage_square_sum": float((exp["advantages"] ** 2 * exp["mask"]).sum()),
                  "tokens": int(exp["mask"].sum())}  # fmt: skip
        with open(os.path.join(os.environ["PPO_RECORD_DIR"], f"rank{self.global_rank}.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        return exp


def test_ppo_under_ddp_each_rank_generates_its_own_rollouts_and_whitening_spans_ranks(tmp_path):
    """Two ranks answer different prompts with their own samples; the advantages are whitened with statistics of
    both ranks' tokens, so they sum to zero with unit variance over the two ranks together, not on each."""
    import yaml

    from lit_llm.prepare.corpus import generate_corpus
    from lit_llm.tasks import task_records
    from lit_llm.text.tokenizer import train_bpe
    from tests.stages.conftest import save_model

    texts = list(generate_corpus(200, seed=1)) + [r["instruction"] for r in task_records("train", per_task=100)]
    init = save_model(tmp_path / "init.ckpt", train_bpe(texts, vocab_size=512), seed=0)
    config = {
        "seed_everything": 1,
        "trainer": {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "max_steps": 2, "limit_val_batches": 0,
                    "logger": False, "enable_progress_bar": False, "enable_checkpointing": False,
                    "default_root_dir": str(tmp_path)},
        "model": {"class_path": "tests.test_ddp.RecordingPPOModule",
                  "init_args": {"init_from": str(init), "reward_function": "lit_llm.tasks.verify",
                                "max_new_tokens": 6, "num_ppo_epochs": 1, "eval_generations": 0}},
        "data": {"class_path": "lit_llm.data.PromptDataModule",
                 "init_args": {"tokenizer": str(init), "prompt_style": "alpaca", "tasks": ["upper", "add"],
                               "examples_per_task": 8, "val_examples_per_task": 1, "batch_size": 4}},
    }  # fmt: skip
    (tmp_path / "ppo.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "lit_llm.cli.commands", "fit", "--config", str(tmp_path / "ppo.yaml")]
    env = {**os.environ, "PPO_RECORD_DIR": str(tmp_path)}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [[json.loads(line) for line in (tmp_path / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2
    for step0, step1 in zip(*ranks):
        assert step0["texts"] != step1["texts"]
        n = step0["tokens"] + step1["tokens"]
        assert abs(step0["advantage_sum"] + step1["advantage_sum"]) < 1e-3 * n
        assert (step0["advantage_square_sum"] + step1["advantage_square_sum"]) / (n - 1) == pytest.approx(1, abs=1e-3)
        # Whitening each rank alone would zero each sum; with shared statistics they are not.
        assert abs(step0["advantage_sum"]) > 1e-2


@pytest.mark.parametrize("loss_type, scale_rewards", [("grpo", "batch"), ("dapo", "group")])
def test_grpo_under_ddp_matches_one_process_at_the_same_global_batch(tmp_path, loss_type, scale_rewards):
    """Groups are generated on one rank and each answer is seeded by its prompt and index, batch statistics (batch
    std, dapo's token count) span the ranks: 2 ranks x 4 prompts train to the weights of 1 process x 8 prompts."""
    import yaml

    from lit_llm.prepare.corpus import generate_corpus
    from lit_llm.tasks import task_records
    from lit_llm.text.tokenizer import train_bpe
    from tests.stages.conftest import save_model

    texts = list(generate_corpus(200, seed=1)) + [r["instruction"] for r in task_records("train", per_task=100)]
    init = save_model(tmp_path / "init.ckpt", train_bpe(texts, vocab_size=512), seed=0)
    states = {}
    for name, devices, batch_size in (("ddp", 2, 4), ("single", 1, 8)):
        run = tmp_path / name
        config = {
            "seed_everything": 1,
            "trainer": {"accelerator": "cpu", "devices": devices, "strategy": "ddp" if devices > 1 else "auto",
                        "max_steps": 3, "limit_val_batches": 0, "logger": False, "enable_progress_bar": False,
                        "default_root_dir": str(run),
                        "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                       "init_args": {"dirpath": str(run), "save_last": True}}]},
            "model": {"class_path": "lit_llm.stages.GRPOModule",
                      "init_args": {"init_from": str(init), "reward_functions": ["tests.stages.conftest.e_share"],
                                    "num_generations": 4, "max_completion_length": 6, "loss_type": loss_type,
                                    "scale_rewards": scale_rewards, "num_mini_batches": 2, "learning_rate": 1e-3,
                                    "eval_generations": 0}},
            "data": {"class_path": "lit_llm.data.PromptDataModule",
                     "init_args": {"tokenizer": str(init), "prompt_style": "alpaca", "tasks": ["upper", "add"],
                                   "examples_per_task": 16, "val_examples_per_task": 1, "batch_size": batch_size}},
        }  # fmt: skip
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
        cmd = [sys.executable, "-m", "lit_llm.cli.commands", "fit", "--config", str(tmp_path / f"{name}.yaml")]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        states[name] = submodule_state(load_checkpoint(run / "last.ckpt")["state_dict"])
    initial = submodule_state(load_checkpoint(init)["state_dict"])
    for name, tensor in states["single"].items():
        assert not torch.equal(tensor, initial[name]) or "norm" in name
        torch.testing.assert_close(states["ddp"][name], tensor, atol=2e-5, rtol=1e-4, msg=name)
