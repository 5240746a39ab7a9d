"""`Policy`: the network a stage trains, as a checkpoint (or a preset) describes it — model config, starting
weights, tokenizer, the prompt style it was trained with — and the one place that builds it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from lit_llm.checkpoint import checkpoint_meta, load_checkpoint, load_weights, meta_style, model_state
from lit_llm.data.connect import DataInfo
from lit_llm.errors import ConfigError
from lit_llm.lora import state_fingerprint
from lit_llm.model import Config
from lit_llm.text.templates import PromptStyle
from lit_llm.text.tokenizer import Tokenizer


@dataclass
class Policy:
    """What a stage knows of its network before building it.

    `stored_style` is the prompt style saved in `init_from` (the one SFT trained with), handed to the data module;
    `prompt_style` is the style the stage's data is rendered with, saved in the stage's checkpoints. `state` holds
    the starting weights until `release()`."""

    config: Config
    init_from: str | None = None
    tokenizer: Tokenizer | None = None
    stored_style: PromptStyle | None = None
    prompt_style: PromptStyle | None = None
    meta: dict[str, Any] | None = None
    state: dict[str, torch.Tensor] | None = None
    fingerprint: float | None = None  # with LoRA: a checksum of the init_from weights, stored in the checkpoint

    @classmethod
    def from_preset(cls, name: str, overrides: dict[str, Any] | None = None) -> Policy:
        return cls(Config.from_name(name, **(overrides or {})))

    @classmethod
    def from_checkpoint(
        cls, path: str, overrides: dict[str, Any] | None = None, stage: str = "", keep_fingerprint: bool = False
    ) -> Policy:
        """The policy stored in a lit_llm checkpoint; a reward-model checkpoint (no language-model head) is refused
        unless `stage` is the reward stage."""
        ckpt = load_checkpoint(path)
        meta = checkpoint_meta(ckpt, path)
        if meta.get("stage") == "reward" and stage != "reward":
            raise ConfigError(
                f"model.init_from: {path} is a reward-model checkpoint (a score head, no language-model "
                f"head), so the {stage} stage cannot start from it; use a pretraining or SFT checkpoint "
                "(a reward model is given to PPO as its reward source)"
            )
        state = model_state(ckpt, path)
        return cls(
            config=Config.from_dict(meta["model_config"], **(overrides or {})),
            init_from=path,
            tokenizer=Tokenizer(json_str=meta["tokenizer"]) if meta.get("tokenizer") else None,
            stored_style=meta_style(meta),
            meta=meta,
            state=state,
            fingerprint=state_fingerprint(state) if keep_fingerprint else None,
        )

    def with_vocab(self, vocab_size: int) -> Policy:
        return replace(self, config=self.config.replace(vocab_size=vocab_size))

    def adopt_data(self, info: DataInfo, sized_by_data: bool) -> None:
        """Take the data's tokenizer (an explicit data.tokenizer wins over the checkpoint's) and prompt style; size
        the vocabulary from the data when `sized_by_data`, else check the data's fits."""
        if info.tokenizer is not None:
            self.tokenizer = info.tokenizer
        if info.prompt_style is not None:
            self.prompt_style = info.prompt_style
        if info.vocab_size is None:
            return
        if sized_by_data:
            self.config = self.config.replace(vocab_size=info.vocab_size)
        elif info.vocab_size > self.config.vocab_size:
            raise ConfigError(
                f"the data's vocabulary ({info.vocab_size} tokens) is larger than the model's vocab_size "
                f"({self.config.vocab_size})"
            )

    def build(
        self,
        network: Callable[..., nn.Module],
        wrap: Any = None,
        load: Callable[[nn.Module, dict[str, torch.Tensor], str], None] | None = None,
    ) -> nn.Module:
        """`network(config, wrap=wrap)` with the starting weights (`load(model, state, source)`, by default an exact
        load of every parameter). Under FSDP the root is wrapped before the weights go in: a full state dict loads
        through the root (a Block loaded first would take itself for a root and break the first forward pass)."""
        model = network(self.config, wrap=wrap)
        if wrap is not None:
            model = wrap(model)
        if self.state is not None:
            (load or _load_exact)(model, self.state, self.init_from)
        return model

    def release(self) -> None:
        """Drop the starting weights once every network that needs them is built."""
        self.state = None


def _load_exact(model: nn.Module, state: dict[str, torch.Tensor], source: str | None) -> None:
    load_weights(model, state, source=source)
