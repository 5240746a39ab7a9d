"""Records to conversations: `to_messages` on Alpaca records (with, without and with a null input), chat records
(role names mapped, ShareGPT's `conversations`/`from`/`value` through `fields`) and auto-detection; every
`RecordError` reason with its detail; `resolve_fields` / `resolve_roles` and their ConfigErrors; and `SkipCounter`
(counts by reason, first location, total, strict mode, one warning listing the reasons)."""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import pytest

from lit_llm.text.conversations import (
    DEFAULT_FIELDS,
    DEFAULT_ROLES,
    RecordError,
    SkipCounter,
    alpaca_messages,
    chat_messages,
    resolve_fields,
    resolve_roles,
    to_messages,
)
from lit_llm.errors import ConfigError, DataError

FIELDS = resolve_fields(None)
ROLES = resolve_roles(None)
SHAREGPT = {"messages": "conversations", "role": "from", "content": "value"}


def convert(record: Any, format: str = "auto", fields: dict[str, str] | None = None, roles=None):
    return to_messages(record, format, resolve_fields(fields), resolve_roles(roles))


def reason_of(record: Any, format: str = "auto", fields: dict[str, str] | None = None) -> tuple[str, str]:
    with pytest.raises(RecordError) as info:
        convert(record, format, fields)
    assert str(info.value) == info.value.detail
    return info.value.reason, info.value.detail


# --- defaults ------------------------------------------------------------------------------------------------------


def test_defaults():
    assert DEFAULT_FIELDS == {
        "instruction": "instruction",
        "input": "input",
        "output": "output",
        "messages": "messages",
        "role": "role",
        "content": "content",
    }
    assert DEFAULT_ROLES == {
        "system": "system",
        "user": "user",
        "assistant": "assistant",
        "human": "user",
        "gpt": "assistant",
    }
    assert issubclass(RecordError, ValueError)


# --- Alpaca --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("format", ["alpaca", "auto"])
def test_alpaca_without_input(format):
    record = {"instruction": "Name a fruit.", "output": "An apple."}
    assert convert(record, format) == [
        {"role": "user", "content": "Name a fruit.", "input": ""},
        {"role": "assistant", "content": "An apple."},
    ]


def test_alpaca_with_input_and_null_input():
    record = {"instruction": "Translate.", "input": "The fox is red.", "output": "Le renard est rouge."}
    assert convert(record, "alpaca") == [
        {"role": "user", "content": "Translate.", "input": "The fox is red."},
        {"role": "assistant", "content": "Le renard est rouge."},
    ]
    record["input"] = None
    assert convert(record, "alpaca")[0] == {"role": "user", "content": "Translate.", "input": ""}
    record["input"] = ""
    assert convert(record, "alpaca")[0] == {"role": "user", "content": "Translate.", "input": ""}


def test_alpaca_with_renamed_fields_and_extra_keys_ignored():
    fields = {"instruction": "prompt", "input": "context", "output": "completion"}
    record = {"prompt": "Add.", "context": "2 and 3", "completion": "5", "id": 17, "instruction": "ignored"}
    assert convert(record, "alpaca", fields) == [
        {"role": "user", "content": "Add.", "input": "2 and 3"},
        {"role": "assistant", "content": "5"},
    ]
    assert alpaca_messages(record, resolve_fields(fields)) == convert(record, "alpaca", fields)


def test_alpaca_keeps_content_verbatim():
    record = {"instruction": "  Say <|user|>\n", "output": " spaced out \n"}
    messages = convert(record, "alpaca")
    assert messages[0]["content"] == "  Say <|user|>\n"
    assert messages[1]["content"] == " spaced out \n"


# --- chat ----------------------------------------------------------------------------------------------------------


def test_chat_messages_with_all_roles():
    record = {
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "Hi."},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Bye."},
            {"role": "assistant", "content": "Goodbye."},
        ]
    }
    expected = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    assert convert(record, "chat") == expected
    assert convert(record, "auto") == expected
    assert chat_messages(record, FIELDS, ROLES) == expected


def test_chat_roles_are_mapped_and_extra_message_keys_dropped():
    record = {
        "messages": [
            {"role": "human", "content": "Hi.", "weight": 0},
            {"role": "gpt", "content": "Hello.", "name": "bot"},
            {"role": "operator", "content": "Again?"},
            {"role": "bot", "content": "Yes."},
        ]
    }
    roles = {"operator": "user", "bot": "assistant"}
    assert convert(record, "chat", roles=roles) == [
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Again?"},
        {"role": "assistant", "content": "Yes."},
    ]


def test_sharegpt_through_fields():
    record = {
        "id": "abc",
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "What is 2+2?"},
            {"from": "gpt", "value": "4"},
        ],
    }
    expected = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    assert convert(record, "chat", SHAREGPT) == expected
    assert convert(record, "auto", SHAREGPT) == expected
    # With the default field names the same record is not recognised as chat.
    assert reason_of(record, "auto") == (
        "missing_field",
        "record has no 'instruction' field (fields: id, conversations)",
    )


def test_auto_detection():
    chat = {"messages": [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}]}
    alpaca = {"instruction": "Hi.", "output": "Hello."}
    assert convert(chat) == [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}]
    assert convert(alpaca) == [
        {"role": "user", "content": "Hi.", "input": ""},
        {"role": "assistant", "content": "Hello."},
    ]
    # A record with both is chat; a forced format wins over detection.
    both = {**alpaca, **chat}
    assert convert(both) == convert(chat)
    assert convert(both, "alpaca") == convert(alpaca)
    assert reason_of(alpaca, "chat") == (
        "missing_field",
        "record has no 'messages' field (fields: instruction, output)",
    )
    assert reason_of(chat, "alpaca") == ("missing_field", "record has no 'instruction' field (fields: messages)")
    # "messages" present but unusable is still chat, never a silent fallback to alpaca.
    assert reason_of({"messages": None, "instruction": "Hi.", "output": "Hello."})[0] == "bad_messages"


# --- every RecordError reason --------------------------------------------------------------------------------------


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


@pytest.mark.parametrize(
    "record, format, reason, detail",
    [
        # missing_field: names the field and lists the record's fields
        (
            {"output": "x", "input": ""},
            "alpaca",
            "missing_field",
            "record has no 'instruction' field (fields: output, input)",
        ),
        ({"instruction": "x"}, "alpaca", "missing_field", "record has no 'output' field (fields: instruction)"),
        ({"instruction": None, "output": "y"}, "alpaca", "missing_field", "record has no 'instruction' field"),
        ({}, "alpaca", "missing_field", "record has no 'instruction' field (fields: none)"),
        ({}, "chat", "missing_field", "record has no 'messages' field (fields: none)"),
        ({"messages": [{"content": "hi"}]}, "chat", "missing_field",
            "messages[0]: message has no 'role' field (fields: content)"),
        ({"messages": [{"role": "user"}]}, "chat", "missing_field",
            "messages[0]: message has no 'content' field (fields: role)"),
        # not_a_string
        ({"instruction": 5, "output": "y"}, "alpaca", "not_a_string", "field 'instruction' is a int, not a string"),
        ({"instruction": "x", "input": ["a"], "output": "y"}, "alpaca", "not_a_string", "field 'input' is a list"),
        ({"instruction": "x", "output": {"t": 1}}, "alpaca", "not_a_string", "field 'output' is a dict, not a string"),
        ({"messages": [user("hi"), assistant(3)]}, "chat", "not_a_string",
            "messages[1]: field 'content' is a int, not a string"),
        ({"messages": [{"role": 1, "content": "hi"}]}, "chat", "not_a_string",
            "messages[0]: field 'role' is a int, not a string"),
        # empty_prompt
        ({"instruction": "", "output": "y"}, "alpaca", "empty_prompt", "field 'instruction' is empty"),
        ({"instruction": " \n\t", "output": "y"}, "alpaca", "empty_prompt", "field 'instruction' is empty"),
        # empty_response
        ({"instruction": "x", "output": ""}, "alpaca", "empty_response", "field 'output' is empty"),
        ({"instruction": "x", "output": "  \n"}, "alpaca", "empty_response", "field 'output' is empty"),
        ({"messages": [user("hi"), assistant("  ")]}, "chat", "empty_response", "an assistant turn is empty"),
        (
            {"messages": [user("a"), assistant(""), user("b"), assistant("ok")]},
            "chat",
            "empty_response",
            "an assistant turn is empty",
        ),
        # bad_messages
        ({"messages": "hi"}, "chat", "bad_messages", "field 'messages' must be a non-empty list of messages"),
        ({"messages": []}, "chat", "bad_messages", "field 'messages' must be a non-empty list of messages"),
        ({"messages": None}, "chat", "bad_messages", "field 'messages' must be a non-empty list of messages"),
        ({"messages": {"role": "user"}}, "chat", "bad_messages", "field 'messages' must be a non-empty list"),
        ({"messages": [user("hi"), "hello"]}, "chat", "bad_messages", "messages[1] is a str, not an object"),
        ({"messages": [["user", "hi"]]}, "chat", "bad_messages", "messages[0] is a list, not an object"),
        # unknown_role
        (
            {"messages": [user("hi"), {"role": "bot", "content": "x"}]},
            "chat",
            "unknown_role",
            "messages[1] has role 'bot'; known roles: system, user, assistant, human, gpt",
        ),
        # no_assistant_turn / not_ending_with_assistant
        ({"messages": [user("hi")]}, "chat", "no_assistant_turn", "the conversation has no assistant turn"),
        (
            {"messages": [{"role": "system", "content": "s"}, user("hi")]},
            "chat",
            "no_assistant_turn",
            "the conversation has no assistant turn",
        ),
        (
            {"messages": [user("hi"), assistant("yo"), user("bye")]},
            "chat",
            "not_ending_with_assistant",
            "the conversation ends with a user turn",
        ),
        (
            {"messages": [user("hi"), assistant("yo"), {"role": "system", "content": "s"}]},
            "chat",
            "not_ending_with_assistant",
            "the conversation ends with a system turn",
        ),
    ],
)
def test_record_errors(record, format, reason, detail):
    got_reason, got_detail = reason_of(record, format)
    assert got_reason == reason
    assert got_detail.startswith(detail)


@pytest.mark.parametrize("record", ["just text", ["a", "b"], None, 3, 1.5])
@pytest.mark.parametrize("format", ["auto", "alpaca", "chat"])
def test_not_an_object(record, format):
    reason, detail = reason_of(record, format)
    assert reason == "not_an_object"
    assert detail == f"record is a {type(record).__name__}, not an object"


def test_record_error_details_use_the_configured_names():
    reason, detail = reason_of({"conversations": [{"from": "human", "value": "hi"}, "x"]}, "chat", SHAREGPT)
    assert (reason, detail) == ("bad_messages", "conversations[1] is a str, not an object")
    reason, detail = reason_of({"conversations": [{"from": "robot", "value": "hi"}]}, "chat", SHAREGPT)
    assert reason == "unknown_role" and detail.startswith("conversations[0] has role 'robot'")
    reason, detail = reason_of({"conversations": [{"from": "human"}]}, "chat", SHAREGPT)
    assert (reason, detail) == ("missing_field", "conversations[0]: message has no 'value' field (fields: from)")
    reason, detail = reason_of(
        {"prompt": "  ", "completion": "y"}, "alpaca", {"instruction": "prompt", "output": "completion"}
    )
    assert (reason, detail) == ("empty_prompt", "field 'prompt' is empty")


def test_unknown_role_lists_custom_roles():
    record = {"messages": [{"role": "robot", "content": "hi"}]}
    with pytest.raises(RecordError) as info:
        convert(record, "chat", roles={"bot": "assistant"})
    assert info.value.reason == "unknown_role"
    assert info.value.detail.endswith("known roles: system, user, assistant, human, gpt, bot")


# --- resolve_fields / resolve_roles --------------------------------------------------------------------------------


def test_resolve_fields():
    assert resolve_fields(None) == DEFAULT_FIELDS
    assert resolve_fields({}) == DEFAULT_FIELDS
    resolved = resolve_fields(SHAREGPT)
    assert resolved == {**DEFAULT_FIELDS, "messages": "conversations", "role": "from", "content": "value"}
    resolved["messages"] = "changed"
    assert DEFAULT_FIELDS["messages"] == "messages"  # a copy, never the shared default


def test_resolve_fields_unknown_key():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['prompt'\]") as info:
        resolve_fields({"prompt": "question", "output": "answer"})
    assert "valid keys: instruction, input, output, messages, role, content" in str(info.value)
    with pytest.raises(ConfigError, match=r"\['speaker', 'text'\]"):
        resolve_fields({"text": "t", "speaker": "s"})


def test_resolve_roles():
    assert resolve_roles(None) == DEFAULT_ROLES
    assert resolve_roles({"bot": "assistant"}) == {**DEFAULT_ROLES, "bot": "assistant"}
    assert resolve_roles({"human": "system"})["human"] == "system"  # a default mapping can be overridden
    resolved = resolve_roles(None)
    resolved["gpt"] = "user"
    assert DEFAULT_ROLES["gpt"] == "assistant"


@pytest.mark.parametrize(
    "roles, named",
    [
        ({"bot": "model"}, "['bot']"),
        ({"gpt": "bot"}, "['gpt']"),
        ({"a": "Assistant", "b": "user", "c": ""}, "['a', 'c']"),
        ({"tool": None}, "['tool']"),
    ],
)
def test_resolve_roles_bad_target(roles, named):
    with pytest.raises(ConfigError) as info:
        resolve_roles(roles)
    assert str(info.value) == f"data.roles: {named} must map to system, user or assistant"


# --- SkipCounter ---------------------------------------------------------------------------------------------------


def test_skip_counter_counts_by_reason_and_keeps_the_first_location():
    counter = SkipCounter()
    assert counter.total == 0 and counter.skipped == {} and counter.first == {}
    counter.skip("a.jsonl:3", "missing_field", "record has no 'output' field")
    counter.skip("a.jsonl:5", "missing_field", "record has no 'instruction' field")
    counter.skip("b.jsonl:1", "empty_response", "field 'output' is empty")
    counter.skip("b.jsonl:9", "missing_field", "record has no 'output' field")
    assert counter.skipped == {"missing_field": 3, "empty_response": 1}
    assert counter.first == {
        "missing_field": "a.jsonl:3: record has no 'output' field",
        "empty_response": "b.jsonl:1: field 'output' is empty",
    }
    assert counter.total == 4


def test_skip_counter_with_to_messages():
    records = [
        {"instruction": "Hi.", "output": "Hello."},
        "not a record",
        {"instruction": "Hi.", "output": " "},
        {"messages": [{"role": "user", "content": "x"}]},
        {"instruction": "Bye.", "output": "Goodbye."},
        {"instruction": "", "output": "x"},
        {"instruction": "Again.", "output": ""},
    ]
    counter, kept = SkipCounter(), []
    for line, record in enumerate(records, 1):
        try:
            kept.append(convert(record))
        except RecordError as exc:
            counter.skip(f"train.jsonl:{line}", exc.reason, exc.detail)
    assert [m[0]["content"] for m in kept] == ["Hi.", "Bye."]
    assert counter.skipped == {"not_an_object": 1, "empty_response": 2, "no_assistant_turn": 1, "empty_prompt": 1}
    assert counter.first["empty_response"] == "train.jsonl:3: field 'output' is empty"
    assert counter.total == 5


def test_skip_counter_strict_raises_with_the_location_first():
    counter = SkipCounter(strict=True)
    with pytest.raises(DataError) as info:
        counter.skip("data/train.jsonl:12", "empty_prompt", "field 'instruction' is empty")
    assert str(info.value).startswith("data/train.jsonl:12")
    assert str(info.value) == "data/train.jsonl:12: field 'instruction' is empty"
    assert counter.skipped == {} and counter.total == 0


def _warn_from_a_caller(counter: SkipCounter, what: str) -> None:
    counter.warn(what)


def test_skip_counter_warns_once_listing_reasons():
    counter = SkipCounter()
    counter.skip("a.jsonl:3", "missing_field", "no 'output'")
    counter.skip("a.jsonl:7", "empty_response", "field 'output' is empty")
    counter.skip("a.jsonl:8", "missing_field", "no 'instruction'")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        caller_line = inspect.currentframe().f_lineno + 1
        _warn_from_a_caller(counter, "sft train data")
    assert len(caught) == 1
    assert issubclass(caught[0].category, UserWarning)
    assert str(caught[0].message) == (
        "sft train data: skipped 3 record(s)\n"
        "  empty_response: 1 (first: a.jsonl:7: field 'output' is empty)\n"
        "  missing_field: 2 (first: a.jsonl:3: no 'output')"
    )
    # stacklevel points past the code that called warn(), at its caller.
    assert (caught[0].filename, caught[0].lineno) == (__file__, caller_line)


def test_skip_counter_silent_when_nothing_skipped():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SkipCounter().warn("sft train data")
    assert caught == []
