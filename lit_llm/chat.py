"""`lit-llm chat`: a multi-turn conversation with a checkpoint in the terminal, in the checkpoint's prompt style.

Nothing heavy is imported at module level: the `lit-llm` command imports this file for every command."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

HELP = "commands: /reset forgets the conversation, /exit (or end of input) quits"


def fit_history(tokenizer: Any, style: Any, messages: list[dict[str, str]], room: int) -> tuple[list, int]:
    """The conversation with its oldest exchanges dropped until its prompt fits `room` tokens (a system message
    and the newest user message always stay), and the number of messages dropped."""
    from lit_llm.text.templates import prompt_ids

    messages = list(messages)
    dropped = 0
    first = 1 if messages and messages[0]["role"] == "system" else 0
    while len(prompt_ids(tokenizer, style, messages)) > room and len(messages) - first > 1:
        del messages[first]
        dropped += 1
    return messages, dropped


def converse(
    model: Any, tokenizer: Any, style: Any, lines: Iterable[str], write: Callable[[str], None], *,
    system: str | None = None, max_new_tokens: int = 128, **sampling: Any,
) -> list[dict[str, str]]:  # fmt: skip
    """Answer each user line in turn, keeping the conversation; returns it. `sampling` as in `generate_responses`."""
    from lit_llm.generation import generate_responses

    base = [{"role": "system", "content": system}] if system else []
    messages = list(base)
    room = model.config.block_size - max_new_tokens
    for line in lines:
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            messages = list(base)
            write("(conversation cleared)")
            continue
        messages.append({"role": "user", "content": text})
        messages, dropped = fit_history(tokenizer, style, messages, room)
        if dropped:
            write(f"(dropped the {dropped} oldest message(s) to fit the context of {model.config.block_size} tokens)")
        (reply,) = generate_responses(model, tokenizer, style, [messages], max_new_tokens=max_new_tokens, **sampling)
        reply = reply.strip()
        write(f"assistant> {reply}")
        messages.append({"role": "assistant", "content": reply})
    return messages


def _stdin_lines(prompt: str) -> Iterable[str]:
    while True:
        try:
            yield input(prompt)
        except EOFError:
            return


DEFAULT_MAX_NEW_TOKENS = 128


def chat(
    checkpoint: str,
    system: str | None = None,
    max_new_tokens: int | None = None,
    temperature: float = 0.7,
    top_k: int | None = 50,
    top_p: float = 1.0,
    seed: int | None = None,
    device: str = "auto",
) -> None:
    """Chat with a checkpoint in the terminal: each line you type is a user message, answered in the checkpoint's
    prompt style with the whole conversation so far (the oldest turns are dropped when it outgrows the context).

    Args:
        checkpoint: a lit_llm checkpoint (.ckpt file or run folder) of SFT or a later stage.
        system: an optional system message opening the conversation.
        max_new_tokens: longest reply (None: 128, or half the model's block_size when that is smaller, so the
            conversation keeps room in the context).
        temperature: sampling temperature; 0 answers greedily.
        top_k: sample from the k most likely tokens only (None: all).
        top_p: nucleus sampling mass.
        seed: seed of the sampling (None: a new draw each time).
        device: "auto", "cpu" or "cuda".
    """
    import torch

    from lit_llm.checkpoint import load_bundle
    from lit_llm.errors import CheckpointError, ConfigError
    from lit_llm.generation import check_sampling

    # Before loading the model, so a bad option fails at once (max_new_tokens is checked against the block below).
    check_sampling(1 if max_new_tokens is None else max_new_tokens, temperature, top_k, top_p)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    bundle = load_bundle(checkpoint)
    model, meta = bundle.model, bundle.meta
    if bundle.prompt_style is None:
        raise CheckpointError(
            f"{checkpoint} is a {meta.get('stage')!r} checkpoint without a prompt style, so it has not learned to "
            "answer; chat with an SFT (or later) checkpoint, or continue text with `lit-llm generate`"
        )
    tokenizer, style = bundle.tokenizer, bundle.prompt_style
    block = model.config.block_size
    if max_new_tokens is None:
        max_new_tokens = max(1, min(DEFAULT_MAX_NEW_TOKENS, block // 2))
    elif max_new_tokens >= block:
        raise ConfigError(f"--max_new_tokens {max_new_tokens} leaves no room for the conversation in the model's "
                          f"block_size {block}; choose fewer (by default, the smaller of 128 and half the block)")
    print(f"chatting with {checkpoint} ({meta.get('stage')}, {type(style).__name__} style). {HELP}")
    converse(
        model.to(device), tokenizer, style, _stdin_lines("you> "), print, system=system, max_new_tokens=max_new_tokens,
        temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
    )  # fmt: skip
