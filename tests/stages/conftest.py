"""Shared by the stage tests: an untrained small model saved as a lit_llm checkpoint, a reward model on it, a quiet
CPU Trainer, a callback recording logged metrics, and a reward an untrained model can learn."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from lit_llm.prepare.corpus import generate_corpus
from lit_llm.tasks import task_records
from lit_llm.checkpoint import load_checkpoint, submodule_state
from lit_llm.model import GPT, Config, RewardModel
from lit_llm.text.templates import load_style, style_to_dict
from lit_llm.text.tokenizer import Tokenizer, train_bpe

SMALL = {"n_layer": 2, "n_head": 4, "n_embd": 64, "intermediate_size": 128, "block_size": 96}


@pytest.fixture(scope="session")
def base_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lit_llm checkpoint of an untrained small model with a tokenizer that has seen the task phrasings."""
    texts = list(generate_corpus(300, seed=1)) + [r["instruction"] for r in task_records("train", per_task=200)]
    tokenizer = train_bpe(texts, vocab_size=512)
    return save_model(tmp_path_factory.mktemp("base") / "base.ckpt", tokenizer, seed=0)


def save_model(path: Path, tokenizer: Tokenizer, seed: int) -> Path:
    torch.manual_seed(seed)
    model = GPT(Config.from_name("tiny", **SMALL, vocab_size=tokenizer.vocab_size))
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    meta = {"stage": "causal_lm", "model_config": model.config.to_dict(), "tokenizer": tokenizer.to_json()}
    torch.save({"state_dict": state, "lit_llm": meta}, path)
    return path


def trainer(tmp_path: Path, max_steps: int, **kwargs) -> Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    return Trainer(**{**defaults, **kwargs})


def e_share(prompt: str, response: str) -> float:
    """The share of the response's characters that are the letter e: a reward an untrained model can learn."""
    return response.count("e") / max(len(response), 1)


class Recorder(Callback):
    """The logged metrics after every rollout batch and every validation run."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self.validations: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.steps.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    def on_validation_end(self, trainer, pl_module) -> None:
        self.validations.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})


@pytest.fixture(scope="session")
def reward_checkpoint(base_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reward-model checkpoint (untrained head) on the base model's backbone, tokenizer and the Alpaca style."""
    base = load_checkpoint(base_checkpoint)
    config = Config.from_dict(base["lit_llm"]["model_config"])
    torch.manual_seed(5)
    reward = RewardModel(config)
    reward.load_language_model(submodule_state(base["state_dict"]))
    meta = {**base["lit_llm"], "stage": "reward", "prompt_style": style_to_dict(load_style("alpaca"))}
    path = tmp_path_factory.mktemp("reward") / "reward.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in reward.state_dict().items()}, "lit_llm": meta}, path)
    return path
