"""Prompt styles, token by token: the Alpaca template text and its loss mask (with and without an input), the
multi-turn Chat template and its per-turn masks, content that spells special tokens staying plain text, generation
prompts and stop ids, the BoundaryError raised when a prompt's tokens merge into the response, and `load_style` /
`style_to_dict` (built-in names, class paths, `{class_path, init_args}`, round trips and every ConfigError)."""

from __future__ import annotations

import sys
import textwrap
from typing import Any

import pytest

from lit_llm.text.conversations import DEFAULT_FIELDS, DEFAULT_ROLES, to_messages
from lit_llm.prepare.corpus import generate_corpus
from lit_llm.text.templates import (
    STYLES,
    Alpaca,
    BoundaryError,
    Chat,
    ChatML,
    Encoded,
    QA,
    PromptStyle,
    Special,
    encode_conversation,
    encode_parts,
    load_style,
    prompt_ids,
    stop_ids,
    style_to_dict,
)
from lit_llm.text.tokenizer import SPECIAL_TOKENS, Tokenizer, train_bpe
from lit_llm.errors import ConfigError, DataError
from lit_llm.losses import IGNORE_INDEX

SPECIAL_IDS = set(range(len(SPECIAL_TOKENS)))  # <pad> <unk> <s> </s> <|system|> <|user|> <|assistant|> <|end|>

INSTRUCTION_TEXTS = [
    "### Instruction:\nName a fruit.\n\n### Response:\nAn apple.",
    "### Instruction:\nTranslate the sentence.\n\n### Input:\nThe fox is red.\n\n### Response:\nLe renard est rouge.",
    "Question: Who lived in the forest?\nAnswer: the fox lived in the forest.",
    "Answer: the fox",
    "What is six times seven? Answer: 42",
] * 20


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_bpe(list(generate_corpus(300, seed=1)) + INSTRUCTION_TEXTS, vocab_size=512)


def enc(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text, allow_special=False)


def alpaca_record(instruction: str, output: str, input: Any = None) -> list[dict[str, Any]]:
    record = {"instruction": instruction, "output": output}
    if input is not None:
        record["input"] = input
    return to_messages(record, "alpaca", dict(DEFAULT_FIELDS), dict(DEFAULT_ROLES))


def runs(labels: list[int]) -> list[tuple[int, int]]:
    """(start, end) of each maximal run of trained (non-IGNORE) labels."""
    spans, start = [], None
    for i, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            spans.append((start, i))
            start = None
    return spans


# --- custom styles used by the tests -------------------------------------------------------------------------------


class Terse(PromptStyle):
    """A custom style with an init argument: `{prefix}{question}\\n` then the answer and `<|end|>`."""

    stop_tokens = ("<|end|>",)

    def __init__(self, prefix: str = "Q: ") -> None:
        self.prefix = prefix

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> list[str]:
        parts: list[str] = []
        for message in messages:
            if message["role"] == "assistant":
                parts += [message["content"], Special("<|end|>")]
            else:
                parts.append(f"{self.prefix}{message['content']}\n")
        return parts


class SpacedPrompt(PromptStyle):
    """A template whose prompt ends with a space, so a response's first word can merge with it."""

    stop_tokens = ("</s>",)

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> list[str]:
        parts: list[str] = []
        for message in messages:
            if message["role"] == "assistant":
                parts += [message["content"], Special("</s>")]
            else:
                parts.append(f"Question: {message['content']}\nAnswer: ")
        return parts


class NotAStyle:
    def render(self, messages, add_generation_prompt=False):  # same shape, but not a PromptStyle subclass
        return []


# --- Alpaca: text --------------------------------------------------------------------------------------------------


def test_alpaca_text_without_input():
    messages = alpaca_record("Name a fruit.", "An apple.")
    assert messages == [
        {"role": "user", "content": "Name a fruit.", "input": ""},
        {"role": "assistant", "content": "An apple."},
    ]
    parts = Alpaca().render(messages)
    assert "".join(parts) == "### Instruction:\nName a fruit.\n\n### Response:\nAn apple.</s>"
    assert parts == ["### Instruction:\nName a fruit.\n\n### Response:\n", "An apple.", "</s>"]
    assert [isinstance(p, Special) for p in parts] == [False, False, True]
    # The generation prompt is everything before the response.
    assert "".join(Alpaca().render(messages[:1], add_generation_prompt=True)) == (
        "### Instruction:\nName a fruit.\n\n### Response:\n"
    )


def test_alpaca_text_with_input():
    messages = alpaca_record("Translate the sentence.", "Le renard est rouge.", input="The fox is red.")
    assert "".join(Alpaca().render(messages)) == (
        "### Instruction:\nTranslate the sentence.\n\n### Input:\nThe fox is red.\n\n### Response:\n"
        "Le renard est rouge.</s>"
    )


@pytest.mark.parametrize("empty_input", ["", None])
def test_alpaca_empty_or_null_input_has_no_input_section(empty_input):
    messages = alpaca_record("Name a fruit.", "An apple.", input=empty_input)
    text = "".join(Alpaca().render(messages))
    assert "### Input" not in text
    assert text == "### Instruction:\nName a fruit.\n\n### Response:\nAn apple.</s>"


def test_alpaca_system_message_is_its_own_paragraph():
    messages = [{"role": "system", "content": "You are terse."}, *alpaca_record("Name a fruit.", "An apple.")]
    assert "".join(Alpaca().render(messages)) == (
        "You are terse.\n\n### Instruction:\nName a fruit.\n\n### Response:\nAn apple.</s>"
    )


# --- Alpaca: tokens and mask ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "instruction, input, output, prompt",
    [
        ("Name a fruit.", None, "An apple.", "### Instruction:\nName a fruit.\n\n### Response:\n"),
        (
            "Translate the sentence.",
            "The fox is red.",
            "Le renard est rouge.",
            "### Instruction:\nTranslate the sentence.\n\n### Input:\nThe fox is red.\n\n### Response:\n",
        ),
    ],
    ids=["without_input", "with_input"],
)
def test_alpaca_mask_token_by_token(tok, instruction, input, output, prompt):
    encoded = encode_conversation(tok, Alpaca(), alpaca_record(instruction, output, input=input))
    prompt_tokens = enc(tok, prompt)
    expected_ids = enc(tok, prompt + output) + [tok.eos_id]
    # This tokenizer does not merge across the "\n" ending the prompt, so the joined text splits cleanly too.
    assert expected_ids == prompt_tokens + enc(tok, output) + [tok.eos_id]

    assert encoded.input_ids == expected_ids
    assert len(encoded.labels) == len(encoded.input_ids)
    n = len(prompt_tokens)
    assert encoded.labels == [IGNORE_INDEX] * n + expected_ids[n:]
    assert encoded.prompt_length == n
    assert encoded.input_ids[:n] == prompt_tokens
    assert prompt_ids(tok, Alpaca(), alpaca_record(instruction, output, input=input)[:1]) == prompt_tokens
    # What is trained on decodes to exactly the response and its EOS; what is not, to exactly the prompt.
    trained = [i for i, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE_INDEX]
    assert tok.decode(trained, skip_special_tokens=False) == output + "</s>"
    assert tok.decode(encoded.input_ids[:n], skip_special_tokens=False) == prompt
    assert encoded.labels[-1] == tok.eos_id == 3
    assert encoded.labels.count(tok.eos_id) == 1


def test_alpaca_two_turns_train_on_both_responses(tok):
    messages = [
        {"role": "user", "content": "Name a fruit.", "input": ""},
        {"role": "assistant", "content": "An apple."},
        {"role": "user", "content": "Name another.", "input": ""},
        {"role": "assistant", "content": "A pear."},
    ]
    encoded = encode_conversation(tok, Alpaca(), messages)
    p1 = "### Instruction:\nName a fruit.\n\n### Response:\n"
    p2 = "### Instruction:\nName another.\n\n### Response:\n"
    first = enc(tok, p1 + "An apple.") + [tok.eos_id]
    second = enc(tok, p2 + "A pear.") + [tok.eos_id]
    assert encoded.input_ids == first + second
    n1, n2 = len(enc(tok, p1)), len(enc(tok, p2))
    assert encoded.labels == [IGNORE_INDEX] * n1 + first[n1:] + [IGNORE_INDEX] * n2 + second[n2:]
    spans = runs(encoded.labels)
    assert [tok.decode(encoded.input_ids[a:b], skip_special_tokens=False) for a, b in spans] == [
        "An apple.</s>",
        "A pear.</s>",
    ]


# --- Chat: multi-turn ----------------------------------------------------------------------------------------------

CHAT = [
    {"role": "system", "content": "Be kind."},
    {"role": "user", "content": "Who lived in the forest?"},
    {"role": "assistant", "content": "The fox lived in the forest."},
    {"role": "user", "content": "And then?"},
    {"role": "assistant", "content": "It found a red key."},
]


def test_qa_text_and_mask_token_by_token(tok):
    assert "".join(QA().render(CHAT)) == (
        "Be kind.\nQ: Who lived in the forest?\nA: The fox lived in the forest.</s>"
        "\nQ: And then?\nA: It found a red key.</s>"
    )
    messages = [{"role": "user", "content": "Who lived in the forest?"}, {"role": "assistant", "content": "fox"}]
    prompt = enc(tok, "Q: Who lived in the forest?\nA:")
    assert prompt_ids(tok, QA(), messages[:1]) == prompt
    # The answer is trained as running text (" fox", the word after a space), then EOS; nothing of the prompt.
    answer = enc(tok, " fox")
    assert answer == enc(tok, "Q: Who lived in the forest?\nA: fox")[len(prompt):] and len(answer) == 1
    encoded = encode_conversation(tok, QA(), messages)
    assert encoded.input_ids == prompt + answer + [tok.eos_id]
    assert encoded.labels == [IGNORE_INDEX] * len(prompt) + answer + [tok.eos_id]
    assert load_style("qa").stop_tokens == ("</s>",)


def test_chat_text():
    assert "".join(Chat().render(CHAT)) == (
        "<|system|>\nBe kind.<|end|><|user|>\nWho lived in the forest?<|end|>"
        "<|assistant|>\nThe fox lived in the forest.<|end|><|user|>\nAnd then?<|end|>"
        "<|assistant|>\nIt found a red key.<|end|>"
    )
    assert "".join(Chat().render(CHAT[:2], add_generation_prompt=True)).endswith("<|end|><|assistant|>\n")


def test_chat_multi_turn_mask_token_by_token(tok):
    role = {r: tok.token_id(f"<|{r}|>") for r in ("system", "user", "assistant")}
    end, newline = tok.token_id("<|end|>"), enc(tok, "\n")
    assert (role["system"], role["user"], role["assistant"], end) == (4, 5, 6, 7)
    assert len(newline) == 1

    expected_ids: list[int] = []
    expected_labels: list[int] = []
    trained_per_turn = []
    for message in CHAT:
        body = enc(tok, "\n" + message["content"])
        # The "\n" after the role token is a token of its own here, so the content's tokens follow it unchanged.
        assert body == newline + enc(tok, message["content"])
        expected_ids += [role[message["role"]]] + body + [end]
        if message["role"] == "assistant":
            trained = enc(tok, message["content"]) + [end]
            expected_labels += [IGNORE_INDEX] * 2 + trained
            trained_per_turn.append(len(trained))
        else:
            expected_labels += [IGNORE_INDEX] * (len(body) + 2)

    encoded = encode_conversation(tok, Chat(), CHAT)
    assert encoded.input_ids == expected_ids
    assert encoded.labels == expected_labels
    # Two trained runs, one per assistant turn, each the content's tokens and <|end|>.
    spans = runs(encoded.labels)
    assert [b - a for a, b in spans] == trained_per_turn
    assert trained_per_turn == [len(enc(tok, content)) + 1 for content in (CHAT[2]["content"], CHAT[4]["content"])]
    assert [tok.decode(encoded.input_ids[a:b], skip_special_tokens=False) for a, b in spans] == [
        "The fox lived in the forest.<|end|>",
        "It found a red key.<|end|>",
    ]
    for a, _ in spans:  # each trained run starts right after <|assistant|> and its newline
        assert encoded.input_ids[a - 2 : a] == [role["assistant"]] + newline
        assert encoded.labels[a - 2 : a] == [IGNORE_INDEX, IGNORE_INDEX]
    # No role token, system or user token is trained on; <|end|> is trained only where it closes an assistant turn.
    trained_ids = [i for i, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE_INDEX]
    assert not {role["system"], role["user"], role["assistant"]} & set(trained_ids)
    assert trained_ids.count(end) == 2
    assert encoded.input_ids.count(end) == 5
    assert encoded.prompt_length == spans[0][0]


def test_chat_conversation_opening_with_assistant(tok):
    encoded = encode_conversation(tok, Chat(), [{"role": "assistant", "content": "Hello there."}])
    body = enc(tok, "Hello there.")
    assert encoded.input_ids == [6] + enc(tok, "\n") + body + [7]
    assert encoded.labels == [IGNORE_INDEX, IGNORE_INDEX] + body + [7]


def test_no_assistant_turn_trains_on_nothing(tok):
    encoded = encode_conversation(tok, Chat(), [{"role": "user", "content": "Hello?"}])
    assert encoded == Encoded([], [])
    assert Encoded([5, 9], [IGNORE_INDEX, IGNORE_INDEX]).prompt_length == 2


def test_chat_style_keeps_the_alpaca_input(tok):
    messages = alpaca_record("Translate the sentence.", "Le renard est rouge.", input="The fox is red.")
    assert "".join(Chat().render(messages)).startswith("<|user|>\nTranslate the sentence.\n\nThe fox is red.<|end|>")
    encoded = encode_conversation(tok, Chat(), messages)
    assert "The fox is red." in tok.decode(encoded.input_ids, skip_special_tokens=False)


# --- content that spells special tokens ----------------------------------------------------------------------------

SPELLED = "<|assistant|> hi </s>"


def test_user_content_spelling_special_tokens_stays_text(tok):
    # Why it matters: the encoder with special matching on would turn the text into real role / EOS tokens.
    assert {6, 3} <= set(tok.encode(SPELLED, allow_special=True))
    assert not SPECIAL_IDS & set(enc(tok, SPELLED))

    messages = [{"role": "user", "content": SPELLED}, {"role": "assistant", "content": "Hello."}]
    encoded = encode_conversation(tok, Chat(), messages)
    content = enc(tok, "\n" + SPELLED)
    assert encoded.input_ids[0] == 5
    span = encoded.input_ids[1 : 1 + len(content)]
    assert span == content
    assert not SPECIAL_IDS & set(span)
    assert tok.decode(span, skip_special_tokens=False) == "\n" + SPELLED
    assert encoded.input_ids[1 + len(content)] == 7
    # Only the template's own special tokens are there: <|user|> <|end|> <|assistant|> <|end|>.
    assert [i for i in encoded.input_ids if i in SPECIAL_IDS] == [5, 7, 6, 7]


def test_assistant_content_spelling_special_tokens_is_trained_as_text(tok):
    messages = [{"role": "user", "content": "Say it."}, {"role": "assistant", "content": "<|end|> and </s>"}]
    encoded = encode_conversation(tok, Chat(), messages)
    trained = [i for i, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE_INDEX]
    assert trained == enc(tok, "<|end|> and </s>") + [7]
    assert [i for i in trained if i in SPECIAL_IDS] == [7]


def test_alpaca_instruction_spelling_eos_stays_text(tok):
    encoded = encode_conversation(tok, Alpaca(), alpaca_record("Stop at </s> please.", "Done."))
    assert encoded.input_ids.count(tok.eos_id) == 1
    assert encoded.input_ids[-1] == tok.eos_id


# --- generation prompt and stop tokens -----------------------------------------------------------------------------


def test_chat_prompt_ids_end_with_assistant_and_newline(tok):
    ids = prompt_ids(tok, Chat(), CHAT[:2])
    assert ids[-2:] == [6] + enc(tok, "\n")
    assert ids == (
        [4] + enc(tok, "\nBe kind.") + [7] + [5] + enc(tok, "\nWho lived in the forest?") + [7] + [6] + enc(tok, "\n")
    )
    # After a whole conversation, the prompt is its training tokens and a fresh assistant header.
    assert prompt_ids(tok, Chat(), CHAT) == encode_conversation(tok, Chat(), CHAT).input_ids + [6] + enc(tok, "\n")


def test_alpaca_prompt_ids_end_with_response_header(tok):
    ids = prompt_ids(tok, Alpaca(), alpaca_record("Name a fruit.", "An apple.")[:1])
    header = enc(tok, "### Response:\n")
    assert len(header) > 1
    assert ids[-len(header) :] == header
    assert ids == enc(tok, "### Instruction:\nName a fruit.\n\n### Response:\n")


def test_stop_ids(tok):
    assert stop_ids(tok, Alpaca()) == [tok.eos_id] == [3]
    assert stop_ids(tok, Chat()) == [tok.token_id("<|end|>")] == [7]
    assert stop_ids(tok, Terse()) == [7]


def test_stop_token_missing_from_vocabulary_is_a_data_error(tok):
    class Odd(Chat):
        stop_tokens = ("<|eot|>",)

    with pytest.raises(DataError, match="eot"):
        stop_ids(tok, Odd())


def test_encode_parts_joins_adjacent_text(tok):
    assert encode_parts(tok, ["Once upon", " a time", Special("</s>"), "The fox"]) == (
        enc(tok, "Once upon a time") + [3] + enc(tok, "The fox")
    )
    assert encode_parts(tok, []) == []


# --- BoundaryError -------------------------------------------------------------------------------------------------


def test_boundary_error_when_the_response_merges_into_the_prompt(tok):
    prompt = "Question: Who lived there?\nAnswer: "
    # Precondition: with this tokenizer " the" is one token, so the trailing space of the prompt is absorbed.
    assert enc(tok, prompt + "the fox")[: len(enc(tok, prompt))] != enc(tok, prompt)
    assert enc(tok, "Answer: the")[: len(enc(tok, "Answer: "))] != enc(tok, "Answer: ")
    messages = [{"role": "user", "content": "Who lived there?"}, {"role": "assistant", "content": "the fox"}]
    with pytest.raises(BoundaryError, match="turn 1") as info:
        encode_conversation(tok, SpacedPrompt(), messages)
    assert isinstance(info.value, ValueError)


def test_no_boundary_error_when_the_tokens_still_split(tok):
    # " 42" is a pre-token of its own, but this tokenizer has no merge for " 4": the tokens stay a prefix.
    assert enc(tok, "Answer: 42")[: len(enc(tok, "Answer: "))] == enc(tok, "Answer: ")
    messages = [{"role": "user", "content": "What is six times seven?"}, {"role": "assistant", "content": "42"}]
    encoded = encode_conversation(tok, SpacedPrompt(), messages)
    prompt = enc(tok, "Question: What is six times seven?\nAnswer: ")
    assert encoded.labels == [IGNORE_INDEX] * len(prompt) + enc(tok, "42") + [3]


# --- load_style and style_to_dict ----------------------------------------------------------------------------------


def test_load_style_by_name_and_instance():
    assert STYLES == {"alpaca": Alpaca, "chat": Chat, "chatml": ChatML, "qa": QA}
    assert type(load_style("alpaca")) is Alpaca
    assert type(load_style("chat")) is Chat
    style = Terse("Question: ")
    assert load_style(style) is style
    assert type(load_style({"class_path": "chat"})) is Chat
    assert type(load_style({"class_path": "lit_llm.text.templates.Alpaca", "init_args": None})) is Alpaca


def test_chatml_renders_the_template_of_smollm2_and_qwen2_instruct_models():
    """The parts of ChatML: each turn `<|im_start|>role\ncontent<|im_end|>\n`, then the assistant's opening."""
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    parts = ChatML().render(messages, add_generation_prompt=True)
    text = "".join(parts)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert [p for p in parts if isinstance(p, Special)] == ["<|im_start|>", "<|im_end|>"] * 2 + ["<|im_start|>"]
    assert ChatML.stop_tokens == ("<|im_end|>",)


def test_load_style_from_class_path_in_this_module():
    style = load_style(f"{__name__}.Terse")
    assert type(style).__name__ == "Terse" and isinstance(style, PromptStyle)
    assert style.prefix == "Q: "
    style = load_style({"class_path": f"{__name__}.Terse", "init_args": {"prefix": "Question: "}})
    assert style.prefix == "Question: "
    assert "".join(style.render(CHAT[1:3])) == "Question: Who lived in the forest?\nThe fox lived in the forest.<|end|>"


def test_load_style_from_class_path_in_a_module_file(tmp_path, monkeypatch):
    (tmp_path / "my_styles_for_test.py").write_text(
        textwrap.dedent(
            """
            from lit_llm.text.templates import PromptStyle, Special

            class Shout(PromptStyle):
                stop_tokens = ("<|end|>",)

                def __init__(self, marker="!"):
                    self.marker = marker

                def render(self, messages, add_generation_prompt=False):
                    parts = []
                    for m in messages:
                        parts.append(m["content"].upper() + self.marker)
                        if m["role"] == "assistant":
                            parts.append(Special("<|end|>"))
                    return parts
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_styles_for_test", raising=False)
    style = load_style({"class_path": "my_styles_for_test.Shout", "init_args": {"marker": "?"}})
    assert style.marker == "?"
    assert style_to_dict(style) == {"class_path": "my_styles_for_test.Shout", "init_args": {"marker": "?"}}
    assert "".join(style.render(CHAT[1:3])) == "WHO LIVED IN THE FOREST??THE FOX LIVED IN THE FOREST.?<|end|>"
    monkeypatch.delitem(sys.modules, "my_styles_for_test", raising=False)


@pytest.mark.parametrize(
    "style", [Alpaca(), Chat(), Terse(), Terse(prefix="Question: ")], ids=["alpaca", "chat", "terse", "terse_prefix"]
)
def test_style_to_dict_round_trip(tok, style):
    saved = style_to_dict(style)
    cls = type(style)
    assert saved["class_path"] == f"{cls.__module__}.{cls.__qualname__}"
    assert saved["init_args"] == ({"prefix": style.prefix} if isinstance(style, Terse) else {})
    rebuilt = load_style(saved)
    assert type(rebuilt) is cls
    assert rebuilt is not style
    assert rebuilt.render(CHAT) == style.render(CHAT)
    assert prompt_ids(tok, rebuilt, CHAT[:2]) == prompt_ids(tok, style, CHAT[:2])
    assert stop_ids(tok, rebuilt) == stop_ids(tok, style)


def test_style_to_dict_values():
    assert style_to_dict(Alpaca()) == {"class_path": "lit_llm.text.templates.Alpaca", "init_args": {}}
    assert style_to_dict(Chat()) == {"class_path": "lit_llm.text.templates.Chat", "init_args": {}}
    assert style_to_dict(Terse("A: ")) == {"class_path": f"{__name__}.Terse", "init_args": {"prefix": "A: "}}


def test_load_style_unknown_name_lists_the_built_ins():
    with pytest.raises(ConfigError, match="unknown prompt_style 'vicuna'") as info:
        load_style("vicuna")
    assert "alpaca" in str(info.value) and "chat" in str(info.value)


@pytest.mark.parametrize(
    "spec, match",
    [
        (f"{__name__}.NotAStyle", "not a subclass of lit_llm.text.templates.PromptStyle"),
        ("collections.OrderedDict", "not a subclass"),
        ("os.path.join", "not a subclass"),  # a function, not a class
        ("lit_llm.text.templates.Special", "not a subclass"),
        ("no_such_module_xyz.Style", "cannot import 'no_such_module_xyz.Style'"),
        ("lit_llm.text.templates.NoSuchStyle", "cannot import"),
        ({"init_args": {}}, "class_path"),
        (42, "got int"),
    ],
)
def test_load_style_bad_specs(spec, match):
    with pytest.raises(ConfigError, match=match):
        load_style(spec)


@pytest.mark.parametrize(
    "spec",
    [
        {"class_path": "alpaca", "init_args": {"temperature": 1}},
        {"class_path": f"{__name__}.Terse", "init_args": {"suffix": "x"}},
        {"class_path": f"{__name__}.Terse", "init_args": {"prefix": "a", "suffix": "x"}},
    ],
)
def test_load_style_bad_init_args(spec):
    with pytest.raises(ConfigError, match="bad init_args") as info:
        load_style(spec)
    assert isinstance(info.value.__cause__, TypeError)


def test_the_text_layer_labels_ignored_positions_as_the_losses_do():
    from lit_llm.text import templates

    assert templates.IGNORE_INDEX == IGNORE_INDEX == -100

