"""GPU paths: bf16, torch.compile, FSDP on one device, MFU. Skipped without CUDA (CI has none)."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.strategies import FSDPStrategy

from lit_llm.callbacks import TokenThroughput
from lit_llm.data import PretrainDataModule
from lit_llm.model import Block
from lit_llm.stages import CausalLM
from tests.stages.test_pretrain import SMALL, LossRecorder

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _fit(tmp_path, token_dir, steps=20, **trainer_kwargs):
    seed_everything(0)
    recorder = LossRecorder()
    module = CausalLM(model="tiny", model_config=SMALL, learning_rate=3e-3, min_lr=3e-4, warmup_steps=5)
    dm = PretrainDataModule(data_dir=str(token_dir), block_size=32, batch_size=8)
    trainer = Trainer(
        accelerator="gpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp_path,
        callbacks=[recorder], **trainer_kwargs,
    )  # fmt: skip
    trainer.fit(module, dm)
    return module, recorder.losses, trainer


def test_bf16_training_on_gpu(tmp_path, token_dir):
    _, losses, _ = _fit(tmp_path, token_dir, precision="bf16-mixed")
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


def test_fsdp_single_device_builds_sharded_and_trains(tmp_path, token_dir):
    strategy = FSDPStrategy(activation_checkpointing_policy={Block})
    module, losses, _ = _fit(tmp_path, token_dir, strategy=strategy, precision="bf16-mixed")
    wrapped = [m for m in module.model.modules() if type(m).__name__ == "FullyShardedDataParallel"]
    assert len(wrapped) == SMALL["n_layer"] + 1  # every Block, then the root
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


def test_compile_and_mfu_logged(tmp_path, token_dir):
    seed_everything(0)
    module = CausalLM(model="tiny", model_config=SMALL, warmup_steps=5, compile=True)
    dm = PretrainDataModule(data_dir=str(token_dir), block_size=32, batch_size=8)
    trainer = Trainer(
        accelerator="gpu", devices=1, max_steps=30, precision="bf16-mixed", logger=False, log_every_n_steps=5,
        enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0,
        callbacks=[TokenThroughput(window_size=5)], default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, dm)
    assert module.flops_per_batch > 0
    mfu = trainer.callback_metrics.get("train/device/mfu")
    if mfu is not None:  # only where Lightning knows the device's peak FLOP/s
        assert 0 < float(mfu) < 1
