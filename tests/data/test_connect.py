"""The stage-to-data handshake, `connect(DataSpec) -> DataInfo`: a data module without its own tokenizer (prompt
style, prompt length) builds nothing in setup and builds on connect exactly what explicit arguments build; the
fallbacks (the checkpoint's prompt style, else alpaca; block_size - max_new_tokens), the errors of a module never
connected or connected to a model it does not fit, the pair ids DPO keys its reference log-probs by, and that no
data module reads the model."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import lit_llm.data
from lit_llm.data.connect import DataInfo, DataSpec
from lit_llm.data.preference import PreferenceDataModule
from lit_llm.data.pretrain import PretrainDataModule
from lit_llm.data.rl_prompts import PromptDataModule
from lit_llm.data.sft import SFTDataModule
from lit_llm.errors import ConfigError
from lit_llm.prepare.corpus import generate_corpus
from lit_llm.prepare.shards import TokenWriter
from lit_llm.tasks import task_records
from lit_llm.text.templates import load_style, prompt_ids
from lit_llm.text.tokenizer import Tokenizer, train_bpe

TASKS = dict(tasks=["add", "count"], examples_per_task=12, val_examples_per_task=3)
NOT_CONNECTED = (
    "data.tokenizer is not set and the data module was not connected to a stage; give data.tokenizer "
    "(or connect it: `dm.connect(DataSpec(tokenizer=...))`; `lit-llm fit` and the stages do this)"
)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    texts = list(generate_corpus(300, seed=1)) + [r["instruction"] for r in task_records("train", per_task=200)]
    return train_bpe(texts, vocab_size=512)


def loaded(dm: Any) -> list[dict[str, Any]]:
    """Every batch of two training epochs and of validation."""
    out = []
    for epoch in (0, 1):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        out += list(loader)
    return out + list(dm.val_dataloader())


def assert_same_batches(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert set(x) == set(y)
        for key in x:
            if torch.is_tensor(x[key]):
                assert torch.equal(x[key], y[key]), key
            else:
                assert x[key] == y[key], key


def assert_unbuilt(dm: Any) -> None:
    assert dm.stats == {}
    with pytest.raises(ConfigError, match="not connected to a stage"):
        dm.train_examples


# ---- building on connect equals building from explicit arguments --------------------------------------------


@pytest.mark.parametrize("packing", [False, True])
def test_sft_builds_on_connect_what_an_explicit_tokenizer_builds(tok: Tokenizer, tok_path: Path, packing: bool):
    explicit = SFTDataModule(tokenizer=str(tok_path), packing=packing, max_length=96, batch_size=4, **TASKS)
    explicit.setup("fit")
    dm = SFTDataModule(packing=packing, max_length=96, batch_size=4, **TASKS)
    dm.setup("fit")
    assert_unbuilt(dm)
    # SFT keeps its own configured style (alpaca), whatever style the model's checkpoint stores.
    info = dm.connect(DataSpec(tokenizer=tok, prompt_style=load_style("chat"), block_size=128))
    assert type(dm.prompt_style).__name__ == "Alpaca"
    assert info == DataInfo(tok, tok.vocab_size, 96, (4, 96) if packing else None, dm.prompt_style, 4)
    assert_same_batches(loaded(dm), loaded(explicit))
    assert {k: s.summary(k) for k, s in dm.stats.items()} == {k: s.summary(k) for k, s in explicit.stats.items()}
    assert dm.eval_prompts(3) == explicit.eval_prompts(3)


def test_connect_is_idempotent_and_explicit_arguments_win(tok: Tokenizer, tok_path: Path) -> None:
    dm = SFTDataModule(max_length=96, **TASKS)
    dm.connect(DataSpec(tokenizer=tok))
    train = dm.train_examples
    dm.connect(DataSpec(tokenizer=tok))
    assert dm.train_examples is train  # not rebuilt
    other = train_bpe(list(generate_corpus(50, seed=2)), vocab_size=300)
    explicit = SFTDataModule(tokenizer=str(tok_path), max_length=96, **TASKS)
    explicit.setup("fit")
    built = explicit.train_examples
    info = explicit.connect(DataSpec(tokenizer=other, block_size=96))  # built in setup: only checked
    assert explicit.train_examples is built and info.vocab_size == tok.vocab_size == explicit.tokenizer.vocab_size
    # Unbuilt with an explicit tokenizer: connect builds with data.tokenizer, not the stage's.
    late = SFTDataModule(tokenizer=str(tok_path), max_length=96, **TASKS)
    assert late.connect(DataSpec(tokenizer=other)).vocab_size == tok.vocab_size


def test_preference_builds_on_connect_what_explicit_arguments_build(tok: Tokenizer, tok_path: Path) -> None:
    explicit = PreferenceDataModule(tokenizer=str(tok_path), prompt_style="chat", batch_size=4, **TASKS)
    explicit.setup("fit")
    assert explicit.stats  # everything given: built in setup
    dm = PreferenceDataModule(batch_size=4, **TASKS)
    dm.setup("fit")
    assert_unbuilt(dm)
    info = dm.connect(DataSpec(tokenizer=tok, prompt_style=load_style("chat"), block_size=128))
    assert info == DataInfo(tok, tok.vocab_size, 128, None, dm.prompt_style, 4)
    assert_same_batches(loaded(dm), loaded(explicit))
    assert dm.eval_prompts(3) == explicit.eval_prompts(3)


def test_prompts_build_on_connect_what_explicit_arguments_build(tok: Tokenizer, tok_path: Path) -> None:
    explicit = PromptDataModule(tokenizer=str(tok_path), prompt_style="chat", max_prompt_length=40, batch_size=4,
                                **TASKS)  # fmt: skip
    explicit.setup("fit")
    assert explicit.stats
    dm = PromptDataModule(batch_size=4, **TASKS)
    dm.setup("fit")
    assert_unbuilt(dm)
    info = dm.connect(DataSpec(tokenizer=tok, prompt_style=load_style("chat"), block_size=56, max_new_tokens=16))
    assert dm.max_prompt_length == 40
    assert info == DataInfo(tok, tok.vocab_size, None, None, dm.prompt_style, 4)
    assert_same_batches(loaded(dm), loaded(explicit))
    assert dm.eval_prompts(3) == explicit.eval_prompts(3)


# ---- fallbacks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [PreferenceDataModule, PromptDataModule])
def test_unset_prompt_style_is_the_checkpoints_else_alpaca(tok: Tokenizer, cls: type) -> None:
    extra = {"max_prompt_length": 64} if cls is PromptDataModule else {}
    chat = cls(tokenizer=None, **TASKS, **extra)
    chat.connect(DataSpec(tokenizer=tok, prompt_style=load_style("chat")))
    assert type(chat.prompt_style).__name__ == "Chat"
    assert chat.connect(DataSpec(tokenizer=tok)).prompt_style is chat.prompt_style  # told back; not rebuilt
    plain = cls(**TASKS, **extra)
    plain.connect(DataSpec(tokenizer=tok))
    assert type(plain.prompt_style).__name__ == "Alpaca"
    messages = plain.val_examples[0].messages
    for dm, style in ((chat, "chat"), (plain, "alpaca")):
        example = dm.val_examples[0]
        ids = example.input_ids if cls is PromptDataModule else example.chosen_ids.tolist()
        assert ids[: len(prompt_ids(tok, load_style(style), messages))] == prompt_ids(tok, load_style(style), messages)
    # An explicit style wins over the checkpoint's.
    explicit = cls(prompt_style="alpaca", **TASKS, **extra)
    explicit.connect(DataSpec(tokenizer=tok, prompt_style=load_style("chat")))
    assert type(explicit.prompt_style).__name__ == "Alpaca"


def test_unset_max_prompt_length_is_what_block_size_leaves_after_max_new_tokens(tok: Tokenizer) -> None:
    dm = PromptDataModule(prompt_style="alpaca", **TASKS)
    with pytest.warns(UserWarning, match="prompt_too_long"):  # the few prompts of more than 40 tokens
        dm.connect(DataSpec(tokenizer=tok, block_size=52, max_new_tokens=12))
    assert dm.max_prompt_length == 40
    assert dm.train_examples and all(len(p.input_ids) <= 40 for p in dm.train_examples)
    for spec in (DataSpec(tokenizer=tok), DataSpec(tokenizer=tok, block_size=30), DataSpec(max_new_tokens=8)):
        with pytest.raises(ConfigError, match=r"^data\.max_prompt_length is not set and the stage gave no block_size"):
            PromptDataModule(**TASKS).connect(spec)
    with pytest.raises(ConfigError, match=re.escape("model.max_new_tokens (30) leaves no room in block_size 30")):
        PromptDataModule(**TASKS).connect(DataSpec(tokenizer=tok, block_size=30, max_new_tokens=30))
    too_long = PromptDataModule(tokenizer=None, max_prompt_length=24, **TASKS)
    with pytest.raises(ConfigError, match=re.escape("data.max_prompt_length (24) + model.max_new_tokens (10) exceeds "
                                                    "the model's block_size (30)")):  # fmt: skip
        too_long.connect(DataSpec(tokenizer=tok, block_size=30, max_new_tokens=10))


# ---- errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [SFTDataModule, PreferenceDataModule, PromptDataModule])
def test_a_module_never_connected_says_how_to_connect_it(cls: type) -> None:
    dm = cls(prompt_style="alpaca", **({"max_prompt_length": 40} if cls is PromptDataModule else {}), **TASKS)
    dm.setup("fit")
    for ask in (dm.train_dataloader, dm.val_dataloader, lambda: dm.eval_prompts(2), lambda: dm.train_examples,
                lambda: dm.tokenizer):  # fmt: skip
        with pytest.raises(ConfigError) as exc:
            ask()
        assert str(exc.value) == NOT_CONNECTED
    # Nothing left unset but the style: the message names that.
    styled = PreferenceDataModule(tokenizer="unused.json", **TASKS)
    with pytest.raises(ConfigError, match=r"^data\.prompt_style is not set and the data module was not connected"):
        styled.train_dataloader()


def test_connecting_without_any_tokenizer_names_data_tokenizer() -> None:
    with pytest.raises(ConfigError, match="data.tokenizer is not set and the model has no init_from checkpoint"):
        SFTDataModule(**TASKS).connect(DataSpec(block_size=128))


@pytest.mark.parametrize("cls", [SFTDataModule, PreferenceDataModule])
def test_max_length_beyond_the_models_block_size(tok: Tokenizer, cls: type) -> None:
    dm = cls(prompt_style="alpaca", max_length=96, **TASKS)
    with pytest.raises(ConfigError, match=re.escape("data.max_length (96) exceeds the model's block_size (64)")):
        dm.connect(DataSpec(tokenizer=tok, block_size=64))
    assert dm.connect(DataSpec(tokenizer=tok, block_size=96)).block_size == 96


def test_pretrain_connect_checks_block_size_and_tells_the_batch_shape(tmp_path: Path) -> None:
    with TokenWriter(tmp_path / "train.bin", 100) as w:
        w.write(np.arange(1000) % 100)
    dm = PretrainDataModule(data_dir=str(tmp_path), block_size=32, batch_size=4, val_file=None)
    with pytest.raises(ConfigError, match=re.escape("data.block_size (32) exceeds the model's block_size (16)")):
        dm.connect(DataSpec(block_size=16))
    info = dm.connect(DataSpec(block_size=32))
    assert info == DataInfo(None, 100, 32, (4, 32), None, 4) and dm.batch_shape == (4, 32)


# ---- pair ids -----------------------------------------------------------------------------------------------


def test_pair_ids_number_train_then_val_pairs_and_stay_with_their_pairs(tok: Tokenizer, tok_path: Path) -> None:
    dm = PreferenceDataModule(tokenizer=str(tok_path), prompt_style="alpaca", batch_size=5, **TASKS)
    dm.setup("fit")
    n, m = len(dm.train_examples), len(dm.val_examples)
    assert [p.pair_id for p in dm.train_examples] == list(range(n))
    assert [p.pair_id for p in dm.val_examples] == list(range(n, n + m))
    by_id = {p.pair_id: p for p in dm.train_examples + dm.val_examples}
    orders = []
    for epoch in (0, 1, 0):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        ids = []
        for batch in loader:
            assert batch["pair_ids"].dtype == torch.long and batch["pair_ids"].shape == (len(batch["last_index"]) // 2,)
            for row, pair_id in enumerate(batch["pair_ids"].tolist()):
                chosen = by_id[pair_id].chosen_ids
                assert batch["input_ids"][row, : len(chosen)].tolist() == chosen.tolist()
            ids += batch["pair_ids"].tolist()
        assert sorted(ids) == list(range(n))
        orders.append(ids)
    assert orders[0] != orders[1] and orders[0] == orders[2]  # reshuffled each epoch, the ids with their pairs
    val_ids = [i for batch in dm.val_dataloader() for i in batch["pair_ids"].tolist()]
    assert val_ids == list(range(n, n + m))


def test_pair_ids_of_a_held_out_val_split_follow_the_train_ids(tok_path: Path, tmp_path: Path) -> None:
    rows = [f'{{"prompt": "What is {i} + 1?", "chosen": "{i + 1}", "rejected": "{i + 2}"}}' for i in range(20)]
    (tmp_path / "pairs.jsonl").write_text("\n".join(rows) + "\n")
    dm = PreferenceDataModule(train=str(tmp_path / "pairs.jsonl"), tokenizer=str(tok_path), prompt_style="alpaca",
                              val_fraction=0.25)  # fmt: skip
    dm.setup("fit")
    assert [p.pair_id for p in dm.train_examples + dm.val_examples] == list(range(20))
    assert len(dm.val_examples) == 5


# ---- no data module reads the model -------------------------------------------------------------------------


def test_no_data_module_reads_the_lightning_module() -> None:
    folder = Path(lit_llm.data.__file__).parent
    files = sorted(folder.glob("*.py"))
    assert len(files) >= 7
    readers = [f.name for f in files if "lightning_module" in f.read_text(encoding="utf-8")]
    assert readers == []
