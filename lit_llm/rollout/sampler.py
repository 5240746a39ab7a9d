"""`RolloutSampler`: a policy's answers to prompts — the one sampler that PPO's rollouts, validation answers,
`lit-llm evaluate`, `pairs` and `compare` share (the native KV-cache engine, `lit_llm.generation.generate`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lit_llm.generation import crop_prompts, cut_at_stop_strings, generate, prompt_room
from lit_llm.rollout.layout import layout as rollout_layout
from lit_llm.text.templates import prompt_ids, stop_ids


@dataclass
class RolloutSampler:
    """Samples responses with temperature (0: greedy), top-k and top-p; a response ends at a stop token (the prompt
    style's, else EOS), at one of `stop_strings` (matched on the decoded text, `sample` only), or after
    `max_new_tokens`. `pad_id` fills the (masked) padding of prompt rows of different lengths."""

    tokenizer: Any
    stop_tokens: list[int]
    max_new_tokens: int
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    stop_strings: list[str] | None = None
    pad_id: int = 0
    engine: Any = None  # None: lit_llm's own KV-cache sampler; a `lit_llm.rollout.engines.VLLMEngine` for vLLM

    @classmethod
    def for_style(cls, tokenizer: Any, style: Any, max_new_tokens: int, **options: Any) -> RolloutSampler:
        """A sampler that stops at `style`'s stop tokens (EOS without a style, or for one that has none)."""
        stops = stop_ids(tokenizer, style) if style is not None else []
        if not stops and tokenizer.eos_id is not None:
            stops = [tokenizer.eos_id]
        return cls(tokenizer, stops, max_new_tokens, **options)

    def prompts(self, model: nn.Module, conversations: list[list[dict]], style: Any, warn: bool = True) -> list:
        """Token rows of conversations rendered in `style` up to the assistant's turn, cropped from the left to leave
        room for `max_new_tokens` in the model's block (with one warning, unless `warn` is False)."""
        rows = [prompt_ids(self.tokenizer, style, messages) for messages in conversations]
        if warn:
            return crop_prompts(model, rows, self.max_new_tokens)
        room = prompt_room(model, self.max_new_tokens)
        return [row[-room:] for row in rows]

    def generate(
        self, model: nn.Module, prompts: list[list[int]], seed: int | None, greedy: bool = False,
        row_seeds: list[int] | None = None,
    ) -> list:
        """The response tokens of each prompt row (a stop token, when emitted, ends the row and is included); with
        `row_seeds`, each row is sampled from its own seed (independent of the batch around it)."""
        run = generate if self.engine is None else self.engine.generate
        return run(
            model, prompts, max_new_tokens=self.max_new_tokens, temperature=0.0 if greedy else self.temperature,
            top_k=self.top_k, top_p=self.top_p, stop_tokens=self.stop_tokens, seed=seed, pad_id=self.pad_id,
            row_seeds=None if greedy else row_seeds,
        )  # fmt: skip

    def answer(self, model: nn.Module, conversations: list[list[dict]], style: Any, seed: int | None) -> list[str]:
        """Decoded assistant replies to conversations in `style`."""
        return [self.tokenizer.decode(o) for o in self.generate(model, self.prompts(model, conversations, style), seed)]

    def sample(
        self, model: nn.Module, prompts: list[list[int]], seed: int, device: torch.device, greedy: bool = False
    ) -> tuple[dict[str, Any], list[list[int]]]:
        """Responses to `prompts` and their layout for one forward pass: prompts left-padded to P columns, responses
        right-padded after them (`ids`, `valid`, `P`), and `ended` (B,): whether each stopped before the limit."""
        responses, ended = self.responses(model, prompts, seed, greedy=greedy)
        layout = rollout_layout(prompts, responses, self.pad_id, device)
        layout["ended"] = torch.tensor(ended, device=device)
        return layout, responses

    def responses(
        self, model: nn.Module, prompts: list[list[int]], seed: int | None, greedy: bool = False,
        row_seeds: list[int] | None = None,
    ) -> tuple[list[list[int]], list[bool]]:
        """The response tokens of each prompt, cut at `stop_strings`, and whether each stopped (a stop token or
        string) before `max_new_tokens`."""
        responses = self.generate(model, prompts, seed, greedy=greedy, row_seeds=row_seeds)
        ended = [bool(r) and r[-1] in self.stop_tokens for r in responses]
        if self.stop_strings:
            cut = cut_at_stop_strings(self.tokenizer, responses, self.stop_strings)
            responses = [tokens for tokens, _ in cut]
            ended = [e or was_cut for e, (_, was_cut) in zip(ended, cut)]
        return responses, ended
