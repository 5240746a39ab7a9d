"""SFTModule: chaining from a checkpoint, response-only training, metrics, the prompt style saved in and reused
from the checkpoint, and real learning on the built-in tasks (held-out exact match before vs after)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import seed_everything

from lit_llm.checkpoint import load_checkpoint
from lit_llm.cli.commands import main
from lit_llm.data.sft import SFTDataModule
from lit_llm.text.templates import Chat, style_to_dict
from lit_llm.errors import ConfigError
from lit_llm.rollout.answers import evaluate_checkpoint
from lit_llm import generation
from lit_llm.rollout.checkpoints import generate_from_checkpoint, sample_checkpoint
from lit_llm.stages import SFTModule
from tests.stages.conftest import trainer

def test_sft_chains_trains_responses_and_saves_its_prompt_style(tmp_path: Path, base_checkpoint: Path,
                                                               monkeypatch) -> None:
    seed_everything(0)
    module = SFTModule(init_from=str(base_checkpoint), learning_rate=3e-3, warmup_steps=2, eval_generations=6,
                       sample_generations=2, max_new_tokens=8)
    dm = SFTDataModule(prompt_style="chat", tasks=["add", "count"], examples_per_task=40, val_examples_per_task=3,
                       max_length=96, batch_size=8)
    fit = trainer(tmp_path, 6, limit_val_batches=1, val_check_interval=6)
    fit.fit(module, dm)
    # Started from the base weights, with its tokenizer (the data module took it from init_from too).
    assert module.config.n_layer == 2 and dm.tokenizer.to_json() == module.tokenizer.to_json()
    metrics = {k: float(v) for k, v in fit.callback_metrics.items()}
    assert {"val/loss", "val/ppl", "val/token_accuracy", "val/exact_match", "val/reward",
            "val/exact_match/add", "val/exact_match/count"} <= set(metrics)
    assert metrics["val/ppl"] == pytest.approx(torch.tensor(metrics["val/loss"]).exp().item(), rel=1e-4)
    assert 0.0 <= metrics["val/token_accuracy"] <= 1.0

    path = tmp_path / "sft.ckpt"
    fit.save_checkpoint(path)
    meta = load_checkpoint(path)["lit_llm"]
    assert meta["stage"] == "sft"
    assert meta["prompt_style"] == style_to_dict(Chat()) == {"class_path": "lit_llm.text.templates.Chat",
                                                             "init_args": {}}
    # Generation reuses the style: the reply stops at <|end|>, which a raw continuation does not look for.
    texts, replies = sample_checkpoint(str(path), "What is 2 + 3?", max_new_tokens=8, temperature=0)
    assert replies and texts == generate_from_checkpoint(str(path), "What is 2 + 3?", max_new_tokens=8, temperature=0)
    # What the model is asked: the styled prompt, or with raw=True the text as it is.
    asked = []
    real_generate = generation.generate

    def recording_generate(model, rows, **kwargs):
        asked.append(rows)
        return real_generate(model, rows, **kwargs)

    monkeypatch.setattr(generation, "generate", recording_generate)
    _, raw_replies = sample_checkpoint(str(path), "What is 2 + 3?", max_new_tokens=4, raw=True)
    sample_checkpoint(str(path), "What is 2 + 3?", max_new_tokens=4)
    tok = module.tokenizer
    assert not raw_replies
    assert tok.decode(asked[0][0], skip_special_tokens=False) == "What is 2 + 3?"
    assert tok.decode(asked[1][0], skip_special_tokens=False) == "<|user|>\nWhat is 2 + 3?<|end|><|assistant|>\n"


def test_max_length_beyond_the_block_size_is_rejected(tmp_path: Path, base_checkpoint: Path) -> None:
    module = SFTModule(init_from=str(base_checkpoint))
    dm = SFTDataModule(tasks=["add"], examples_per_task=10, val_examples_per_task=2, max_length=200)
    with pytest.raises(ConfigError, match=r"data.max_length \(200\) exceeds the model's block_size \(96\)"):
        trainer(tmp_path, 1).fit(module, dm)


def test_sft_beats_the_same_model_before_sft_on_held_out_tasks(tmp_path: Path, base_checkpoint: Path) -> None:
    """A CPU-minute of SFT on two built-in tasks: held-out (test split) exact match and verifier reward rise
    from the untrained model's."""
    tasks = ["count", "sort"]
    kwargs = dict(split="test", tasks=tasks, per_task=40, max_new_tokens=16)
    before = evaluate_checkpoint(str(base_checkpoint), prompt_style="alpaca", **kwargs).scores
    seed_everything(0)
    module = SFTModule(init_from=str(base_checkpoint), learning_rate=3e-3, min_lr=3e-4, warmup_steps=10,
                       eval_generations=0)
    dm = SFTDataModule(tasks=tasks, examples_per_task=1500, val_examples_per_task=5, max_length=96, batch_size=16,
                       packing=True)
    fit = trainer(tmp_path, 500, limit_val_batches=0)
    fit.fit(module, dm)
    path = tmp_path / "sft.ckpt"
    fit.save_checkpoint(path)
    after = evaluate_checkpoint(str(path), **kwargs).scores
    print({k: (before[k], after[k]) for k in after})
    assert before["all"]["exact_match"] == 0.0 and before["all"]["n"] == after["all"]["n"] == 80
    assert after["all"]["exact_match"] >= 0.25
    assert after["all"]["reward"] >= before["all"]["reward"] + 0.2


def test_cli_fit_evaluate_and_generate(tmp_path: Path, base_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    config = {
        "seed_everything": 1,
        "trainer": {
            "accelerator": "cpu", "max_steps": 4, "log_every_n_steps": 2, "val_check_interval": 4,
            "limit_val_batches": 1, "enable_progress_bar": False, "default_root_dir": str(run),
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run)}},
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"dirpath": str(run / "checkpoints"), "save_last": True}},
                {"class_path": "lit_llm.callbacks.TokenThroughput", "init_args": {"window_size": 2}},
            ],
        },
        "model": {"class_path": "lit_llm.stages.SFTModule",
                  "init_args": {"init_from": str(base_checkpoint), "eval_generations": 4, "max_new_tokens": 4}},
        "data": {"class_path": "lit_llm.data.SFTDataModule",
                 "init_args": {"tasks": ["add"], "examples_per_task": 40, "val_examples_per_task": 4,
                               "max_length": 96, "batch_size": 4, "packing": True}},
    }
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(path)])
    (metrics_file,) = run.glob("lightning_logs/version_*/metrics.csv")
    logged = {k for row in csv.DictReader(metrics_file.open()) for k, v in row.items() if v}
    assert {"train/loss", "train/token_accuracy", "train/device/items_per_sec", "val/exact_match/add"} <= logged
    samples = [json.loads(line) for line in next(run.glob("lightning_logs/version_*/samples.jsonl")).open()]
    assert samples and set(samples[0]) == {"step", "prompt", "response", "reference"}
    capsys.readouterr()

    main(["evaluate", "--checkpoints", f"[{base_checkpoint},{run}]", "--tasks", "[add]", "--per_task", "5",
          "--max_new_tokens", "4"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "exact match on the test split of the built-in tasks (greedy answers):"
    assert out[1].split() == ["task", "n", str(base_checkpoint), str(run)]
    assert out[2].split()[:2] == ["add", "5"] and out[3].split()[:2] == ["all", "5"]
    main(["evaluate", "--checkpoints", f"[{run}]", "--tasks", "[add]", "--per_task", "5", "--max_new_tokens", "4",
          "--temperature", "0.7", "--samples", "2"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("(2 answer(s) per prompt sampled at temperature 0.7):")
    assert out[2].split()[:2] == ["add", "10"]  # 5 prompts x 2 samples

    main(["generate", "--checkpoint", str(run), "--prompt", "What is 2 + 3?", "--max_new_tokens", "4"])
    assert capsys.readouterr().out.startswith("user: What is 2 + 3?\nassistant: ")


def test_cli_names_a_missing_data_file(tmp_path: Path, base_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--model", "lit_llm.stages.SFTModule", f"--model.init_from={base_checkpoint}",
              "--data", "lit_llm.data.SFTDataModule", "--data.train", str(tmp_path / "missing.jsonl"),
              "--data.max_length", "64",  # fits the model's block: the file is the one thing wrong
              "--trainer.max_steps", "1", f"--trainer.default_root_dir={tmp_path}"])
    assert f"{tmp_path / 'missing.jsonl'}: no such file" in capsys.readouterr().err
