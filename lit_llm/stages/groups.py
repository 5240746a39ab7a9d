"""`Groups`: a batch of scored answers held as whole groups (the G answers to one prompt), and `GroupBuffer`, DAPO's
dynamic sampling — groups whose rewards are all equal are dropped and counted, the rest wait until a batch is full.
Used by the critic-free RL stage (`lit_llm.stages.grpo`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from lit_llm.rlvr import informative_groups


@dataclass
class Groups:
    """Answers in groups of `size` consecutive rows, with what scoring them found. Lists and CPU tensors, so groups
    from several generation batches (of different prompt lengths) can be joined before they are laid out."""

    size: int
    prompts: list[list[int]] = field(default_factory=list)
    responses: list[list[int]] = field(default_factory=list)
    ended: list[bool] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    messages: list[Any] = field(default_factory=list)
    tasks: list[Any] = field(default_factory=list)
    references: list[Any] = field(default_factory=list)
    scores: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # the weighted reward of each answer
    valid: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))  # its reward counts
    per_source: dict[str, torch.Tensor] = field(default_factory=dict)  # each reward's scores, by name
    engine_logps: list[list[float]] = field(default_factory=list)  # the vLLM engine's, of each answer's tokens

    @property
    def count(self) -> int:
        """Groups held."""
        return len(self.prompts) // self.size

    def take(self, groups: torch.Tensor | list[int]) -> Groups:
        """The groups at these indices, in that order."""
        index = [int(g) * self.size + j for g in groups for j in range(self.size)]
        picked = Groups(self.size)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "size":
                continue
            if isinstance(value, torch.Tensor):
                value = value[index] if index else value[:0]
            elif isinstance(value, dict):
                value = {k: v[index] if index else v[:0] for k, v in value.items()}
            else:
                value = [value[i] for i in index]
            setattr(picked, f.name, value)
        return picked

    def __add__(self, other: Groups) -> Groups:
        if not self.prompts:
            return other
        if not other.prompts:
            return self
        joined = Groups(self.size)
        for f in fields(self):
            if f.name == "size":
                continue
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, torch.Tensor):
                value = torch.cat([a, b])
            elif isinstance(a, dict):
                value = {k: torch.cat([a[k], b[k]]) for k in a}
            else:
                value = a + b
            setattr(joined, f.name, value)
        return joined

    def informative(self) -> torch.Tensor:
        """(groups,) True where the group's valid rewards are not all equal."""
        return informative_groups(self.scores, self.size, self.valid)

    def state(self) -> dict[str, Any]:
        """Plain lists and tensors, for a checkpoint (loads with weights_only=True)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Groups:
        return cls(**state)


class GroupBuffer:
    """DAPO's dynamic sampling across training steps: `add` keeps a generation batch's informative groups (counting
    the others in `dropped`); `ready` says whether `target` groups are held, or `max_batches` generation batches were
    spent trying (without `drop`, every group is kept: one batch is one step); `pop` hands out up to `target` groups (the rest wait for the next step). When no informative group
    was found within the limit, the last batch is trained on as it is (its advantages are zero) so the run advances."""

    def __init__(self, target: int, max_batches: int, drop: bool = True) -> None:
        self.target, self.max_batches, self.drop = target, max_batches, drop
        self.held: Groups | None = None
        self.last: Groups | None = None
        self.batches = 0  # generation batches since the last pop
        self.dropped = 0  # groups dropped in all
        self.generated = 0  # groups generated in all

    def add(self, groups: Groups) -> None:
        keep = groups.informative() if self.drop else torch.ones(groups.count, dtype=torch.bool)
        self.batches += 1
        self.generated += groups.count
        self.dropped += int((~keep).sum())
        kept = groups.take(keep.nonzero().flatten())
        self.held = kept if self.held is None else self.held + kept
        self.last = groups

    @property
    def held_count(self) -> int:
        return self.held.count if self.held is not None else 0

    def limit_reached(self) -> bool:
        return self.batches >= self.max_batches

    def pop(self) -> Groups:
        held = self.held if self.held is not None and self.held.count else self.last
        n = min(held.count, self.target)
        out, rest = held.take(list(range(n))), held.take(list(range(n, held.count)))
        self.held = rest if rest.count else None
        self.batches = 0
        return out

    def state(self) -> dict[str, Any]:
        return {
            "held": self.held.state() if self.held is not None else None,
            "batches": self.batches, "dropped": self.dropped, "generated": self.generated,
        }  # fmt: skip

    def load(self, state: dict[str, Any]) -> None:
        self.held = Groups.from_state(state["held"]) if state.get("held") else None
        self.batches, self.dropped, self.generated = state["batches"], state["dropped"], state["generated"]
