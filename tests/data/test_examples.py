"""ExampleStore, the lifecycle the SFT, preference and prompt data modules share: what is missing until a stage
connects, building once (in setup only when nothing is missing), the finish hook, and loaders."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from lit_llm.data.connect import DataInfo, DataSpec
from lit_llm.data.examples import ExampleStore
from lit_llm.data.records import TASKS_SOURCE, RecordSet, SFTStats, Split
from lit_llm.errors import ConfigError


def builtin(split: str, tasks: Any, per_task: int, seed: int) -> list[dict[str, Any]]:
    return [{"n": i, "split": split} for i in range(per_task)]


def store(calls: list[str], **kwargs: Any) -> ExampleStore[int]:
    records = RecordSet("test", TASKS_SOURCE, None, builtin, None, 4, 2, 0.0, False, 0)

    def encode(items: Any, stats: SFTStats) -> list[int]:
        calls.append("encode")
        out = [record["n"] for _, record in items]
        stats.records = stats.examples = len(out)
        return out

    return ExampleStore(records, encode, **{"tokenizer": None, "prompt_style": None, "batch_size": 2,
                                            "num_workers": 0, **kwargs})  # fmt: skip


def test_missing_arguments_are_named_in_order_until_connected() -> None:
    calls: list[str] = []
    examples = store(calls, needs={"max_prompt_length": None})
    assert examples.missing() == ["tokenizer", "prompt_style", "max_prompt_length"]
    examples.setup()
    assert calls == [] and not examples.built and examples.stats == {}
    with pytest.raises(ConfigError, match=r"^data\.tokenizer and data\.prompt_style and data\.max_prompt_length "):
        examples.train
    tok = SimpleNamespace(vocab_size=7, pad_id=None)
    info = examples.connect(DataSpec(tokenizer=tok), 16, None)  # type: ignore[arg-type]
    assert examples.missing() == [] and type(examples.prompt_style).__name__ == "Alpaca"  # no style handed over
    assert info == DataInfo(tok, 7, 16, None, examples.prompt_style, 2)  # type: ignore[arg-type]
    assert examples.pad_id == 0  # the tokenizer has none
    assert (examples.train, examples.val, calls) == ([0, 1, 2, 3], [0, 1], ["encode", "encode"])
    examples.connect(DataSpec(), None, None)  # built already: not again
    assert calls == ["encode", "encode"] and examples.stats["train"].examples == 4


def test_given_arguments_build_in_setup_once_and_finish_runs_on_the_split() -> None:
    calls: list[str] = []
    finished: list[Split[int]] = []
    examples = store(calls, tokenizer="tok.json", prompt_style="chat", finish=finished.append)
    assert examples.missing() == []
    examples.setup()
    examples.setup()
    assert calls == ["encode", "encode"] and finished == [Split([0, 1, 2, 3], [0, 1])]


def test_loaders_batch_the_items_and_no_items_make_no_loader() -> None:
    examples = store([], tokenizer="tok.json", prompt_style="chat")
    assert examples.loader([], list, shuffle=False, trainer=None) == []
    assert list(examples.loader([1, 2, 3], list, shuffle=False, trainer=None)) == [[1, 2], [3]]
    assert sorted(sum(examples.loader([1, 2, 3, 4], list, shuffle=True, trainer=None), [])) == [1, 2, 3, 4]
