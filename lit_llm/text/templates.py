"""Prompt styles: how a conversation becomes the tokens a model trains on, and the prompt it is asked at inference.

A conversation is a list of messages `{"role": "system" | "user" | "assistant", "content": str}`; an Alpaca
record is the conversation `[user (instruction, with its "input"), assistant (output)]`. A style renders a
conversation into parts: plain text, and `Special` markers for tokens that only the template may emit. Text is
encoded with special-token matching off, so content that spells "<|user|>" stays text.

`encode_conversation` computes the loss mask from tokens, as TRL does: for each assistant turn it tokenizes the
prompt up to that turn and the text including it, checks that the prompt tokens are a prefix, and trains on the
tokens that follow (the response and its stop token), nothing else.

A style is saved in checkpoints as `{"class_path", "init_args"}` (`style_to_dict`) and rebuilt with `load_style`,
so generation reuses the exact template and stop tokens the model was trained with.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any

from lit_llm.errors import ConfigError
from lit_llm.text.tokenizer import Tokenizer

# Label of positions that carry no loss: PyTorch's cross-entropy default, the value of lit_llm.losses.IGNORE_INDEX
# (written here too so that text formats import no torch; a test checks the two agree).
IGNORE_INDEX = -100

ROLES = ("system", "user", "assistant")


class Special(str):
    """A special token by its string, e.g. Special("</s>"); rendered as its id, never through the text encoder."""


class PromptStyle:
    """Base class of prompt styles. Subclasses implement `render` and set `stop_tokens`.

    A custom style is any subclass importable by its class path; its `__init__` arguments must be stored as
    attributes of the same name, so that it can be saved into a checkpoint and rebuilt from it.
    """

    #: Token strings that end a response at generation time.
    stop_tokens: tuple[str, ...] = ("</s>",)

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> list[str]:
        """Parts of the conversation: `str` text and `Special` tokens. With `add_generation_prompt`, end with
        whatever precedes an assistant response."""
        raise NotImplementedError

    def init_args(self) -> dict[str, Any]:
        params = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in params if name != "self" and hasattr(self, name)}


class Alpaca(PromptStyle):
    """The Alpaca template, without a preamble: `### Instruction:\\n...\\n\\n### Input:\\n...\\n\\n### Response:\\n...`
    (the Input section only when the record has one), the response followed by EOS. A system message, if any,
    is written first as a paragraph of its own."""

    stop_tokens = ("</s>",)

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> list[str]:
        return _render_turns(messages, system="{}\n\n", user="### Instruction:\n{}\n\n",
                             input="### Input:\n{}\n\n", respond="### Response:\n")


class Chat(PromptStyle):
    """A chat template on the tokenizer's role tokens: `<|user|>\\n{content}<|end|><|assistant|>\\n{content}<|end|>`.

    Each turn is its role token, a newline, the content and `<|end|>`; an assistant turn's content and its
    `<|end|>` are what the model learns to write, and `<|end|>` stops generation.
    """

    stop_tokens = ("<|end|>",)

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> list[str]:
        parts: list[str] = []
        for message in messages:
            content = message["content"]
            if message.get("input"):  # an Alpaca record's input follows its instruction
                content = f"{content}\n\n{message['input']}"
            parts += [Special(f"<|{message['role']}|>"), "\n" + content, Special("<|end|>")]
        if add_generation_prompt:
            parts += [Special("<|assistant|>"), "\n"]
        return parts


class ChatML(PromptStyle):
    """ChatML, the template of SmolLM2-Instruct and Qwen2 chat models: `<|im_start|>{role}\n{content}<|im_end|>\n`
    per turn, `<|im_start|>assistant\n` before a response; `<|im_end|>` stops generation. Use it with a tokenizer
    that holds those special tokens (an imported instruct model's)."""

    stop_tokens = ("<|im_end|>",)

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> list[str]:
        parts: list[str] = []
        for message in messages:
            content = message["content"]
            if message.get("input"):
                content = f"{content}\n\n{message['input']}"
            parts += [Special("<|im_start|>"), f"{message['role']}\n{content}", Special("<|im_end|>"), "\n"]
        if add_generation_prompt:
            parts += [Special("<|im_start|>"), "assistant\n"]
        return parts


class QA(PromptStyle):
    """A compact question-and-answer template for small models: `Q: {instruction}\nA: {response}</s>`.

    The response follows "A:" after a space, so its first word is encoded as it is in running text (" honey", one
    token of a byte-level BPE), not as the start of a line ("\nhoney", often split into pieces): a small model
    answers with the tokens it met in pretraining. A system message, if any, is a line of its own first; turns of a
    longer conversation follow one another on new lines."""

    stop_tokens = ("</s>",)

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> list[str]:
        return _render_turns(messages, system="{}\n", user="Q: {}", input="\n{}", respond="\nA:", answer=" {}",
                             between="\n")


def _render_turns(messages: list[dict[str, Any]], system: str, user: str, input: str, respond: str,
                  answer: str = "{}", between: str = "") -> list[str]:
    """Parts of an instruction template: each message's content in its role's format (a user message's Alpaca
    `input`, if any, in `input`, then `respond`), each answer followed by EOS, and `between` after an answer that
    another message follows."""
    parts: list[str] = []
    for message in messages:
        role, content = message["role"], message["content"]
        lead = between if parts and isinstance(parts[-1], Special) else ""
        if role == "system":
            parts.append(lead + system.format(content))
        elif role == "user":
            extra = input.format(message["input"]) if message.get("input") else ""
            parts.append(lead + user.format(content) + extra + respond)
        else:
            parts += [lead + answer.format(content), Special("</s>")]
    return parts


STYLES: dict[str, type[PromptStyle]] = {"alpaca": Alpaca, "chat": Chat, "chatml": ChatML, "qa": QA}


def load_style(spec: str | dict[str, Any] | PromptStyle) -> PromptStyle:
    """A style from a name in `STYLES`, a class path ("my_pkg.styles.Terse"), `{"class_path", "init_args"}`, or
    an instance (returned as is)."""
    if isinstance(spec, PromptStyle):
        return spec
    init_args: dict[str, Any] = {}
    if isinstance(spec, dict):
        if "class_path" not in spec:
            raise ConfigError(f"prompt_style: expected a name or {{class_path, init_args}}, got keys {sorted(spec)}")
        spec, init_args = spec["class_path"], dict(spec.get("init_args") or {})
    if not isinstance(spec, str):
        raise ConfigError(f"prompt_style: expected a name or a class path, got {type(spec).__name__}")
    if spec in STYLES:
        cls: Any = STYLES[spec]
    elif "." in spec:
        module_name, _, class_name = spec.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"prompt_style: cannot import {spec!r} ({exc})") from exc
    else:
        raise ConfigError(f"unknown prompt_style {spec!r}; built-in styles: {', '.join(STYLES)} (or a class path)")
    if not (isinstance(cls, type) and issubclass(cls, PromptStyle)):
        raise ConfigError(f"prompt_style: {spec!r} is not a subclass of lit_llm.text.templates.PromptStyle")
    try:
        return cls(**init_args)
    except TypeError as exc:
        raise ConfigError(f"prompt_style {spec!r}: bad init_args {init_args}: {exc}") from exc


def style_to_dict(style: PromptStyle) -> dict[str, Any]:
    cls = type(style)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": style.init_args()}


def encode_parts(tokenizer: Tokenizer, parts: list[str]) -> list[int]:
    """Token ids of rendered parts: adjacent text is joined and encoded as one string, special tokens by id."""
    ids: list[int] = []
    text = ""
    for part in parts:
        if isinstance(part, Special):
            if text:
                ids += tokenizer.encode(text, allow_special=False)
                text = ""
            ids.append(tokenizer.token_id(part))
        else:
            text += part
    if text:
        ids += tokenizer.encode(text, allow_special=False)
    return ids


def prompt_ids(tokenizer: Tokenizer, style: PromptStyle, messages: list[dict[str, Any]]) -> list[int]:
    """Tokens of a conversation followed by the generation prompt: what the model sees before it answers."""
    return encode_parts(tokenizer, style.render(messages, add_generation_prompt=True))


def stop_ids(tokenizer: Tokenizer, style: PromptStyle) -> list[int]:
    return [tokenizer.token_id(token) for token in style.stop_tokens]


@dataclass
class Encoded:
    """One training example: `input_ids` and `labels` of the same length, labels IGNORE_INDEX off the responses."""

    input_ids: list[int]
    labels: list[int]

    @property
    def prompt_length(self) -> int:
        """Tokens before the first trained token."""
        return next((i for i, label in enumerate(self.labels) if label != IGNORE_INDEX), len(self.labels))


class BoundaryError(ValueError):
    """The prompt's tokens are not a prefix of the full text's tokens, so no exact response boundary exists."""


def encode_conversation(tokenizer: Tokenizer, style: PromptStyle, messages: list[dict[str, Any]]) -> Encoded:
    """Tokens of a whole conversation with labels on every assistant turn (its content and stop token) only.

    Raises `BoundaryError` when merging across a prompt/response boundary changes the prompt's tokens (a
    template whose prompt ends in a space, say): such an example has no exact boundary and is not trained on.
    """
    ids: list[int] = []
    labels: list[int] = []
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = prompt_ids(tokenizer, style, messages[:turn])
        full = encode_parts(tokenizer, style.render(messages[: turn + 1]))
        if full[: len(prompt)] != prompt or prompt[: len(ids)] != ids:
            raise BoundaryError(f"the tokens of the prompt before turn {turn} are not a prefix of the full text's")
        labels += [IGNORE_INDEX] * (len(prompt) - len(ids)) + full[len(prompt) :]
        ids = full
    return Encoded(ids, labels)
