"""W&B logging: offline without an API key; an offline run's file holds the metrics, config and checkpoint metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lit_llm.data.sft import SFTDataModule
from lit_llm.loggers import WandbLogger, offline_history, wandb_api_key_configured
from lit_llm.stages import SFTModule
from tests.stages.conftest import base_checkpoint, trainer  # noqa: F401  (the session fixture)


def test_offline_unless_an_api_key_is_configured(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert not wandb_api_key_configured()
    assert WandbLogger(save_dir=str(tmp_path))._offline
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_api_key_configured() and not WandbLogger(save_dir=str(tmp_path))._offline
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert WandbLogger(save_dir=str(tmp_path))._offline


def test_save_dir_is_made_absolute(monkeypatch, tmp_path):
    # W&B's service process outlives a chdir and would resolve a relative folder against its own cwd.
    monkeypatch.chdir(tmp_path)
    assert WandbLogger(save_dir="runs/sft").save_dir == str(tmp_path / "runs" / "sft")


def test_an_offline_run_records_metrics_config_and_checkpoint(base_checkpoint, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb = WandbLogger(project="lit_llm_test", name="sft-run", group="pipeline-1", save_dir=str(tmp_path),
                        offline=True)  # fmt: skip
    csv = CSVLogger(save_dir=str(tmp_path), name="csv")
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    module = SFTModule(init_from=str(base_checkpoint), eval_generations=0, learning_rate=1e-3)
    dm = SFTDataModule(tasks=["add"], examples_per_task=40, val_examples_per_task=4, max_length=96, batch_size=4)
    run = trainer(tmp_path, max_steps=6, logger=[csv, wandb], callbacks=[checkpoints], enable_checkpointing=True,
                  log_every_n_steps=2, limit_val_batches=1, val_check_interval=6)  # fmt: skip
    run.fit(module, datamodule=dm)
    import wandb as wandb_module

    wandb_module.finish()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    record = offline_history(run_dir)
    assert record["run"] == {"project": "lit_llm_test", "group": "pipeline-1", "name": "sft-run"}
    losses = [row["train/loss"] for row in record["history"] if "train/loss" in row]
    assert len(losses) == 3 and all(loss > 0 for loss in losses)  # steps 2, 4, 6
    assert any("val/loss" in row for row in record["history"])
    assert record["config"]["init_from"] == str(base_checkpoint) and record["config"]["learning_rate"] == 1e-3
    assert record["summary"]["checkpoint/stage"] == "sft"
    assert record["summary"]["checkpoint/path"] == str(tmp_path / "ckpt" / "last.ckpt")
    assert record["summary"]["checkpoint/model_config"]["n_layer"] == 2
    # The CSV log beside it, for `lit-llm report`, has the same losses.
    from lit_llm.eval.report import read_run

    csv_losses = [v for _, v in read_run(tmp_path / "csv").series["train/loss"]]
    assert csv_losses == pytest.approx(losses)


def test_offline_history_rejects_other_files(tmp_path: Path):
    from lit_llm.errors import DataError

    (tmp_path / "run").mkdir()
    with pytest.raises(DataError, match="holds no .wandb run file"):
        offline_history(tmp_path / "run")
    (tmp_path / "run" / "x.wandb").write_bytes(b"not a run")
    with pytest.raises(DataError, match="is not a W&B run file"):
        offline_history(tmp_path / "run")
