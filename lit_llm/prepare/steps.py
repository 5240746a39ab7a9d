"""The steps of the data pipeline over `datasets.Dataset`s; `lit_llm.prepare.run.prepare` chains them.

Cleaning, C4 line removal, the quality rules and the dedup hashes run in one batched `map` over worker
processes (`process_documents`): one pass over the text, one Arrow file written, and documents a rule rejects
are never hashed. Each worker times its steps, so the stats still give seconds per stage. Deciding what to keep
(`select_documents`) then needs only the small columns: reasons, hashes and LSH bands.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from lit_llm.prepare import stats as report
from lit_llm.prepare.clean import CleanConfig, clean_text
from lit_llm.prepare.dedup import (
    DedupConfig,
    MinHasher,
    dedup_words,
    exact_duplicate_of,
    exact_hashes,
    near_duplicates,
)
from lit_llm.prepare.filters import FilterConfig, first_failing_rule, remove_boilerplate_lines
from lit_llm.prepare.shards import TokenWriter, append_documents, require_eos
from lit_llm.text.tokenizer import Tokenizer, train_bpe
from lit_llm.errors import DataError

# Bump when a step's output changes for the same config, so that caches written by older code are not reused.
PIPELINE_VERSION = 1
_TIMED_STEPS = ("clean", "filter", "exact_hash", "minhash")


def process_documents(ds, clean: CleanConfig, filters: FilterConfig, dedup: DedupConfig,
                      num_proc: int | None = None, batch_size: int = 1000, cache: Path | None = None):
    """Clean, drop boilerplate lines, judge and hash every document of `ds` (columns id, text).

    Adds columns raw_bytes, bytes, boilerplate_lines, reject (first failing rule or None), exact_hash, and
    with near dedup bands and valid; rejected documents get zero hashes. Returns (dataset, {step: seconds})
    where seconds are the workers' time divided by their number, the wall-clock share of each step."""
    from datasets import Features, Sequence, Value

    hasher = MinHasher(dedup) if dedup.near else None
    columns = {"id": Value("int64"), "text": Value("large_string"), "raw_bytes": Value("int64"),
               "bytes": Value("int64"), "boilerplate_lines": Value("int32"), "reject": Value("string"),
               "exact_hash": Value("uint64")}
    if hasher is not None:
        columns.update(bands=Sequence(Value("uint64"), length=hasher.bands), valid=Value("bool"))
    columns.update({f"seconds_{s}": Value("float64") for s in _TIMED_STEPS})
    procs = num_proc or os.cpu_count() or 1
    # Starting a worker costs about a second; below a couple of batches per worker it is not worth it.
    procs = max(1, min(procs, len(ds) // max(batch_size, 1)))
    key = fingerprint(ds._fingerprint, asdict(clean), asdict(filters), asdict(dedup), PIPELINE_VERSION)
    kwargs: dict[str, Any] = {}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        kwargs["cache_file_name"] = str(cache / f"process-{key}.arrow")
    fn_kwargs = {"clean": clean, "filters": filters, "exact": dedup.exact, "hasher": hasher, "parent_pid": os.getpid()}
    with forks_die_with_this_process():
        ds = ds.map(
            _process_batch, fn_kwargs=fn_kwargs,
            batched=True, batch_size=batch_size, num_proc=procs if procs > 1 else None,
            remove_columns=ds.column_names, features=Features(columns), new_fingerprint=key,
            desc="clean, filter, hash", **kwargs,
        )
    table = ds.data.table
    seconds = {s: float(np.sum(table.column(f"seconds_{s}").to_numpy())) / procs for s in _TIMED_STEPS}
    return ds, seconds


def _process_batch(batch: dict[str, list], clean: CleanConfig, filters: FilterConfig, exact: bool,
                   hasher: MinHasher | None, parent_pid: int | None = None) -> dict[str, Any]:
    if parent_pid is not None and os.getpid() != parent_pid:
        die_with_parent()
    t0 = time.perf_counter()
    raw = batch["text"]
    texts = [clean_text(t, clean) for t in raw]
    t1 = time.perf_counter()
    removed, reasons = [], []
    for i, text in enumerate(texts):
        text, n = remove_boilerplate_lines(text, filters)
        texts[i] = text
        removed.append(n)
        reasons.append(first_failing_rule(text, filters))
    t2 = time.perf_counter()
    kept = [i for i, r in enumerate(reasons) if r is None]
    kept_texts = [texts[i] for i in kept]
    n = len(texts)
    hashes = np.zeros(n, dtype=np.uint64)
    # Both kinds of dedup read the same normalized words; split each text once.
    words = [dedup_words(t) for t in kept_texts] if exact or hasher is not None else None
    if exact and kept:
        hashes[kept] = exact_hashes(kept_texts, words)
    t3 = time.perf_counter()
    out: dict[str, Any] = {
        "id": batch["id"],
        "text": texts,
        "raw_bytes": [len(t.encode("utf-8")) for t in raw],
        "bytes": [len(t.encode("utf-8")) for t in texts],
        "boilerplate_lines": removed,
        "reject": reasons,
        "exact_hash": hashes,
    }
    if hasher is not None:
        bands = np.zeros((n, hasher.bands), dtype=np.uint64)
        valid = np.zeros(n, dtype=bool)
        if kept:
            bands[kept], valid[kept] = hasher.band_hashes(kept_texts, words)
        out["bands"], out["valid"] = bands, valid
    t4 = time.perf_counter()
    # Each document carries its share of the batch's time, so summing a column gives a step's worker time.
    for step, seconds in zip(_TIMED_STEPS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
        out[f"seconds_{step}"] = [seconds / n] * n
    return out


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_dies_with_parent: int | None = None  # the process id that last asked, so each worker asks once
_forks_die_with: int | None = None  # while a map runs: the process whose forked children die with it
_fork_hook_registered = False


def die_with_parent() -> None:
    """Have Linux kill this worker process when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere a no-op.

    `datasets.map` workers block on their task queue forever once the parent is gone: after a SIGKILL of
    `prepare` they would keep running, holding the cache files and (the file descriptor is inherited) the output
    folder's lock. Called in each worker the first time the mapped function runs there, which covers workers
    started by exec (the spawn method); forked ones are covered from the fork on (`forks_die_with_this_process`)."""
    global _dies_with_parent
    pid = os.getpid()
    if _dies_with_parent == pid or not sys.platform.startswith("linux"):
        return
    _dies_with_parent = pid
    _set_parent_death_signal(os.getppid())


def _set_parent_death_signal(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect: nobody will signal us
        os.kill(os.getpid(), signal.SIGKILL)


def _after_fork_in_child() -> None:
    if _forks_die_with is not None and _forks_die_with == os.getppid():
        _set_parent_death_signal(_forks_die_with)


@contextlib.contextmanager
def forks_die_with_this_process() -> Iterator[None]:
    """While inside, every process this one forks is killed when this one dies (Linux; elsewhere a no-op).

    Besides its workers, a `datasets.map` with num_proc forks a multiprocessing Manager server that never runs the
    mapped function; it too would outlive a killed parent, and hold the output folder's lock."""
    global _forks_die_with, _fork_hook_registered
    if not sys.platform.startswith("linux"):
        yield
        return
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_registered = True
    previous, _forks_die_with = _forks_die_with, os.getpid()
    try:
        yield
    finally:
        _forks_die_with = previous


def select_documents(ds, dedup: DedupConfig, seconds: dict[str, float], rejected: RejectedWriter | None = None):
    """Keep the documents no rule rejected, then the first of each exact and each near-duplicate cluster.
    Writes every removal to `rejected`. Returns (kept dataset with columns id, text, bytes, stage records)."""
    table = ds.data.table
    n = len(ds)
    ids = table.column("id").to_numpy()
    reasons = table.column("reject").to_pylist()
    passed = np.array([r is None for r in reasons], dtype=bool)
    rule_counts = Counter(r for r in reasons if r is not None).most_common()
    if rejected is not None:
        rejected.write(ds, np.flatnonzero(~passed), "filter", reasons)
    bytes_col = table.column("bytes").to_numpy()
    stages = [
        report.stage("clean", n, n, seconds["clean"]) | {
            "bytes_in": int(table.column("raw_bytes").to_numpy().sum()), "bytes_out": int(bytes_col.sum())},
        report.stage("filter", n, int(passed.sum()), seconds["filter"],
                     removed={f"rule:{k}": v for k, v in rule_counts})
        | {"boilerplate_lines_removed": int(table.column("boilerplate_lines").to_numpy().sum()),
           "bytes_out": int(bytes_col[passed].sum())},
    ]
    keep = np.flatnonzero(passed)
    if not len(keep):
        raise DataError(
            f"the quality filters removed all {n} documents (most by rule {rule_counts[0][0]!r}: "
            f"{', '.join(f'{k} {v}' for k, v in rule_counts[:3])}); relax that rule under filters: in the config "
            "(null switches a rule off)"
        )
    if dedup.exact:
        t0 = time.perf_counter()
        first = exact_duplicate_of(table.column("exact_hash").to_numpy()[keep])
        own = first == np.arange(len(keep))
        dup = np.flatnonzero(~own)
        if rejected is not None:
            rejected.write(ds, keep[dup], "exact_dedup", "exact_duplicate", duplicate_of=ids[keep[first[dup]]])
        stages.append(report.stage("exact_dedup", len(keep), int(own.sum()),
                                   seconds["exact_hash"] + time.perf_counter() - t0,
                                   removed={"exact_duplicate": len(dup)}))
        keep = keep[own]
    if dedup.near:
        t0 = time.perf_counter()
        bands_col = table.column("bands").combine_chunks()
        bands = bands_col.flatten().to_numpy().reshape(n, -1)[keep]
        rep, matched = near_duplicates(bands, table.column("valid").to_numpy(zero_copy_only=False)[keep])
        own = rep == np.arange(len(keep))
        dup = np.flatnonzero(~own)
        if rejected is not None:
            # The document each one was matched with, not its cluster's first: through a chain A~B~C the cluster
            # keeps A, but C is a copy of B and may share little with A.
            rejected.write(ds, keep[dup], "near_dedup", "near_duplicate", duplicate_of=ids[keep[matched[dup]]])
        stage = report.stage("near_dedup", len(keep), int(own.sum()), seconds["minhash"] + time.perf_counter() - t0,
                             removed={"near_duplicate": len(dup)})
        stage["clusters"] = int(len(np.unique(rep[dup])))
        stages.append(stage)
        keep = keep[own]
    return ds.select(keep).select_columns(["id", "text", "bytes"]), stages


def split(ds, val_fraction: float):
    """Every round(1/val_fraction)-th document (by position) to validation, the rest to training."""
    if val_fraction <= 0 or len(ds) < 2:
        return ds, None
    every = max(2, round(1 / val_fraction))
    is_val = np.arange(len(ds)) % every == every - 1
    return ds.select(np.flatnonzero(~is_val)), ds.select(np.flatnonzero(is_val))


def build_tokenizer(train_ds, path: str | None, vocab_size: int, min_frequency: int,
                    special_tokens: list[str] | None, batch_size: int = 1000, progress: bool = False,
                    split_digits: bool = False):
    """Load the tokenizer at `path`, or train a byte-level BPE on the training documents.
    Returns (tokenizer, stage record)."""
    t0 = time.perf_counter()
    n = len(train_ds)
    if path:
        tok = Tokenizer(path)
        return tok, report.stage("tokenizer", n, n, time.perf_counter() - t0) | {
            "trained": False, "path": str(path), "vocab_size": tok.vocab_size}
    texts = (t for batch in train_ds.iter(batch_size=batch_size) for t in batch["text"])
    kwargs = {} if special_tokens is None else {"special_tokens": special_tokens}
    tok = train_bpe(texts, vocab_size=vocab_size, min_frequency=min_frequency, length=n, show_progress=progress,
                    split_digits=split_digits, **kwargs)
    seconds = time.perf_counter() - t0
    n_bytes = int(np.sum(train_ds["bytes"], dtype=np.int64))
    return tok, report.stage("tokenizer", n, n, seconds) | {
        "trained": True, "vocab_size": tok.vocab_size, "mb_per_s": round(n_bytes / 1e6 / max(seconds, 1e-9), 2)}


def write_token_files(splits: dict[str, Any], tok: Tokenizer, out: Path, batch_size: int = 1000,
                      progress: bool = True):
    """Tokenize each split into <name>.bin (EOS after every document) with its sidecar, and save the tokenizer
    beside them first, so that each sidecar records its SHA-256. Returns ({split: sidecar meta}, stage record)."""
    from tqdm.auto import tqdm

    require_eos(tok)
    t0 = time.perf_counter()
    tok.save_pretrained(out)
    metas, n_docs = {}, 0
    for name, ds in splits.items():
        path = out / f"{name}.bin"
        if ds is None or len(ds) == 0:
            for stale in (path, path.with_suffix(".json")):
                stale.unlink(missing_ok=True)
            continue
        with TokenWriter(path, tok.vocab_size, tokenizer="tokenizer.json") as writer, tqdm(
            total=len(ds), desc=f"tokenize {name}", unit="doc", disable=not progress
        ) as bar:
            for batch in ds.iter(batch_size=batch_size):
                append_documents(writer, tok, batch["text"])
                bar.update(len(batch["text"]))
        metas[name] = writer.meta
        n_docs += len(ds)
    return metas, report.stage("tokenize", n_docs, n_docs, time.perf_counter() - t0)


class RejectedWriter:
    """rejected.jsonl: one line per removed document with its id, stage and reason (and, for duplicates, the
    id of the document kept in its place). A None path makes it a no-op."""

    def __init__(self, path: Path | None) -> None:
        self._f = open(path, "w", encoding="utf-8") if path is not None else None

    def write(self, ds, rows: np.ndarray, stage: str, reasons: list | str, duplicate_of: np.ndarray | None = None):
        if self._f is None or not len(rows):
            return
        for start in range(0, len(rows), 1000):
            part = rows[start : start + 1000]
            records = ds.select(part).select_columns(["id", "text"]).to_dict()
            for j, (doc_id, text) in enumerate(zip(records["id"], records["text"])):
                reason = reasons if isinstance(reasons, str) else reasons[part[j]]
                record: dict[str, Any] = {"id": doc_id, "stage": stage, "reason": reason}
                if duplicate_of is not None:
                    record["duplicate_of"] = int(duplicate_of[start + j])
                record["text"] = text
                self._f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()

    def __enter__(self) -> RejectedWriter:
        return self

    def __exit__(self, *_) -> None:
        self.close()


def batches(docs: Iterator[str], size: int = 10_000) -> Iterator[tuple[list[int], list[str]]]:
    """(ids, texts) in chunks of `size`, ids counting documents from 0."""
    ids: list[int] = []
    texts: list[str] = []
    for n, text in enumerate(docs):
        ids.append(n)
        texts.append(text)
        if len(texts) >= size:
            yield ids, texts
            ids, texts = [], []
    if texts:
        yield ids, texts


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (anything else by its str), naming cached files and configs."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
