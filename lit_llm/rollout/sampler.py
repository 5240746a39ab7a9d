"""`RolloutSampler`: a policy's answers to a batch of prompt token rows, laid out for one forward pass. The one
sampler the RL stages share (the native KV-cache engine, `lit_llm.generation.generate`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lit_llm.generation import cut_at_stop_strings, generate
from lit_llm.rollout.layout import layout as rollout_layout


@dataclass
class RolloutSampler:
    """Samples responses with temperature, top-k and top-p; a response ends at a stop token (the prompt style's,
    else EOS), at one of `stop_strings` (matched on the decoded text), or after `max_new_tokens`."""

    tokenizer: Any
    stop_tokens: list[int]
    max_new_tokens: int
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    stop_strings: list[str] | None = None

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0

    def sample(
        self, model: nn.Module, prompts: list[list[int]], seed: int, device: torch.device, greedy: bool = False
    ) -> tuple[dict[str, Any], list[list[int]]]:
        """Responses to `prompts` and their layout: prompts left-padded to P columns, responses right-padded after
        them (`ids`, `valid`, `P`), and `ended` (B,): whether each response stopped before the length limit."""
        responses = generate(
            model, prompts, max_new_tokens=self.max_new_tokens, temperature=0.0 if greedy else self.temperature,
            top_k=self.top_k, top_p=self.top_p, stop_tokens=self.stop_tokens, seed=seed, pad_id=self.pad_id,
        )  # fmt: skip
        ended = [bool(r) and r[-1] in self.stop_tokens for r in responses]
        if self.stop_strings:
            cut = cut_at_stop_strings(self.tokenizer, responses, self.stop_strings)
            responses = [tokens for tokens, _ in cut]
            ended = [e or was_cut for e, (_, was_cut) in zip(ended, cut)]
        layout = rollout_layout(prompts, responses, self.pad_id, device)
        layout["ended"] = torch.tensor(ended, device=device)
        return layout, responses
