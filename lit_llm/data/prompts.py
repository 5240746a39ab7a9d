"""Prompt-only data for RL (PPO): prompts rendered in the SFT prompt style, ready for the policy to answer.

Records may be

    {"prompt": "What is 2 + 2?"}                                         a user message
    {"prompt": [{"role": "system", ...}, {"role": "user", ...}]}         a conversation to answer (TRL's form)
    {"messages": [..., {"role": "user", ...}, {"role": "assistant", ...}]}  chat data: the last assistant turn is
                                                                          dropped and kept as the reference
    {"instruction": "...", "input": "...", "output": "..."}              Alpaca data (the output is the reference)

A prompt must end with a user turn and fit `max_prompt_length` tokens (by default the model's block_size minus
PPO's max_new_tokens, so every prompt leaves room for a whole response); others are skipped and counted by reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from lit_llm.data.conversations import RecordError, SkipCounter, parse_messages, resolve_roles
from lit_llm.data.sft import TASKS_SOURCE, SFTDataModule, SFTStats
from lit_llm.data.templates import PromptStyle, prompt_ids
from lit_llm.data.tokenizer import Tokenizer
from lit_llm.errors import ConfigError

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
    prompts = []
    for location, record in records:
        stats.records += 1
        try:
            messages, reference = prompt_messages(record, fields, roles)
        except RecordError as exc:
            stats.skips.skip(location, exc.reason, exc.detail)
            continue
        ids = prompt_ids(tokenizer, style, messages)
        if len(ids) > max_prompt_length:
            detail = f"the prompt has {len(ids)} tokens, max_prompt_length is {max_prompt_length}"
            stats.skips.skip(location, "prompt_too_long", detail)
            continue
        stats.examples += 1
        stats.tokens += len(ids)
        task = record.get("task") if isinstance(record.get("task"), str) else None
        prompts.append(Prompt(ids, messages, task, reference))
    return prompts


def collate_prompts(prompts: list[Prompt]) -> dict[str, Any]:
    """A batch of prompts as lists (rollouts are generated from token lists of any lengths)."""
    return {
        "prompt_ids": [p.input_ids for p in prompts],
        "messages": [p.messages for p in prompts],
        "tasks": [p.task for p in prompts],
        "references": [p.reference for p in prompts],
    }


class PromptDataModule(SFTDataModule):
    """Prompts for PPO: strings, chat messages, chat or Alpaca records, or the built-in verifiable tasks.

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
        tasks: built-in tasks to use (None: all of `lit_llm.data.tasks.TASKS`).
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
        resolve_prompt_fields(fields)
        if max_prompt_length is not None and max_prompt_length < 1:
            raise ConfigError(f"data.max_prompt_length must be >= 1, got {max_prompt_length}")
        super().__init__(
            train=train, val=val, roles=roles, prompt_style=prompt_style or "alpaca", tokenizer=tokenizer,
            batch_size=batch_size, val_fraction=val_fraction, tasks=tasks, examples_per_task=examples_per_task,
            val_examples_per_task=val_examples_per_task, strict=strict, num_workers=num_workers, seed=seed,
        )  # fmt: skip
        self.save_hyperparameters()
        self.max_prompt_length = max_prompt_length

    @property
    def block_size(self) -> None:
        return None  # prompts and responses are laid out by the PPO stage, which checks its own lengths

    @property
    def batch_shape(self) -> None:
        return None

    def setup(self, stage: str | None = None) -> None:
        if self.train_examples is None:
            if self.hparams.prompt_style is None:
                self.prompt_style = self._checkpoint_style()
            if self.max_prompt_length is None:
                self.max_prompt_length = self._room_for_prompts()
        super().setup(stage)

    def _room_for_prompts(self) -> int:
        module = self.trainer.lightning_module if self.trainer is not None else None
        max_new_tokens = getattr(getattr(module, "hparams", None), "max_new_tokens", None)
        meta = self._init_meta()
        if meta is None or max_new_tokens is None:
            raise ConfigError(
                "data.max_prompt_length is not set and there is no model with init_from and max_new_tokens to "
                "derive it from"
            )
        block_size = {**meta["model_config"], **(module.hparams.get("model_config") or {})}["block_size"]
        room = block_size - max_new_tokens
        if room < 1:
            raise ConfigError(f"model.max_new_tokens ({max_new_tokens}) leaves no room in block_size {block_size}")
        return room

    def _build(self, records: Iterable[tuple[str, Any]], name: str) -> list[Prompt]:
        hp = self.hparams
        stats = SFTStats(skips=SkipCounter(strict=hp.strict))
        prompts = build_prompts(
            records, self.tokenizer, self.prompt_style, self.max_prompt_length, hp.fields, hp.roles, stats
        )
        self.stats[name] = stats
        stats.skips.warn(f"prompt {name} data")
        skipped = ", ".join(f"{r} {n}" for r, n in sorted(stats.skips.skipped.items())) or "none"
        rank_zero_info(f"prompt {name} data: {stats.records} records -> {stats.examples} prompts; skipped: {skipped}")
        return prompts

    def _rows(self, examples: list[Prompt], packed: bool) -> list[Prompt]:
        return examples

    def _collate(self, packed: bool) -> Any:
        return collate_prompts

    def eval_prompts(self, limit: int) -> list[tuple[list[dict[str, Any]], str | None, str | None]]:
        """Up to `limit` validation prompts (as conversations) with their reference answer and task."""
        return [(p.messages, p.reference, p.task) for p in self.val_examples[:limit]]
