"""Shared by the executor tests: a small config, and what two runs' outputs must have in common."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lit_llm.prepare.run import PrepareConfig

# The demo's loosened rules, so that the generated corpus loses documents to several rules, copies and near copies.
FILTERS = {"min_chars": 60, "min_words": 10, "gopher_min_words": 10, "gopher_min_alpha_words": None,
           "gopher_min_stop_words": None}


def config(out: Path, sources=("builtin:2000",), executor: dict | None = None, **options) -> PrepareConfig:
    data = {"sources": list(sources), "output_dir": str(out), "filters": FILTERS, "tokenizer": {"vocab_size": 600},
            "clean": {"fix_mojibake": True, "strip_html": True}, "num_proc": 1, **options}
    if executor is not None:
        data["executor"] = executor
    return PrepareConfig.from_dict(data)


def tokens(out: Path, split: str) -> np.ndarray:
    """A split's tokens: train.bin, or the shards under train/ in order."""
    single = out / f"{split}.bin"
    paths = [single] if single.is_file() else sorted((out / split).glob("*.bin"))
    return np.concatenate([np.fromfile(p, dtype=np.uint16) for p in paths])


def rejected(out: Path) -> dict[int, tuple]:
    """{id: (stage, reason, duplicate_of)} of rejected.jsonl or of every file under rejected/."""
    single = out / "rejected.jsonl"
    paths = [single] if single.is_file() else sorted((out / "rejected").glob("*.jsonl"))
    records = [json.loads(line) for p in paths for line in p.read_text().splitlines()]
    found = {r["id"]: (r["stage"], r["reason"], r.get("duplicate_of")) for r in records}
    assert len(found) == len(records), "a document was rejected twice"
    return found


def counts(stats: dict) -> list[tuple]:
    return [(s["stage"], s["docs_in"], s["docs_out"], s["removed"]) for s in stats["stages"]]
