"""Hugging Face import/export: logit parity with `transformers` for each family (tiny random configs built
locally), lossless round trips, sharded and .bin weights, greedy generation, and one clear error per bad folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lit_llm.checkpoint import load_model
from lit_llm.cli.commands import main
from lit_llm.convert.hf import export_hf, import_hf
from lit_llm.prepare.corpus import generate_corpus
from lit_llm.text.tokenizer import train_bpe
from lit_llm.errors import LitLLMError
from lit_llm.generation import generate

transformers = pytest.importorskip("transformers")

VOCAB = 320  # embedding rows; the tokenizer has 300 tokens


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(generate_corpus(200, seed=3), vocab_size=300)


def _hf_model(family: str):
    common = dict(vocab_size=VOCAB, max_position_embeddings=64)
    llama = dict(common, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, rms_norm_eps=1e-5)  # fmt: skip
    configs = {
        "llama": lambda: transformers.LlamaConfig(**llama, rope_theta=500.0),
        "smollm": lambda: transformers.LlamaConfig(**llama, tie_word_embeddings=True),  # SmolLM: Llama, tied
        "mistral": lambda: transformers.MistralConfig(**llama, sliding_window=64),
        "qwen2": lambda: transformers.Qwen2Config(**llama),  # biases on q, k and v only
        "gpt2": lambda: transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                                bos_token_id=2, eos_token_id=3),  # fmt: skip
    }
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(configs[family]())
    with torch.no_grad():  # random biases and norms, so a mapping that drops them cannot pass
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _save(model, tokenizer, folder: Path, **kwargs) -> Path:
    model.save_pretrained(folder, **kwargs)
    tokenizer.save_pretrained(folder)
    return folder


FAMILIES = ["llama", "smollm", "mistral", "qwen2", "gpt2"]


@pytest.mark.parametrize("family", FAMILIES)
def test_import_then_export_matches_transformers_logits_and_round_trips(family, tokenizer, tmp_path):
    theirs = _hf_model(family)
    source = _save(theirs, tokenizer, tmp_path / "hf")
    ckpt = import_hf(source, tmp_path / "lit")
    ours, meta = load_model(ckpt)
    assert meta["stage"] == "import" and meta["model_config"]["vocab_size"] == VOCAB
    idx = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(idx).logits
        torch.testing.assert_close(ours(idx), expected, atol=1e-5, rtol=1e-5)
    # Export: transformers loads the folder without custom code and gives the same logits.
    exported = export_hf(ckpt, tmp_path / "out")
    again = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(idx).logits, expected, atol=1e-5, rtol=1e-5)
    # Lossless: every tensor of the original comes back bit for bit.
    from safetensors.torch import load_file

    before, after = load_file(source / "model.safetensors"), load_file(exported / "model.safetensors")
    assert set(after) == set(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    hf_tok = transformers.AutoTokenizer.from_pretrained(exported)
    text = "Once upon a time, Ada had 3 pears."
    assert hf_tok(text)["input_ids"] == tokenizer.encode(text)


def test_greedy_generation_gives_the_same_tokens(tokenizer, tmp_path):
    theirs = _hf_model("llama")
    ckpt = import_hf(_save(theirs, tokenizer, tmp_path / "hf"), tmp_path / "lit")
    ours, _ = load_model(ckpt)
    prompt = tokenizer.encode("Once upon a time")
    with torch.no_grad():
        out = theirs.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                              pad_token_id=0)  # fmt: skip
    assert generate(ours, [prompt], max_new_tokens=12, temperature=0.0)[0] == out[0, len(prompt) :].tolist()


def test_sharded_safetensors_and_bin_weights(tokenizer, tmp_path):
    theirs = _hf_model("qwen2")
    sharded = _save(theirs, tokenizer, tmp_path / "sharded", max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    bin_folder = tmp_path / "bin"
    shutil.copytree(sharded, bin_folder, ignore=shutil.ignore_patterns("*.safetensors*"))
    torch.save(theirs.state_dict(), bin_folder / "pytorch_model.bin")
    a, _ = load_model(import_hf(sharded, tmp_path / "a"))
    b, _ = load_model(import_hf(bin_folder, tmp_path / "b", dtype="bfloat16"))
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x.to(torch.bfloat16).float(), y, msg=name)


def test_imported_checkpoint_chains_into_a_stage(tokenizer, tmp_path):
    from lit_llm.stages import SFTModule

    ckpt = import_hf(_save(_hf_model("llama"), tokenizer, tmp_path / "hf"), tmp_path / "lit")
    module = SFTModule(init_from=str(tmp_path / "lit"))
    module.setup("fit")
    module.configure_model()
    reference, _ = load_model(ckpt)
    idx = torch.randint(0, 300, (1, 10))
    torch.testing.assert_close(module.model(idx), reference(idx))


def test_native_tiny_preset_exports_and_loads_in_transformers(tokenizer, tmp_path):
    from lit_llm.model import GPT, Config
    from lit_llm.stages import CausalLM

    config = Config.from_name("tiny", n_layer=2, vocab_size=300)  # padded to 320 rows
    model = GPT(config)
    ckpt = tmp_path / "tiny.ckpt"
    meta = {"stage": CausalLM.stage_name, "model_config": config.to_dict(), "tokenizer": tokenizer.to_json()}
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "lit_llm": meta}, ckpt)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(export_hf(ckpt, tmp_path / "hf")).eval()
    idx = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(theirs(idx).logits, model.eval()(idx), atol=1e-5, rtol=1e-5)
    generation = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tokenizer.eos_id


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda f: (f / "config.json").unlink(), "config.json is missing"),
        (lambda f: (f / "model.safetensors").unlink(), "no weights (model.safetensors or"),
        (lambda f: (f / "tokenizer.json").unlink(), "tokenizer.json is missing"),
        (lambda f: _edit_config(f, model_type="bert"), "model_type 'bert' is not supported"),
        (lambda f: _edit_config(f, intermediate_size=40), "mlp.gate_proj.weight has shape (48, 32), expected 40 rows"),
        (lambda f: _edit_config(f, vocab_size=200), "tokenizer.json: 300 tokens, but the embedding has vocab_size=200"),
        (lambda f: _edit_config(f, rope_parameters={"rope_type": "llama3", "rope_theta": 5e5}),
         "rope_type 'llama3' (rope scaling) is not supported"),
    ],
)
def test_bad_folders_are_named(breakage, message, tokenizer, tmp_path, capsys):
    folder = _save(_hf_model("llama"), tokenizer, tmp_path / "hf")
    breakage(folder)
    with pytest.raises(LitLLMError, match=None) as exc:
        import_hf(folder, tmp_path / "lit")
    assert message in str(exc.value)
    with pytest.raises(SystemExit) as code:
        main(["import", "--from", str(folder), "--to", str(tmp_path / "lit")])
    assert code.value.code == 2 and message in capsys.readouterr().err


def test_cli_import_export(tokenizer, tmp_path, capsys):
    folder = _save(_hf_model("gpt2"), tokenizer, tmp_path / "hf")
    main(["import", "--from", str(folder), "--to", str(tmp_path / "lit")])
    main(["export", "--checkpoint", str(tmp_path / "lit"), "--to", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'lit' / 'last.ckpt'}" in out and f"wrote {tmp_path / 'out'}" in out
    assert transformers.AutoConfig.from_pretrained(tmp_path / "out").model_type == "gpt2"


def test_hub_download_only_when_asked(tokenizer, tmp_path, monkeypatch, capsys):
    folder = _save(_hf_model("smollm"), tokenizer, tmp_path / "hf")
    asked = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        asked.append((repo_id, allow_patterns))
        return str(folder)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    with pytest.raises(SystemExit):  # without --hub the id is a (missing) local folder, never a download
        main(["import", "--from", "HuggingFaceTB/SmolLM-135M", "--to", str(tmp_path / "lit")])
    assert asked == [] and "is not a folder" in capsys.readouterr().err
    main(["import", "--from", "HuggingFaceTB/SmolLM-135M", "--to", str(tmp_path / "lit"), "--hub", "true"])
    assert asked[0][0] == "HuggingFaceTB/SmolLM-135M" and "config.json" in asked[0][1]
    assert (tmp_path / "lit" / "last.ckpt").is_file()


def test_export_refuses_a_reward_model_checkpoint(tmp_path, tokenizer):
    ckpt = import_hf(_save(_hf_model("llama"), tokenizer, tmp_path / "hf"), tmp_path / "lit")
    data = torch.load(ckpt, weights_only=True)
    data["lit_llm"]["stage"] = "reward"
    torch.save(data, tmp_path / "reward.ckpt")
    with pytest.raises(LitLLMError, match="reward.ckpt is a reward-model checkpoint"):
        export_hf(tmp_path / "reward.ckpt", tmp_path / "out")
