"""Where an executor run keeps its files under `output_dir`, and which input each task reads.

    output_dir/
      prepare_stats.json        written last, by the finalize stage: the run's fingerprint
      tokenizer.json ...        the tokenizer the shards were written with
      train/00000.bin ...       one token shard (and .json sidecar) per task; val/ the same
      rejected/                 filter-00000.jsonl, dedup-00000.jsonl: each removed document, stage and reason
      logs/<stage>/             datatrove's logging_dir per stage: completions/, stats/, logs/
      work/                     what the stages hand each other (signatures, edges, plan, unfinished outputs)

Input is split into pieces (one per local file; the built-in corpus into one document range per task; an hf: data
set is one piece), and task r reads a contiguous block of them, so documents keep their input order across
tasks: a document's id is the count of documents in earlier tasks plus its index in its own task, the same id
the in-process path gives it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lit_llm.atomic import atomic_write, atomic_write_text
from lit_llm.prepare.sources import _builtin_size, _is_builtin, _resolve_all

STAGES = ("process", "buckets", "plan", "tokenize", "finalize")
STATS_FILE = "prepare_stats.json"  # the same name as the in-process path's


@dataclass(frozen=True)
class Piece:
    """A unit of input: a local file, a range [start, stop) of the built-in corpus, or a whole hf: source."""

    source: str
    path: str | None = None
    start: int | None = None
    stop: int | None = None


def plan_pieces(sources: list[str], tasks: int) -> list[list[Piece]]:
    """The pieces of `sources` in input order, dealt out to `tasks` tasks as contiguous blocks (some may be
    empty when there are fewer pieces than tasks)."""
    pieces: list[Piece] = []
    for source, paths in _resolve_all(sources):
        if paths is not None:
            pieces.extend(Piece(source, str(p)) for p in paths)
        elif _is_builtin(source):
            n = _builtin_size(source)
            cuts = np.linspace(0, n, min(tasks, n) + 1).round().astype(int)
            pieces.extend(Piece(source, None, int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a)
        else:
            pieces.append(Piece(source))
    cuts = np.linspace(0, len(pieces), tasks + 1).round().astype(int)
    return [pieces[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


class Layout:
    """Paths of one run's files; every per-task file name carries the task's rank as five digits."""

    def __init__(self, output_dir: str | Path) -> None:
        self.out = Path(output_dir)
        self.work = self.out / "work"
        self.staged = self.work / "out"  # outputs until the finalize stage moves them into out

    def logs(self, stage: str) -> Path:
        return self.out / "logs" / stage

    def read_stats(self, rank: int) -> Path:
        return self.work / "read" / f"{rank:05d}.json"

    def signatures(self, rank: int) -> Path:
        return self.work / "signatures" / f"{rank:05d}.npz"

    def documents(self, rank: int) -> Path:
        return self.work / "documents" / f"{rank:05d}.arrow"

    @property
    def filter_rejected(self) -> Path:
        return self.work / "filter-rejected"

    def edges(self, column: int) -> Path:
        return self.work / "edges" / f"{column:05d}.npz"

    def plan(self, rank: int) -> Path:
        return self.work / "plan" / f"{rank:05d}.npz"

    @property
    def plan_summary(self) -> Path:
        return self.work / "plan" / "summary.json"

    def shard(self, split: str, rank: int) -> Path:
        return self.staged / split / f"{rank:05d}.bin"

    @property
    def fingerprint(self) -> Path:
        return self.work / "fingerprint.json"


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """An .npz written whole or not at all (a task killed midway leaves nothing its rerun could mistake)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def save_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1, default=_plain))


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _plain(obj: Any) -> Any:
    if isinstance(obj, Piece):
        return asdict(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    raise TypeError(f"not JSON data: {type(obj).__name__}")


def offsets(layout: Layout, tasks: int) -> np.ndarray:
    """int64 (tasks + 1,): the id of each task's first document (its documents are ids offsets[r]..offsets[r+1])."""
    counts = [load_json(layout.read_stats(r))["documents"] for r in range(tasks)]
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def replace_into(src: Path, dst: Path) -> None:
    """Move a file or folder into place, replacing what is there."""
    if dst.is_dir() and not dst.is_symlink():
        import shutil

        shutil.rmtree(dst)
    elif dst.exists():
        dst.unlink()
    os.replace(src, dst)
