"""Hugging Face checkpoints in and out: `lit-llm import --from HF_DIR --to DIR` and
`lit-llm export --checkpoint PATH --to HF_DIR`.

Import reads one tensor at a time (safetensors `safe_open`, or a memory-mapped `pytorch_model.bin`), so peak memory
stays near one copy of the weights: the converted state dict. Export writes `config.json`, `model.safetensors`,
`generation_config.json` and the tokenizer files, which `transformers.AutoModelForCausalLM` and `AutoTokenizer` load
without custom code. Neither direction needs `transformers`.

Both write whole or not at all. Import writes last.ckpt to a temporary file renamed into place. Export writes the
new folder beside the target and swaps it in with renames, so a failure midway leaves the old folder as it was, and
an overwrite leaves none of the old model's files behind (a stale `model.safetensors.index.json` would make
transformers load the old shards); files that are not part of a model (a README, `.git`) are carried over.
Neither overwrites an existing checkpoint unless asked (`--overwrite true`).
"""

from __future__ import annotations

import fnmatch
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from lit_llm.atomic import TEMP_PREFIX, OutputError, atomic_write, describe_os_error, fsync_dir, umask
from lit_llm.checkpoint import META_KEY, load_model, meta_tokenizer, resolve_checkpoint_path
from lit_llm.convert.families import Part, config_from_hf, config_to_hf, parts
from lit_llm.errors import CheckpointError, ConfigError, LitLLMError
from lit_llm.model import GPT, Config

WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)
# The files of a model in a Hugging Face folder (weights in any format, their indexes, configs, tokenizer): an export
# over an existing folder replaces all of them; anything else there is the user's and is kept.
MODEL_FILES = (
    "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model*.bin.index.json", "*.gguf",
    "tf_model*.h5", "flax_model*.msgpack", "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
    "vocab.json", "vocab.txt", "merges.txt", "chat_template.jinja", "chat_template.json",
)  # fmt: skip


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

        if not path.is_file():
            raise CheckpointError(f"{path} is missing (named by the folder's model.safetensors.index.json)")
        try:
            return safe_open(str(path), framework="pt")
        except Exception as exc:  # noqa: BLE001 - SafetensorError: a truncated or corrupt file
            raise CheckpointError(f"could not read {path}: {str(exc).splitlines()[0] if str(exc) else exc} (a "
                                  "truncated or corrupt file; download or copy it again)") from None  # fmt: skip
    return _load_bin(path)


def _expected_shapes(config: Config) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in GPT(config).state_dict().items()}


def _split_sizes(part: Part, config: Config) -> list[int]:
    if ".qkv." in part.ours:
        hs = config.head_size
        return [config.n_head * hs, config.n_query_groups * hs, config.n_query_groups * hs]
    return [config.intermediate_size] * len(part.theirs)


def hf_tensors(config: Config, state: dict[str, torch.Tensor], where: str) -> tuple[dict[str, Any], dict]:
    """(config.json, tensors by Hugging Face name) of a lit_llm state dict: what `export_hf` writes. ConfigError
    when no supported family holds the model."""
    hf, convert = hf_converter(config, where)
    missing = [part.ours for part in parts(config, hf["model_type"]) if part.ours not in state]
    if missing:
        raise CheckpointError(f"{where}: the state dict lacks {', '.join(missing[:5])}")
    return hf, dict(convert(state))


def hf_converter(config: Config, where: str) -> tuple[dict[str, Any], Any]:
    """(config.json, convert): `convert(chunk)` gives the Hugging Face tensors, as new contiguous copies, of a part
    of a lit_llm state dict (one layer, say), skipping names that are not weights. What the vLLM rollout engine
    loads layer by layer. ConfigError when no supported family holds the model."""
    hf = config_to_hf(config, where)
    by_name = {part.ours: part for part in parts(config, hf["model_type"])}

    def convert(chunk: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        out = []
        for name, tensor in chunk.items():
            part = by_name.get(name)
            if part is None:
                continue
            tensor = tensor.detach()
            pieces = tensor.split(_split_sizes(part, config)) if len(part.theirs) > 1 else [tensor]
            out += [(key, (piece.t() if part.transpose else piece).contiguous().clone())
                    for key, piece in zip(part.theirs, pieces)]
        return out

    return hf, convert


def download(repo_id: str, revision: str | None = None) -> Path:
    """The files import needs from a Hugging Face Hub repository, through `huggingface_hub`'s cache. Only called
    when asked for explicitly (`lit-llm import --hub true`): nothing else in lit_llm goes to the network."""
    from huggingface_hub import snapshot_download

    patterns = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json"]
    return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))


def import_hf(source: str | Path, output: str | Path, dtype: str | None = None, overwrite: bool = False) -> Path:
    """Convert a local Hugging Face checkpoint folder into a lit_llm checkpoint `output`/last.ckpt, which every
    stage's `init_from` accepts. `dtype` ("float32", "bfloat16", ...) casts the weights; None keeps theirs. An
    existing last.ckpt is replaced only with `overwrite`."""
    from lit_llm.text.tokenizer import Tokenizer

    folder, out = Path(source), Path(output)
    path = out / "last.ckpt"
    if out.exists() and not out.is_dir():
        raise OutputError(f"--to {out} is a file; name the folder to write last.ckpt into")
    if path.exists() and not overwrite:  # checked first: converting a large model takes a while
        raise OutputError(f"{path} already exists; pass --overwrite true to replace it")
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
    meta = {"stage": "import", "model_config": config.to_dict(), "tokenizer": tokenizer.to_json(),
            "source": {"folder": str(folder), "model_type": hf["model_type"]}}  # fmt: skip
    with atomic_write(path, "wb") as f:
        torch.save({"state_dict": state, META_KEY: meta}, f)
    return path


def export_hf(checkpoint: str | Path, output: str | Path, overwrite: bool = False) -> Path:
    """Write a lit_llm checkpoint as a Hugging Face folder: config.json, model.safetensors (the stored dtype),
    generation_config.json and the tokenizer files. LoRA checkpoints are merged into their base first.

    A folder that is not empty is replaced only with `overwrite`: then every model file in it (`MODEL_FILES`) is
    gone, other files are kept, and the folder changes in one rename, so it is never half old and half new."""
    from safetensors.torch import save_file

    out = Path(output)
    # The renames act on the real folder: a symlink's target, "." or ".." by its own name in its parent.
    folder = out.resolve()
    if out.exists() and not out.is_dir():
        raise OutputError(f"--to {out} is a file; name the folder to write the Hugging Face checkpoint into")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"{out} is not empty; pass --overwrite true to replace the model in it (its weights, "
                          "config and tokenizer files go; other files stay)")  # fmt: skip
    path = resolve_checkpoint_path(checkpoint)
    if path.resolve().is_relative_to(folder):
        raise OutputError(f"--to {out} holds the checkpoint being exported ({path}); choose another folder")
    model, meta = load_model(path)
    config = model.config
    hf, tensors = hf_tensors(config, model.state_dict(), str(path))
    tokenizer = meta_tokenizer(meta, path)
    if tokenizer.vocab_size > config.padded_vocab_size:
        raise CheckpointError(f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but the embedding only "
                              f"{config.padded_vocab_size} rows")  # fmt: skip
    ids = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id}
    ids = {k: v for k, v in ids.items() if v is not None}
    hf.update(ids, torch_dtype=str(next(iter(tensors.values())).dtype)[6:])
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        new = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{folder.name}.", dir=folder.parent))
    except OSError as exc:
        raise OutputError(describe_os_error(exc, out)) from None
    try:
        (new / "config.json").write_text(json.dumps(hf, indent=2))
        save_file(tensors, str(new / "model.safetensors"), metadata={"format": "pt"})
        (new / "generation_config.json").write_text(json.dumps({**ids, "max_length": config.block_size}, indent=2))
        tokenizer.save_pretrained(new, model_max_length=config.block_size)
        _settle(new)
        if folder.is_dir():
            _carry_over(folder, new)
        _swap_in(new, folder)
    except BaseException as exc:
        shutil.rmtree(new, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, LitLLMError):
            raise OutputError(describe_os_error(exc, out)) from None
        raise
    return out


def _is_model_file(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in MODEL_FILES)


def _settle(folder: Path) -> None:
    """Give the files written into `folder` (and the folder) the permissions the umask gives new files (mkdtemp and
    safetensors create them 0700/0600, unreadable to a group that shares the models) and flush them to disk, so the
    rename that publishes the folder never publishes empty files after a crash."""
    mask = umask()
    os.chmod(folder, 0o777 & ~mask)
    for file in (f for f in folder.iterdir() if f.is_file()):
        os.chmod(file, 0o666 & ~mask)
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(folder)


def _carry_over(old: Path, new: Path) -> None:
    """Hard-link (or copy, across filesystems) what the old folder holds besides a model into the new one: a README,
    a `.git` folder, notes. Links cost no space, and the old folder is untouched until the swap."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError:
            shutil.copy2(src, dst, follow_symlinks=False)

    for entry in old.iterdir():
        if _is_model_file(entry.name) or entry.name.startswith(TEMP_PREFIX) or (new / entry.name).exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / entry.name, symlinks=True, copy_function=link)
        else:
            link(str(entry), str(new / entry.name))


def _swap_in(new: Path, out: Path) -> None:
    """Put the folder `new` at `out` with renames; an old folder there is moved aside first and deleted after, and
    put back if the second rename fails."""
    if out.is_dir():
        old = out.parent / f"{TEMP_PREFIX}{out.name}.old-{secrets.token_hex(4)}"
        os.rename(out, old)
        try:
            os.rename(new, out)
        except BaseException:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(new, out)
    fsync_dir(out.parent)
