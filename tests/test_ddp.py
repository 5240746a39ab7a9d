"""DDP with 2 CPU processes (gloo) equals one process at the same global batch."""

from __future__ import annotations

import subprocess
import sys

import torch

from lit_llm.checkpoint import load_checkpoint, submodule_state
from tests.test_cli import write_config


def _fit(tmp_path, token_dir, name: str, devices: int, batch_size: int):
    run_dir = tmp_path / name
    run_dir.mkdir()
    config = write_config(run_dir, token_dir)
    cmd = [
        sys.executable, "-m", "lit_llm.cli", "fit", "--config", str(config),
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
