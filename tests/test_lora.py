"""LoRA: only the adapters train and are saved, merging gives the adapter model's outputs, the disabled-adapter
reference of DPO equals a frozen copy of the base, LoRA checkpoints load (merged) and resume, bad configs fail."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, seed_everything

from lit_llm.checkpoint import load_checkpoint, load_model, submodule_state
from lit_llm.cli.commands import main
from lit_llm.data.preference import PreferenceDataModule
from lit_llm.data.sft import SFTDataModule
from lit_llm.errors import CheckpointError, ConfigError
from lit_llm.lora import (
    LoRAConfig,
    LoRALinear,
    adapters_disabled,
    apply_lora,
    count_parameters,
    lora_state_dict,
    merge_lora,
)
from lit_llm.losses import sequence_logps
from lit_llm.model import GPT, Config
from lit_llm.stages import DPOModule, ORPOModule, PPOModule, RewardModule, SFTModule
from lit_llm.stages.pairs import side_outputs
from lit_llm.rewards import load_reward_model
from tests.stages.conftest import SMALL, save_model, trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "targets": ["qkv", "attn_proj", "fc", "mlp_proj"]}


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """As in tests/stages/conftest.py: an untrained small model with a tokenizer that knows the task phrasings."""
    from lit_llm.prepare.corpus import generate_corpus
    from lit_llm.tasks import task_records
    from lit_llm.text.tokenizer import train_bpe

    texts = list(generate_corpus(300, seed=1)) + [r["instruction"] for r in task_records("train", per_task=200)]
    return save_model(tmp_path_factory.mktemp("base") / "base.ckpt", train_bpe(texts, vocab_size=512), seed=0)


def tiny_gpt(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(Config.from_name("tiny", **{**SMALL, "vocab_size": 300, **overrides}))


def perturb_adapters(model: torch.nn.Module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(std=0.05)


def e_share(prompt: str, response: str) -> float:
    return response.count("e") / max(len(response), 1)


def sft_data() -> SFTDataModule:
    return SFTDataModule(prompt_style="alpaca", tasks=["add", "upper"], examples_per_task=24, val_examples_per_task=2,
                         max_length=96, batch_size=8)  # fmt: skip


def pair_data() -> PreferenceDataModule:
    return PreferenceDataModule(tasks=["upper", "add"], examples_per_task=16, val_examples_per_task=2, max_length=96,
                                batch_size=4)  # fmt: skip


# ---- the layers ---------------------------------------------------------------------------------------


def test_config_errors_are_one_clear_config_error(base_checkpoint: Path) -> None:
    with pytest.raises(ConfigError, match=r"model.lora.targets: unknown layer\(s\) 'attn'.*qkv, attn_proj"):
        LoRAConfig.from_dict({"targets": ["qkv", "attn"]})
    for r in (0, -2):
        with pytest.raises(ConfigError, match=r"model.lora.r must be an integer > 0, got " + str(r)):
            LoRAConfig.from_dict({"r": r})
    with pytest.raises(ConfigError, match="model.lora: unknown key\\(s\\) rank"):
        LoRAConfig.from_dict({"rank": 8})
    with pytest.raises(ConfigError, match="model.lora.dropout"):
        LoRAConfig(dropout=1.0)
    with pytest.raises(ConfigError, match="model.lora.alpha"):
        LoRAConfig(alpha=0)
    # The stages check it when built, before any data or weights are touched.
    with pytest.raises(ConfigError, match="model.lora.targets"):
        SFTModule(init_from=str(base_checkpoint), lora={"targets": ["nope"]})
    with pytest.raises(ConfigError, match="model.lora needs model.init_from"):
        SFTModule(lora=LORA)
    with pytest.raises(ConfigError, match="lm_head is tied"):
        apply_lora(tiny_gpt(tie_embeddings=True), {"targets": ["lm_head"]})


def test_adapters_start_at_the_base_train_alone_merge_exactly_and_can_be_disabled() -> None:
    model = tiny_gpt()
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randint(0, 300, (2, 16))
    model.eval()
    with torch.no_grad():
        base_out = model(x)
    apply_lora(model, LORA)
    # Base keys are unchanged; only lora_A / lora_B are added, 4 layers x 2 blocks x 2.
    keys = set(model.state_dict())
    assert set(base_state) <= keys and len(keys - set(base_state)) == 16
    assert all(k.endswith(("lora_A", "lora_B")) for k in keys - set(base_state))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(lora_state_dict(model))
    with torch.no_grad():
        torch.testing.assert_close(model(x), base_out, rtol=0, atol=0)  # B = 0: the base output, bit for bit

    perturb_adapters(model)
    with torch.no_grad():
        adapted = model(x)
        assert not torch.allclose(adapted, base_out, atol=1e-4)
        with adapters_disabled(model):
            torch.testing.assert_close(model(x), base_out, rtol=0, atol=0)
        torch.testing.assert_close(model(x), adapted, rtol=0, atol=0)  # re-enabled on exit

    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x), adapted, rtol=1e-5, atol=1e-5)
    plain = GPT(model.config)
    plain.load_state_dict(model.state_dict())  # strict: the merged weights are a plain GPT's
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), adapted, rtol=1e-5, atol=1e-5)


def test_lm_head_and_dropout() -> None:
    model = apply_lora(tiny_gpt(), {"r": 2, "alpha": 4, "dropout": 0.5, "targets": ["lm_head"]})
    assert isinstance(model.lm_head, LoRALinear) and not isinstance(model.blocks[0].attn.qkv, LoRALinear)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["lm_head.lora_A", "lm_head.lora_B"]
    perturb_adapters(model)
    x = torch.randint(0, 300, (2, 8))
    model.train()
    assert not torch.equal(model(x), model(x))  # dropout on the adapter input
    model.eval()
    torch.testing.assert_close(model(x), model(x))


# ---- SFT --------------------------------------------------------------------------------------------------


def test_lora_sft_trains_only_adapters_saves_them_alone_loads_merged_and_resumes(
    tmp_path: Path, base_checkpoint: Path
) -> None:
    base = submodule_state(load_checkpoint(base_checkpoint)["state_dict"])
    seed_everything(0)
    module = SFTModule(init_from=str(base_checkpoint), learning_rate=3e-3, warmup_steps=0, eval_generations=0,
                       lora=LORA)  # fmt: skip
    fit = trainer(tmp_path, 4, limit_val_batches=0)
    fit.fit(module, sft_data())

    # Only the adapters moved; the base weights are bit-identical; the optimizer holds the adapters alone.
    state = module.model.state_dict()
    for name, tensor in base.items():
        torch.testing.assert_close(state[name], tensor, rtol=0, atol=0, msg=name)
    adapters = {n: p for n, p in module.model.named_parameters() if n.endswith(("lora_A", "lora_B"))}
    assert any(p.abs().sum() > 0 for n, p in adapters.items() if n.endswith("lora_B"))
    optimized = {id(p) for group in fit.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in adapters.values()}
    assert {n for n, p in module.named_parameters() if p.requires_grad} == {f"model.{n}" for n in adapters}
    trainable, total = count_parameters(module.model)
    assert trainable / total < 0.1

    # The checkpoint holds the adapters (and their optimizer state) only, and names its base.
    path = tmp_path / "lora.ckpt"
    fit.save_checkpoint(path)
    ckpt = load_checkpoint(path)
    assert set(ckpt["state_dict"]) == {f"model.{n}" for n in adapters}
    meta = ckpt["lit_llm"]
    assert meta["lora"] == LoRAConfig.from_dict(LORA).to_dict()
    assert meta["lora_base"] == str(base_checkpoint.resolve()) and meta["stage"] == "sft"
    full = SFTModule(init_from=str(base_checkpoint), warmup_steps=0, eval_generations=0)
    full_fit = trainer(tmp_path / "full", 1, limit_val_batches=0)
    full_fit.fit(full, sft_data())
    full_fit.save_checkpoint(tmp_path / "full.ckpt")
    ratio = path.stat().st_size / (tmp_path / "full.ckpt").stat().st_size
    assert ratio < 0.25, ratio

    # load_model rebuilds base + adapters and returns a merged plain GPT with the trained module's outputs.
    merged, _ = load_model(path)
    assert isinstance(merged, GPT) and not any(isinstance(m, LoRALinear) for m in merged.modules())
    x = torch.randint(0, module.config.vocab_size, (2, 24))
    module.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(x), module.model(x), rtol=1e-5, atol=1e-5)

    # Resume: the frozen base comes from init_from, the adapters from the checkpoint; training goes on.
    resumed = SFTModule(init_from=str(base_checkpoint), learning_rate=3e-3, warmup_steps=0, eval_generations=0,
                        lora=LORA)  # fmt: skip
    seen = {}

    class Peek(Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            seen.update({k: v.clone() for k, v in pl_module.model.state_dict().items()})

    trainer(tmp_path / "resume", 6, limit_val_batches=0, callbacks=[Peek()]).fit(resumed, sft_data(), ckpt_path=path)
    for name, tensor in module.model.state_dict().items():
        torch.testing.assert_close(seen[name], tensor, rtol=0, atol=0, msg=name)
    assert resumed.trainer.global_step == 6
    for name, tensor in base.items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, rtol=0, atol=0, msg=name)

    # A later stage chains from the LoRA checkpoint: it starts from the merged weights.
    chained = SFTModule(init_from=str(path), eval_generations=0)
    chained_fit = trainer(tmp_path / "chained", 1, limit_val_batches=0)
    chained_fit.validate(chained, sft_data())  # builds the model without training it
    with torch.no_grad():
        torch.testing.assert_close(chained.model.eval()(x), module.model(x), rtol=1e-5, atol=1e-5)

    # Adapters on top of a LoRA checkpoint: its base is the merged model, and load_model follows the chain.
    stacked = SFTModule(init_from=str(path), learning_rate=3e-3, warmup_steps=0, eval_generations=0, lora=LORA)
    stacked_fit = trainer(tmp_path / "stacked", 2, limit_val_batches=0)
    stacked_fit.fit(stacked, sft_data())
    stacked_fit.save_checkpoint(tmp_path / "stacked.ckpt")
    merged, meta = load_model(tmp_path / "stacked.ckpt")
    assert meta["lora_base"] == str(path.resolve())
    with torch.no_grad():
        torch.testing.assert_close(merged(x), stacked.model.eval()(x), rtol=1e-5, atol=1e-5)

    # Export merges the adapters: transformers computes the trained LoRA module's logits from the folder.
    from lit_llm.convert.hf import export_hf

    transformers = pytest.importorskip("transformers")
    exported = transformers.AutoModelForCausalLM.from_pretrained(export_hf(path, tmp_path / "hf")).eval()
    with torch.no_grad():
        torch.testing.assert_close(exported(x).logits, module.model(x), rtol=1e-5, atol=1e-5)


# ---- DPO --------------------------------------------------------------------------------------------------


def test_dpo_lora_reference_is_the_base_with_adapters_disabled(tmp_path: Path, base_checkpoint: Path) -> None:
    seed_everything(0)
    module = DPOModule(init_from=str(base_checkpoint), learning_rate=5e-3, warmup_steps=0, eval_generations=0,
                       lora=LORA)  # fmt: skip
    dm = pair_data()
    fit = trainer(tmp_path, 4, limit_val_batches=2, val_check_interval=4)
    fit.validate(module, dm)
    assert float(fit.callback_metrics["val/loss"]) == pytest.approx(math.log(2), abs=1e-6)  # policy == reference
    fit = trainer(tmp_path, 4, limit_val_batches=0)
    fit.fit(module, dm)
    # No second copy: no reference module, the model holds the base weights once plus the adapters.
    assert module.reference.copy is None and module.reference.available
    assert not [n for n, _ in module.named_parameters() if not n.startswith("model.")]

    # An explicit frozen copy of the base, on the same batch.
    copy, _ = load_model(base_checkpoint)
    batch = next(iter(dm.train_dataloader()))
    module.train()
    live = module._reference_logps(batch)
    assert module.model.training  # restored after the reference pass
    with torch.no_grad():
        explicit = side_outputs(copy(batch["input_ids"]), batch["targets"]).logps
    torch.testing.assert_close(live, explicit, rtol=1e-6, atol=1e-6)

    module.eval()
    with torch.no_grad():
        out = side_outputs(module(batch), batch["targets"])
        loss, _ = module._losses(batch, out)
        # The same loss from a precomputed table of reference log-probs (by pair id) holding the explicit copy's.
        half = len(explicit) // 2
        module.reference_table = torch.zeros(int(batch["pair_ids"].max()) + 1, 2)
        module.reference_table[batch["pair_ids"]] = torch.stack([explicit[:half], explicit[half:]], dim=1)
        explicit_loss, _ = module._losses(batch, out)
        module.reference_table = None
        policy = sequence_logps(module.model(batch["input_ids"]), batch["targets"])
    assert not torch.allclose(policy, explicit, atol=1e-4)  # the adapters moved the policy away from the reference
    torch.testing.assert_close(loss, explicit_loss, rtol=1e-6, atol=1e-6)

    # Precomputing frees the reference; the policy is left as it was.
    pre = DPOModule(init_from=str(base_checkpoint), precompute_reference=True, warmup_steps=0, eval_generations=0,
                    lora=LORA)  # fmt: skip
    trainer(tmp_path / "pre", 1, limit_val_batches=0).fit(pre, pair_data())
    assert not pre.reference.available and pre.model is not None


@pytest.mark.parametrize("stage", ["orpo", "reward"])
def test_orpo_and_reward_train_adapters_only(tmp_path: Path, base_checkpoint: Path, stage: str) -> None:
    seed_everything(0)
    common = dict(init_from=str(base_checkpoint), learning_rate=5e-3, warmup_steps=0, lora=LORA)
    module = ORPOModule(eval_generations=0, **common) if stage == "orpo" else RewardModule(**common)
    fit = trainer(tmp_path, 3, limit_val_batches=1, val_check_interval=3)
    fit.fit(module, pair_data())
    head = ("score_head.weight",) if stage == "reward" else ()
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable == set(lora_state_dict(module.model)) | set(head)
    optimized = {id(p) for group in fit.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in module.model.parameters() if p.requires_grad}
    path = tmp_path / "run.ckpt"
    fit.save_checkpoint(path)
    assert set(load_checkpoint(path)["state_dict"]) == {f"model.{n}" for n in trainable}
    if stage == "reward":
        loaded = load_reward_model(path)
        rows = [[5, 6, 7, 8], [9, 10, 11]]
        module.eval()
        torch.testing.assert_close(loaded.score_tokens(rows), module.score_tokens(rows), rtol=1e-5, atol=1e-5)
    else:
        merged, _ = load_model(path)
        x = torch.randint(0, module.config.vocab_size, (2, 12))
        with torch.no_grad():
            torch.testing.assert_close(merged(x), module.model.eval()(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("value_model", ["head", "critic"])
def test_ppo_lora_uses_the_policy_with_adapters_disabled_as_reference(
    tmp_path: Path, base_checkpoint: Path, value_model: str
) -> None:
    from lit_llm.data.rl_prompts import PromptDataModule

    torch.manual_seed(0)
    module = PPOModule(
        init_from=str(base_checkpoint), reward_function=e_share,
        value_model=value_model, max_new_tokens=6, temperature=1.0, learning_rate=1e-2, min_lr=1e-2, num_ppo_epochs=1,
        num_mini_batches=1, eval_generations=0, samples_every_n_steps=1000, lora=LORA,
    )  # fmt: skip
    dm = PromptDataModule(tokenizer=str(base_checkpoint), prompt_style="alpaca", batch_size=8, examples_per_task=8,
                          val_examples_per_task=2, seed=3)  # fmt: skip
    fit = trainer(tmp_path, 2, limit_val_batches=0)
    fit.fit(module, datamodule=dm)
    assert module.reference.copy is None and module.reference.available
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    if value_model == "head":
        value = {"value_head.weight"}
    else:  # the critic gets adapters of its own; its value head trains in full
        value = {f"critic.{n}" for n in lora_state_dict(module.critic)} | {"critic.score_head.weight"}
    assert trainable == {f"model.{n}" for n in lora_state_dict(module.model)} | value
    base = submodule_state(load_checkpoint(base_checkpoint)["state_dict"])
    for name, tensor in module.model.state_dict().items():
        if name in base:
            torch.testing.assert_close(tensor, base[name], rtol=0, atol=0, msg=name)
    path = tmp_path / "ppo.ckpt"
    fit.save_checkpoint(path)
    assert set(load_checkpoint(path)["state_dict"]) == trainable
    merged, _ = load_model(path)
    x = torch.randint(0, module.config.vocab_size, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(merged(x), module.model.eval()(x), rtol=1e-5, atol=1e-5)


# ---- configs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sft/lora-tiny.yaml", "dpo/lora-tiny.yaml"])
def test_lora_yaml_configs_parse(name: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(CONFIGS / name), "--print_config"])
    assert exc.value.code in (0, None)
    out = capsys.readouterr().out
    assert "lora:" in out and "r: 8" in out and "attn_proj" in out


def test_a_lora_checkpoint_names_a_missing_or_changed_base(tmp_path: Path, base_checkpoint: Path) -> None:
    base = tmp_path / "base.ckpt"
    base.write_bytes(base_checkpoint.read_bytes())
    module = SFTModule(init_from=str(base), warmup_steps=0, eval_generations=0, lora=LORA)
    fit = trainer(tmp_path, 1, limit_val_batches=0)
    fit.fit(module, sft_data())
    fit.save_checkpoint(tmp_path / "lora.ckpt")
    load_model(tmp_path / "lora.ckpt")  # loads while the base is as it was

    ckpt = torch.load(base, weights_only=True)
    ckpt["state_dict"]["model.blocks.0.attn.qkv.weight"] += 0.01
    torch.save(ckpt, base)
    with pytest.raises(CheckpointError, match="weights have changed since"):
        load_model(tmp_path / "lora.ckpt")
    base.unlink()
    with pytest.raises(CheckpointError, match="holds LoRA adapters only; its base checkpoint is unreadable"):
        load_model(tmp_path / "lora.ckpt")
