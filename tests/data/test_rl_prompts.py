"""Prompt data for RL: the four record forms turned into conversations (and reference answers), tokenized to the
exact ids of the generation prompt, bad records skipped by reason with counts that add up, strict mode, renamed
fields, the list-of-lists batch layout, and PromptDataModule over JSONL files without a Trainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lit_llm.data.connect import DataSpec
from lit_llm.text.conversations import SkipCounter, resolve_roles
from lit_llm.prepare.corpus import generate_corpus
from lit_llm.data.rl_prompts import (
    Prompt,
    PromptDataModule,
    build_prompts,
    collate_prompts,
    prompt_messages,
    resolve_prompt_fields,
)
from lit_llm.data.sft import SFTStats
from lit_llm.tasks import task_records
from lit_llm.text.templates import load_style, prompt_ids
from lit_llm.text.tokenizer import Tokenizer, train_bpe
from lit_llm.errors import ConfigError, DataError

ALPACA = load_style("alpaca")
FIELDS = resolve_prompt_fields(None)
ROLES = resolve_roles(None)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    """A BPE tokenizer (vocabulary 512) that has seen the corpus and the task phrasings, as the stage tests use."""
    texts = list(generate_corpus(300, seed=1)) + [r["instruction"] for r in task_records("train", per_task=200)]
    return train_bpe(texts, vocab_size=512)


def enc(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text, allow_special=False)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


# ---- record forms -------------------------------------------------------------------------------------------


def test_prompt_string_is_one_user_message() -> None:
    assert prompt_messages({"prompt": "What is 2 + 2?"}, FIELDS, ROLES) == (
        [{"role": "user", "content": "What is 2 + 2?"}],
        None,
    )


def test_prompt_as_a_conversation_keeps_system_and_user() -> None:
    """TRL's conversational form: the messages are the prompt, with roles canonicalised (human -> user)."""
    record = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "human", "content": "Hi?"}]}
    messages, reference = prompt_messages(record, FIELDS, ROLES)
    assert messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    assert reference is None


def test_chat_messages_drop_the_last_assistant_turn_as_the_reference() -> None:
    record = {"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                           {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]}  # fmt: skip
    messages, reference = prompt_messages(record, FIELDS, ROLES)
    assert messages == [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                        {"role": "user", "content": "q2"}]  # fmt: skip
    assert reference == "a2"
    # A chat record that already ends with the user's turn has no reference.
    assert prompt_messages({"messages": [{"role": "user", "content": "q"}]}, FIELDS, ROLES)[1] is None


def test_alpaca_record_with_input_and_output() -> None:
    """instruction + input become one user message; the output is the reference (an empty one is None)."""
    record = {"instruction": "Add the numbers.", "input": "2 3", "output": "5"}
    assert prompt_messages(record, FIELDS, ROLES) == (
        [{"role": "user", "content": "Add the numbers.", "input": "2 3"}],
        "5",
    )
    messages, reference = prompt_messages({"instruction": "Say hi.", "output": ""}, FIELDS, ROLES)
    assert messages == [{"role": "user", "content": "Say hi.", "input": ""}] and reference is None


# ---- build_prompts: exact tokens ----------------------------------------------------------------------------


def test_build_prompts_tokens_are_the_alpaca_generation_prompt(tok: Tokenizer) -> None:
    """Each prompt's ids are exactly `prompt_ids` of its conversation, i.e. the template text up to the response."""
    records = [
        ("r:1", {"prompt": "What is 2 + 2?", "task": "add"}),
        ("r:2", {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]}),
        ("r:3", {"instruction": "Add the numbers.", "input": "2 3", "output": "5", "task": 7}),
        ("r:4", {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "red"}]}),
    ]
    stats = SFTStats()
    prompts = build_prompts(records, tok, ALPACA, 1000, stats=stats)
    texts = [
        "### Instruction:\nWhat is 2 + 2?\n\n### Response:\n",
        "Be brief.\n\n### Instruction:\nHi?\n\n### Response:\n",
        "### Instruction:\nAdd the numbers.\n\n### Input:\n2 3\n\n### Response:\n",
        "### Instruction:\nName a colour.\n\n### Response:\n",
    ]
    assert len(prompts) == 4
    for prompt, text in zip(prompts, texts):
        assert prompt.input_ids == prompt_ids(tok, ALPACA, prompt.messages) == enc(tok, text)
    assert [p.task for p in prompts] == ["add", None, None, None]  # a non-string task is dropped
    assert [p.reference for p in prompts] == [None, None, "5", "red"]
    assert stats.records == stats.examples == 4 and stats.skips.total == 0
    assert stats.tokens == sum(len(p.input_ids) for p in prompts)


def test_prompt_too_long_is_strictly_longer_than_the_limit(tok: Tokenizer) -> None:
    """A prompt of exactly max_prompt_length tokens is kept; one more token and it is skipped."""
    short, long = {"prompt": "Hi?"}, {"prompt": "What is 2 + 2? " * 5}
    n_short = len(prompt_ids(tok, ALPACA, [{"role": "user", "content": "Hi?"}]))
    n_long = len(prompt_ids(tok, ALPACA, [{"role": "user", "content": long["prompt"]}]))
    assert n_short < n_long
    stats = SFTStats()
    prompts = build_prompts([("a:1", short), ("a:2", long)], tok, ALPACA, n_long - 1, stats=stats)
    assert [p.messages[0]["content"] for p in prompts] == ["Hi?"]
    assert stats.skips.skipped == {"prompt_too_long": 1}
    detail = f"the prompt has {n_long} tokens, max_prompt_length is {n_long - 1}"
    assert stats.skips.first["prompt_too_long"] == f"a:2: {detail}"
    assert len(build_prompts([("a:2", long)], tok, ALPACA, n_long)) == 1


# ---- build_prompts: skipped records -------------------------------------------------------------------------

BAD = [
    ("empty_prompt", {"prompt": "   "}),
    ("empty_prompt", {"instruction": "", "input": ""}),
    ("empty_prompt", {"instruction": " ", "input": "an input alone is no instruction"}),
    ("missing_field", {"question": "hi", "answer": "yo"}),
    ("not_an_object", ["a", "list"]),
    ("not_an_object", "just a string"),
    ("not_ending_with_user", {"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}),
    ("not_ending_with_user", {"messages": [{"role": "assistant", "content": "a"}]}),
    ("not_ending_with_user", {"prompt": [{"role": "system", "content": "s"}]}),
    ("bad_messages", {"prompt": []}),
    ("bad_messages", {"messages": "user: hi"}),
    ("bad_messages", {"prompt": ["hi"]}),
    ("unknown_role", {"prompt": [{"role": "robot", "content": "beep"}]}),
    ("not_a_string", {"instruction": 5}),
    ("missing_field", {"messages": [{"role": "user"}]}),
]


@pytest.mark.parametrize(("reason", "record"), BAD, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BAD)])
def test_each_bad_record_is_skipped_with_its_reason(tok: Tokenizer, reason: str, record: object) -> None:
    stats = SFTStats()
    assert build_prompts([("bad.jsonl:1", record)], tok, ALPACA, 100, stats=stats) == []
    assert stats.skips.skipped == {reason: 1}
    assert stats.skips.first[reason].startswith("bad.jsonl:1: ")


def test_skip_counts_add_up(tok: Tokenizer) -> None:
    """records == prompts + skipped, per reason, with the first location of each reason kept."""
    good = [{"prompt": f"What is {i} + 1?"} for i in range(5)]
    records = [(f"mix.jsonl:{i + 1}", r) for i, r in enumerate(good[:2] + [rec for _, rec in BAD] + good[2:])]
    records.append(("mix.jsonl:99", {"prompt": "What is 2 + 2? " * 30}))
    stats = SFTStats()
    prompts = build_prompts(records, tok, ALPACA, 40, stats=stats)
    assert len(prompts) == stats.examples == 5
    expected: dict[str, int] = {}
    for reason, _ in BAD:
        expected[reason] = expected.get(reason, 0) + 1
    expected["prompt_too_long"] = 1
    assert stats.skips.skipped == expected
    assert stats.records == len(records) == stats.examples + stats.skips.total
    assert stats.skips.first["empty_prompt"] == "mix.jsonl:3: the last user message is empty"
    assert stats.skips.first["missing_field"].startswith(
        "mix.jsonl:6: record has none of the fields 'prompt', 'messages' or 'instruction' (fields: question, answer)"
    )
    assert stats.skips.first["prompt_too_long"].startswith("mix.jsonl:99: the prompt has ")


def test_strict_mode_raises_naming_the_location(tok: Tokenizer) -> None:
    robot = {"prompt": [{"role": "robot", "content": "x"}]}
    records = [("data/p.jsonl:1", {"prompt": "ok"}), ("data/p.jsonl:2", robot)]
    stats = SFTStats(skips=SkipCounter(strict=True))
    with pytest.raises(DataError, match=r"^data/p\.jsonl:2: prompt\[0\] has role 'robot'"):
        build_prompts(records, tok, ALPACA, 100, stats=stats)
    stats = SFTStats(skips=SkipCounter(strict=True))
    with pytest.raises(DataError, match=r"^data/p\.jsonl:7: the prompt has \d+ tokens, max_prompt_length is 3"):
        build_prompts([("data/p.jsonl:7", {"prompt": "What is 2 + 2?"})], tok, ALPACA, 3, stats=stats)


def test_renamed_fields(tok: Tokenizer) -> None:
    """fields={prompt: question}: the renamed key is read, and the default name no longer is."""
    stats = SFTStats()
    records = [("f:1", {"question": "What is 2 + 2?"}), ("f:2", {"prompt": "What is 2 + 2?"})]
    prompts = build_prompts(records, tok, ALPACA, 100, fields={"prompt": "question"}, stats=stats)
    assert [p.messages for p in prompts] == [[{"role": "user", "content": "What is 2 + 2?"}]]
    assert stats.skips.skipped == {"missing_field": 1}
    assert "'question', 'messages' or 'instruction'" in stats.skips.first["missing_field"]
    # ShareGPT's names: conversations of {from, value}; human and gpt are known roles.
    sharegpt = {"conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]}
    fields = {"messages": "conversations", "role": "from", "content": "value"}
    (prompt,) = build_prompts([("s:1", sharegpt)], tok, ALPACA, 100, fields=fields)
    assert prompt.messages == [{"role": "user", "content": "Hi?"}] and prompt.reference == "Hello."
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['chosen'\]"):
        build_prompts([], tok, ALPACA, 100, fields={"chosen": "good"})


def test_collate_prompts_keeps_lists() -> None:
    """Prompts of different lengths stay lists (no padding): generation takes token lists of any length."""
    prompts = [
        Prompt([1, 2, 3], [{"role": "user", "content": "a"}], "add", "5"),
        Prompt([4], [{"role": "user", "content": "b"}]),
    ]
    assert collate_prompts(prompts) == {
        "prompt_ids": [[1, 2, 3], [4]],
        "messages": [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]],
        "tasks": ["add", None],
        "references": ["5", None],
    }


# ---- PromptDataModule ---------------------------------------------------------------------------------------

GOOD_ROWS = [{"prompt": f"What is {i} + {i}?", "task": "add"} for i in range(6)]
BAD_ROWS = [{"prompt": ""}, {"foo": 1}, {"prompt": "What is 2 + 2? " * 30}]


def test_data_module_reads_files_and_counts_skips(tok_path: Path, tmp_path: Path) -> None:
    """setup("fit") without a Trainer (train_dataloader takes rank 0 of 1): train counts add up (a malformed JSON
    line is the reader's to report, not counted here), batches are lists of prompts, and val keeps its order."""
    train_rows = GOOD_ROWS[:3] + BAD_ROWS + ["{not json"] + GOOD_ROWS[3:]
    train = write_jsonl(tmp_path / "train.jsonl", train_rows)
    val_rows = [{"instruction": "Add.", "input": "1 2", "output": "3"},
                {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "red"}]}]
    val = write_jsonl(tmp_path / "val.jsonl", val_rows)  # fmt: skip
    dm = PromptDataModule(train=str(train), val=str(val), tokenizer=str(tok_path), prompt_style="alpaca",
                          max_prompt_length=48, batch_size=4)  # fmt: skip
    assert dm.block_size is None and dm.batch_shape is None
    with pytest.warns(UserWarning) as caught:
        dm.setup("fit")
    warned = "\n".join(str(w.message) for w in caught)
    assert "prompt train data: skipped 3 record(s)" in warned and "malformed" in warned.lower()

    stats = dm.stats["train"]
    assert stats.records == 9 and stats.examples == 6
    assert stats.skips.skipped == {"empty_prompt": 1, "missing_field": 1, "prompt_too_long": 1}
    assert stats.records == stats.examples + stats.skips.total
    assert stats.skips.first["empty_prompt"].endswith("train.jsonl:4: the last user message is empty")
    assert dm.stats["val"].records == dm.stats["val"].examples == 2
    assert len(dm.train_examples) == 6 and len(dm.val_examples) == 2
    for p in dm.train_examples:
        assert p.input_ids == prompt_ids(dm.tokenizer, ALPACA, p.messages)
        assert len(p.input_ids) <= 48

    batches = list(dm.train_dataloader())
    assert [len(b["prompt_ids"]) for b in batches] == [4, 2]
    for batch in batches:
        assert set(batch) == {"prompt_ids", "messages", "tasks", "references"}
        assert batch["tasks"] == ["add"] * len(batch["prompt_ids"])
        assert batch["references"] == [None] * len(batch["prompt_ids"])
    seen = sorted(m[0]["content"] for b in batches for m in b["messages"])
    assert seen == sorted(r["prompt"] for r in GOOD_ROWS)

    (val_batch,) = list(dm.val_dataloader())
    assert val_batch["references"] == ["3", "red"] and val_batch["tasks"] == [None, None]
    assert val_batch["messages"] == [[{"role": "user", "content": "Add.", "input": "1 2"}],
                                     [{"role": "user", "content": "Name a colour."}]]  # fmt: skip
    assert val_batch["prompt_ids"][1] == prompt_ids(dm.tokenizer, ALPACA, val_batch["messages"][1])
    assert dm.eval_prompts(5) == [
        ([{"role": "user", "content": "Add.", "input": "1 2"}], "3", None),
        ([{"role": "user", "content": "Name a colour."}], "red", None),
    ]


def test_data_module_renamed_fields_and_held_out_val(tok_path: Path, tmp_path: Path) -> None:
    """fields reach the builder; without `val`, val_fraction of the prompts is held out."""
    rows = [{"question": f"What is {i} + 1?"} for i in range(10)]
    train = write_jsonl(tmp_path / "q.jsonl", rows)
    dm = PromptDataModule(train=str(train), tokenizer=str(tok_path), fields={"prompt": "question"},
                          max_prompt_length=40, val_fraction=0.2)  # fmt: skip
    dm.setup("fit")
    dm.connect(DataSpec())  # a stage whose model stores no prompt style: alpaca
    assert dm.stats["train"].examples == 10 and len(dm.train_examples) == 8 and len(dm.val_examples) == 2
    contents = {p.messages[0]["content"] for p in dm.train_examples + dm.val_examples}
    assert contents == {r["question"] for r in rows}


def test_data_module_strict_names_the_file_and_line(tok_path: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "ok"}, {"prompt": ""}])
    dm = PromptDataModule(train=str(train), tokenizer=str(tok_path), max_prompt_length=40, strict=True)
    dm.setup("fit")
    with pytest.raises(DataError, match=r"train\.jsonl:2: the last user message is empty"):
        dm.connect(DataSpec())


def test_data_module_without_max_prompt_length_or_trainer_is_a_config_error(tok_path: Path, tmp_path: Path) -> None:
    """The limit is derived from the model's block_size, which the stage hands over; without it, connect must say so
    (and so must a loader of a data module never connected)."""
    train = write_jsonl(tmp_path / "train.jsonl", GOOD_ROWS)
    dm = PromptDataModule(train=str(train), tokenizer=str(tok_path), prompt_style="alpaca")
    dm.setup("fit")  # builds nothing: the limit is not known yet
    with pytest.raises(ConfigError, match="max_prompt_length is not set"):
        dm.train_dataloader()
    with pytest.raises(ConfigError, match="max_prompt_length is not set"):
        dm.connect(DataSpec())


def test_data_module_bad_options_fail_at_construction() -> None:
    with pytest.raises(ConfigError, match="max_prompt_length must be >= 1"):
        PromptDataModule(max_prompt_length=0)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['chosen'\]"):
        PromptDataModule(fields={"chosen": "good"})
