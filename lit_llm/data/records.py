"""What the SFT, preference and prompt data modules share: reading their sources, the record loop that turns records
into examples (skipping and counting the ones that cannot be used), and the split into train and val.

Each data module brings its own encoder (`build_examples`, `build_pairs`, `build_prompts` run `build_each` with one)
and its own built-in records (`lit_llm.tasks.task_records` or `task_pairs`); `RecordSet` does the rest. When the
examples are built, with what, and their loaders are `lit_llm.data.examples.ExampleStore`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
from lightning.pytorch.utilities import rank_zero_info

from lit_llm.errors import DataError
from lit_llm.text.conversations import RecordError, SkipCounter
from lit_llm.text.templates import BoundaryError

TASKS_SOURCE = "builtin:tasks"
# The arguments of a data module that say where its records are and how they split (RecordSet.of).
_RECORD_ARGS = ("train", "val", "tasks", "examples_per_task", "val_examples_per_task", "val_fraction", "strict", "seed")

T = TypeVar("T")


@dataclass
class SFTStats:
    """What became of the records: records = examples + skipped (by reason); truncated examples are kept."""

    records: int = 0
    examples: int = 0
    truncated: int = 0
    response_tokens: int = 0
    tokens: int = 0
    skips: SkipCounter = field(default_factory=SkipCounter)

    def summary(self, name: str, noun: str = "examples") -> str:
        return (
            f"{name}: {self.records} records -> {self.examples} {noun} ({self.truncated} truncated), "
            f"{self.tokens} tokens of which {self.response_tokens} trained; skipped: {self.skipped()}"
        )

    def skipped(self) -> str:
        """The skip counts by reason, "none" without any."""
        return ", ".join(f"{r} {n}" for r, n in sorted(self.skips.skipped.items())) or "none"


# ---- the record loop ---------------------------------------------------------------------------------------


@dataclass
class Encoded(Generic[T]):
    """One record's example, with its counts: `tokens` in it, `trained` of them, and whether it was truncated."""

    item: T
    tokens: int
    trained: int = 0
    truncated: bool = False


def build_each(
    records: Iterable[tuple[str, Any]], encode: Callable[[Any], Encoded[T]], stats: SFTStats
) -> list[T]:
    """`encode` every `(location, record)`; a record it rejects (RecordError, BoundaryError) is counted in
    `stats.skips` under its reason and location, every other one in `stats`' examples and tokens."""
    items = []
    for location, record in records:
        stats.records += 1
        try:
            encoded = encode(record)
        except RecordError as exc:
            stats.skips.skip(location, exc.reason, exc.detail)
            continue
        except BoundaryError as exc:
            stats.skips.skip(location, "boundary_mismatch", str(exc))
            continue
        stats.examples += 1
        stats.tokens += encoded.tokens
        stats.response_tokens += encoded.trained
        stats.truncated += encoded.truncated
        items.append(encoded.item)
    return items


def check_length(prompt_length: int, length: int, max_length: int, truncation: str) -> bool:
    """Whether an example of `length` tokens must be cut to `max_length` (`truncation="truncate"`); RecordError
    when its prompt alone fills `max_length` ("prompt_too_long") or it is too long to keep ("drop": "too_long")."""
    if prompt_length >= max_length:
        raise RecordError("prompt_too_long", f"the prompt has {prompt_length} tokens, max_length is {max_length}")
    if length <= max_length:
        return False
    if truncation == "drop":
        raise RecordError("too_long", f"{length} tokens, max_length is {max_length}")
    return True


# ---- sources and splits ------------------------------------------------------------------------------------


@dataclass
class Split(Generic[T]):
    """A data module's examples: `train` and `val` (empty without validation data)."""

    train: list[T]
    val: list[T]


@dataclass(frozen=True)
class RecordSet:
    """The records of a data module, and how they become its train and val examples.

    Args:
        kind: what the records are, for messages: "SFT", "preference", "prompt".
        train: sources of training records: JSON Lines, JSON, Parquet or CSV files, folders or globs of them,
            `hf:NAME[:SPLIT]` datasets, or "builtin:tasks".
        val: sources of validation records; None holds out `val_fraction` of `train` (for "builtin:tasks", the
            tasks' val split).
        builtin: the built-in records of a split: `builtin(split, tasks, per_task=..., seed=...)`.
        tasks: built-in tasks to use (None: all).
        examples_per_task: training records per built-in task.
        val_examples_per_task: validation records per built-in task.
        val_fraction: share of `train` held out for validation when `val` is None.
        strict: raise on the first bad record instead of skipping and counting.
        seed: seed of the built-in records and of the validation hold-out.
        describe: the summary line of one split's stats, `describe(stats, name)`.
    """

    kind: str
    train: str | list[str]
    val: str | list[str] | None
    builtin: Callable[..., list[dict[str, Any]]]
    tasks: list[str] | None
    examples_per_task: int
    val_examples_per_task: int
    val_fraction: float
    strict: bool
    seed: int
    describe: Callable[[SFTStats, str], str] = SFTStats.summary

    @classmethod
    def of(
        cls, kind: str, builtin: Callable[..., list[dict[str, Any]]], args: Mapping[str, Any],
        describe: Callable[[SFTStats, str], str] = SFTStats.summary,
    ) -> RecordSet:  # fmt: skip
        """The records that a data module's arguments name: `args` holds train, val, tasks, examples_per_task,
        val_examples_per_task, val_fraction, strict and seed (its hparams), which the record data modules share."""
        return cls(kind, builtin=builtin, describe=describe, **{name: args[name] for name in _RECORD_ARGS})

    def records(self, sources: str | list[str], split: str) -> Iterator[tuple[str, Any]]:
        """`(location, record)` of every record of `sources`; "builtin:tasks" gives the tasks' `split`."""
        sources = [sources] if isinstance(sources, str) else list(sources)
        for source in sources:
            if source == TASKS_SOURCE:
                per_task = self.examples_per_task if split == "train" else self.val_examples_per_task
                builtin = self.builtin(split, self.tasks, per_task=per_task, seed=self.seed)
                for i, record in enumerate(builtin):
                    yield f"{TASKS_SOURCE}:{split}[record {i}]", record
            else:
                from lit_llm.prepare.sources import iter_records

                yield from iter_records([source], strict=self.strict)

    def build(
        self, build: Callable[[Iterable[tuple[str, Any]], SFTStats], list[T]], stats: dict[str, SFTStats]
    ) -> Split[T]:
        """The train and val examples that `build(records, stats)` makes of the records; each split's stats go
        into `stats` ("train", "val") as they are made, with a warning of the skips and a summary line."""
        train = self._build(build, self.records(self.train, "train"), "train", stats)
        val: list[T] = []
        if self.val is not None:
            val = self._build(build, self.records(self.val, "val"), "val", stats)
        elif self.train == TASKS_SOURCE or self.train == [TASKS_SOURCE]:
            val = self._build(build, self.records(TASKS_SOURCE, "val"), "val", stats)
        elif self.val_fraction > 0 and len(train) > 1:
            order = np.random.default_rng(self.seed).permutation(len(train))
            n_val = max(1, int(len(train) * self.val_fraction))
            val = [train[i] for i in sorted(order[:n_val])]
            train = [train[i] for i in sorted(order[n_val:])]
        if not train:
            raise DataError(f"no training examples left from {self.train} (see the skipped counts above)")
        return Split(train, val)

    def _build(self, build: Callable, records: Iterable[tuple[str, Any]], name: str, stats: dict) -> list:
        label = f"{self.kind} {name} data"
        split_stats = stats[name] = SFTStats(skips=SkipCounter(strict=self.strict))
        examples = build(records, split_stats)
        split_stats.skips.warn(label)
        rank_zero_info(self.describe(split_stats, label))
        return examples
