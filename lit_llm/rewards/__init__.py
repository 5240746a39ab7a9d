"""Reward sources for RL: a trained reward model, or a Python function of (prompt, response) such as the built-in
task verifiers (`lit_llm.tasks.verify`) or `lit_llm.rewards.math_answers.math_reward` (which also takes the record's
`reference` answer); `RewardSet` weighs several of them.

A source turns a batch of rollouts into one raw value per response. `check_scores` turns raw values into scores:
a function that raised, or a value that is not a number (NaN included), skips that rollout; a value beyond
`+-clip` (infinities included) is clipped. Both are counted in `RewardCounts`, and the first of each kind is
reported with the prompt it came from.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn

from lit_llm.errors import CheckpointError, ConfigError


@dataclass
class RewardCounts:
    """Responses scored, and of them the ones skipped (`raised`, `not_a_number`) or `clipped`; `first` keeps the
    first occurrence of each."""

    responses: int = 0
    raised: int = 0
    not_a_number: int = 0
    clipped: int = 0
    first: dict[str, str] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return self.raised + self.not_a_number

    def state(self) -> list[int]:
        """The counts, for a checkpoint."""
        return [self.responses, self.raised, self.not_a_number, self.clipped]

    def load(self, state: list[int]) -> None:
        self.responses, self.raised, self.not_a_number, self.clipped = (int(n) for n in state)

    def note(self, kind: str, message: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if kind not in self.first:
            self.first[kind] = message
            action = "clipped" if kind == "clipped" else "skipped"
            rank_zero_warn(f"{message}; the rollout is {action} (this is counted, and only the first is reported)")


def import_function(spec: str, option: str = "model.reward_function") -> Callable[..., Any]:
    """The callable at "package.module:name" or "package.module.name"; ConfigError naming `option` and what is
    missing."""
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"{option} {spec!r} must be 'package.module:function' or 'package.module.function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{option} {spec!r}: cannot import {module_name!r}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"{option} {spec!r}: module {module_name!r} has no function {attr!r}")
    return fn


@dataclass
class Rollouts:
    """What a reward source may read about a batch of responses: the prompt conversations, the last user message
    of each (`prompts`), the decoded responses, and the tokens of both (responses with their stop token)."""

    conversations: list[list[dict[str, Any]]]
    responses: list[str]
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    references: list[str | None] | None = None  # each record's reference answer, where it has one

    @property
    def prompts(self) -> list[str]:
        return [next((m["content"] for m in reversed(c) if m["role"] == "user"), "") for c in self.conversations]


def takes_reference(fn: Callable[..., Any], option: str = "model.reward_function") -> bool:
    """Whether `fn` takes (prompt, response) and also a `reference` keyword; ConfigError naming `option` when it
    cannot be called as fn(prompt, response)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: trust it
        return False
    try:
        signature.bind("prompt", "response")
    except TypeError:
        name = getattr(fn, "__qualname__", repr(fn))
        raise ConfigError(
            f"{option}: {name}{signature} must be callable as f(prompt, response) -> float (optionally with a "
            "`reference` keyword for the record's reference answer)"
        ) from None
    params = signature.parameters
    return "reference" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class FunctionReward:
    """Calls `fn(prompt, response) -> float` for each response, `prompt` being the last user message; a function
    with a `reference` parameter also gets the record's reference answer (None where the record has none)."""

    def __init__(self, spec: str | Callable[..., Any], option: str = "model.reward_function") -> None:
        self.fn = import_function(spec, option) if isinstance(spec, str) else spec
        self.name = spec if isinstance(spec, str) else getattr(spec, "__name__", repr(spec))
        self.short_name = getattr(self.fn, "__name__", self.name)
        self.with_reference = takes_reference(self.fn, option)

    def __call__(self, rollouts: Rollouts) -> list[Any]:
        values: list[Any] = []
        references = rollouts.references or [None] * len(rollouts.responses)
        for prompt, response, reference in zip(rollouts.prompts, rollouts.responses, references):
            try:
                if self.with_reference:
                    values.append(self.fn(prompt, response, reference=reference))
                else:
                    values.append(self.fn(prompt, response))
            except Exception as exc:  # a user's function may raise anything; the rollout is skipped and counted
                values.append(exc)
        return values

    def to(self, device: torch.device | str) -> FunctionReward:
        return self


class ModelReward:
    """Scores with a trained RewardModule checkpoint. It must share the policy's tokenizer; when it also shares the
    prompt style, the policy's tokens are scored as they are, else the texts are re-rendered in its own style."""

    def __init__(self, path: str | Path, tokenizer: Any, style: Any) -> None:
        from lit_llm.text.templates import style_to_dict

        self.name = str(path)
        self.module = load_reward_model(path)
        theirs, ours = self.module.tokenizer, tokenizer
        if theirs.to_json() != ours.to_json():
            vocab_theirs, vocab_ours = theirs._tok.get_vocab(True), ours._tok.get_vocab(True)
            differing = sorted(set(vocab_theirs.items()) ^ set(vocab_ours.items()))[:3]
            raise CheckpointError(
                f"reward model {path} uses a different tokenizer than the policy ({theirs.vocab_size} vs "
                f"{ours.vocab_size} tokens; differing entries such as {differing}); train the reward model from "
                "the policy's SFT checkpoint"
            )
        mine = self.module.prompt_style
        self.same_style = mine is not None and style is not None and style_to_dict(mine) == style_to_dict(style)

    def __call__(self, rollouts: Rollouts) -> list[Any]:
        if self.same_style:
            rows = [p + r for p, r in zip(rollouts.prompt_ids, rollouts.response_ids)]
            return self.module.score_tokens(rows).tolist()
        return self.module.score(rollouts.conversations, rollouts.responses).tolist()

    def to(self, device: torch.device | str) -> ModelReward:
        self.module.to(device)
        return self


RewardSource = FunctionReward | ModelReward


def check_reward_spec(reward_model: str | None, reward_function: str | Callable[..., Any] | None) -> None:
    """ConfigError unless exactly one source is named, or when a function's import path does not resolve."""
    if (reward_model is None) == (reward_function is None):
        raise ConfigError(
            "set exactly one of model.reward_model (a reward-model checkpoint) and model.reward_function "
            "(e.g. lit_llm.tasks.verify)"
        )
    if isinstance(reward_function, str):
        import_function(reward_function)


def load_reward_source(
    reward_model: str | None, reward_function: str | Callable[..., Any] | None, tokenizer: Any = None,
    style: Any = None,
) -> RewardSource:
    """The source named by exactly one of `reward_model` (a RewardModule checkpoint) and `reward_function`."""
    check_reward_spec(reward_model, reward_function)
    if reward_function is not None:
        return FunctionReward(reward_function)
    return ModelReward(reward_model, tokenizer, style)


class RewardSet:
    """Several reward sources with weights (TRL's `reward_funcs` and `reward_weights`): functions first, then reward
    models, each named by option and index in errors (`model.reward_functions[0]`, `model.reward_models[1]`).

    `score` returns the weighted sum of the sources' clipped scores, whether each answer counts (an answer any
    source skips, by raising or returning NaN, is skipped), and each source's scores by name for
    `rewards/<name>/mean`. Each source has its own `RewardCounts`."""

    def __init__(
        self,
        functions: Sequence[str | Callable[..., Any]] = (),
        models: Sequence[str] = (),
        weights: Sequence[float] | None = None,
        tokenizer: Any = None,
        style: Any = None,
    ) -> None:
        self.sources: list[RewardSource] = [
            FunctionReward(f, f"model.reward_functions[{i}]") for i, f in enumerate(functions)
        ]
        for i, path in enumerate(models):
            try:
                self.sources.append(ModelReward(path, tokenizer, style))
            except (CheckpointError, ConfigError) as exc:
                raise ConfigError(f"model.reward_models[{i}]: {exc}") from None
        self.weights = check_reward_weights(len(functions), len(models), weights)
        self.names = unique_names([s.short_name if isinstance(s, FunctionReward) else Path(s.name).name or s.name
                                   for s in self.sources])  # fmt: skip
        self.counts = [RewardCounts() for _ in self.sources]

    def to(self, device: torch.device | str) -> RewardSet:
        for source in self.sources:
            source.to(device)
        return self

    def score(self, rollouts: Rollouts, clip: float) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        total = torch.zeros(len(rollouts.responses))
        valid = torch.ones(len(rollouts.responses), dtype=torch.bool)
        per_source = {}
        for source, weight, name, counts in zip(self.sources, self.weights, self.names, self.counts):
            scores, ok = check_scores(source(rollouts), rollouts, clip, counts, source.name)
            total += weight * scores
            valid &= ok
            per_source[name] = scores
        return torch.where(valid, total, torch.zeros_like(total)), valid, per_source


def check_reward_weights(functions: int, models: int, weights: Sequence[float] | None) -> list[float]:
    """The weights of `functions + models` sources (all 1 when None); ConfigError naming the option otherwise."""
    n = functions + models
    if n == 0:
        raise ConfigError("set model.reward_functions (e.g. [lit_llm.tasks.verify]) and/or model.reward_models "
                          "(reward-model checkpoints): the stage needs at least one reward")  # fmt: skip
    if weights is None:
        return [1.0] * n
    if len(weights) != n:
        raise ConfigError(f"model.reward_weights has {len(weights)} weights for {n} rewards ({functions} "
                          f"reward_functions, then {models} reward_models)")  # fmt: skip
    if not all(math.isfinite(w) for w in weights):
        raise ConfigError(f"model.reward_weights must be finite numbers, got {list(weights)}")
    return [float(w) for w in weights]


def unique_names(names: list[str]) -> list[str]:
    """`names` with a repeated name suffixed by its position (`verify`, `verify_1`)."""
    seen: dict[str, int] = {}
    out = []
    for i, name in enumerate(names):
        out.append(name if name not in seen else f"{name}_{i}")
        seen[name] = i
    return out


def check_scores(
    values: Sequence[Any], rollouts: Rollouts, clip: float, counts: RewardCounts, source: str = "reward"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, valid) as float and bool (N,) tensors: skipped rollouts score 0 and are not valid."""
    scores, valid = [], []
    prompts = rollouts.prompts
    for value, prompt in zip(values, prompts):
        counts.responses += 1
        where = f"{source} on prompt {prompt[:60]!r}"
        if isinstance(value, BaseException):
            counts.note("raised", f"{where} raised {type(value).__name__}: {value}")
            scores.append(0.0), valid.append(False)
            continue
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float: clipped below
            number = math.inf if value > 0 else -math.inf
        except (TypeError, ValueError):
            number = math.nan
        if math.isnan(number):
            counts.note("not_a_number", f"{where} returned {value!r}, not a number")
            scores.append(0.0), valid.append(False)
            continue
        if abs(number) > clip:
            counts.note("clipped", f"{where} returned {number}, beyond the clip of +-{clip}")
            number = math.copysign(clip, number)
        scores.append(number), valid.append(True)
    return torch.tensor(scores, dtype=torch.float32), torch.tensor(valid, dtype=torch.bool)


# ---- a trained reward model as a scorer ------------------------------------------------------------


class RewardScorer:
    """A reward model (`lit_llm.model.RewardModel`) with its tokenizer, prompt style and the normalization stored by
    the reward stage: `score` texts, `score_tokens` token rows. Used by PPO's reward source, `lit-llm compare`, and
    the reward stage itself."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, prompt_style: Any,
                 normalization: tuple[float, float] | None = None) -> None:  # fmt: skip
        self.model, self.tokenizer, self.prompt_style = model, tokenizer, prompt_style
        self.normalization = normalization

    @property
    def block_size(self) -> int:
        return self.model.config.block_size

    @torch.no_grad()
    def score_tokens(self, rows: list[list[int]], batch_size: int = 32, normalize: bool = True) -> torch.Tensor:
        """(N,) rewards of token sequences (prompt + response + stop token), read at each one's last token.

        Sequences longer than the block keep their last block_size tokens. With `normalize` and a stored
        normalization, rewards are (r - mean) / std of the validation rewards."""
        block = self.block_size
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out = []
        try:
            for start in range(0, len(rows), batch_size):
                chunk = [list(r)[-block:] for r in rows[start : start + batch_size]]
                if any(not r for r in chunk):
                    raise ValueError("cannot score an empty sequence")
                ids = torch.zeros((len(chunk), max(map(len, chunk))), dtype=torch.long, device=device)
                for i, r in enumerate(chunk):
                    ids[i, : len(r)] = torch.tensor(r, device=device)
                last = torch.tensor([len(r) - 1 for r in chunk], device=device)
                out.append(self.model(ids, last_index=last))
        finally:
            self.model.train(was_training)
        rewards = torch.cat(out) if out else torch.zeros(0, device=device)
        if normalize and self.normalization is not None:
            mean, std = self.normalization
            rewards = (rewards - mean) / std
        return rewards

    def score(
        self, prompts: list[str | list[dict[str, Any]]], responses: list[str], batch_size: int = 32,
        normalize: bool = True,
    ) -> torch.Tensor:  # fmt: skip
        """(N,) rewards of responses to prompts (user messages, or conversations), in the training prompt style."""
        from lit_llm.text.templates import encode_parts

        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if self.tokenizer is None or self.prompt_style is None:
            raise ValueError("score needs the model's tokenizer and prompt style (set when trained or loaded)")
        rows = []
        for prompt, response in zip(prompts, responses):
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            parts = self.prompt_style.render(messages + [{"role": "assistant", "content": response}])
            rows.append(encode_parts(self.tokenizer, parts))
        return self.score_tokens(rows, batch_size=batch_size, normalize=normalize)

    def to(self, device: torch.device | str) -> RewardScorer:
        self.model.to(device)
        return self

    def eval(self) -> RewardScorer:
        self.model.eval()
        return self


def load_reward_model(path: str | Path, map_location: str | torch.device = "cpu") -> RewardScorer:
    """A trained reward model from its lit_llm checkpoint, in eval mode, ready to `score` (no Trainer needed)."""
    from lit_llm.checkpoint import checkpoint_meta, load_checkpoint, meta_style, meta_tokenizer, model_state
    from lit_llm.model import Config, RewardModel

    ckpt = load_checkpoint(path, map_location=map_location)
    meta = checkpoint_meta(ckpt, path)
    if meta.get("stage") != "reward":
        raise CheckpointError(f"{path} is a {meta.get('stage')!r} checkpoint, not a reward model")
    model = RewardModel(Config.from_dict(meta["model_config"]))
    try:
        model.load_state_dict(model_state(ckpt, path, map_location=map_location))
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the reward model: {str(exc).splitlines()[0]}") from None
    stored = meta.get("reward_normalization")
    normalization = (float(stored["mean"]), float(stored["std"])) if stored else None
    return RewardScorer(model.eval(), meta_tokenizer(meta, path), meta_style(meta), normalization)
