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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from lit_llm.data.conversations import (
    Format,
    RecordError,
    SkipCounter,
    resolve_fields,
    resolve_roles,
    to_messages,
)
from lit_llm.data.loading import ExampleSampler, ResumableDataLoader, world_of
from lit_llm.data.templates import BoundaryError, PromptStyle, encode_conversation, load_style
from lit_llm.data.tokenizer import Tokenizer
from lit_llm.errors import ConfigError, DataError
from lit_llm.losses import IGNORE_INDEX

TASKS_SOURCE = "builtin:tasks"


@dataclass
class Example:
    """A tokenized example: `input_ids` and `targets` (the next token where it is trained, else IGNORE_INDEX)."""

    input_ids: np.ndarray
    targets: np.ndarray
    messages: list[dict[str, Any]]
    task: str | None = None


@dataclass
class SFTStats:
    """What became of the records: records = examples + skipped (by reason); truncated examples are kept."""

    records: int = 0
    examples: int = 0
    truncated: int = 0
    response_tokens: int = 0
    tokens: int = 0
    skips: SkipCounter = field(default_factory=SkipCounter)

    def summary(self, name: str) -> str:
        skipped = ", ".join(f"{r} {n}" for r, n in sorted(self.skips.skipped.items())) or "none"
        return (
            f"{name}: {self.records} records -> {self.examples} examples ({self.truncated} truncated), "
            f"{self.tokens} tokens of which {self.response_tokens} trained; skipped: {skipped}"
        )


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
    examples = []
    for location, record in records:
        stats.records += 1
        try:
            messages = to_messages(record, format, fields, roles)
            encoded = encode_conversation(tokenizer, style, messages)
        except RecordError as exc:
            stats.skips.skip(location, exc.reason, exc.detail)
            continue
        except BoundaryError as exc:
            stats.skips.skip(location, "boundary_mismatch", str(exc))
            continue
        ids, labels = encoded.input_ids, encoded.labels
        if encoded.prompt_length >= max_length:
            detail = f"the prompt has {encoded.prompt_length} tokens, max_length is {max_length}"
            stats.skips.skip(location, "prompt_too_long", detail)
            continue
        if len(ids) > max_length:
            if truncation == "drop":
                stats.skips.skip(location, "too_long", f"{len(ids)} tokens, max_length is {max_length}")
                continue
            ids, labels = ids[:max_length], labels[:max_length]
            stats.truncated += 1
        targets = shifted_targets(labels)
        stats.examples += 1
        stats.tokens += len(ids)
        stats.response_tokens += int((targets != IGNORE_INDEX).sum())
        task = record.get("task") if isinstance(record, dict) else None
        examples.append(Example(np.asarray(ids, dtype=np.int64), targets, messages, task))
    return examples


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
        tasks: built-in tasks to use (None: all of `lit_llm.data.tasks.TASKS`).
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
        if truncation not in ("drop", "truncate"):
            raise ConfigError(f"data.truncation must be 'drop' or 'truncate', got {truncation!r}")
        if max_length < 2 or batch_size < 1:
            raise ConfigError(f"data.max_length must be >= 2 and data.batch_size >= 1, got {max_length}, {batch_size}")
        if not 0 <= val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        self.save_hyperparameters()
        # A bad key fails now, not after the model is built.
        resolve_fields(fields)
        resolve_roles(roles)
        self.prompt_style = load_style(prompt_style)
        self.max_length = max_length
        self.batch_size = batch_size
        self._tokenizer: Tokenizer | None = None
        self.train_examples: list[Example] | None = None
        self.val_examples: list[Example] = []
        self.stats: dict[str, SFTStats] = {}

    @property
    def block_size(self) -> int:
        return self.max_length

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = self._load_tokenizer()
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0

    @property
    def batch_shape(self) -> tuple[int, int] | None:
        """(rows, tokens) of a training batch when that is fixed, for counting FLOPs: packed rows fill max_length;
        padded batches vary, and a count at max_length would overstate MFU."""
        return (self.batch_size, self.max_length) if self.hparams.get("packing", False) else None

    def _init_from(self) -> str | None:
        """The model's `init_from` checkpoint, when the data module is attached to a Trainer."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        return getattr(getattr(module, "hparams", None), "init_from", None)

    def _load_tokenizer(self) -> Tokenizer:
        from lit_llm.checkpoint import load_tokenizer

        path = self.hparams.tokenizer or self._init_from()
        if path is None:
            raise ConfigError("data.tokenizer is not set and the model has no init_from checkpoint to take one from")
        return load_tokenizer(path)

    def _init_meta(self) -> dict[str, Any] | None:
        """The lit_llm metadata of the model's `init_from` checkpoint, or None without one."""
        from lit_llm.checkpoint import checkpoint_meta, load_checkpoint

        path = self._init_from()
        return None if path is None else checkpoint_meta(load_checkpoint(path), path)

    def _checkpoint_style(self) -> PromptStyle:
        """The prompt style stored in the `init_from` checkpoint (the one SFT trained with), else the configured one."""
        stored = (self._init_meta() or {}).get("prompt_style")
        return load_style(stored) if stored else self.prompt_style

    # ---- records -------------------------------------------------------------------------------

    def _records(self, sources: str | list[str], split: str) -> Iterator[tuple[str, Any]]:
        sources = [sources] if isinstance(sources, str) else list(sources)
        hp = self.hparams
        for source in sources:
            if source == TASKS_SOURCE:
                per_task = hp.examples_per_task if split == "train" else hp.val_examples_per_task
                for i, record in enumerate(self._builtin_records(split, per_task)):
                    yield f"{TASKS_SOURCE}:{split}[record {i}]", record
            else:
                from lit_llm.data.sources import iter_records

                yield from iter_records([source], strict=hp.strict)

    def _builtin_records(self, split: str, per_task: int) -> list[dict[str, Any]]:
        from lit_llm.data.tasks import task_records

        return task_records(split, self.hparams.tasks, per_task=per_task, seed=self.hparams.seed)

    def _build(self, records: Iterable[tuple[str, Any]], name: str) -> list[Example]:
        hp = self.hparams
        stats = SFTStats(skips=SkipCounter(strict=hp.strict))
        examples = build_examples(
            records, self.tokenizer, self.prompt_style, hp.max_length, hp.truncation, hp.format, hp.fields, hp.roles,
            stats,
        )
        self.stats[name] = stats
        stats.skips.warn(f"SFT {name} data")
        rank_zero_info(stats.summary(f"SFT {name} data"))
        return examples

    def setup(self, stage: str | None = None) -> None:
        if self.train_examples is not None:
            return
        hp = self.hparams
        train = self._build(self._records(hp.train, "train"), "train")
        if hp.val is not None:
            self.val_examples = self._build(self._records(hp.val, "val"), "val")
        elif hp.train == TASKS_SOURCE or hp.train == [TASKS_SOURCE]:
            self.val_examples = self._build(self._records(TASKS_SOURCE, "val"), "val")
        elif hp.val_fraction > 0 and len(train) > 1:
            order = np.random.default_rng(hp.seed).permutation(len(train))
            n_val = max(1, int(len(train) * hp.val_fraction))
            self.val_examples = [train[i] for i in sorted(order[:n_val])]
            train = [train[i] for i in sorted(order[n_val:])]
        if not train:
            raise DataError(f"no training examples left from {hp.train} (see the skipped counts above)")
        self.train_examples = train

    # ---- loaders -------------------------------------------------------------------------------

    def _rows(self, examples: list[Example], packed: bool) -> list[list[Example]]:
        if not packed:
            return [[e] for e in examples]
        bins = pack([len(e.input_ids) for e in examples], self.max_length, seed=self.hparams.seed)
        return [[examples[i] for i in b] for b in bins]

    def _collate(self, packed: bool) -> Any:
        return functools.partial(collate, pad_id=self.pad_id, packed=packed)

    def _loader(self, items: list[Any], shuffle: bool, collate_fn: Any) -> DataLoader:
        """Training loaders shuffle by (seed, epoch) and resume mid-epoch; evaluation loaders keep the order."""
        kwargs = dict(batch_size=self.batch_size, collate_fn=collate_fn, num_workers=self.hparams.num_workers)
        if not shuffle:
            return DataLoader(items, shuffle=False, **kwargs)
        rank, world = world_of(self.trainer)
        sampler = ExampleSampler(items, shuffle=True, seed=self.hparams.seed, num_replicas=world, rank=rank)
        return ResumableDataLoader(items, sampler=sampler, **kwargs)

    def train_dataloader(self) -> DataLoader:
        packed = self.hparams.get("packing", False)
        return self._loader(self._rows(self.train_examples, packed), shuffle=True, collate_fn=self._collate(packed))

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_examples:
            return []
        return self._loader(self._rows(self.val_examples, False), shuffle=False, collate_fn=self._collate(False))

    def eval_prompts(self, limit: int) -> list[tuple[list[dict[str, Any]], str, str | None]]:
        """Up to `limit` validation conversations without their last assistant turn, with that turn's text and
        the example's task: what the model is asked to answer at each validation run."""
        return [(e.messages[:-1], e.messages[-1]["content"], e.task) for e in self.val_examples[:limit]]
