"""Reading checkpoints safely (`weights_only=True`: no pickled code runs) and rebuilding models from them.

Every stage stores a `"lit_llm"` entry beside Lightning's state: the model config, the tokenizer
JSON and the stage name, so a checkpoint file alone is enough to generate from or to chain into the
next stage.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lit_llm.errors import CheckpointError
from lit_llm.model import GPT, Config

if TYPE_CHECKING:
    from lit_llm.text.templates import PromptStyle
    from lit_llm.text.tokenizer import Tokenizer

META_KEY = "lit_llm"


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A .ckpt file, or a run/checkpoint folder holding `last.ckpt` (directly or under checkpoints/)."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "last.ckpt", path / "checkpoints" / "last.ckpt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"no checkpoint in folder {path} (looked for last.ckpt and checkpoints/last.ckpt)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict, loaded with `weights_only=True`; one clear error if it is missing or corrupt."""
    path = resolve_checkpoint_path(path)
    verify_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"could not read checkpoint {path}: {first_line}") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict' entry)")
    return ckpt


def verify_checkpoint(path: Path) -> None:
    """Check every record of a checkpoint file against the CRC-32 that `torch.save` stored for it, so a truncated
    file or a flipped byte is named instead of loading wrong weights. A failure lists the checkpoints in the same
    folder that are intact."""
    problem = None
    if not zipfile.is_zipfile(path):
        problem = "not a PyTorch checkpoint (truncated or corrupt file)"
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                problem = f"the record {bad!r} fails its checksum (the file is corrupt)"
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            problem = f"corrupt file ({exc})"
    if problem is None:
        return
    intact = [p.name for p in sorted(path.parent.glob("*.ckpt")) if p != path and _is_intact(p)]
    hint = f"; intact checkpoints beside it: {', '.join(intact)}" if intact else ""
    raise CheckpointError(f"could not read checkpoint {path}: {problem}{hint}")


def _is_intact(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


def checkpoint_meta(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> dict[str, Any]:
    meta = ckpt.get(META_KEY)
    if not isinstance(meta, dict) or "model_config" not in meta:
        raise CheckpointError(f"{path} was not written by a lit_llm stage (no '{META_KEY}' metadata)")
    return meta


def meta_style(meta: dict[str, Any]) -> PromptStyle | None:
    """The prompt style stored in a checkpoint's metadata (None without one). A checkpoint written before the
    package was layered (0.2) names the style's old module, e.g. lit_llm.data.templates.QA: it is read from the
    module that holds it now."""
    from lit_llm import MOVED_MODULES
    from lit_llm.text.templates import load_style

    stored = meta.get("prompt_style")
    if not stored:
        return None
    if isinstance(stored, dict) and isinstance(stored.get("class_path"), str):
        module, _, name = stored["class_path"].rpartition(".")
        stored = {**stored, "class_path": f"{MOVED_MODULES.get(module, module)}.{name}"}
    return load_style(stored)


def submodule_state(state_dict: dict[str, torch.Tensor], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The entries under `prefix`, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[GPT, dict[str, Any]]:
    """The GPT stored in a lit_llm checkpoint, in eval mode, and the checkpoint's metadata.

    A LoRA checkpoint (adapters only) is rebuilt on its base checkpoint and returned merged: a plain GPT."""
    ckpt = load_checkpoint(path, map_location=map_location)
    meta = checkpoint_meta(ckpt, path)
    if meta.get("stage") == "reward":
        raise CheckpointError(f"{path} is a reward-model checkpoint (a scalar score head, no language-model head): "
                              "load it with lit_llm.rewards.load_reward_model, or pass it as a reward model")
    model = GPT(Config.from_dict(meta["model_config"]))
    load_weights(model, model_state(ckpt, path, map_location=map_location), source=path)
    return model.eval(), meta


def model_state(
    ckpt: dict[str, Any], path: str | Path, map_location: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """The full weights of a checkpoint's model (its `model.` entries, without the prefix). For a LoRA checkpoint,
    which stores only the adapters and other trained tensors, the base checkpoint named in its metadata is loaded
    (itself possibly LoRA), the adapters are applied and merged, and the merged weights are returned."""
    meta = checkpoint_meta(ckpt, path)
    state = submodule_state(ckpt["state_dict"])
    lora = meta.get("lora")
    if not lora:
        return state
    from lit_llm.lora import apply_lora, merge_lora, state_fingerprint
    from lit_llm.model import RewardModel

    base_path = meta.get("lora_base")
    if not base_path:
        raise CheckpointError(f"{path} is a LoRA checkpoint without the path of its base checkpoint ('lora_base')")
    given = meta.get("lora_base_given")
    if given and not Path(base_path).exists() and Path(given).exists():
        base_path = given  # the runs folder moved: the path as written in the config, from the working directory
    try:
        base_ckpt = load_checkpoint(base_path, map_location=map_location)
    except CheckpointError as exc:
        raise CheckpointError(f"{path} holds LoRA adapters only; its base checkpoint is unreadable: {exc}") from None
    base_state = model_state(base_ckpt, base_path, map_location=map_location)
    expected = meta.get("lora_base_fingerprint")
    if expected is not None and not math.isclose(state_fingerprint(base_state), expected, rel_tol=1e-6):
        raise CheckpointError(
            f"{path} holds LoRA adapters trained on {base_path}, but that checkpoint's weights have changed since"
        )
    config = Config.from_dict(meta["model_config"])
    reward = meta.get("stage") == "reward"
    model = RewardModel(config) if reward else GPT(config)
    if reward:
        model.load_language_model(base_state, source=base_path)
    else:
        load_weights(model, base_state, source=base_path)
    apply_lora(model, lora, trainable=RewardModel.heads if reward else ())
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing_adapters = [k for k in missing if k.endswith((".lora_A", ".lora_B"))]
    if unexpected or missing_adapters:
        raise CheckpointError(
            f"{path}: LoRA weights do not match the model (missing: {missing_adapters[:5]}, "
            f"unexpected: {unexpected[:5]})"
        )
    merge_lora(model)
    return {k: v.detach() for k, v in model.state_dict().items()}


def load_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str | Path) -> None:
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the model (missing: {missing[:5]}, unexpected: {unexpected[:5]})"
        )


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer from a tokenizer.json, a folder holding one, or a lit_llm checkpoint (file or run folder)."""
    from lit_llm.text.tokenizer import Tokenizer

    path = Path(path)
    if path.suffix == ".json" or (path.is_dir() and (path / "tokenizer.json").is_file()):
        return Tokenizer(path)
    return meta_tokenizer(checkpoint_meta(load_checkpoint(path), path), path)


def meta_tokenizer(meta: dict[str, Any], path: str | Path) -> Tokenizer:
    """The tokenizer stored in a checkpoint's metadata; CheckpointError naming `path` when there is none."""
    from lit_llm.text.tokenizer import Tokenizer

    if not meta.get("tokenizer"):
        raise CheckpointError(f"{path} stores no tokenizer, so text cannot be encoded")
    return Tokenizer(json_str=meta["tokenizer"])


@dataclass
class Bundle:
    """Everything a lit_llm checkpoint holds for answering prompts: the model (a GPT in eval mode, LoRA merged),
    its tokenizer, the prompt style it was trained with (None for a pretraining checkpoint), and the metadata."""

    model: GPT
    tokenizer: Tokenizer
    prompt_style: PromptStyle | None
    meta: dict[str, Any]
    path: str

    @property
    def stage(self) -> str | None:
        return self.meta.get("stage")

    def style_or(self, fallback: str | dict[str, Any] | PromptStyle = "alpaca") -> PromptStyle:
        """The checkpoint's prompt style, else `fallback` (a checkpoint trained without one, straight from
        pretraining, is asked in the fallback style)."""
        from lit_llm.text.templates import load_style

        return self.prompt_style if self.prompt_style is not None else load_style(fallback)


def load_bundle(path: str | Path, map_location: str | torch.device = "cpu") -> Bundle:
    """The one call that loads a checkpoint for use: model, tokenizer, prompt style and metadata (`Bundle`). A
    reward-model checkpoint is refused (it has no language-model head; see `lit_llm.rewards.load_reward_model`),
    and so is one that stores no tokenizer."""
    model, meta = load_model(path, map_location=map_location)
    return Bundle(model, meta_tokenizer(meta, path), meta_style(meta), meta, str(path))
