"""`lit-llm chat`: the conversation carries over turns, /reset clears it, old turns make room, bad checkpoints fail."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch

import lit_llm.generation
from lit_llm.chat import converse, fit_history
from lit_llm.cli.commands import main
from lit_llm.text.templates import load_style, prompt_ids, style_to_dict
from lit_llm.model import GPT, Config
from tests.stages.conftest import SMALL, base_checkpoint  # noqa: F401  (the session fixture)


class Recording:
    """Stands in for `generate_responses`: records each conversation asked and answers "reply N"."""

    def __init__(self) -> None:
        self.asked: list[list[dict]] = []

    def __call__(self, model, tokenizer, style, conversations, **kwargs):
        self.asked.append([dict(m) for m in conversations[0]])
        return [f" reply {len(self.asked)} "]


@pytest.fixture
def chat_checkpoint(base_checkpoint: Path, tmp_path: Path) -> Path:  # noqa: F811
    ckpt = torch.load(base_checkpoint, weights_only=True)
    ckpt["lit_llm"] = {**ckpt["lit_llm"], "stage": "sft", "prompt_style": style_to_dict(load_style("chat"))}
    path = tmp_path / "sft.ckpt"
    torch.save(ckpt, path)
    return path


def test_turns_carry_the_conversation_and_reset_clears_it(monkeypatch, base_checkpoint):  # noqa: F811
    recording = Recording()
    monkeypatch.setattr(lit_llm.generation, "generate_responses", recording)
    from lit_llm.checkpoint import load_tokenizer

    model = GPT(Config.from_name("tiny", **SMALL))
    out: list[str] = []
    lines = ["hello", "", "and now?", "/reset", "again", "/exit", "never read"]
    tokenizer, style = load_tokenizer(base_checkpoint), load_style("chat")
    final = converse(model, tokenizer, style, lines, out.append, system="be brief", max_new_tokens=8)
    user = lambda text: {"role": "user", "content": text}  # noqa: E731
    system = {"role": "system", "content": "be brief"}
    assert recording.asked == [
        [system, user("hello")],
        [system, user("hello"), {"role": "assistant", "content": "reply 1"}, user("and now?")],
        [system, user("again")],
    ]
    assert out == ["assistant> reply 1", "assistant> reply 2", "(conversation cleared)", "assistant> reply 3"]
    assert final == [system, user("again"), {"role": "assistant", "content": "reply 3"}]


def test_oldest_messages_are_dropped_to_fit_the_context(base_checkpoint):  # noqa: F811
    from lit_llm.checkpoint import load_tokenizer

    tokenizer, style = load_tokenizer(base_checkpoint), load_style("chat")
    messages = [{"role": "system", "content": "s"}]
    for i in range(6):
        messages += [{"role": "user", "content": f"question {i} " * 3}, {"role": "assistant", "content": f"answer {i}"}]
    messages.append({"role": "user", "content": "last question"})
    full = len(prompt_ids(tokenizer, style, messages))
    kept, dropped = fit_history(tokenizer, style, messages, room=full // 2)
    assert dropped > 0 and kept[0] == messages[0] and kept[-1] == messages[-1]
    assert kept[1:] == messages[1 + dropped :]
    assert len(prompt_ids(tokenizer, style, kept)) <= full // 2
    assert fit_history(tokenizer, style, messages, room=full) == (messages, 0)


def test_chat_command_answers_each_line(monkeypatch, capsys, chat_checkpoint):
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is 2 + 3?\nand 4 + 4?\n"))
    main(["chat", "--checkpoint", str(chat_checkpoint), "--max_new_tokens", "4", "--temperature", "0"])
    out = capsys.readouterr().out
    assert out.startswith(f"chatting with {chat_checkpoint} (sft, Chat style).")
    assert out.count("assistant> ") == 2


def test_chat_refuses_a_checkpoint_without_a_prompt_style(capsys, base_checkpoint):  # noqa: F811
    with pytest.raises(SystemExit) as exc:
        main(["chat", "--checkpoint", str(base_checkpoint)])
    assert exc.value.code == 2
    assert "without a prompt style" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["chat", "--checkpoint", "no/such/run"])
    assert "checkpoint not found: no/such/run" in capsys.readouterr().err
