"""SFTDataModule: instruction and chat records, tokenized with a prompt style, loss on responses only.

Batches are either padded to the longest example in the batch, or packed: several examples share one row of
at most `max_length` tokens, each with positions starting at 0 and its own segment id, from which the model
builds a mask that keeps attention inside each example. Targets are shifted per example before packing, so no
loss crosses from one example into the next either.
"""

from __future__ import annotations

import bisect
import functools
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from lit_llm.data.connect import DataInfo, DataSpec, check_max_length
from lit_llm.data.examples import ExampleStore, from_examples
from lit_llm.data.records import TASKS_SOURCE, Encoded, RecordSet, SFTStats, build_each, check_length
from lit_llm.errors import ConfigError
from lit_llm.losses import IGNORE_INDEX
from lit_llm.tasks import task_records
from lit_llm.text.conversations import Format, resolve_fields, resolve_roles, to_messages
from lit_llm.text.templates import PromptStyle, encode_conversation, load_style
from lit_llm.text.tokenizer import Tokenizer

# SFTStats and TASKS_SOURCE live in lit_llm.data.records, shared by all record data; they are re-exported here.
__all__ = [
    "TASKS_SOURCE", "Example", "SFTDataModule", "SFTStats", "build_examples", "collate", "pack", "shifted_targets"
]  # fmt: skip


@dataclass
class Example:
    """A tokenized example: `input_ids` and `targets` (the next token where it is trained, else IGNORE_INDEX)."""

    input_ids: np.ndarray
    targets: np.ndarray
    messages: list[dict[str, Any]]
    task: str | None = None


def shifted_targets(labels: list[int]) -> np.ndarray:
    """targets[t] = labels[t + 1]: the token position t must predict, and IGNORE_INDEX at the last position."""
    out = np.full(len(labels), IGNORE_INDEX, dtype=np.int64)
    out[:-1] = labels[1:]
    return out


def build_examples(
    records: Iterable[tuple[str, Any]],
    tokenizer: Tokenizer,
    style: PromptStyle,
    max_length: int,
    truncation: Literal["drop", "truncate"] = "drop",
    format: Format = "auto",
    fields: dict[str, str] | None = None,
    roles: dict[str, str] | None = None,
    stats: SFTStats | None = None,
) -> list[Example]:
    """Tokenize `(location, record)` pairs; records that cannot be trained on are counted in `stats.skips`.

    An example longer than `max_length` tokens is dropped (`truncation="drop"`) or cut to `max_length`
    ("truncate", counted in `stats.truncated`); one whose prompt alone fills `max_length` is always dropped.
    """
    stats = stats if stats is not None else SFTStats()
    fields, roles = resolve_fields(fields), resolve_roles(roles)

    def encode(record: Any) -> Encoded[Example]:
        messages = to_messages(record, format, fields, roles)
        encoded = encode_conversation(tokenizer, style, messages)
        ids, labels = encoded.input_ids, encoded.labels
        truncated = check_length(encoded.prompt_length, len(ids), max_length, truncation)
        if truncated:
            ids, labels = ids[:max_length], labels[:max_length]
        targets = shifted_targets(labels)
        task = record.get("task") if isinstance(record, dict) else None
        example = Example(np.asarray(ids, dtype=np.int64), targets, messages, task)
        return Encoded(example, len(ids), int((targets != IGNORE_INDEX).sum()), truncated)

    return build_each(records, encode, stats)


def pack(lengths: list[int], capacity: int, seed: int = 0) -> list[list[int]]:
    """Indices grouped into bins of total length <= capacity: best fit over a shuffled order (few, full bins)."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), sorted
    for i in order:
        at = bisect.bisect_left(free, (lengths[i], -1))
        if at == len(free):
            bins.append([i])
            bisect.insort(free, (capacity - lengths[i], len(bins) - 1))
        else:
            room, b = free.pop(at)
            bins[b].append(i)
            bisect.insort(free, (room - lengths[i], b))
    return bins


def collate(rows: list[list[Example]], pad_id: int, packed: bool) -> dict[str, Any]:
    """Concatenate each row's examples and right-pad rows to the longest; packed rows also get per-example
    `position_ids` and `segment_ids` (-1 on padding). `num_tokens` counts the tokens that are not padding."""
    lengths = [sum(len(e.input_ids) for e in row) for row in rows]
    B, T = len(rows), max(lengths)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    targets = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    batch: dict[str, Any] = {"input_ids": input_ids, "targets": targets, "num_tokens": sum(lengths)}
    if packed:
        position_ids = torch.zeros((B, T), dtype=torch.long)
        segment_ids = torch.full((B, T), -1, dtype=torch.long)
        batch.update(position_ids=position_ids, segment_ids=segment_ids)
    for b, row in enumerate(rows):
        start = 0
        for s, example in enumerate(row):
            end = start + len(example.input_ids)
            input_ids[b, start:end] = torch.from_numpy(example.input_ids)
            targets[b, start:end] = torch.from_numpy(example.targets)
            if packed:
                position_ids[b, start:end] = torch.arange(end - start)
                segment_ids[b, start:end] = s
            start = end
    return batch


class SFTDataModule(LightningDataModule):
    """Supervised fine-tuning data: Alpaca or chat records, or the built-in verifiable tasks.

    The examples are built in `setup` when `tokenizer` is given, else when the stage connects the data module
    (`connect`, `lit_llm.data.connect`) and hands over its model's tokenizer.

    Args:
        train: sources of training records: JSON Lines, JSON, Parquet or CSV files, folders or globs of them,
            `hf:NAME[:SPLIT]` datasets, or "builtin:tasks" for the generated verifiable tasks.
        val: sources of validation records; None holds out `val_fraction` of `train` (for "builtin:tasks",
            the tasks' val split).
        format: "alpaca", "chat", or "auto" (chat when a record has the messages field).
        fields: record field names that differ from the defaults, e.g. {output: response, messages: conversations,
            role: from, content: value}; keys: instruction, input, output, messages, role, content.
        roles: extra role names mapped to system/user/assistant (human and gpt are known already).
        prompt_style: "alpaca", "chat", a PromptStyle class path, or {class_path, init_args}.
        tokenizer: tokenizer.json, a folder holding one, or a lit_llm checkpoint; None takes the tokenizer of the
            model's `init_from` checkpoint.
        max_length: most tokens in one example (and in one packed row); at most the model's block_size.
        truncation: what to do with longer examples: "drop" them or "truncate" the response.
        packing: pack several examples into each row instead of padding each to the batch's longest.
        batch_size: rows per micro-batch.
        val_fraction: share of `train` held out for validation when `val` is None.
        tasks: built-in tasks to use (None: all of `lit_llm.tasks.TASKS`).
        examples_per_task: training examples per built-in task.
        val_examples_per_task: validation examples per built-in task.
        strict: raise on the first bad record (naming its file and record) instead of skipping and counting.
        num_workers: DataLoader worker processes.
        seed: seed of the example order, the packing and the validation hold-out.
    """

    def __init__(
        self,
        train: str | list[str] = TASKS_SOURCE,
        val: str | list[str] | None = None,
        format: Format = "auto",
        fields: dict[str, str] | None = None,
        roles: dict[str, str] | None = None,
        prompt_style: str | dict[str, Any] = "alpaca",
        tokenizer: str | None = None,
        max_length: int = 128,
        truncation: Literal["drop", "truncate"] = "drop",
        packing: bool = False,
        batch_size: int = 16,
        val_fraction: float = 0.05,
        tasks: list[str] | None = None,
        examples_per_task: int = 2000,
        val_examples_per_task: int = 50,
        strict: bool = False,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__()
        if format not in ("auto", "alpaca", "chat"):
            raise ConfigError(f"data.format must be auto, alpaca or chat, got {format!r}")
        check_options(truncation, max_length, batch_size, val_fraction)
        self.save_hyperparameters()
        # A bad key fails now, not after the model is built.
        resolve_fields(fields)
        resolve_roles(roles)
        self.max_length = max_length
        self.batch_size = batch_size
        self.examples: ExampleStore[Example] = ExampleStore(
            RecordSet.of("SFT", task_records, self.hparams), self._encode, tokenizer, load_style(prompt_style),
            batch_size, num_workers,
        )

    # ---- what the examples are made with, and the examples: `self.examples` (lit_llm.data.examples) -----

    # The tokenizer (`tokenizer`, else the stage's) and the prompt style; each split's SFTStats; the examples,
    # built on first use when they can be.
    tokenizer, vocab_size, pad_id, prompt_style = from_examples("tokenizer", "vocab_size", "pad_id", "prompt_style")
    stats, train_examples, val_examples = from_examples("stats", "train", "val")

    # ---- building ------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Build the examples now when `tokenizer` is given; else `connect` builds them with the stage's."""
        self.examples.setup()

    def connect(self, spec: DataSpec) -> DataInfo:
        """Build the examples with what the stage hands over (the tokenizer, unless `tokenizer` is given), unless
        they are built already; check they fit the model. Returns what the stage needs to know of the data."""
        check_max_length(self.max_length, spec)
        return self.examples.connect(spec, self.block_size, self.batch_shape)

    def _encode(self, records: Iterable[tuple[str, Any]], stats: SFTStats) -> list[Example]:
        hp = self.hparams
        return build_examples(
            records, self.tokenizer, self.prompt_style, hp.max_length, hp.truncation, hp.format, hp.fields, hp.roles,
            stats,
        )  # fmt: skip

    # ---- loaders -------------------------------------------------------------------------------

    @property
    def block_size(self) -> int:
        return self.max_length

    @property
    def batch_shape(self) -> tuple[int, int] | None:
        """(rows, tokens) of a training batch when that is fixed, for counting FLOPs: packed rows fill max_length;
        padded batches vary, and a count at max_length would overstate MFU."""
        return (self.batch_size, self.max_length) if self.hparams.packing else None

    def _rows(self, examples: list[Example], packed: bool) -> list[list[Example]]:
        if not packed:
            return [[e] for e in examples]
        bins = pack([len(e.input_ids) for e in examples], self.max_length, seed=self.hparams.seed)
        return [[examples[i] for i in b] for b in bins]

    def _loader(self, examples: list[Example], shuffle: bool, packed: bool) -> DataLoader | list:
        collate_fn = functools.partial(collate, pad_id=self.pad_id, packed=packed)
        return self.examples.loader(self._rows(examples, packed), collate_fn, shuffle, self.trainer)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_examples, shuffle=True, packed=self.hparams.packing)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_examples, shuffle=False, packed=False)

    def eval_prompts(self, limit: int) -> list[tuple[list[dict[str, Any]], str, str | None]]:
        """Up to `limit` validation conversations without their last assistant turn, with that turn's text and
        the example's task: what the model is asked to answer at each validation run."""
        return [(e.messages[:-1], e.messages[-1]["content"], e.task) for e in self.val_examples[:limit]]


def check_options(truncation: str, max_length: int, batch_size: int, val_fraction: float) -> None:
    """ConfigError naming the field for options that SFT and preference data share."""
    if truncation not in ("drop", "truncate"):
        raise ConfigError(f"data.truncation must be 'drop' or 'truncate', got {truncation!r}")
    if max_length < 2 or batch_size < 1:
        raise ConfigError(f"data.max_length must be >= 2 and data.batch_size >= 1, got {max_length}, {batch_size}")
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
