"""Nothing stale, nothing half-written: export, import and pairs refuse to overwrite unless asked, write whole or
not at all, with the permissions the umask gives; chat's default reply length fits the demo model; impossible
sampling options and over-long prompts are reported in one line."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import sys
from pathlib import Path

import pytest
import torch

import lit_llm.generation
from lit_llm.checkpoint import load_model, load_tokenizer
from lit_llm.cli.commands import main
from lit_llm.convert.hf import import_hf
from lit_llm.text.templates import load_style, style_to_dict
from lit_llm.model import GPT, Config
from tests.stages.conftest import base_checkpoint  # noqa: F401  (the session fixture)
from tests.test_convert import _hf_model, _save, tokenizer  # noqa: F401  (the module fixture)

transformers = pytest.importorskip("transformers")


def error_line(capsys) -> str:
    """The one line a failed command printed: `lit-llm: error: ...`, without a traceback (and nothing else)."""
    out, err = capsys.readouterr()
    assert out == "", out
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("lit-llm: error: "), err
    return lines[0]


def fails(capsys, argv: list[str]) -> str:
    capsys.readouterr()  # drop what came before (transformers' progress bars while a test saves a model)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return error_line(capsys)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]


@pytest.fixture
def umask_022():
    before = os.umask(0o022)
    yield
    os.umask(before)


@pytest.fixture
def lit_checkpoint(tokenizer, tmp_path) -> Path:  # noqa: F811
    return import_hf(_save(_hf_model("llama"), tokenizer, tmp_path / "hf"), tmp_path / "lit")


# ---- lit-llm export ---------------------------------------------------------------------------------------------


def test_export_over_a_sharded_model_refuses_then_replaces_it_whole(lit_checkpoint, tokenizer, tmp_path, capsys,
                                                                    umask_022):  # noqa: F811  # fmt: skip
    out = tmp_path / "out"
    _save(_hf_model("qwen2"), tokenizer, out, max_shard_size="20KB")  # an older, sharded model in the folder
    (out / "README.md").write_text("my model card\n")
    assert (out / "model.safetensors.index.json").is_file()
    before = snapshot(out)
    line = fails(capsys, ["export", "--checkpoint", str(lit_checkpoint), "--to", str(out)])
    assert f"{out} is not empty; pass --overwrite true" in line
    assert snapshot(out) == before

    main(["export", "--checkpoint", str(lit_checkpoint), "--to", str(out), "--overwrite", "true"])
    names = sorted(p.name for p in out.iterdir())
    assert names == ["README.md", "config.json", "generation_config.json", "model.safetensors",
                     "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]  # fmt: skip
    assert (out / "README.md").read_text() == "my model card\n" and no_temp_files(tmp_path)
    # transformers loads the new model, not the old shards: the logits are ours.
    ours, _ = load_model(lit_checkpoint)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    idx = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(theirs(idx).logits, ours(idx), atol=1e-5, rtol=1e-5)
    # Written files get the umask's permissions (0644 under 022), not mkstemp's or safetensors' 0600.
    assert {name: os.stat(out / name).st_mode & 0o777 for name in names} == dict.fromkeys(names, 0o644)
    assert os.stat(out).st_mode & 0o777 == 0o755


def test_export_into_an_empty_or_new_folder_needs_no_flag(lit_checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    main(["export", "--checkpoint", str(lit_checkpoint), "--to", str(tmp_path / "empty")])
    main(["export", "--checkpoint", str(lit_checkpoint), "--to", str(tmp_path / "new" / "deeper")])
    assert (tmp_path / "empty" / "model.safetensors").is_file()
    assert (tmp_path / "new" / "deeper" / "model.safetensors").is_file()


def test_export_to_a_file_is_one_message(lit_checkpoint, tmp_path, capsys):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"keep me")
    line = fails(capsys, ["export", "--checkpoint", str(lit_checkpoint), "--to", str(target), "--overwrite", "true"])
    assert f"{target} is a file; name the folder" in line and target.read_bytes() == b"keep me"
    inside = fails(capsys, ["export", "--checkpoint", str(lit_checkpoint), "--to", str(tmp_path), "--overwrite",
                            "true"])  # fmt: skip
    assert "holds the checkpoint being exported" in inside


def test_an_export_failing_midway_leaves_the_old_folder_as_it_was(lit_checkpoint, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    main(["export", "--checkpoint", str(lit_checkpoint), "--to", str(out)])
    before = snapshot(out)

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a header")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", full_disk)
    line = fails(capsys, ["export", "--checkpoint", str(lit_checkpoint), "--to", str(out), "--overwrite", "true"])
    assert f"cannot write {out}: no space left on the device" in line
    assert snapshot(out) == before and no_temp_files(tmp_path)


# ---- lit-llm import ---------------------------------------------------------------------------------------------


def test_import_over_a_checkpoint_refuses_unless_asked(tokenizer, tmp_path, capsys, umask_022):  # noqa: F811
    folder = _save(_hf_model("gpt2"), tokenizer, tmp_path / "hf")
    main(["import", "--from", str(folder), "--to", str(tmp_path / "lit")])
    ckpt = tmp_path / "lit" / "last.ckpt"
    before = ckpt.read_bytes()
    line = fails(capsys, ["import", "--from", str(folder), "--to", str(tmp_path / "lit")])
    assert f"{ckpt} already exists; pass --overwrite true to replace it" in line and ckpt.read_bytes() == before

    other = _save(_hf_model("llama"), tokenizer, tmp_path / "hf2")
    main(["import", "--from", str(other), "--to", str(tmp_path / "lit"), "--overwrite", "true"])
    _, meta = load_model(ckpt)
    assert meta["source"]["model_type"] == "llama" and no_temp_files(tmp_path / "lit")
    assert os.stat(ckpt).st_mode & 0o777 == 0o644
    (tmp_path / "afile").write_text("")
    assert "afile is a file; name the folder" in fails(capsys, ["import", "--from", str(folder), "--to",
                                                                str(tmp_path / "afile")])  # fmt: skip


@pytest.mark.parametrize("sharded", [False, True])
def test_a_truncated_safetensors_file_is_one_message(sharded, tokenizer, tmp_path, capsys):  # noqa: F811
    folder = _save(_hf_model("llama"), tokenizer, tmp_path / "hf", **({"max_shard_size": "20KB"} if sharded else {}))
    weights = sorted(folder.glob("*.safetensors"))[-1]
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    line = fails(capsys, ["import", "--from", str(folder), "--to", str(tmp_path / "lit")])
    assert f"could not read {weights}" in line and "truncated or corrupt" in line
    assert not (tmp_path / "lit" / "last.ckpt").exists()


# ---- lit-llm pairs ----------------------------------------------------------------------------------------------

PAIRS = ["--tasks", "[upper]", "--per_task", "2", "--samples", "1", "--max_new_tokens", "4", "--device", "cpu",
         "--progress", "false"]  # fmt: skip


def test_pairs_over_an_existing_file_refuses_unless_asked(base_checkpoint, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "pairs.jsonl"
    out.write_text('{"old": 1}\n')
    line = fails(capsys, ["pairs", "--checkpoint", str(base_checkpoint), "--output", str(out), *PAIRS])
    assert f"{out} already exists; pass --overwrite true to replace it" in line
    assert out.read_text() == '{"old": 1}\n'
    main(["pairs", "--checkpoint", str(base_checkpoint), "--output", str(out), *PAIRS, "--overwrite=true"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and set(rows[0]) == {"prompt", "chosen", "rejected", "task"}
    assert json.loads(Path(f"{out}.stats.json").read_text())["pairs"] == 2 and no_temp_files(tmp_path)


def test_pairs_failing_mid_write_leaves_the_old_file(base_checkpoint, tmp_path, monkeypatch):  # noqa: F811
    from lit_llm.eval import pairs as pairs_module
    from lit_llm.eval.pairs import PairStats, write_pairs

    out = tmp_path / "pairs.jsonl"
    out.write_text('{"old": 1}\n')
    good = {"prompt": "p", "chosen": "a", "rejected": "b", "task": "upper"}
    # The third pair cannot be written as JSON: the write fails after two lines.
    monkeypatch.setattr(pairs_module, "sample_pairs", lambda *a, **k: ([good, good, {"prompt": {1}}], PairStats()))
    with pytest.raises(TypeError):
        write_pairs(str(base_checkpoint), str(out), tasks=["upper"], per_task=1, device="cpu", progress=False,
                    overwrite=True)  # fmt: skip
    assert out.read_text() == '{"old": 1}\n' and no_temp_files(tmp_path)
    assert not Path(f"{out}.stats.json").exists()


# ---- lit-llm chat and generate ----------------------------------------------------------------------------------


@pytest.fixture
def demo_sized_chat_checkpoint(base_checkpoint, tmp_path) -> Path:  # noqa: F811
    """An SFT-like checkpoint with the demo model's block_size 128 (a narrow model, so the test stays fast)."""
    tok = load_tokenizer(base_checkpoint)
    torch.manual_seed(0)
    model = GPT(Config.from_name("tiny", n_layer=1, n_head=2, n_embd=32, intermediate_size=64,
                                 vocab_size=tok.vocab_size))  # fmt: skip
    assert model.config.block_size == 128
    meta = {"stage": "sft", "model_config": model.config.to_dict(), "tokenizer": tok.to_json(),
            "prompt_style": style_to_dict(load_style("chat"))}  # fmt: skip
    path = tmp_path / "sft.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "lit_llm": meta}, path)
    return path


def test_chat_default_reply_length_fits_the_demo_model(demo_sized_chat_checkpoint, monkeypatch, capsys):
    asked = []
    real = lit_llm.generation.generate_responses

    def recording(*args, **kwargs):
        asked.append(kwargs["max_new_tokens"])
        return real(*args, **kwargs)

    monkeypatch.setattr(lit_llm.generation, "generate_responses", recording)
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is 2 + 3?\nand 4 + 4?\n"))
    main(["chat", "--checkpoint", str(demo_sized_chat_checkpoint), "--temperature", "0"])
    assert asked == [64, 64]  # min(128, block_size // 2)
    assert capsys.readouterr().out.count("assistant> ") == 2
    line = fails(capsys, ["chat", "--checkpoint", str(demo_sized_chat_checkpoint), "--max_new_tokens", "128"])
    assert "--max_new_tokens 128 leaves no room" in line and "block_size 128" in line
    assert "top_p must be in (0, 1]" in fails(capsys, ["chat", "--checkpoint", str(demo_sized_chat_checkpoint),
                                                       "--top_p", "0"])  # fmt: skip


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--max_new_tokens", "-5", "max_new_tokens must be at least 1, got -5"),
        ("--max_new_tokens", "0", "max_new_tokens must be at least 1, got 0"),
        ("--max_new_tokens", "96", "max_new_tokens 96 leaves no room for a prompt in the model's block_size 96"),
        ("--num_samples", "0", "num_samples must be at least 1, got 0"),
        ("--temperature", "-1", "temperature must be >= 0"),
        ("--top_p", "0", "top_p must be in (0, 1]"),
        ("--top_p", "1.5", "top_p must be in (0, 1]"),
        ("--top_k", "0", "top_k must be at least 1"),
        ("--prompt", "", "a prompt is empty after tokenization"),
    ],
)
def test_generate_rejects_impossible_options_in_one_line(option, value, message, base_checkpoint, capsys):  # noqa: F811
    argv = ["generate", "--checkpoint", str(base_checkpoint), "--prompt", "Once upon a time", option, value]
    assert message in fails(capsys, argv)  # and nothing printed as if it had worked


def test_an_over_long_prompt_is_cut_with_a_warning(base_checkpoint, capsys, caplog):  # noqa: F811
    prompt = "Once upon a time, Ada counted the pears in the garden. " * 12
    length = len(load_tokenizer(base_checkpoint).encode(prompt))
    assert length > 96
    with caplog.at_level(logging.WARNING, logger="lit_llm.generation"):
        main(["generate", "--checkpoint", str(base_checkpoint), "--prompt", prompt, "--max_new_tokens", "8",
              "--temperature", "0"])  # fmt: skip
    (record,) = [r for r in caplog.records if r.name == "lit_llm.generation"]
    assert record.getMessage() == (
        f"a prompt did not fit the model's block_size 96 beside max_new_tokens 8: dropped its first {length - 88} "
        "token(s), keeping the last 88"
    )
    assert capsys.readouterr().out.startswith(prompt)


def test_a_batch_of_over_long_prompts_is_one_warning(caplog):
    from lit_llm.generation import crop_prompts

    model = GPT(Config.from_name("tiny", n_layer=1, n_head=2, n_embd=32, intermediate_size=64, block_size=16,
                                 vocab_size=64))  # fmt: skip
    rows = [list(range(20)), [2] * 5, list(range(30))]
    with caplog.at_level(logging.WARNING, logger="lit_llm.generation"):
        cropped = crop_prompts(model, rows, max_new_tokens=6)
    assert cropped == [list(range(10, 20)), [2] * 5, list(range(20, 30))]
    assert [r.getMessage() for r in caplog.records] == [
        "2 of 3 prompts did not fit the model's block_size 16 beside max_new_tokens 6: dropped the first 10 to 20 "
        "token(s) of each, keeping the last 10"
    ]
    caplog.clear()
    assert crop_prompts(model, [[1] * 10], max_new_tokens=6) == [[1] * 10] and not caplog.records
