"""SFT data: tokenized examples and their counts, truncation, bad records, padding and packing (packed and
unpacked batches give the same per-example losses), and the data module over files and the built-in tasks."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lit_llm.prepare.corpus import generate_corpus
from lit_llm.data.sft import SFTDataModule, SFTStats, build_examples, collate, pack, shifted_targets
from lit_llm.text.templates import load_style
from lit_llm.text.tokenizer import Tokenizer, train_bpe
from lit_llm.errors import ConfigError, DataError
from lit_llm.losses import IGNORE_INDEX
from lit_llm.model import GPT, Config, packed_attention_mask


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_bpe(list(generate_corpus(300, seed=1)) + ["### Instruction:\nWhat is 3 + 4?"] * 20, vocab_size=512)


@pytest.fixture(scope="module")
def tok_path(tok: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(path)
    return path


def records(n: int) -> list[tuple[str, dict]]:
    return [(f"r{i}", {"instruction": f"What is {i} + {i + 1}?", "output": str(2 * i + 1)}) for i in range(n)]


def test_shifted_targets() -> None:
    assert shifted_targets([IGNORE_INDEX, IGNORE_INDEX, 5, 6]).tolist() == [IGNORE_INDEX, 5, 6, IGNORE_INDEX]


def test_examples_train_on_the_response_and_eos_only(tok: Tokenizer) -> None:
    (example,) = build_examples(records(1)[:1], tok, load_style("alpaca"), max_length=128)
    ids, targets = example.input_ids.tolist(), example.targets.tolist()
    prompt = tok.encode("### Instruction:\nWhat is 0 + 1?\n\n### Response:\n", allow_special=False)
    assert ids == tok.encode("### Instruction:\nWhat is 0 + 1?\n\n### Response:\n1", allow_special=False) + [tok.eos_id]
    # Position t predicts ids[t + 1]: only the positions whose next token is a response token carry a target.
    expected = [IGNORE_INDEX] * (len(prompt) - 1) + ids[len(prompt) :] + [IGNORE_INDEX]
    assert targets == expected
    assert tok.decode([t for t in targets if t != IGNORE_INDEX], skip_special_tokens=False) == "1</s>"


def test_counts_add_up_and_reasons_are_kept(tok: Tokenizer) -> None:
    bad = [
        ("a.jsonl:1", {"instruction": "hi"}),
        ("a.jsonl:2", {"instruction": "hi", "output": "  "}),
        ("a.jsonl:3", {"messages": [{"role": "user", "content": "hi"}]}),
        ("a.jsonl:4", {"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]}),
        ("a.jsonl:5", ["not", "a", "record"]),
    ]
    stats = SFTStats()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        examples = build_examples(records(3) + bad, tok, load_style("alpaca"), 128, stats=stats)
    assert len(examples) == stats.examples == 3
    assert stats.skips.skipped == {
        "missing_field": 1,
        "empty_response": 1,
        "no_assistant_turn": 1,
        "not_ending_with_assistant": 1,
        "not_an_object": 1,
    }
    assert stats.records == stats.examples + stats.skips.total == 8
    assert stats.skips.first["missing_field"].startswith("a.jsonl:1: record has no 'output' field")
    assert stats.tokens == sum(len(e.input_ids) for e in examples)
    assert stats.response_tokens == sum(int((e.targets != IGNORE_INDEX).sum()) for e in examples)


def test_strict_mode_names_the_record(tok: Tokenizer) -> None:
    from lit_llm.text.conversations import SkipCounter

    stats = SFTStats(skips=SkipCounter(strict=True))
    with pytest.raises(DataError, match=r"^a\.jsonl:7: record has no 'output' field"):
        build_examples([("a.jsonl:7", {"instruction": "x"})], tok, load_style("alpaca"), 128, stats=stats)


def test_truncation_policies(tok: Tokenizer) -> None:
    style = load_style("alpaca")
    long = [("long", {"instruction": "Say it.", "output": "the fox " * 40})]
    prompt_len = len(tok.encode("### Instruction:\nSay it.\n\n### Response:\n", allow_special=False))
    dropped = SFTStats()
    assert build_examples(long, tok, style, 48, truncation="drop", stats=dropped) == []
    assert dropped.skips.skipped == {"too_long": 1}
    cut = SFTStats()
    (example,) = build_examples(long, tok, style, 48, truncation="truncate", stats=cut)
    assert len(example.input_ids) == 48 and cut.truncated == 1 and cut.skips.total == 0
    assert int((example.targets != IGNORE_INDEX).sum()) == 48 - prompt_len  # the last position has no next token
    short = SFTStats()
    assert build_examples(long, tok, style, prompt_len, truncation="truncate", stats=short) == []
    assert short.skips.skipped == {"prompt_too_long": 1}


def test_padding_collate(tok: Tokenizer) -> None:
    examples = build_examples(records(12)[9:12] + records(1), tok, load_style("alpaca"), 128)
    batch = collate([[e] for e in examples], pad_id=tok.pad_id, packed=False)
    lengths = [len(e.input_ids) for e in examples]
    assert batch["input_ids"].shape == (4, max(lengths))
    assert batch["num_tokens"] == sum(lengths)
    for row, (e, n) in enumerate(zip(examples, lengths)):
        assert batch["input_ids"][row, :n].tolist() == e.input_ids.tolist()
        assert (batch["input_ids"][row, n:] == tok.pad_id).all()
        assert (batch["targets"][row, n:] == IGNORE_INDEX).all()
    assert "segment_ids" not in batch


def test_pack_places_every_example_once_within_capacity() -> None:
    lengths = [30, 70, 20, 50, 60, 10, 40, 90, 25, 5]
    bins = pack(lengths, 100, seed=3)
    assert sorted(i for b in bins for i in b) == list(range(10))
    assert all(sum(lengths[i] for i in b) <= 100 for b in bins)
    # A new bin opens only when no open bin has room, so no two bins could be merged.
    totals = [sum(lengths[i] for i in b) for b in bins]
    assert all(a + b > 100 for i, a in enumerate(totals) for b in totals[i + 1 :])
    assert bins == pack(lengths, 100, seed=3)


@torch.no_grad()
def per_example_losses(model: GPT, batch: dict, rows: list[list]) -> list[float]:
    """Summed NLL of each example, in row order, from one forward pass over the batch."""
    kwargs = {}
    if "segment_ids" in batch:
        kwargs = dict(position_ids=batch["position_ids"], attention_mask=packed_attention_mask(batch["segment_ids"]))
    logits = model(batch["input_ids"], **kwargs)
    nll = F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), reduction="none").view_as(batch["targets"])
    out = []
    for b, row in enumerate(rows):
        start = 0
        for example in row:
            end = start + len(example.input_ids)
            out.append(float(nll[b, start:end].sum()))
            start = end
    return out


def test_packed_and_padded_batches_give_the_same_per_example_losses(tok: Tokenizer) -> None:
    torch.manual_seed(0)
    examples = build_examples(records(40)[25:33], tok, load_style("alpaca"), 128)
    for position in ("rope", "learned"):
        model = GPT(Config.from_name("tiny", n_layer=2, vocab_size=tok.vocab_size, position=position)).eval()
        padded_rows = [[e] for e in examples]
        padded = per_example_losses(model, collate(padded_rows, tok.pad_id, packed=False), padded_rows)
        bins = pack([len(e.input_ids) for e in examples], 128, seed=0)
        packed_rows = [[examples[i] for i in b] for b in bins]
        assert len(packed_rows) < len(examples)  # several examples really share a row
        packed_batch = collate(packed_rows, tok.pad_id, packed=True)
        packed = per_example_losses(model, packed_batch, packed_rows)
        order = [i for b in bins for i in b]
        assert packed == pytest.approx([padded[i] for i in order], rel=1e-5, abs=1e-5)
        # Without the document mask and position resets the losses differ: the test can fail.
        plain = {"input_ids": packed_batch["input_ids"], "targets": packed_batch["targets"]}
        leaky = per_example_losses(model, plain, packed_rows)
        assert leaky != pytest.approx([padded[i] for i in order], rel=1e-3)


def test_packed_segments_and_positions(tok: Tokenizer) -> None:
    examples = build_examples(records(3), tok, load_style("alpaca"), 128)
    batch = collate([examples], tok.pad_id, packed=True)
    lengths = [len(e.input_ids) for e in examples]
    assert batch["segment_ids"][0].tolist() == sum(([s] * n for s, n in enumerate(lengths)), [])
    assert batch["position_ids"][0].tolist() == sum((list(range(n)) for n in lengths), [])
    mask = packed_attention_mask(batch["segment_ids"])[0]
    first, second = lengths[0], lengths[0] + 1
    assert mask[second, first] and mask[second, second] and not mask[second, first - 1] and not mask[first - 1, first]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_data_module_over_a_jsonl_file(tok_path: Path, tmp_path: Path) -> None:
    rows = [r for _, r in records(40)] + [{"instruction": "x"}]
    chats = [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}]}
             for i in range(10)]
    path = write_jsonl(tmp_path / "sft.jsonl", rows + chats)
    dm = SFTDataModule(train=str(path), tokenizer=str(tok_path), max_length=64, batch_size=4, val_fraction=0.1,
                       packing=True)
    with pytest.warns(UserWarning, match="missing_field: 1"):
        dm.setup("fit")
    stats = dm.stats["train"]
    assert stats.records == 51 and stats.examples == 50 and stats.skips.skipped == {"missing_field": 1}
    assert len(dm.train_examples) == 45 and len(dm.val_examples) == 5
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] <= 64
    assert {"position_ids", "segment_ids"} <= set(batch)
    val = next(iter(dm.val_dataloader()))
    assert "segment_ids" not in val
    prompts = dm.eval_prompts(2)
    assert len(prompts) == 2 and prompts[0][0][-1]["role"] == "user"


def test_data_module_on_builtin_tasks_uses_their_val_split(tok_path: Path) -> None:
    dm = SFTDataModule(tokenizer=str(tok_path), tasks=["add", "count"], examples_per_task=30, val_examples_per_task=5)
    dm.setup("fit")
    assert len(dm.train_examples) == 60 and len(dm.val_examples) == 10
    assert [e.task for e in dm.val_examples[:4]] == ["add", "count", "add", "count"]
    train_prompts = {e.messages[0]["content"] for e in dm.train_examples}
    assert not train_prompts & {e.messages[0]["content"] for e in dm.val_examples}


def test_bad_options_fail_at_construction(tok_path: Path) -> None:
    with pytest.raises(ConfigError, match="truncation"):
        SFTDataModule(truncation="cut")
    with pytest.raises(ConfigError, match="unknown key"):
        SFTDataModule(fields={"answer": "output"})
    with pytest.raises(ConfigError, match="unknown prompt_style 'vicuna'"):
        SFTDataModule(prompt_style="vicuna")
    dm = SFTDataModule(train="/nonexistent/data.jsonl", tokenizer=str(tok_path))
    with pytest.raises(DataError, match="/nonexistent/data.jsonl"):
        dm.setup("fit")


def test_a_file_with_no_usable_record_is_an_error(tok_path: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "x"}] * 3)
    dm = SFTDataModule(train=str(path), tokenizer=str(tok_path))
    with pytest.warns(UserWarning), pytest.raises(DataError, match="no training examples"):
        dm.setup("fit")


def test_data_module_reads_parquet_json_and_local_hf_datasets(tok_path: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(6)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    (tmp_path / "b.json").write_text(json.dumps(rows), encoding="utf-8")
    write_jsonl(tmp_path / "c.jsonl", rows)
    fields = {"instruction": "question", "output": "answer"}
    for source in (str(tmp_path / "a.parquet"), str(tmp_path / "b.json"), f"hf:json:{tmp_path / 'c.jsonl'}"):
        dm = SFTDataModule(train=source, tokenizer=str(tok_path), fields=fields, val_fraction=0.0)
        dm.setup("fit")
        assert dm.stats["train"].examples == 6, source
        assert [e.messages[0]["content"] for e in dm.train_examples] == [r["question"] for r in rows]
