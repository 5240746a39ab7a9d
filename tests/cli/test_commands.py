"""The lit-llm command: fit from YAML end to end, generate, validate, and its error messages."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from lit_llm.cli.commands import main

SMALL = {"n_layer": 2, "n_head": 4, "n_embd": 64, "intermediate_size": 128, "block_size": 32}


def write_config(tmp_path: Path, data_dir: Path, **model_args) -> Path:
    run = tmp_path / "run"
    config = {
        "seed_everything": 1,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": 6,
            "log_every_n_steps": 2,
            "val_check_interval": 3,
            "limit_val_batches": 2,
            "enable_progress_bar": False,
            "default_root_dir": str(run),
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run)}},
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"dirpath": str(run / "checkpoints"), "save_last": True},
                },
                {"class_path": "lit_llm.callbacks.TokenThroughput", "init_args": {"window_size": 2}},
                {"class_path": "lit_llm.callbacks.ValidationSummary"},
                {
                    "class_path": "lit_llm.callbacks.SampleGeneration",
                    "init_args": {"prompts": ["Once upon"], "every_n_steps": 3, "max_new_tokens": 5},
                },
            ],
        },
        "model": {
            "class_path": "lit_llm.stages.CausalLM",
            "init_args": {"model": "tiny", "model_config": SMALL, "warmup_steps": 2, **model_args},
        },
        "data": {
            "class_path": "lit_llm.data.PretrainDataModule",
            "init_args": {"data_dir": str(data_dir), "block_size": 32, "batch_size": 4},
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_fit_from_yaml_then_validate_and_generate(tmp_path, token_dir, capsys):
    config = write_config(tmp_path, token_dir)
    # Lightning's logger may not propagate to the root (caplog), depending on import order.
    collect, rank_zero_logger = _Collect(), logging.getLogger("lightning.pytorch.utilities.rank_zero")
    rank_zero_logger.addHandler(collect)
    try:
        main(["fit", "--config", str(config)])
    finally:
        rank_zero_logger.removeHandler(collect)
    summaries = [m for m in collect.messages if m.startswith("validation (")]
    assert [s.split(")")[0] for s in summaries] == ["validation (sanity check", "validation (step 3", "validation (step 6"]
    assert "val/loss=" in summaries[-1] and "val/ppl=" in summaries[-1]
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()

    (metrics_file,) = run.glob("lightning_logs/version_*/metrics.csv")
    rows = list(csv.DictReader(metrics_file.open()))
    logged = {k for row in rows for k, v in row.items() if v}
    for key in ("train/loss", "train/lr", "train/grad_norm", "train/device/items_per_sec", "val/ppl", "val/bpb"):
        assert key in logged, key
    tokens_per_sec = [float(r["train/device/items_per_sec"]) for r in rows if r.get("train/device/items_per_sec")]
    assert all(t > 0 for t in tokens_per_sec)
    samples = [json.loads(line) for line in next(run.glob("lightning_logs/version_*/samples.jsonl")).open()]
    assert [s["step"] for s in samples] == [3, 6] and samples[0]["prompt"] == "Once upon"

    main(["validate", "--config", str(config), "--ckpt_path", str(ckpt)])
    capsys.readouterr()
    main(["generate", "--checkpoint", str(run), "--prompt", "Once upon", "--max_new_tokens", "8", "--temperature", "0"])
    out = capsys.readouterr().out
    assert out.startswith("Once upon") and len(out.strip()) > len("Once upon")


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_misspelled_config_key_is_named(tmp_path, token_dir, capsys):
    config = write_config(tmp_path, token_dir, warmup_step=3)
    err = _error(capsys, ["fit", "--config", str(config)])
    assert "Option 'warmup_step' is not accepted" in err
    assert "Traceback" not in err


def test_missing_token_file_is_named(tmp_path, capsys):
    config = write_config(tmp_path, tmp_path / "empty_dir")
    err = _error(capsys, ["fit", "--config", str(config)])
    assert f"token file not found: {tmp_path / 'empty_dir' / 'train.bin'}" in err


def test_token_ids_beyond_vocabulary_are_named(tmp_path, capsys):
    data = tmp_path / "nanogpt"
    data.mkdir()
    np.arange(2000, dtype=np.uint16).__mod__(70).astype(np.uint16).tofile(data / "train.bin")
    config = write_config(tmp_path, data)
    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["init_args"]["vocab_size"] = 65
    config.write_text(yaml.safe_dump(cfg))
    err = _error(capsys, ["fit", "--config", str(config)])
    assert "train.bin: token id 69 is beyond the vocabulary (vocab_size 65)" in err


def test_block_size_larger_than_corpus_is_named(tmp_path, capsys):
    data = tmp_path / "small"
    data.mkdir()
    (np.arange(20, dtype=np.uint16) % 60).tofile(data / "train.bin")
    config = write_config(tmp_path, data)
    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["init_args"]["vocab_size"] = 65
    config.write_text(yaml.safe_dump(cfg))
    err = _error(capsys, ["fit", "--config", str(config)])
    assert "data.block_size 32 needs at least 33 tokens" in err and "has 20" in err


def test_missing_and_corrupt_checkpoints(tmp_path, capsys):
    err = _error(capsys, ["generate", "--checkpoint", str(tmp_path / "no.ckpt"), "--prompt", "hi"])
    assert f"checkpoint not found: {tmp_path / 'no.ckpt'}" in err
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    err = _error(capsys, ["generate", "--checkpoint", str(bad), "--prompt", "hi"])
    assert f"could not read checkpoint {bad}" in err and "Traceback" not in err


def test_unknown_command(capsys):
    err = _error(capsys, ["frobnicate"])
    assert "unknown command 'frobnicate'" in err


def test_one_option_moves_a_run(tmp_path, token_dir, monkeypatch):
    """Loggers without save_dir and a ModelCheckpoint without dirpath follow --trainer.default_root_dir: the
    checkpoints, the CSV log, W&B's offline files and the samples all land under it, nothing under the current
    folder's runs/."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = yaml.safe_load(write_config(tmp_path, token_dir).read_text())
    trainer = cfg["trainer"]
    trainer["default_root_dir"] = "runs/pretrain/tiny"
    trainer["logger"] = [
        {"class_path": "lit_llm.loggers.CSVLogger", "init_args": {"name": "logs"}},
        {"class_path": "lit_llm.loggers.WandbLogger", "init_args": {"project": "lit_llm_test", "name": "moved"}},
    ]
    trainer["callbacks"][0]["init_args"].pop("dirpath")
    config = tmp_path / "paths.yaml"
    config.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    moved = tmp_path / "elsewhere"
    try:
        main(["fit", "--config", str(config), "--trainer.default_root_dir", str(moved)])
    finally:
        import wandb

        wandb.finish()  # the process's W&B run would otherwise be reused by the next test's logger
    assert sorted(p.name for p in (moved / "checkpoints").iterdir()) == ["epoch=0-step=6.ckpt", "last.ckpt"]
    assert (moved / "logs" / "version_0" / "metrics.csv").is_file()
    assert (moved / "logs" / "version_0" / "samples.jsonl").is_file()
    assert list((moved / "wandb").glob("offline-run-*"))
    assert list(work.iterdir()) == []
