"""Records to conversations: Alpaca (`instruction`, `input`, `output`) and chat (`messages` of `{role, content}`)
records, with configurable field and role names, checked one by one.

A record that cannot be trained on raises `RecordError(reason, detail)`; `SkipCounter` turns those into counts
by reason (or, in strict mode, into a `DataError` naming the file and record).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

from lit_llm.errors import ConfigError, DataError

Format = Literal["auto", "alpaca", "chat"]

DEFAULT_FIELDS: dict[str, str] = {
    "instruction": "instruction",
    "input": "input",
    "output": "output",
    "messages": "messages",
    "role": "role",
    "content": "content",
}
# ShareGPT's names are accepted as well, so its exports load with only `fields` changed.
DEFAULT_ROLES: dict[str, str] = {
    "system": "system",
    "user": "user",
    "assistant": "assistant",
    "human": "user",
    "gpt": "assistant",
}


class RecordError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def resolve_fields(fields: dict[str, str] | None) -> dict[str, str]:
    unknown = sorted(set(fields or {}) - set(DEFAULT_FIELDS))
    if unknown:
        raise ConfigError(f"data.fields: unknown key(s) {unknown}; valid keys: {', '.join(DEFAULT_FIELDS)}")
    return {**DEFAULT_FIELDS, **(fields or {})}


def resolve_roles(roles: dict[str, str] | None) -> dict[str, str]:
    merged = {**DEFAULT_ROLES, **(roles or {})}
    bad = sorted(k for k, v in merged.items() if v not in ("system", "user", "assistant"))
    if bad:
        raise ConfigError(f"data.roles: {bad} must map to system, user or assistant")
    return merged


def _string(record: dict[str, Any], key: str, required: bool = True) -> str:
    if key not in record or record[key] is None:
        if not required:
            return ""
        keys = ", ".join(map(str, record)) or "none"
        raise RecordError("missing_field", f"record has no {key!r} field (fields: {keys})")
    value = record[key]
    if not isinstance(value, str):
        raise RecordError("not_a_string", f"field {key!r} is a {type(value).__name__}, not a string")
    return value


def alpaca_messages(record: dict[str, Any], fields: dict[str, str]) -> list[dict[str, Any]]:
    instruction = _string(record, fields["instruction"])
    extra = _string(record, fields["input"], required=False)
    output = _string(record, fields["output"])
    if not instruction.strip():
        raise RecordError("empty_prompt", f"field {fields['instruction']!r} is empty")
    if not output.strip():
        raise RecordError("empty_response", f"field {fields['output']!r} is empty")
    return [{"role": "user", "content": instruction, "input": extra}, {"role": "assistant", "content": output}]


def parse_messages(raw: Any, key: str, fields: dict[str, str], roles: dict[str, str]) -> list[dict[str, Any]]:
    """Field `key`'s list of messages as `{role, content}` with canonical roles; each message is checked."""
    if not isinstance(raw, list) or not raw:
        raise RecordError("bad_messages", f"field {key!r} must be a non-empty list of messages")
    messages = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise RecordError("bad_messages", f"{key}[{i}] is a {type(message).__name__}, not an object")
        try:
            role_name, content = _string(message, fields["role"]), _string(message, fields["content"])
        except RecordError as exc:
            raise RecordError(exc.reason, f"{key}[{i}]: {exc.detail.replace('record has', 'message has')}") from None
        if role_name not in roles:
            raise RecordError("unknown_role", f"{key}[{i}] has role {role_name!r}; known roles: {', '.join(roles)}")
        messages.append({"role": roles[role_name], "content": content})
    return messages


def check_conversation(messages: list[dict[str, Any]]) -> None:
    """A conversation can be trained on when it has assistant turns, ends with one, and none is empty."""
    if not any(m["role"] == "assistant" for m in messages):
        raise RecordError("no_assistant_turn", "the conversation has no assistant turn")
    if messages[-1]["role"] != "assistant":
        raise RecordError("not_ending_with_assistant", f"the conversation ends with a {messages[-1]['role']} turn")
    if any(m["role"] == "assistant" and not m["content"].strip() for m in messages):
        raise RecordError("empty_response", "an assistant turn is empty")


def chat_messages(record: dict[str, Any], fields: dict[str, str], roles: dict[str, str]) -> list[dict[str, Any]]:
    key = fields["messages"]
    if key not in record:
        keys = ", ".join(map(str, record)) or "none"
        raise RecordError("missing_field", f"record has no {key!r} field (fields: {keys})")
    messages = parse_messages(record[key], key, fields, roles)
    check_conversation(messages)
    return messages


def to_messages(record: Any, format: Format, fields: dict[str, str], roles: dict[str, str]) -> list[dict[str, Any]]:
    """The conversation of one record; RecordError when it has none that can be trained on."""
    if not isinstance(record, dict):
        raise RecordError("not_an_object", f"record is a {type(record).__name__}, not an object")
    if format == "auto":
        format = "chat" if fields["messages"] in record else "alpaca"
    if format == "chat":
        return chat_messages(record, fields, roles)
    return alpaca_messages(record, fields)


@dataclass
class SkipCounter:
    """Counts skipped records by reason and keeps the first place each reason occurred; strict mode raises."""

    strict: bool = False
    skipped: dict[str, int] = field(default_factory=dict)
    first: dict[str, str] = field(default_factory=dict)

    def skip(self, location: str, reason: str, detail: str) -> None:
        if self.strict:
            raise DataError(f"{location}: {detail}")
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.first.setdefault(reason, f"{location}: {detail}")

    @property
    def total(self) -> int:
        return sum(self.skipped.values())

    def warn(self, what: str) -> None:
        if self.skipped:
            lines = [f"  {reason}: {n} (first: {self.first[reason]})" for reason, n in sorted(self.skipped.items())]
            warnings.warn(f"{what}: skipped {self.total} record(s)\n" + "\n".join(lines), stacklevel=3)
