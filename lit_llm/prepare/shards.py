"""Flat binary token files with a JSON sidecar, read through a memory map.

`train.bin` holds token ids back to back (uint16 when the vocabulary fits, else uint32) with the
EOS id after every document; `train.json` beside it records the format, the token count and the SHA-256 of the
tokenizer.json that made the ids, so a token file is never read with a tokenizer it was not made with.
nanoGPT's raw `train.bin` (uint16, no sidecar) opens as-is when the vocabulary size is given. Several token files
(shards, e.g. one per task of a distributed prepare) open as one corpus with `open_token_files`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lit_llm.atomic import atomic_write, atomic_write_text
from lit_llm.errors import DataError

FORMAT = "lit_llm.tokens/v1"
_SCAN_CHUNK = 1 << 24


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def file_digest(path: Path) -> str | None:
    """SHA-256 of a file's bytes (read in 1 MiB blocks), or None when there is no such file."""
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class TokenWriter:
    """Appends token ids to a .bin file and writes its sidecar on close; each file appears whole or not at all.

    `tokenizer` is the tokenizer.json the ids come from, relative to the token file's folder; when it is there as
    the writer opens, the sidecar records its SHA-256 (`tokenizer_sha256`), which `open_token_file` checks."""

    def __init__(self, path: str | Path, vocab_size: int, tokenizer: str | None = None) -> None:
        self.path = Path(path)
        self.vocab_size = vocab_size
        self.tokenizer = tokenizer
        self.tokenizer_sha256 = file_digest(self.path.parent / tokenizer) if tokenizer else None
        self.dtype = token_dtype(vocab_size)
        # A temporary file beside the target, synced and renamed on close (lit_llm.atomic).
        self._atomic = atomic_write(self.path, "wb")
        self._file = self._atomic.__enter__()
        self.num_tokens = 0
        self.num_bytes = 0
        self.num_documents = 0
        self.max_token_id = -1

    def write(self, ids: Iterable[int] | np.ndarray, text_bytes: int = 0, documents: int = 1) -> None:
        arr = np.asarray(ids, dtype=np.int64)
        if arr.size:
            if arr.min() < 0 or arr.max() >= self.vocab_size:
                bad = int(arr.max()) if arr.max() >= self.vocab_size else int(arr.min())
                raise DataError(f"{self.path}: token id {bad} is outside the vocabulary (size {self.vocab_size})")
            self.max_token_id = max(self.max_token_id, int(arr.max()))
            self._file.write(arr.astype(self.dtype).tobytes())
        self.num_tokens += int(arr.size)
        self.num_bytes += text_bytes
        self.num_documents += documents

    def close(self) -> dict:
        meta = {
            "format": FORMAT,
            "dtype": self.dtype.name,
            "vocab_size": self.vocab_size,
            "num_tokens": self.num_tokens,
            "num_bytes": self.num_bytes,
            "num_documents": self.num_documents,
            "max_token_id": self.max_token_id,
            "tokenizer": self.tokenizer,
            "tokenizer_sha256": self.tokenizer_sha256,
        }
        self._atomic.__exit__(None, None, None)
        # After the token file: a sidecar never describes a file that is not there yet; a crash between the two
        # renames leaves a token count that open_token_file finds at odds with the file's size.
        atomic_write_text(sidecar_path(self.path), json.dumps(meta, indent=2) + "\n")
        self.meta = meta
        return meta

    def __enter__(self) -> TokenWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc)

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop what was written; the token file keeps its old content, if it had any."""
        exc = exc if exc is not None else RuntimeError("token writing aborted")
        try:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
        except BaseException as raised:
            if raised is not exc:
                raise


@dataclass
class TokenFile:
    """An opened token file: `tokens` is a read-only memory map, so RAM stays flat."""

    path: Path
    tokens: np.ndarray
    vocab_size: int
    num_bytes: int | None = None
    tokenizer: Path | None = None
    max_token_id: int | None = None

    def __len__(self) -> int:
        return len(self.tokens)


def open_token_file(path: str | Path, vocab_size: int | None = None) -> TokenFile:
    """Open a token file; `vocab_size` is required for a raw file without a sidecar (nanoGPT's)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"token file not found: {path}")
    meta_path = sidecar_path(path)
    max_id = None
    num_bytes = None
    num_tokens = None
    tokenizer = None
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{meta_path}: not valid JSON ({exc})") from exc
        for key in ("dtype", "vocab_size"):
            if key not in meta:
                raise DataError(f"{meta_path}: missing key {key!r}")
        try:
            dtype = np.dtype(meta["dtype"])
        except TypeError as exc:
            raise DataError(f"{meta_path}: unknown dtype {meta['dtype']!r}") from exc
        file_vocab = int(meta["vocab_size"])
        if vocab_size is not None and vocab_size < file_vocab:
            raise DataError(
                f"vocab_size {vocab_size} is smaller than the vocabulary {file_vocab} recorded in {meta_path}"
            )
        vocab_size = file_vocab
        max_id = meta.get("max_token_id")
        num_bytes = meta.get("num_bytes") or None
        num_tokens = meta.get("num_tokens")
        if meta.get("tokenizer"):
            tokenizer = (meta_path.parent / meta["tokenizer"]).resolve()
            _check_tokenizer_digest(path, meta_path, tokenizer, meta.get("tokenizer_sha256"))
    else:
        if vocab_size is None:
            raise DataError(
                f"{path} has no sidecar {meta_path.name}; set the data module's vocab_size to read it as a raw "
                "uint16 token file (nanoGPT's format)"
            )
        dtype = np.dtype(np.uint16)
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"token file is empty: {path}")
    if size % dtype.itemsize:
        raise DataError(f"{path}: size {size} bytes is not a multiple of {dtype.name}'s {dtype.itemsize} bytes")
    if num_tokens is not None and size != int(num_tokens) * dtype.itemsize:
        raise DataError(
            f"{path} holds {size // dtype.itemsize:,} tokens but its sidecar {meta_path.name} says "
            f"{int(num_tokens):,}: the two files come from different runs (an interrupted write); rerun the prepare "
            "that made them"
        )
    tokens = np.memmap(path, dtype=dtype, mode="r")
    if max_id is None:
        max_id = max(int(tokens[i : i + _SCAN_CHUNK].max()) for i in range(0, len(tokens), _SCAN_CHUNK))
    if max_id >= vocab_size:
        raise DataError(f"{path}: token id {max_id} is beyond the vocabulary (vocab_size {vocab_size})")
    return TokenFile(path=path, tokens=tokens, vocab_size=vocab_size, num_bytes=num_bytes, tokenizer=tokenizer,
                     max_token_id=int(max_id))


class ShardedTokens:
    """Token shards read as one corpus, in order, without copying them: `len` is their total, `[a:b]` the tokens
    a..b-1 across shard ends. Every document ends with EOS, so a window that crosses from one shard into the next
    reads documents joined by EOS, as a window inside one file does."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = [p for p in parts if len(p)]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice):
            raise TypeError("ShardedTokens takes slices (windows) only")
        start, stop, step = index.indices(len(self))
        if step != 1:
            raise ValueError("ShardedTokens slices have step 1")
        out = []
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while start < stop:
            begin = int(self.offsets[i])
            piece = self.parts[i][start - begin : stop - begin]
            out.append(piece)
            start += len(piece)
            i += 1
        if not out:
            return np.empty(0, dtype=self.dtype)
        return np.asarray(out[0]) if len(out) == 1 else np.concatenate(out)

    def split(self, cut: int) -> tuple[ShardedTokens, ShardedTokens]:
        """The first `cut` tokens and the rest, as views of the same shards."""
        head, tail = [], []
        for part, begin in zip(self.parts, self.offsets[:-1]):
            keep = max(0, min(len(part), cut - int(begin)))
            if keep:
                head.append(part[:keep])
            if keep < len(part):
                tail.append(part[keep:])
        return ShardedTokens(head or [self.parts[0][:0]]), ShardedTokens(tail or [self.parts[0][:0]])


def open_token_files(paths: list[Path], vocab_size: int | None = None) -> tuple[list[TokenFile], Any]:
    """Open token shards as one corpus: (the files, their tokens: the memory map of a single file, else a
    `ShardedTokens`). The shards must share dtype, vocabulary and tokenizer; DataError naming the first that
    does not."""
    if not paths:
        raise DataError("no token files to open")
    files = [open_token_file(paths[0], vocab_size)]
    first = files[0]
    for path in paths[1:]:
        tf = open_token_file(path, vocab_size)
        differs = [what for what, a, b in (("vocabulary size", tf.vocab_size, first.vocab_size),
                                           ("dtype", tf.tokens.dtype, first.tokens.dtype),
                                           ("tokenizer", tf.tokenizer, first.tokenizer)) if a != b]  # fmt: skip
        if differs:
            raise DataError(f"{path} differs from {first.path} in its {' and '.join(differs)}: shards of one corpus "
                            "must come from one prepare run")  # fmt: skip
        files.append(tf)
    tokens = first.tokens if len(files) == 1 else ShardedTokens([f.tokens for f in files])
    return files, tokens


def _check_tokenizer_digest(path: Path, meta_path: Path, tokenizer: Path, recorded: str | None) -> None:
    """The tokenizer beside a token file must be the one its sidecar recorded (when it recorded one)."""
    if not recorded or not tokenizer.is_file():
        return
    if file_digest(tokenizer) != recorded:
        raise DataError(
            f"{path} was not made with {tokenizer}: the tokenizer's SHA-256 differs from the one recorded in "
            f"{meta_path} (the files come from different runs); rerun the prepare that made them"
        )


def require_eos(tokenizer) -> int:
    """The tokenizer's end-of-sequence id, which token files put after every document."""
    if tokenizer.eos_id is None:
        raise DataError("the tokenizer has no end-of-sequence token ('</s>', '<|endoftext|>' or '<|end_of_text|>')")
    return tokenizer.eos_id


def append_documents(writer: TokenWriter, tokenizer, texts: list[str]) -> None:
    """Tokenize `texts` in one batch and append them to `writer`, each followed by EOS."""
    if not texts:
        return
    eos = np.array([require_eos(tokenizer)], dtype=np.int64)
    encoded = tokenizer.encode_batch(texts)
    ids = np.concatenate([part for e in encoded for part in (np.asarray(e, dtype=np.int64), eos)])
    writer.write(ids, text_bytes=sum(len(t.encode("utf-8")) for t in texts), documents=len(texts))


def write_documents(
    documents: Iterable[str],
    tokenizer,
    out_dir: str | Path,
    val_fraction: float = 0.05,
    batch_size: int = 256,
) -> dict[str, dict]:
    """Tokenize documents into `train.bin` and `val.bin` (every n-th document to val), EOS after each.

    The tokenizer is copied into `out_dir` so the token files describe themselves.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    require_eos(tokenizer)
    tokenizer.save(out_dir / "tokenizer.json")
    every = round(1 / val_fraction) if val_fraction > 0 else 0
    writers = {
        split: TokenWriter(out_dir / f"{split}.bin", tokenizer.vocab_size, tokenizer="tokenizer.json")
        for split in ("train", "val")
    }
    batch: list[str] = []
    seen = 0

    def flush() -> None:
        nonlocal seen
        groups: dict[str, list[str]] = {"train": [], "val": []}
        for text in batch:
            groups["val" if every and seen % every == every - 1 else "train"].append(text)
            seen += 1
        for split, texts in groups.items():
            append_documents(writers[split], tokenizer, texts)
        batch.clear()

    try:
        for doc in documents:
            batch.append(doc)
            if len(batch) >= batch_size:
                flush()
        flush()
    except BaseException as exc:
        for w in writers.values():
            w.abort(exc)
        raise
    metas = {split: w.close() for split, w in writers.items()}
    if metas["val"]["num_tokens"] == 0:  # no validation split asked for: leave no empty file behind
        (out_dir / "val.bin").unlink()
        sidecar_path(out_dir / "val.bin").unlink()
        del metas["val"]
    return metas
