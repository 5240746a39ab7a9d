"""Hugging Face checkpoints in and out: `lit-llm import --from HF_DIR --to DIR` and
`lit-llm export --checkpoint PATH --to HF_DIR`.

Import reads one tensor at a time (safetensors `safe_open`, or a memory-mapped `pytorch_model.bin`), so peak memory
stays near one copy of the weights: the converted state dict. Export writes `config.json`, `model.safetensors`,
`generation_config.json` and the tokenizer files, which `transformers.AutoModelForCausalLM` and `AutoTokenizer` load
without custom code. Neither direction needs `transformers`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lit_llm.checkpoint import META_KEY, load_model, meta_tokenizer, resolve_checkpoint_path
from lit_llm.convert.families import Part, config_from_hf, config_to_hf, parts
from lit_llm.errors import CheckpointError, ConfigError
from lit_llm.model import GPT, Config

WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing (a Hugging Face checkpoint folder holds config.json, the weights "
                              "and tokenizer.json)")  # fmt: skip
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


class _Weights:
    """The tensors of a Hugging Face folder by name, opened lazily, one file at a time."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        found = [name for name in WEIGHT_FILES if (folder / name).is_file()]
        if not found:
            raise CheckpointError(f"{folder}: no weights ({' or '.join(WEIGHT_FILES)})")
        path = folder / found[0]
        self._open: dict[Path, Any] = {}
        if path.name.endswith(".index.json"):
            self.where = {k: folder / v for k, v in _read_json(path).get("weight_map", {}).items()}
        else:  # one file: open it once, for its names and then its tensors
            self._open = {path: _open_file(path)}
            self.where = {key: path for key in self._open[path].keys()}

    def get(self, key: str) -> torch.Tensor:
        path = self.where.get(key)
        if path is None:
            raise CheckpointError(f"{self.folder}: tensor {key} is missing from the weights")
        if path not in self._open:
            self._open = {path: _open_file(path)}  # keep one file open: shards are read in order
        handle = self._open[path]
        return handle.get_tensor(key) if hasattr(handle, "get_tensor") else handle[key]

    def keys(self) -> set[str]:
        return set(self.where)


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one message
        raise CheckpointError(f"could not read {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from None


def _open_file(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        return safe_open(str(path), framework="pt")
    return _load_bin(path)


def _expected_shapes(config: Config) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in GPT(config).state_dict().items()}


def _split_sizes(part: Part, config: Config) -> list[int]:
    if ".qkv." in part.ours:
        hs = config.head_size
        return [config.n_head * hs, config.n_query_groups * hs, config.n_query_groups * hs]
    return [config.intermediate_size] * len(part.theirs)


def download(repo_id: str, revision: str | None = None) -> Path:
    """The files import needs from a Hugging Face Hub repository, through `huggingface_hub`'s cache. Only called
    when asked for explicitly (`lit-llm import --hub true`): nothing else in lit_llm goes to the network."""
    from huggingface_hub import snapshot_download

    patterns = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json"]
    return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))


def import_hf(source: str | Path, output: str | Path, dtype: str | None = None) -> Path:
    """Convert a local Hugging Face checkpoint folder into a lit_llm checkpoint `output`/last.ckpt, which every
    stage's `init_from` accepts. `dtype` ("float32", "bfloat16", ...) casts the weights; None keeps theirs."""
    from lit_llm.data.tokenizer import Tokenizer

    folder, out = Path(source), Path(output)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder (expected a local Hugging Face checkpoint folder)")
    hf = _read_json(folder / "config.json")
    config = config_from_hf(hf, str(folder / "config.json"))
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise CheckpointError(f"{tokenizer_file} is missing: lit_llm needs the fast tokenizer's tokenizer.json")
    tokenizer = Tokenizer(tokenizer_file)
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(f"{tokenizer_file}: {tokenizer.vocab_size} tokens, but the embedding has "
                              f"vocab_size={config.vocab_size} rows ({folder / 'config.json'})")  # fmt: skip
    cast = getattr(torch, dtype) if dtype else None
    if cast is not None and not isinstance(cast, torch.dtype):
        raise ConfigError(f"dtype {dtype!r} is not a torch dtype (e.g. float32, bfloat16)")
    weights, shapes = _Weights(folder), _expected_shapes(config)
    if not config.tie_embeddings and "lm_head.weight" not in weights.keys():
        config = config.replace(tie_embeddings=True)  # no lm_head tensor: the head is the embedding
    state: dict[str, torch.Tensor] = {}
    for part in parts(config, hf["model_type"]):
        tensors = []
        for key, size in zip(part.theirs, _split_sizes(part, config) if len(part.theirs) > 1 else [None]):
            tensor = weights.get(key)
            tensor = tensor.t() if part.transpose else tensor
            if size is not None and tensor.shape[0] != size:
                raise CheckpointError(f"{weights.where[key]}: {key} has shape {tuple(tensor.shape)}, expected "
                                      f"{size} rows from {folder / 'config.json'}")  # fmt: skip
            tensors.append(tensor)
        tensor = torch.cat(tensors) if len(tensors) > 1 else tensors[0]
        if tensor.shape != shapes[part.ours]:
            key = part.theirs[0]
            raise CheckpointError(f"{weights.where[key]}: {key} has shape {tuple(tensor.shape)}, expected "
                                  f"{tuple(shapes[part.ours])} from {folder / 'config.json'}")  # fmt: skip
        state[f"model.{part.ours}"] = (tensor.to(cast) if cast is not None else tensor).contiguous().clone()
    if config.tie_embeddings:  # one tensor under both names, as GPT.state_dict() has it
        state["model.lm_head.weight"] = state["model.wte.weight"]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "last.ckpt"
    meta = {"stage": "import", "model_config": config.to_dict(), "tokenizer": tokenizer.to_json(),
            "source": {"folder": str(folder), "model_type": hf["model_type"]}}  # fmt: skip
    torch.save({"state_dict": state, META_KEY: meta}, path)
    return path


def export_hf(checkpoint: str | Path, output: str | Path) -> Path:
    """Write a lit_llm checkpoint as a Hugging Face folder: config.json, model.safetensors (the stored dtype),
    generation_config.json and the tokenizer files. LoRA checkpoints are merged into their base first."""
    from safetensors.torch import save_file

    path = resolve_checkpoint_path(checkpoint)
    model, meta = load_model(path)
    config, out = model.config, Path(output)
    hf = config_to_hf(config, str(path))
    ours = model.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for part in parts(config, hf["model_type"]):
        tensor = ours[part.ours].detach()
        pieces = tensor.split(_split_sizes(part, config)) if len(part.theirs) > 1 else [tensor]
        for key, piece in zip(part.theirs, pieces):
            tensors[key] = (piece.t() if part.transpose else piece).contiguous().clone()
    tokenizer = meta_tokenizer(meta, path)
    if tokenizer.vocab_size > config.padded_vocab_size:
        raise CheckpointError(f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but the embedding only "
                              f"{config.padded_vocab_size} rows")  # fmt: skip
    ids = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id}
    ids = {k: v for k, v in ids.items() if v is not None}
    hf.update(ids, torch_dtype=str(next(iter(tensors.values())).dtype)[6:])
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf, indent=2))
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "generation_config.json").write_text(json.dumps({**ids, "max_length": config.block_size}, indent=2))
    tokenizer.save_pretrained(out, model_max_length=config.block_size)
    return out

