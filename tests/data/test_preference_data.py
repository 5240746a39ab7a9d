"""Preference data: the three record forms tokenized to exact ids and targets (prompt untrained, response and stop
token trained), bad records skipped by reason with counts that add up, strict mode, truncation, 2B-row collation,
and the data module over a JSONL file and over the built-in tasks."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_llm.text.conversations import SkipCounter
from lit_llm.prepare.corpus import generate_corpus
from lit_llm.data.connect import DataSpec
from lit_llm.data.preference import PreferenceDataModule, PreferencePair, build_pairs, collate_pairs, encode_pair
from lit_llm.data.sft import SFTStats, shifted_targets
from lit_llm.tasks import get_task, task_pairs
from lit_llm.text.templates import PromptStyle, Special, load_style, prompt_ids
from lit_llm.text.tokenizer import Tokenizer, train_bpe
from lit_llm.errors import ConfigError, DataError
from lit_llm.losses import IGNORE_INDEX

ALPACA = load_style("alpaca")
CHAT = load_style("chat")


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_bpe(list(generate_corpus(300, seed=1)) + ["### Instruction:\nWhat is 3 + 4?"] * 20, vocab_size=512)


def enc(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text, allow_special=False)


def sp(tok: Tokenizer, name: str) -> int:
    return tok.token_id(name)


def trained(targets: np.ndarray) -> list[int]:
    return [int(t) for t in targets if t != IGNORE_INDEX]


def tok_decode(tok: Tokenizer, targets: np.ndarray) -> str:
    return tok.decode(trained(targets), skip_special_tokens=False)


def expected_targets(ids: list[int], prompt_len: int) -> list[int]:
    """Position t predicts ids[t + 1]; only positions whose next token is a response token carry a target."""
    return [IGNORE_INDEX] * (prompt_len - 1) + ids[prompt_len:] + [IGNORE_INDEX]


def one(records: list[tuple[str, object]], tok: Tokenizer, style, max_length: int = 128, **kw) -> PreferencePair:
    stats = SFTStats()
    pairs = build_pairs(records, tok, style, max_length, stats=stats, **kw)
    assert stats.skips.skipped == {} and len(pairs) == 1
    return pairs[0]


# ---- record forms ---------------------------------------------------------------------------------------------


def test_string_form_with_alpaca_style(tok: Tokenizer) -> None:
    record = {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5", "task": "add"}
    pair = one([("r", record)], tok, ALPACA)
    prompt_text = "### Instruction:\nWhat is 2 + 2?\n\n### Response:\n"
    prompt = enc(tok, prompt_text)
    assert prompt == prompt_ids(tok, ALPACA, [{"role": "user", "content": "What is 2 + 2?"}])
    for ids, targets, answer in ((pair.chosen_ids, pair.chosen_targets, "4"),
                                 (pair.rejected_ids, pair.rejected_targets, "5")):  # fmt: skip
        ids, targets = ids.tolist(), targets.tolist()
        assert ids == enc(tok, prompt_text + answer) + [tok.eos_id]
        assert ids[: len(prompt)] == prompt
        assert ids[-1] == tok.eos_id
        assert len(targets) == len(ids)
        # Token by token: no target on any position that predicts a prompt token, the response after it.
        for t in range(len(ids)):
            if t < len(prompt) - 1 or t == len(ids) - 1:
                assert targets[t] == IGNORE_INDEX, t
            else:
                assert targets[t] == ids[t + 1], t
        assert targets == expected_targets(ids, len(prompt))
        labels = [IGNORE_INDEX] * len(prompt) + ids[len(prompt) :]
        assert targets == shifted_targets(labels).tolist()
        assert tok.decode(trained(np.asarray(targets)), skip_special_tokens=False) == f"{answer}</s>"
    assert pair.chosen_ids.dtype == np.int64 and pair.chosen_targets.dtype == np.int64
    assert pair.messages == [{"role": "user", "content": "What is 2 + 2?"}]
    assert pair.chosen == "4" and pair.task == "add"
    assert pair.pair_id is None  # ids number a data module's pairs; a pair built alone has none


def test_message_form_with_chat_style_trains_the_final_reply_only(tok: Tokenizer) -> None:
    prompt = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "What is 2 + 2?"},
    ]
    record = {"prompt": prompt, "chosen": [{"role": "assistant", "content": "4"}],
              "rejected": [{"role": "assistant", "content": "5"}]}  # fmt: skip
    pair = one([("r", record)], tok, CHAT)
    end, asst = sp(tok, "<|end|>"), sp(tok, "<|assistant|>")
    head = (
        [sp(tok, "<|system|>")] + enc(tok, "\nBe brief.") + [end]
        + [sp(tok, "<|user|>")] + enc(tok, "\nhi") + [end]
        + [asst] + enc(tok, "\nhello") + [end]
        + [sp(tok, "<|user|>")] + enc(tok, "\nWhat is 2 + 2?") + [end]
        + [asst]
    )  # fmt: skip
    generation_prompt = head + enc(tok, "\n")
    assert prompt_ids(tok, CHAT, prompt) == generation_prompt
    for ids, targets, answer in ((pair.chosen_ids, pair.chosen_targets, "4"),
                                 (pair.rejected_ids, pair.rejected_targets, "5")):  # fmt: skip
        ids, targets = ids.tolist(), targets.tolist()
        assert ids == head + enc(tok, "\n" + answer) + [end]
        n = len(generation_prompt)
        assert ids[:n] == generation_prompt
        assert targets == expected_targets(ids, n)
        assert tok.decode(trained(np.asarray(targets)), skip_special_tokens=False) == f"{answer}<|end|>"
        # The earlier assistant turn ("hello" and its <|end|>) is in the input but never a target.
        hello = enc(tok, "\nhello")
        start = ids.index(asst) + 1
        assert ids[start : start + len(hello)] == hello
        assert all(t == IGNORE_INDEX for t in targets[: start + len(hello) + 1])
        assert trained(np.asarray(targets)) == ids[n:]
    assert pair.messages == prompt
    assert pair.chosen == "4"


def test_message_form_accepts_sharegpt_roles_and_renamed_fields(tok: Tokenizer) -> None:
    record = {
        "question": [{"from": "human", "value": "hi"}],
        "good": [{"from": "gpt", "value": "hello there"}],
        "bad": [{"from": "gpt", "value": "go away"}],
    }
    fields = {"prompt": "question", "chosen": "good", "rejected": "bad", "role": "from", "content": "value"}
    pair = one([("r", record)], tok, CHAT, fields=fields)
    assert pair.messages == [{"role": "user", "content": "hi"}]
    assert tok.decode(trained(pair.chosen_targets), skip_special_tokens=False) == "hello there<|end|>"
    assert tok.decode(trained(pair.rejected_targets), skip_special_tokens=False) == "go away<|end|>"


def test_whole_conversation_messages_share_their_prompt(tok: Tokenizer) -> None:
    user = {"role": "user", "content": "hi"}
    record = {
        "chosen": [user, {"role": "assistant", "content": "hello there"}],
        "rejected": [user, {"role": "assistant", "content": "go away"}],
    }
    pair = one([("r", record)], tok, CHAT)
    assert pair.messages == [user]
    assert pair.chosen == "hello there"
    head = prompt_ids(tok, CHAT, [user])
    assert head == [sp(tok, "<|user|>")] + enc(tok, "\nhi") + [sp(tok, "<|end|>"), sp(tok, "<|assistant|>")] + enc(
        tok, "\n"
    )
    end = sp(tok, "<|end|>")
    for ids, targets, answer in ((pair.chosen_ids, pair.chosen_targets, "hello there"),
                                 (pair.rejected_ids, pair.rejected_targets, "go away")):  # fmt: skip
        ids, targets = ids.tolist(), targets.tolist()
        assert ids == head[:-len(enc(tok, "\n"))] + enc(tok, "\n" + answer) + [end]
        assert ids[: len(head)] == head
        assert targets == expected_targets(ids, len(head))
        assert tok.decode(trained(np.asarray(targets)), skip_special_tokens=False) == f"{answer}<|end|>"


def test_whole_conversation_messages_with_a_shared_assistant_turn(tok: Tokenizer) -> None:
    shared = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "What is 2 + 2?"},
    ]
    record = {"chosen": shared + [{"role": "assistant", "content": "4"}],
              "rejected": shared + [{"role": "assistant", "content": "5"}]}  # fmt: skip
    pair = one([("r", record)], tok, ALPACA)
    assert pair.messages == shared
    head = prompt_ids(tok, ALPACA, shared)
    assert pair.chosen_ids.tolist()[: len(head)] == head == pair.rejected_ids.tolist()[: len(head)]
    # The shared assistant turn's "hello</s>" is part of the prompt and untrained.
    assert tok.decode(trained(pair.chosen_targets), skip_special_tokens=False) == "4</s>"
    assert tok.decode(trained(pair.rejected_targets), skip_special_tokens=False) == "5</s>"


def test_whole_conversation_plain_strings_split_at_the_common_token_prefix(tok: Tokenizer) -> None:
    chosen = "\n\nHuman: hi\n\nAssistant: hello there"
    rejected = "\n\nHuman: hi\n\nAssistant: go away"
    pair = one([("r", {"chosen": chosen, "rejected": rejected})], tok, ALPACA)
    c_ids, r_ids = enc(tok, chosen), enc(tok, rejected)
    n = 0
    while c_ids[n] == r_ids[n]:
        n += 1
    assert n > 0
    assert pair.chosen_ids.tolist() == c_ids + [tok.eos_id]
    assert pair.rejected_ids.tolist() == r_ids + [tok.eos_id]
    # The prompt is exactly the longest common prefix: the sides differ at the first response token.
    assert pair.chosen_ids[:n].tolist() == pair.rejected_ids[:n].tolist()
    assert pair.chosen_ids[n] != pair.rejected_ids[n]
    assert tok.decode(c_ids[:n]).startswith("\n\nHuman: hi\n\nAssistant:")
    for ids, targets in ((pair.chosen_ids, pair.chosen_targets), (pair.rejected_ids, pair.rejected_targets)):
        ids, targets = ids.tolist(), targets.tolist()
        assert targets == expected_targets(ids, n)
        assert trained(np.asarray(targets))[-1] == tok.eos_id
    assert tok.decode(trained(pair.chosen_targets), skip_special_tokens=False).strip() == "hello there</s>"
    assert tok.decode(trained(pair.rejected_targets), skip_special_tokens=False).strip() == "go away</s>"
    assert pair.messages is None
    assert pair.chosen == tok.decode(c_ids[n:]) and pair.chosen.strip() == "hello there"


def test_encode_pair_returns_prompt_and_responses(tok: Tokenizer) -> None:
    from lit_llm.text.conversations import resolve_roles
    from lit_llm.data.preference import resolve_preference_fields

    head, c, r, messages, text = encode_pair(
        {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"}, tok, ALPACA, resolve_preference_fields(None),
        resolve_roles(None),
    )  # fmt: skip
    assert head == enc(tok, "### Instruction:\nWhat is 2 + 2?\n\n### Response:\n")
    assert c == enc(tok, "4") + [tok.eos_id] and r == enc(tok, "5") + [tok.eos_id]
    assert messages == [{"role": "user", "content": "What is 2 + 2?"}] and text == "4"


# ---- bad records, counts, truncation, strict mode ---------------------------------------------------------------


def test_bad_records_are_skipped_by_reason_and_counted(tok: Tokenizer) -> None:
    good = [(f"pairs.jsonl:{i}", {"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": str(i + 2)})
            for i in range(3)]  # fmt: skip
    user = {"role": "user", "content": "hi"}
    same_conv = [user, {"role": "assistant", "content": "hello"}]
    bad = [
        ("pairs.jsonl:10", {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "4"}),
        ("pairs.jsonl:11", {"chosen": same_conv, "rejected": list(same_conv)}),
        ("pairs.jsonl:12", {"prompt": "What is 2 + 2?", "chosen": "4"}),
        ("pairs.jsonl:13", {"prompt": "What is 2 + 2?", "chosen": "   ", "rejected": "5"}),
        ("pairs.jsonl:14", {"prompt": "the fox " * 40, "chosen": "4", "rejected": "5"}),
        ("pairs.jsonl:15", {"prompt": "Say it.", "chosen": "the fox " * 40, "rejected": "no"}),
        ("pairs.jsonl:16", ["not", "a", "record"]),
        ("pairs.jsonl:17", {"prompt": "hi", "chosen": "4", "rejected": [{"role": "assistant", "content": "5"}]}),
    ]  # fmt: skip
    stats = SFTStats()
    pairs = build_pairs(good + bad, tok, ALPACA, 48, truncation="drop", stats=stats)
    assert len(pairs) == stats.examples == 3
    assert [p.chosen for p in pairs] == ["1", "2", "3"]
    assert stats.skips.skipped == {
        "identical_responses": 2,
        "missing_field": 1,
        "empty_response": 1,
        "prompt_too_long": 1,
        "too_long": 1,
        "not_an_object": 1,
        "mixed_forms": 1,
    }
    assert stats.records == stats.examples + stats.skips.total == 11
    assert stats.truncated == 0
    assert stats.skips.first["identical_responses"].startswith("pairs.jsonl:10: ")
    assert stats.skips.first["missing_field"].startswith("pairs.jsonl:12: record has no 'rejected' field")
    assert stats.skips.first["empty_response"].startswith("pairs.jsonl:13: ")
    assert stats.skips.first["prompt_too_long"].startswith("pairs.jsonl:14: the prompt has ")
    assert stats.skips.first["too_long"].startswith("pairs.jsonl:15: ")
    assert stats.skips.first["not_an_object"].startswith("pairs.jsonl:16: record is a list")
    assert stats.skips.first["mixed_forms"].startswith("pairs.jsonl:17: ")
    assert stats.tokens == sum(len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    assert stats.response_tokens == sum(
        len(trained(p.chosen_targets)) + len(trained(p.rejected_targets)) for p in pairs
    )


def test_truncation_cuts_the_responses_and_counts(tok: Tokenizer) -> None:
    max_length = 48
    prompt_len = len(enc(tok, "### Instruction:\nSay it.\n\n### Response:\n"))
    records = [
        ("a:1", {"prompt": "Say it.", "chosen": "the fox " * 40, "rejected": "the cat " * 40}),
        ("a:2", {"prompt": "Say it.", "chosen": "the fox " * 40, "rejected": "no"}),
        ("a:3", {"prompt": "Say it.", "chosen": "the fox " * 40 + "A", "rejected": "the fox " * 40 + "B"}),
        ("a:4", {"prompt": "the fox " * 40, "chosen": "4", "rejected": "5"}),
    ]
    stats = SFTStats()
    pairs = build_pairs(records, tok, ALPACA, max_length, truncation="truncate", stats=stats)
    assert len(pairs) == 2 and stats.truncated == 2
    # Agreeing on every token that fits leaves nothing to prefer; a prompt with no room is always dropped.
    assert stats.skips.skipped == {"identical_responses": 1, "prompt_too_long": 1}
    assert stats.records == stats.examples + stats.skips.total == 4
    both, one_side = pairs
    for p in pairs:
        assert len(p.chosen_ids) <= max_length and len(p.rejected_ids) <= max_length
    assert len(both.chosen_ids) == len(both.rejected_ids) == max_length
    assert len(trained(both.chosen_targets)) == max_length - prompt_len  # the last position has no next token
    assert both.chosen_ids[-1] != tok.eos_id  # cut before its stop token
    assert len(one_side.chosen_ids) == max_length
    assert one_side.rejected_ids.tolist() == enc(tok, "### Instruction:\nSay it.\n\n### Response:\nno") + [tok.eos_id]
    dropped = SFTStats()
    assert build_pairs(records[:2], tok, ALPACA, max_length, truncation="drop", stats=dropped) == []
    assert dropped.skips.skipped == {"too_long": 2}


def test_strict_mode_raises_naming_the_record(tok: Tokenizer) -> None:
    stats = SFTStats(skips=SkipCounter(strict=True))
    good = ("pairs.jsonl:1", {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"})
    with pytest.raises(DataError, match=r"^pairs\.jsonl:3: record has no 'rejected' field"):
        build_pairs([good, ("pairs.jsonl:3", {"prompt": "q", "chosen": "4"})], tok, ALPACA, 128, stats=stats)
    with pytest.raises(DataError, match=r"^pairs\.jsonl:4: "):
        build_pairs([("pairs.jsonl:4", {"prompt": "q", "chosen": "4", "rejected": "4"})], tok, ALPACA, 128,
                    stats=SFTStats(skips=SkipCounter(strict=True)))  # fmt: skip


# ---- collation ------------------------------------------------------------------------------------------------


def make_pairs(tok: Tokenizer) -> list[PreferencePair]:
    records = [
        ("a", {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "the answer is five"}),
        ("b", {"prompt": "Say something long about the fox.", "chosen": "the fox ran to the barn", "rejected": "no"}),
        ("c", {"prompt": "hi", "chosen": "hello", "rejected": "go away"}),
    ]
    pairs = build_pairs(records, tok, ALPACA, 128)
    assert len(pairs) == 3
    return pairs


def test_collate_pairs_layout(tok: Tokenizer) -> None:
    pairs = make_pairs(tok)
    pad = tok.pad_id
    batch = collate_pairs(pairs, pad_id=pad)
    sides = [(p.chosen_ids, p.chosen_targets) for p in pairs] + [(p.rejected_ids, p.rejected_targets) for p in pairs]
    lengths = [len(ids) for ids, _ in sides]
    assert len(set(lengths)) > 1  # padding really happens
    assert batch["input_ids"].shape == batch["targets"].shape == (6, max(lengths))
    assert batch["input_ids"].dtype == batch["targets"].dtype == torch.long
    assert batch["last_index"].tolist() == [n - 1 for n in lengths]
    assert batch["num_tokens"] == sum(lengths)
    for row, ((ids, targets), n) in enumerate(zip(sides, lengths)):
        assert batch["input_ids"][row, :n].tolist() == ids.tolist()
        assert batch["targets"][row, :n].tolist() == targets.tolist()
        assert (batch["input_ids"][row, n:] == pad).all()
        assert (batch["targets"][row, n:] == IGNORE_INDEX).all()
        last = int(batch["last_index"][row])
        assert batch["input_ids"][row, last] == tok.eos_id  # the last real token is the stop token
        assert batch["targets"][row, last] == IGNORE_INDEX
    # Chosen rows first, then the rejected rows in the same pair order.
    assert tok.decode(trained(batch["targets"][1].numpy())) == "the fox ran to the barn"
    assert tok.decode(trained(batch["targets"][4].numpy())) == "no"
    assert "reference_logps" not in batch and "margin" not in batch


def test_collate_pairs_pair_ids_and_margin(tok: Tokenizer) -> None:
    pairs = make_pairs(tok)
    pairs[0].pair_id, pairs[1].pair_id = 7, 3
    assert "pair_ids" not in collate_pairs(pairs, tok.pad_id)  # not every pair has one
    pairs[2].pair_id = 0
    batch = collate_pairs(pairs, tok.pad_id)
    assert batch["pair_ids"].dtype == torch.long
    assert batch["pair_ids"].tolist() == [7, 3, 0]
    assert collate_pairs(pairs[::-1], tok.pad_id)["pair_ids"].tolist() == [0, 3, 7]  # the batch's order
    assert "margin" not in batch and "reference_logps" not in batch
    # A record's numeric margin is kept (a bool is not a margin) and collated only when every pair has one.
    records = [
        ("a", {"prompt": "hi", "chosen": "hello", "rejected": "go away", "margin": 2}),
        ("b", {"prompt": "yo", "chosen": "hello", "rejected": "go away", "margin": 0.5}),
        ("c", {"prompt": "hey", "chosen": "hello", "rejected": "go away", "margin": True}),
    ]
    with_margin = build_pairs(records, tok, ALPACA, 128)
    assert [p.margin for p in with_margin] == [2.0, 0.5, None]
    assert "margin" not in collate_pairs(with_margin, tok.pad_id)
    assert collate_pairs(with_margin[:2], tok.pad_id)["margin"].tolist() == [2.0, 0.5]


# ---- data module ----------------------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def set_up(dm: PreferenceDataModule) -> PreferenceDataModule:
    """Lightning's setup, then the stage's connect for a model whose checkpoint stores no prompt style (alpaca)."""
    dm.setup("fit")
    dm.connect(DataSpec())
    return dm


def renamed_rows(n: int) -> list[dict]:
    return [{"question": f"What is {i} + 1?", "good": str(i + 1), "bad": str(i + 2)} for i in range(n)]


def test_data_module_over_a_jsonl_file_with_renamed_fields(tok_path: Path, tmp_path: Path) -> None:
    rows = renamed_rows(40) + [{"question": "What is 1 + 1?", "good": "2"}]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    fields = {"prompt": "question", "chosen": "good", "rejected": "bad"}
    dm = PreferenceDataModule(train=str(path), tokenizer=str(tok_path), max_length=64, batch_size=4,
                              val_fraction=0.1, fields=fields)  # fmt: skip
    with pytest.warns(UserWarning, match="missing_field: 1"):
        set_up(dm)
    stats = dm.stats["train"]
    assert stats.records == 41 and stats.examples == 40 and stats.skips.skipped == {"missing_field": 1}
    assert stats.skips.first["missing_field"].startswith(f"{path}:41: record has no 'bad' field")
    assert len(dm.train_examples) == 36 and len(dm.val_examples) == 4
    held_out = {p.messages[0]["content"] for p in dm.val_examples}
    assert not held_out & {p.messages[0]["content"] for p in dm.train_examples}
    assert held_out | {p.messages[0]["content"] for p in dm.train_examples} == {r["question"] for r in rows[:40]}
    for p in dm.train_examples + dm.val_examples:
        i = int(p.messages[0]["content"].split()[2])
        assert p.chosen == str(i + 1)
        assert tok_decode(dm.tokenizer, p.rejected_targets) == f"{i + 2}</s>"

    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].shape[1] <= 64
    assert batch["last_index"].shape == (8,)
    # Row b and row b + B are the two sides of one pair: same prompt, different response.
    for b in range(4):
        c_last, r_last = int(batch["last_index"][b]), int(batch["last_index"][b + 4])
        c_ids, r_ids = batch["input_ids"][b, : c_last + 1].tolist(), batch["input_ids"][b + 4, : r_last + 1].tolist()
        assert c_ids[-1] == r_ids[-1] == dm.tokenizer.eos_id
        c_prompt, c_answer = dm.tokenizer.decode(c_ids).split("### Response:\n")
        r_prompt, r_answer = dm.tokenizer.decode(r_ids).split("### Response:\n")
        assert c_prompt == r_prompt and int(c_answer) + 1 == int(r_answer)
        n = len(prompt_ids(dm.tokenizer, ALPACA, [{"role": "user", "content": c_prompt.split("\n")[1]}]))
        assert c_ids[:n] == r_ids[:n]
        assert (batch["targets"][[b, b + 4], : n - 1] == IGNORE_INDEX).all()
    assert dm.train_dataloader().batch_size == 4
    val = next(iter(dm.val_dataloader()))
    assert val["input_ids"].shape[0] == 8

    prompts = dm.eval_prompts(3)
    assert len(prompts) == 3
    for (messages, chosen, task), p in zip(prompts, dm.val_examples):
        assert messages == [{"role": "user", "content": p.messages[0]["content"]}]
        assert chosen == p.chosen and task is None


def test_data_module_val_fraction_and_separate_val(tok_path: Path, tmp_path: Path) -> None:
    fields = {"prompt": "question", "chosen": "good", "rejected": "bad"}
    train = write_jsonl(tmp_path / "train.jsonl", renamed_rows(20))
    dm = PreferenceDataModule(train=str(train), tokenizer=str(tok_path), fields=fields, val_fraction=0.25)
    set_up(dm)
    assert len(dm.train_examples) == 15 and len(dm.val_examples) == 5
    dm = PreferenceDataModule(train=str(train), tokenizer=str(tok_path), fields=fields, val_fraction=0.0)
    set_up(dm)
    assert len(dm.train_examples) == 20 and dm.val_examples == [] and dm.val_dataloader() == []
    val = write_jsonl(tmp_path / "val.jsonl", renamed_rows(3))
    dm = PreferenceDataModule(train=str(train), val=str(val), tokenizer=str(tok_path), fields=fields)
    set_up(dm)
    assert len(dm.train_examples) == 20 and len(dm.val_examples) == 3
    assert dm.stats["val"].examples == 3


def test_data_module_strict_names_the_file_and_line(tok_path: Path, tmp_path: Path) -> None:
    rows = [{"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"}] * 2 + [{"prompt": "q", "chosen": "4"}]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    dm = PreferenceDataModule(train=str(path), tokenizer=str(tok_path), strict=True)
    with pytest.raises(DataError, match=r"pairs\.jsonl:3: record has no 'rejected' field"):
        set_up(dm)


def test_data_module_with_no_usable_pair_is_an_error(tok_path: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "chosen": "4", "rejected": "4"}] * 3)
    dm = PreferenceDataModule(train=str(path), tokenizer=str(tok_path))
    with pytest.warns(UserWarning, match="identical_responses: 3"), pytest.raises(DataError, match="no training"):
        set_up(dm)


def test_bad_options_fail_at_construction() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        PreferenceDataModule(fields={"answer": "output"})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['instruction'\]"):
        PreferenceDataModule(fields={"instruction": "question"})  # an SFT key, not a preference one
    with pytest.raises(ConfigError, match="truncation"):
        PreferenceDataModule(truncation="cut")
    with pytest.raises(ConfigError, match="unknown prompt_style"):
        PreferenceDataModule(prompt_style="vicuna")


def test_data_module_on_builtin_tasks(tok_path: Path) -> None:
    tasks = ["add", "count"]
    dm = PreferenceDataModule(tokenizer=str(tok_path), tasks=tasks, examples_per_task=20, val_examples_per_task=5,
                              batch_size=4, seed=7)  # fmt: skip
    set_up(dm)
    assert len(dm.train_examples) == 40 and len(dm.val_examples) == 10
    assert dm.stats["train"].skips.total == 0 and dm.stats["val"].skips.total == 0
    expected_train = task_pairs("train", tasks, per_task=20, seed=7)
    expected_val = task_pairs("val", tasks, per_task=5, seed=7)
    for pairs, expected in ((dm.train_examples, expected_train), (dm.val_examples, expected_val)):
        assert [p.messages for p in pairs] == [[{"role": "user", "content": r["prompt"]}] for r in expected]
        assert [p.chosen for p in pairs] == [r["chosen"] for r in expected]
        assert [p.task for p in pairs] == [r["task"] for r in expected] == tasks * (len(expected) // 2)
        for p, r in zip(pairs, expected):
            assert tok_decode(dm.tokenizer, p.chosen_targets) == f"{r['chosen']}</s>"
            assert tok_decode(dm.tokenizer, p.rejected_targets) == f"{r['rejected']}</s>"
            assert get_task(r["task"]).verify(r["prompt"], r["rejected"]) < 1.0
    assert not {r["prompt"] for r in expected_train} & {r["prompt"] for r in expected_val}

    prompts = dm.eval_prompts(3)
    assert prompts == [([{"role": "user", "content": r["prompt"]}], r["chosen"], r["task"]) for r in expected_val[:3]]
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 8


def test_eval_prompts_skip_raw_text_pairs(tok_path: Path, tmp_path: Path) -> None:
    rows = [{"chosen": "\n\nHuman: hi\n\nAssistant: hello there", "rejected": "\n\nHuman: hi\n\nAssistant: go away"},
            {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"}]  # fmt: skip
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    dm = PreferenceDataModule(train=str(train), val=str(train), tokenizer=str(tok_path))
    set_up(dm)
    assert len(dm.val_examples) == 2
    assert dm.eval_prompts(5) == [([{"role": "user", "content": "What is 2 + 2?"}], "4", None)]


def test_warnings_are_not_raised_for_clean_data(tok_path: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "ok.jsonl", [{"prompt": "hi", "chosen": "hello", "rejected": "go away"}] * 4)
    dm = PreferenceDataModule(train=str(path), tokenizer=str(tok_path), val_fraction=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        set_up(dm)
    assert dm.stats["train"].examples == 4


class _SpaceBeforeResponse(PromptStyle):
    """A template whose prompt ends in a space: the space merges into the response's first token."""

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> list[str]:
        parts: list[str] = []
        for m in messages:
            if m["role"] == "user":
                parts.append(f"Q: {m['content']}\nA: ")
            else:
                parts += [m["content"], Special("</s>")]
        return parts


def test_a_prompt_that_is_not_a_token_prefix_is_a_boundary_mismatch(tok: Tokenizer) -> None:
    stats = SFTStats()
    records = [("b.jsonl:1", {"prompt": "hi", "chosen": "the fox", "rejected": "a dog"})]
    assert build_pairs(records, tok, _SpaceBeforeResponse(), 128, stats=stats) == []
    assert stats.skips.skipped == {"boundary_mismatch": 1}
    assert stats.skips.first["boundary_mismatch"].startswith("b.jsonl:1: the prompt's tokens are not a prefix")
    assert stats.records == stats.examples + stats.skips.total == 1


def test_whole_conversations_prefer_the_first_differing_reply_only(tok) -> None:
    """Later turns of a longer side are not trained: the pair is about the first reply where the sides differ."""
    user = {"role": "user", "content": "hi"}
    record = {
        "chosen": [user, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"},
                   {"role": "assistant", "content": "ok"}],
        "rejected": [user, {"role": "assistant", "content": "bye"}],
    }  # fmt: skip
    (pair,) = build_pairs([("r", record)], tok, load_style("chat"), 128)
    trained = tok.decode([t for t in pair.chosen_targets if t != IGNORE_INDEX], skip_special_tokens=False)
    assert trained == "hello<|end|>" and pair.chosen == "hello"
