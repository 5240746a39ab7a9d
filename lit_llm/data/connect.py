"""How a stage and its data module meet: one call, `datamodule.connect(DataSpec(...)) -> DataInfo`.

Lightning runs `datamodule.setup` before `LightningModule.setup`. A data module whose own arguments say everything
(an explicit tokenizer, and prompt style and prompt length where it has them) builds its examples in `setup`; one
that takes them from the model waits for its stage, which calls `connect` from its own `setup` with what the
model knows (the tokenizer and prompt style of its `init_from` checkpoint, its block_size). The data module never
asks the model; the model never looks inside the data module beyond what `connect` returns and its loaders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lit_llm.errors import ConfigError

if TYPE_CHECKING:
    from lit_llm.text.templates import PromptStyle
    from lit_llm.text.tokenizer import Tokenizer

# What a stage hands over for each data argument left unset, for the message of a data module never connected.
_SPEC_FIELDS = {
    "tokenizer": "tokenizer=...",
    "prompt_style": "prompt_style=...",
    "max_prompt_length": "block_size=..., max_new_tokens=...",
}


@dataclass(frozen=True)
class DataSpec:
    """What a stage hands its data module before any batch is built (lit_llm.data.connect).

    Args:
        tokenizer: the policy's tokenizer (from its init_from checkpoint); None: none known.
        prompt_style: the style stored in the policy's checkpoint (SFT's); None: none stored.
        block_size: the model's context length.
        max_new_tokens: room a stage reserves after a prompt for the response (PPO).
    """

    tokenizer: Tokenizer | None = None
    prompt_style: PromptStyle | None = None
    block_size: int | None = None
    max_new_tokens: int | None = None


@dataclass(frozen=True)
class DataInfo:
    """What a data module tells its stage back from `connect`.

    Args:
        tokenizer: the tokenizer the data is encoded with.
        vocab_size: its vocabulary size (None if no tokenizer).
        block_size: the longest sequence a batch holds (None: varies / set by the stage, e.g. PPO prompts).
        batch_shape: (rows, tokens) of a training batch when fixed (for FLOP counting), else None.
        prompt_style: the prompt style the data is rendered in (None: no style, e.g. pretraining token files); the
            stage generates in it and stores it in its checkpoints.
        batch_size: examples (pairs, prompts) per micro-batch on each device.
    """

    tokenizer: Tokenizer | None
    vocab_size: int | None
    block_size: int | None
    batch_shape: tuple[int, int] | None
    prompt_style: PromptStyle | None = None
    batch_size: int | None = None


def not_connected(missing: list[str]) -> ConfigError:
    """The error of a data module asked for its examples before it could build them: `missing` names the data
    arguments that were not set (e.g. ["tokenizer"]), which a stage's `connect` would have supplied."""
    names = " and ".join(f"data.{name}" for name in missing)
    verb = "is" if len(missing) == 1 else "are"
    spec = ", ".join(_SPEC_FIELDS[name] for name in missing)
    return ConfigError(
        f"{names} {verb} not set and the data module was not connected to a stage; give {names} "
        f"(or connect it: `dm.connect(DataSpec({spec}))`; `lit-llm fit` and the stages do this)"
    )


def load_tokenizer(path: str | None, spec: DataSpec | None) -> Tokenizer:
    """The tokenizer at `path` (a tokenizer.json, a folder holding one, or a lit_llm checkpoint) when given, else
    the stage's (`spec.tokenizer`); ConfigError naming data.tokenizer when there is neither."""
    if path is not None:
        from lit_llm.checkpoint import load_tokenizer as load

        return load(path)
    if spec is None:
        raise not_connected(["tokenizer"])
    if spec.tokenizer is None:
        raise ConfigError("data.tokenizer is not set and the model has no init_from checkpoint to take one from")
    return spec.tokenizer


def check_max_length(max_length: int, spec: DataSpec) -> None:
    """ConfigError when examples of `max_length` tokens do not fit the model's context (`spec.block_size`)."""
    if spec.block_size is not None and max_length > spec.block_size:
        raise ConfigError(f"data.max_length ({max_length}) exceeds the model's block_size ({spec.block_size})")
