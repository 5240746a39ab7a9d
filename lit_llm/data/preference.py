"""Preference data: (prompt, chosen, rejected) records tokenized with a prompt style, both responses in one batch.

Three record forms are read:

    {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"}                        strings
    {"prompt": [{"role": "user", ...}], "chosen": [{"role": "assistant", ...}], ...}    messages (TRL's form)
    {"chosen": [user, assistant], "rejected": [user, assistant]}                        whole conversations

In the last form, common in public preference sets, the prompt is the longest run of messages both sides share,
and it must be a prefix of both sides on tokens too; the responses are the first replies where the sides differ
(later turns are not part of the preference). Whole conversations given as plain strings (Anthropic HH's
"\\n\\nHuman: ... \\n\\nAssistant: ...") carry their own format: they are encoded as they are, the prompt is the
longest common prefix of the two token sequences, and EOS ends each response.

A batch holds B pairs as 2B rows, the B chosen rows first, so one forward pass scores both sides. Targets hold the
response tokens (and the stop token) only, as in SFT.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from lit_llm.data.connect import DataInfo, DataSpec, check_max_length
from lit_llm.data.examples import ExampleStore, from_examples
from lit_llm.data.records import TASKS_SOURCE, Encoded, RecordSet, SFTStats, Split, build_each, check_length
from lit_llm.data.sft import check_options, shifted_targets
from lit_llm.errors import ConfigError
from lit_llm.losses import IGNORE_INDEX
from lit_llm.tasks import task_pairs
from lit_llm.text.conversations import RecordError, check_conversation, parse_messages, resolve_roles
from lit_llm.text.templates import BoundaryError, PromptStyle, encode_parts, prompt_ids
from lit_llm.text.tokenizer import Tokenizer

PREFERENCE_FIELDS = {
    "prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "role": "role", "content": "content"
}


@dataclass
class PreferencePair:
    """A tokenized pair: each side's full `*_ids` (prompt + response) and shifted `*_targets` (response only).

    `messages` is the prompt conversation (None for raw-text pairs). `margin` is the record's optional numeric
    "margin" field, how strongly chosen is preferred (for the reward model's margin loss). `pair_id` numbers the
    pairs of a PreferenceDataModule: train pairs 0..N-1, then val pairs N..N+M-1 (None for pairs built alone);
    a stage keys what it computes per pair (DPO's reference log-probs) by it."""

    chosen_ids: np.ndarray
    chosen_targets: np.ndarray
    rejected_ids: np.ndarray
    rejected_targets: np.ndarray
    messages: list[dict[str, Any]] | None
    chosen: str
    task: str | None = None
    margin: float | None = None
    pair_id: int | None = None


def resolve_preference_fields(fields: dict[str, str] | None) -> dict[str, str]:
    unknown = sorted(set(fields or {}) - set(PREFERENCE_FIELDS))
    if unknown:
        raise ConfigError(f"data.fields: unknown key(s) {unknown}; valid keys: {', '.join(PREFERENCE_FIELDS)}")
    return {**PREFERENCE_FIELDS, **(fields or {})}


def _side(record: dict[str, Any], key: str, fields: dict[str, str], roles: dict[str, str]) -> str | list[dict]:
    """A response as text, as assistant messages (the prompt is a field of its own), or as a whole conversation."""
    if key not in record or record[key] is None:
        raise RecordError("missing_field", f"record has no {key!r} field (fields: {', '.join(map(str, record))})")
    value = record[key]
    if isinstance(value, str):
        if not value.strip():
            raise RecordError("empty_response", f"field {key!r} is empty")
        return value
    if isinstance(value, list):
        messages = parse_messages(value, key, fields, roles)
        if all(m["role"] == "assistant" for m in messages):
            if not any(m["content"].strip() for m in messages):
                raise RecordError("empty_response", f"field {key!r} is empty")
        else:
            check_conversation(messages)
        return messages
    raise RecordError("bad_response", f"field {key!r} is a {type(value).__name__}, not a string or a message list")


def _prompt(record: dict[str, Any], fields: dict[str, str], roles: dict[str, str]) -> list[dict[str, Any]]:
    value = record[fields["prompt"]]
    if isinstance(value, str):
        if not value.strip():
            raise RecordError("empty_prompt", f"field {fields['prompt']!r} is empty")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise RecordError("bad_prompt", f"field {fields['prompt']!r} must be a string or a non-empty message list")
    return parse_messages(value, fields["prompt"], fields, roles)


def _messages_pair(tokenizer: Tokenizer, style: PromptStyle, prompt: list[dict], chosen: list[dict],
                   rejected: list[dict]) -> tuple[list[int], list[int], list[int]]:  # fmt: skip
    """(prompt, chosen response, rejected response) tokens of a prompt conversation and two replies to it."""
    head = prompt_ids(tokenizer, style, prompt)
    sides = []
    for reply in (chosen, rejected):
        full = encode_parts(tokenizer, style.render(prompt + reply))
        if full[: len(head)] != head:
            raise BoundaryError("the prompt's tokens are not a prefix of the conversation's")
        sides.append(full[len(head) :])
    return head, sides[0], sides[1]


def _as_reply(side: str | list[dict]) -> list[dict]:
    return [{"role": "assistant", "content": side}] if isinstance(side, str) else side


def _shared_messages(chosen: list[dict], rejected: list[dict]) -> int:
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    return n


def encode_pair(
    record: Any, tokenizer: Tokenizer, style: PromptStyle, fields: dict[str, str], roles: dict[str, str]
) -> tuple[list[int], list[int], list[int], list[dict] | None, str]:
    """(prompt tokens, chosen tokens, rejected tokens, prompt messages or None, chosen text) of one record.

    Raises RecordError (missing fields, empty or identical responses, no shared prompt) or BoundaryError.
    """
    if not isinstance(record, dict):
        raise RecordError("not_an_object", f"record is a {type(record).__name__}, not an object")
    chosen = _side(record, fields["chosen"], fields, roles)
    rejected = _side(record, fields["rejected"], fields, roles)
    if type(chosen) is not type(rejected):
        raise RecordError("mixed_forms", "chosen and rejected must both be strings or both message lists")
    if fields["prompt"] in record and record[fields["prompt"]] is not None:
        messages = _prompt(record, fields, roles)
        head, c, r = _messages_pair(tokenizer, style, messages, _as_reply(chosen), _as_reply(rejected))
        text = chosen if isinstance(chosen, str) else chosen[-1]["content"]
    elif isinstance(chosen, str):  # whole conversations as plain text: common prefix on tokens
        c_ids, r_ids = tokenizer.encode(chosen, allow_special=False), tokenizer.encode(rejected, allow_special=False)
        n = 0
        while n < min(len(c_ids), len(r_ids)) and c_ids[n] == r_ids[n]:
            n += 1
        if n == 0:
            raise RecordError("no_shared_prompt", "chosen and rejected share no prompt tokens")
        eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
        head, c, r, messages = c_ids[:n], c_ids[n:] + eos, r_ids[n:] + eos, None
        text = tokenizer.decode(c_ids[n:])
    else:  # whole conversations as messages: the shared messages are the prompt
        n = _shared_messages(chosen, rejected)
        if n == 0 or n == min(len(chosen), len(rejected)):
            detail = "chosen and rejected share no prompt" if n == 0 else "one side has no reply after the shared turns"
            raise RecordError("identical_responses" if chosen == rejected else "no_shared_prompt", detail)
        if chosen[n]["role"] != "assistant" or rejected[n]["role"] != "assistant":
            raise RecordError("no_shared_prompt", f"the sides differ at turn {n}, which is not an assistant turn")
        messages = chosen[:n]
        # The preference is about the first reply where the sides differ; later turns are not part of it.
        head, c, r = _messages_pair(tokenizer, style, messages, chosen[n : n + 1], rejected[n : n + 1])
        text = chosen[n]["content"]
    if c == r:
        raise RecordError("identical_responses", "chosen and rejected are the same response")
    if not c or not r:
        raise RecordError("empty_response", "a response has no tokens")
    return head, c, r, messages, text


def _side_arrays(head: list[int], response: list[int]) -> tuple[np.ndarray, np.ndarray]:
    ids = head + response
    return np.asarray(ids, dtype=np.int64), shifted_targets([IGNORE_INDEX] * len(head) + response)


def build_pairs(
    records: Iterable[tuple[str, Any]],
    tokenizer: Tokenizer,
    style: PromptStyle,
    max_length: int,
    truncation: Literal["drop", "truncate"] = "drop",
    fields: dict[str, str] | None = None,
    roles: dict[str, str] | None = None,
    stats: SFTStats | None = None,
) -> list[PreferencePair]:
    """Tokenize `(location, record)` pairs; records that cannot be trained on are counted in `stats.skips`.

    A side longer than `max_length` drops the pair (`truncation="drop"`) or has its response cut ("truncate",
    counted in `stats.truncated`); a prompt that leaves no room for a response always drops it.
    """
    stats = stats if stats is not None else SFTStats()
    fields, roles = resolve_preference_fields(fields), resolve_roles(roles)

    def encode(record: Any) -> Encoded[PreferencePair]:
        head, chosen, rejected, messages, text = encode_pair(record, tokenizer, style, fields, roles)
        truncated = check_length(len(head), len(head) + max(len(chosen), len(rejected)), max_length, truncation)
        if truncated:
            room = max_length - len(head)
            chosen, rejected = chosen[:room], rejected[:room]
            if chosen == rejected:
                raise RecordError("identical_responses", f"the responses agree on their first {room} tokens")
        c_ids, c_targets = _side_arrays(head, chosen)
        r_ids, r_targets = _side_arrays(head, rejected)
        task = record.get("task") if isinstance(record.get("task"), str) else None
        margin = record.get("margin")
        margin = float(margin) if isinstance(margin, (int, float)) and not isinstance(margin, bool) else None
        pair = PreferencePair(c_ids, c_targets, r_ids, r_targets, messages, text, task, margin)
        return Encoded(pair, len(c_ids) + len(r_ids), len(chosen) + len(rejected), truncated)

    return build_each(records, encode, stats)


def number_pairs(split: Split[PreferencePair]) -> None:
    """Number the pairs of a data module: train pairs 0..N-1, then val pairs N.. (the two never collide)."""
    for i, pair in enumerate(split.train + split.val):
        pair.pair_id = i


def pair_summary(stats: SFTStats, name: str) -> str:
    """The summary line of a split's pairs."""
    return stats.summary(name, noun="pairs")


def collate_pairs(pairs: list[PreferencePair], pad_id: int) -> dict[str, Any]:
    """2B right-padded rows, chosen sides first: `input_ids`, `targets`, `last_index` (each row's last real token),
    `num_tokens`, and when every pair has them, `margin` (B,) and `pair_ids` (B,), the pairs' ids in batch order."""
    sides = [(p.chosen_ids, p.chosen_targets) for p in pairs] + [(p.rejected_ids, p.rejected_targets) for p in pairs]
    T = max(len(ids) for ids, _ in sides)
    input_ids = torch.full((len(sides), T), pad_id, dtype=torch.long)
    targets = torch.full((len(sides), T), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, tgt) in enumerate(sides):
        input_ids[row, : len(ids)] = torch.from_numpy(ids)
        targets[row, : len(ids)] = torch.from_numpy(tgt)
    lengths = torch.tensor([len(ids) for ids, _ in sides])
    batch: dict[str, Any] = {"input_ids": input_ids, "targets": targets, "last_index": lengths - 1,
                             "num_tokens": int(lengths.sum())}  # fmt: skip
    if all(p.margin is not None for p in pairs):
        batch["margin"] = torch.tensor([p.margin for p in pairs], dtype=torch.float32)
    if all(p.pair_id is not None for p in pairs):
        batch["pair_ids"] = torch.tensor([p.pair_id for p in pairs], dtype=torch.long)
    return batch


class PreferenceDataModule(LightningDataModule):
    """Pairwise preference data for the reward model, DPO and ORPO: one chosen and one rejected response per prompt.

    The pairs are built in `setup` when `tokenizer` and `prompt_style` are given, else when the stage connects the
    data module (`connect`, `lit_llm.data.connect`) and hands over its model's tokenizer and prompt style.

    Args:
        train: sources of preference records: JSON Lines, JSON, Parquet or CSV files, folders or globs of them,
            `hf:NAME[:SPLIT]` datasets, or "builtin:tasks" (verified answers against synthetic wrong ones; pairs
            with a model's own wrong answers are written by `lit-llm pairs`).
        val: sources of validation records; None holds out `val_fraction` of `train` (for "builtin:tasks",
            the tasks' val split).
        fields: record field names that differ from the defaults, e.g. {prompt: question, chosen: response_j};
            keys: prompt, chosen, rejected, role, content.
        roles: extra role names mapped to system/user/assistant (human and gpt are known already).
        prompt_style: "alpaca", "chat", a PromptStyle class path, or {class_path, init_args}; None uses the style
            stored in the model's `init_from` checkpoint (the one the SFT model was trained with), else alpaca.
        tokenizer: tokenizer.json, a folder holding one, or a lit_llm checkpoint; None takes the tokenizer of the
            model's `init_from` checkpoint.
        max_length: most tokens in one side (prompt + response); at most the model's block_size.
        truncation: what to do with longer pairs: "drop" them or "truncate" the responses.
        batch_size: pairs per micro-batch (2 x batch_size rows).
        val_fraction: share of `train` held out for validation when `val` is None.
        tasks: built-in tasks to use (None: all of `lit_llm.tasks.TASKS`).
        examples_per_task: training pairs per built-in task.
        val_examples_per_task: validation pairs per built-in task.
        strict: raise on the first bad record (naming its file and record) instead of skipping and counting.
        num_workers: DataLoader worker processes.
        seed: seed of the pair order and of the validation hold-out.
    """

    def __init__(
        self,
        train: str | list[str] = TASKS_SOURCE,
        val: str | list[str] | None = None,
        fields: dict[str, str] | None = None,
        roles: dict[str, str] | None = None,
        prompt_style: str | dict[str, Any] | None = None,
        tokenizer: str | None = None,
        max_length: int = 128,
        truncation: Literal["drop", "truncate"] = "drop",
        batch_size: int = 8,
        val_fraction: float = 0.05,
        tasks: list[str] | None = None,
        examples_per_task: int = 1000,
        val_examples_per_task: int = 50,
        strict: bool = False,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__()
        resolve_preference_fields(fields)
        check_options(truncation, max_length, batch_size, val_fraction)
        self.save_hyperparameters()
        resolve_roles(roles)
        self.max_length = max_length
        self.batch_size = batch_size
        records = RecordSet.of("preference", task_pairs, self.hparams, describe=pair_summary)
        # A prompt_style of None is the style of the model's checkpoint, known once the stage connects.
        self.examples: ExampleStore[PreferencePair] = ExampleStore(
            records, self._encode, tokenizer, prompt_style, batch_size, num_workers, finish=number_pairs
        )

    # ---- what the pairs are made with, and the pairs: `self.examples` (lit_llm.data.examples) -----------

    # The tokenizer and prompt style (`tokenizer`, `prompt_style`, else the stage's); each split's SFTStats; the
    # pairs, built on first use when they can be: train pairs have pair_ids 0..N-1, then val pairs N..N+M-1.
    tokenizer, vocab_size, pad_id, prompt_style = from_examples("tokenizer", "vocab_size", "pad_id", "prompt_style")
    stats, train_examples, val_examples = from_examples("stats", "train", "val")

    # ---- building ------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Build the pairs now when `tokenizer` and `prompt_style` are given; else `connect` builds them."""
        self.examples.setup()

    def connect(self, spec: DataSpec) -> DataInfo:
        """Build the pairs with what the stage hands over (its tokenizer and checkpoint prompt style, where
        `tokenizer` and `prompt_style` are not given), unless they are built already; check they fit the model."""
        check_max_length(self.max_length, spec)
        return self.examples.connect(spec, self.block_size, self.batch_shape)

    def _encode(self, records: Iterable[tuple[str, Any]], stats: SFTStats) -> list[PreferencePair]:
        hp = self.hparams
        return build_pairs(
            records, self.tokenizer, self.prompt_style, hp.max_length, hp.truncation, hp.fields, hp.roles, stats
        )

    # ---- loaders -------------------------------------------------------------------------------

    @property
    def block_size(self) -> int:
        return self.max_length

    @property
    def batch_shape(self) -> None:
        return None  # rows are padded to each batch's longest

    def _loader(self, pairs: list[PreferencePair], shuffle: bool) -> DataLoader | list:
        collate_fn = functools.partial(collate_pairs, pad_id=self.pad_id)
        return self.examples.loader(pairs, collate_fn, shuffle, self.trainer)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_examples, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_examples, shuffle=False)

    def eval_prompts(self, limit: int) -> list[tuple[list[dict[str, Any]], str, str | None]]:
        """Up to `limit` validation prompts (as conversations) with their chosen response and task."""
        pairs = [p for p in self.val_examples if p.messages is not None]
        return [(p.messages, p.chosen, p.task) for p in pairs[:limit]]
