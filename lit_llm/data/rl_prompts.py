"""Prompt-only data for RL (PPO): prompts rendered in the SFT prompt style, ready for the policy to answer.

Records may be

    {"prompt": "What is 2 + 2?"}                                         a user message
    {"prompt": [{"role": "system", ...}, {"role": "user", ...}]}         a conversation to answer (TRL's form)
    {"messages": [..., {"role": "user", ...}, {"role": "assistant", ...}]}  chat data: the last assistant turn is
                                                                          dropped and kept as the reference
    {"instruction": "...", "input": "...", "output": "..."}              Alpaca data (the output is the reference)

A prompt must end with a user turn and fit `max_prompt_length` tokens (by default the model's block_size minus
PPO's max_new_tokens, which the stage hands over in `connect`, so every prompt leaves room for a whole response);
others are skipped and counted by reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from lit_llm.data.connect import DataInfo, DataSpec
from lit_llm.data.examples import ExampleStore, from_examples
from lit_llm.data.records import TASKS_SOURCE, Encoded, RecordSet, SFTStats, build_each
from lit_llm.errors import ConfigError
from lit_llm.tasks import task_records
from lit_llm.text.conversations import RecordError, parse_messages, resolve_roles
from lit_llm.text.templates import PromptStyle, prompt_ids
from lit_llm.text.tokenizer import Tokenizer

PROMPT_FIELDS = ("prompt", "messages", "instruction", "input", "output", "role", "content")


@dataclass
class Prompt:
    """A tokenized prompt: `input_ids` end with the generation prompt; `reference` is the record's answer, if any."""

    input_ids: list[int]
    messages: list[dict[str, Any]]
    task: str | None = None
    reference: str | None = None


def resolve_prompt_fields(fields: dict[str, str] | None) -> dict[str, str]:
    unknown = sorted(set(fields or {}) - set(PROMPT_FIELDS))
    if unknown:
        raise ConfigError(f"data.fields: unknown key(s) {unknown}; valid keys: {', '.join(PROMPT_FIELDS)}")
    names = {k: k for k in PROMPT_FIELDS}
    return {**names, **(fields or {})}


def _text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RecordError("not_a_string", f"field {key!r} is a {type(value).__name__}, not a string")
    return value


def prompt_messages(
    record: Any, fields: dict[str, str], roles: dict[str, str]
) -> tuple[list[dict[str, Any]], str | None]:
    """The conversation a record asks the model to continue, and the record's reference answer (or None)."""
    if not isinstance(record, dict):
        raise RecordError("not_an_object", f"record is a {type(record).__name__}, not an object")
    reference = None
    if fields["prompt"] in record:
        raw = record[fields["prompt"]]
        if isinstance(raw, str):
            messages = [{"role": "user", "content": raw}]
        else:
            messages = parse_messages(raw, fields["prompt"], fields, roles)
    elif fields["messages"] in record:
        messages = parse_messages(record[fields["messages"]], fields["messages"], fields, roles)
        if messages[-1]["role"] == "assistant":
            reference = messages.pop()["content"]
    elif fields["instruction"] in record:
        extra = _text(record, fields["input"])
        messages = [{"role": "user", "content": _text(record, fields["instruction"]), "input": extra}]
        reference = _text(record, fields["output"]) or None
    else:
        keys = ", ".join(map(str, record)) or "none"
        wanted = f"{fields['prompt']!r}, {fields['messages']!r} or {fields['instruction']!r}"
        raise RecordError("missing_field", f"record has none of the fields {wanted} (fields: {keys})")
    if not messages or messages[-1]["role"] != "user":
        last = messages[-1]["role"] if messages else "nothing"
        raise RecordError("not_ending_with_user", f"the prompt ends with {last}, not a user turn")
    if not messages[-1]["content"].strip():
        raise RecordError("empty_prompt", "the last user message is empty")
    return messages, reference


def build_prompts(
    records: Iterable[tuple[str, Any]],
    tokenizer: Tokenizer,
    style: PromptStyle,
    max_prompt_length: int,
    fields: dict[str, str] | None = None,
    roles: dict[str, str] | None = None,
    stats: SFTStats | None = None,
) -> list[Prompt]:
    """Tokenize `(location, record)` pairs; records without a usable prompt are counted in `stats.skips`."""
    stats = stats if stats is not None else SFTStats()
    fields, roles = resolve_prompt_fields(fields), resolve_roles(roles)

    def encode(record: Any) -> Encoded[Prompt]:
        messages, reference = prompt_messages(record, fields, roles)
        ids = prompt_ids(tokenizer, style, messages)
        if len(ids) > max_prompt_length:
            detail = f"the prompt has {len(ids)} tokens, max_prompt_length is {max_prompt_length}"
            raise RecordError("prompt_too_long", detail)
        task = record.get("task") if isinstance(record.get("task"), str) else None
        return Encoded(Prompt(ids, messages, task, reference), len(ids))

    return build_each(records, encode, stats)


def prompt_summary(stats: SFTStats, name: str) -> str:
    """The summary line of a split's prompts (they hold no trained tokens)."""
    return f"{name}: {stats.records} records -> {stats.examples} prompts; skipped: {stats.skipped()}"


def collate_prompts(prompts: list[Prompt]) -> dict[str, Any]:
    """A batch of prompts as lists (rollouts are generated from token lists of any lengths)."""
    return {
        "prompt_ids": [p.input_ids for p in prompts],
        "messages": [p.messages for p in prompts],
        "tasks": [p.task for p in prompts],
        "references": [p.reference for p in prompts],
    }


class PromptDataModule(LightningDataModule):
    """Prompts for PPO: strings, chat messages, chat or Alpaca records, or the built-in verifiable tasks.

    The prompts are built in `setup` when `tokenizer`, `prompt_style` and `max_prompt_length` are given, else when
    the stage connects the data module (`connect`, `lit_llm.data.connect`) and hands over its model's tokenizer,
    prompt style, block_size and max_new_tokens.

    Args:
        train: sources of prompt records: JSON Lines, JSON, Parquet or CSV files, folders or globs of them,
            `hf:NAME[:SPLIT]` datasets, or "builtin:tasks" for the generated verifiable tasks.
        val: sources of validation prompts; None holds out `val_fraction` of `train` (for "builtin:tasks", the
            tasks' val split).
        fields: record field names that differ from the defaults, e.g. {prompt: question};
            keys: prompt, messages, instruction, input, output, role, content.
        roles: extra role names mapped to system/user/assistant (human and gpt are known already).
        prompt_style: "alpaca", "chat", a PromptStyle class path, or {class_path, init_args}; None uses the style
            stored in the model's `init_from` checkpoint, else alpaca.
        tokenizer: tokenizer.json, a folder holding one, or a lit_llm checkpoint; None takes the tokenizer of the
            model's `init_from` checkpoint.
        max_prompt_length: most tokens in a rendered prompt; None: the `init_from` model's block_size minus the
            model's `max_new_tokens`.
        batch_size: prompts per rollout batch on each device.
        val_fraction: share of `train` held out for validation when `val` is None.
        tasks: built-in tasks to use (None: all of `lit_llm.tasks.TASKS`).
        examples_per_task: training prompts per built-in task.
        val_examples_per_task: validation prompts per built-in task.
        strict: raise on the first bad record (naming its file and record) instead of skipping and counting.
        num_workers: DataLoader worker processes.
        seed: seed of the prompt order and of the validation hold-out.
    """

    def __init__(
        self,
        train: str | list[str] = TASKS_SOURCE,
        val: str | list[str] | None = None,
        fields: dict[str, str] | None = None,
        roles: dict[str, str] | None = None,
        prompt_style: str | dict[str, Any] | None = None,
        tokenizer: str | None = None,
        max_prompt_length: int | None = None,
        batch_size: int = 32,
        val_fraction: float = 0.05,
        tasks: list[str] | None = None,
        examples_per_task: int = 1000,
        val_examples_per_task: int = 50,
        strict: bool = False,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__()
        resolve_prompt_fields(fields)
        if max_prompt_length is not None and max_prompt_length < 1:
            raise ConfigError(f"data.max_prompt_length must be >= 1, got {max_prompt_length}")
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {batch_size}")
        if not 0 <= val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        self.save_hyperparameters()
        resolve_roles(roles)
        # None: the room the model's block_size leaves (and for prompt_style, its checkpoint's style), known once the
        # stage connects.
        self.max_prompt_length = max_prompt_length
        self.batch_size = batch_size
        self.examples: ExampleStore[Prompt] = ExampleStore(
            RecordSet.of("prompt", task_records, self.hparams, describe=prompt_summary), self._encode, tokenizer,
            prompt_style, batch_size, num_workers, needs={"max_prompt_length": max_prompt_length},
        )  # fmt: skip

    # ---- what the prompts are made with, and the prompts: `self.examples` (lit_llm.data.examples) -------

    # The tokenizer and prompt style (`tokenizer`, `prompt_style`, else the stage's); each split's SFTStats of
    # prompts; the prompts, built on first use when they can be.
    tokenizer, vocab_size, pad_id, prompt_style = from_examples("tokenizer", "vocab_size", "pad_id", "prompt_style")
    stats, train_examples, val_examples = from_examples("stats", "train", "val")

    # ---- building ------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Build the prompts now when `tokenizer`, `prompt_style` and `max_prompt_length` are given; else `connect`
        builds them."""
        self.examples.setup()

    def connect(self, spec: DataSpec) -> DataInfo:
        """Build the prompts with what the stage hands over (its tokenizer, checkpoint prompt style, and the room
        block_size - max_new_tokens, where `tokenizer`, `prompt_style` and `max_prompt_length` are not given),
        unless they are built already; check that a prompt and its response fit the model."""
        if not self.examples.built and self.max_prompt_length is None:
            self.max_prompt_length = room_for_prompts(spec)
        if spec.block_size is not None and spec.max_new_tokens is not None:
            if self.max_prompt_length + spec.max_new_tokens > spec.block_size:
                raise ConfigError(
                    f"data.max_prompt_length ({self.max_prompt_length}) + model.max_new_tokens "
                    f"({spec.max_new_tokens}) exceeds the model's block_size ({spec.block_size})"
                )
        return self.examples.connect(spec, self.block_size, self.batch_shape)

    def _encode(self, records: Iterable[tuple[str, Any]], stats: SFTStats) -> list[Prompt]:
        hp = self.hparams
        return build_prompts(
            records, self.tokenizer, self.prompt_style, self.max_prompt_length, hp.fields, hp.roles, stats
        )

    # ---- loaders -------------------------------------------------------------------------------

    @property
    def block_size(self) -> None:
        return None  # prompts and responses are laid out by the PPO stage, which checks its own lengths

    @property
    def batch_shape(self) -> None:
        return None

    def train_dataloader(self) -> DataLoader:
        return self.examples.loader(self.train_examples, collate_prompts, True, self.trainer)

    def val_dataloader(self) -> DataLoader | list:
        return self.examples.loader(self.val_examples, collate_prompts, False, self.trainer)

    def eval_prompts(self, limit: int) -> list[tuple[list[dict[str, Any]], str | None, str | None]]:
        """Up to `limit` validation prompts (as conversations) with their reference answer and task."""
        return [(p.messages, p.reference, p.task) for p in self.val_examples[:limit]]


def room_for_prompts(spec: DataSpec) -> int:
    """The default max_prompt_length: what the model's block_size leaves after the stage's max_new_tokens."""
    if spec.block_size is None or spec.max_new_tokens is None:
        raise ConfigError(
            "data.max_prompt_length is not set and the stage gave no block_size and max_new_tokens to derive it "
            "from; set data.max_prompt_length"
        )
    room = spec.block_size - spec.max_new_tokens
    if room < 1:
        max_new_tokens, block_size = spec.max_new_tokens, spec.block_size
        raise ConfigError(f"model.max_new_tokens ({max_new_tokens}) leaves no room in block_size {block_size}")
    return room
