"""CausalLM: training dynamics, schedule, optimizer groups, resume, accumulation, chaining, errors."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_llm.data import PretrainDataModule
from lit_llm.errors import CheckpointError, ConfigError
from lit_llm.model import GPT, Config
from lit_llm.stages import CausalLM
from lit_llm.stages.optim import param_groups, warmup_cosine
from tests.stages.conftest import trainer

SMALL = {"n_layer": 2, "n_head": 4, "n_embd": 64, "intermediate_size": 128, "block_size": 32}


class LossRecorder(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].item())


def make_trainer(tmp_path, max_steps: int, callbacks=(), **kwargs) -> Trainer:
    return trainer(tmp_path, max_steps, callbacks=list(callbacks), **{"limit_val_batches": 0, **kwargs})


def small_module(**kwargs) -> CausalLM:
    args = dict(model="tiny", model_config=SMALL, learning_rate=3e-3, min_lr=3e-4, warmup_steps=5)
    args.update(kwargs)
    return CausalLM(**args)


def test_warmup_cosine_hand_values():
    peak, floor, warm, decay = 6e-4, 6e-5, 10, 110
    assert warmup_cosine(0, peak, floor, warm, decay) == pytest.approx(peak * 1 / 11)
    assert warmup_cosine(9, peak, floor, warm, decay) == pytest.approx(peak * 10 / 11)
    assert warmup_cosine(10, peak, floor, warm, decay) == pytest.approx(peak)
    # Halfway through the cosine the rate is the mean of peak and floor.
    assert warmup_cosine(60, peak, floor, warm, decay) == pytest.approx((peak + floor) / 2)
    assert warmup_cosine(110, peak, floor, warm, decay) == pytest.approx(floor)
    assert warmup_cosine(10_000, peak, floor, warm, decay) == pytest.approx(floor)


def test_source_material_schedule_defaults():
    hp = CausalLM().hparams
    assert (hp.learning_rate, hp.min_lr, hp.warmup_steps) == (6e-4, 6e-5, 2000)


def test_no_weight_decay_on_norms_biases_embeddings():
    cfg = Config.from_name("baby-gpt")  # GPT-2 style: biases, LayerNorm, learned positions, tied head
    model = GPT(cfg)
    decay, no_decay = param_groups(model, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "wte.weight" in skipped and "wpe.weight" in skipped
    assert all(n.endswith(".weight") and ("qkv" in n or "proj" in n or "fc" in n) for n in decayed)
    assert len(decayed) == 4 * cfg.n_layer  # qkv, attn proj, fc, mlp proj per block
    assert all(n.endswith("bias") or "norm" in n or n in ("wte.weight", "wpe.weight") for n in skipped)
    assert len(decayed) + len(skipped) == len(list(model.parameters()))


def test_loss_falls_and_metrics_are_consistent(tmp_path, token_dir):
    seed_everything(0)
    dm = PretrainDataModule(data_dir=str(token_dir), block_size=32, batch_size=8)
    module = small_module()
    # Validating before fit and again inside it covers the switch from inference mode to no_grad.
    trainer = make_trainer(tmp_path, max_steps=150, limit_val_batches=8, val_check_interval=75)
    before = trainer.validate(module, dm, verbose=False)[0]
    trainer.fit(module, dm)
    after = trainer.validate(module, dm, verbose=False)[0]
    assert before["val/loss"] > 5.5  # about ln(512) for an untrained model
    assert after["val/loss"] < 0.6 * before["val/loss"]
    assert after["val/ppl"] == pytest.approx(math.exp(after["val/loss"]), rel=1e-4)
    # Bits per byte sits well below bits per token: every BPE token covers several bytes.
    assert 0 < after["val/bpb"] < after["val/loss"] / math.log(2) / 2
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(warmup_cosine(150, 3e-3, 3e-4, 5, 150))


def test_resume_matches_continuous_run(tmp_path, token_dir):
    def run(max_steps, ckpt_path=None, callbacks=()):
        seed_everything(7)
        recorder = LossRecorder()
        dm = PretrainDataModule(data_dir=str(token_dir), block_size=32, batch_size=4)
        trainer = make_trainer(tmp_path, max_steps, callbacks=[recorder, *callbacks], enable_checkpointing=True)
        trainer.fit(small_module(), dm, ckpt_path=ckpt_path, weights_only=True)
        return recorder.losses

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="s{step}", auto_insert_metric_name=False, every_n_train_steps=5, save_top_k=-1)
    continuous = run(10, callbacks=[ckpt])
    resumed = run(10, ckpt_path=str(tmp_path / "ckpt" / "s5.ckpt"))
    assert len(continuous) == 10 and len(resumed) == 5
    assert resumed == pytest.approx(continuous[5:], abs=1e-6)
    # A run that restarted the epoch would have seen other batches, so the losses would differ.
    assert continuous[5:] != pytest.approx(continuous[:5], abs=1e-3)


def test_gradient_accumulation_invariance(tmp_path, token_dir):
    def final_weights(batch_size, accumulate):
        seed_everything(3)
        dm = PretrainDataModule(data_dir=str(token_dir), block_size=32, batch_size=batch_size)
        module = small_module()
        make_trainer(tmp_path, 4, accumulate_grad_batches=accumulate, gradient_clip_val=1.0).fit(module, dm)
        return module.model.state_dict()

    a, b = final_weights(4, 2), final_weights(8, 1)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=2e-5, rtol=1e-4, msg=name)


def test_checkpoint_is_self_describing_and_chains(tmp_path, token_dir):
    seed_everything(0)
    dm = PretrainDataModule(data_dir=str(token_dir), block_size=32, batch_size=4)
    module = small_module()
    trainer = make_trainer(tmp_path, 3)
    trainer.fit(module, dm)
    path = tmp_path / "pre.ckpt"
    trainer.save_checkpoint(path)

    ckpt = torch.load(path, weights_only=True)  # no pickled code needed to read it
    meta = ckpt["lit_llm"]
    assert meta["stage"] == "causal_lm"
    assert meta["model_config"]["n_layer"] == 2 and meta["model_config"]["vocab_size"] == 512
    assert '"</s>"' in meta["tokenizer"]
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["consumed"] == 12

    child = CausalLM(init_from=str(path), warmup_steps=1)
    child.setup("fit")
    child.configure_model()
    assert child.config.n_layer == 2
    for name, tensor in module.model.state_dict().items():
        assert torch.equal(child.model.state_dict()[name], tensor), name


def test_bad_configuration_messages(tmp_path, token_dir):
    with pytest.raises(ConfigError, match="n_layr"):
        CausalLM(model_config={"n_layr": 2})
    with pytest.raises(ConfigError, match="unknown model preset 'gpt5'"):
        CausalLM(model="gpt5")
    dm = PretrainDataModule(data_dir=str(token_dir), block_size=64, batch_size=4)
    with pytest.raises(ConfigError, match=r"data.block_size \(64\) exceeds the model's block_size \(32\)"):
        make_trainer(tmp_path, 1).fit(small_module(), dm)
    dm = PretrainDataModule(data_dir=str(token_dir), block_size=32, batch_size=4)
    with pytest.raises(ConfigError, match=r"vocabulary \(512 tokens\) is larger than the model's vocab_size \(100\)"):
        make_trainer(tmp_path, 1).fit(small_module(vocab_size=100), dm)
    missing = tmp_path / "nowhere.ckpt"
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nowhere.ckpt"):
        make_trainer(tmp_path, 1).fit(small_module(init_from=str(missing)), dm)


def test_bf16_mixed_precision_trains_on_cpu(tmp_path, token_dir):
    seed_everything(0)
    dm = PretrainDataModule(data_dir=str(token_dir), block_size=32, batch_size=8)
    module = small_module()
    recorder = LossRecorder()
    make_trainer(tmp_path, 30, callbacks=[recorder], precision="bf16-mixed").fit(module, dm)
    assert module.model.wte.weight.dtype == torch.float32  # master weights stay fp32
    assert all(math.isfinite(x) for x in recorder.losses)
    assert sum(recorder.losses[-5:]) / 5 < recorder.losses[0] - 0.5


def test_compile_flag_compiles_the_model_in_place(tmp_path, token_dir):
    module = small_module(compile=True)
    module.setup("fit")
    module.configure_model()
    # nn.Module.compile() keeps parameter names, so checkpoints stay loadable without compile.
    assert module.model._compiled_call_impl is not None
    assert "wte.weight" in module.model.state_dict()


def test_compiled_training_matches_eager(tmp_path, token_dir):
    def losses(compile_model):
        seed_everything(0)
        dm = PretrainDataModule(data_dir=str(token_dir), block_size=32, batch_size=4)
        recorder = LossRecorder()
        make_trainer(tmp_path, 3, callbacks=[recorder]).fit(small_module(compile=compile_model), dm)
        return recorder.losses

    assert losses(True) == pytest.approx(losses(False), abs=1e-4)
