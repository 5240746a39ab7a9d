"""The dedup stages across tasks, as datatrove's MinHash does it: buckets (one task per group of LSH bands, and
the exact hashes) find the documents that share a hash, then one plan task joins the clusters.

The result is the in-process path's (`lit_llm.prepare.steps.select_documents`): an exact duplicate gives way to
its first copy, near dedup runs on what exact dedup kept, and a near-duplicate cluster keeps its first document.
(Exact duplicates share every band hash with the copy that is kept, so the clusters among the remaining
documents are the same whether their edges are dropped before or after bucketing.) `duplicate_of` of a near
duplicate is the earlier candidate it shares the most bands with, counted over its bucket edges: where the
in-process path compares band hashes it can pick another member of the same cluster.
"""

from __future__ import annotations

import time

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from lit_llm.errors import DataError
from lit_llm.prepare.dedup import DedupConfig, MinHasher, _bucket_edges, _union_find, best_match
from lit_llm.prepare.scale.layout import Layout, load_arrays, offsets, save_arrays, save_json

EXACT, NEAR = 1, 2  # removal reasons in the plan files


def columns(dedup: DedupConfig) -> list[int]:
    """The hash columns the buckets stage handles: 0 is the exact hash, 1..bands the LSH bands."""
    bands = MinHasher(dedup).bands if dedup.near else 0
    return ([0] if dedup.exact else []) + list(range(1, bands + 1))


class FindBuckets(PipelineStep):
    """For each of this task's hash columns, the documents sharing a hash with an earlier one: edges (later, first
    of its bucket, the one before it in the bucket), by document id, to `work/edges/<column>.npz`."""

    name = "lit_llm buckets"
    type = "🫂 - DEDUP"

    def __init__(self, dedup: DedupConfig, layout: Layout, tasks: int) -> None:
        super().__init__()
        self.dedup, self.layout, self.tasks = dedup, layout, tasks

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        starts = offsets(self.layout, self.tasks)
        for column in columns(self.dedup)[rank::world_size]:
            with self.track_time("column"):
                key = "exact" if column == 0 else f"band_{column - 1}"
                ids, values = [], []
                for r in range(self.tasks):
                    sig = np.load(self.layout.signatures(r), allow_pickle=False)
                    keep = slice(None) if column == 0 else sig["valid"]
                    ids.append(starts[r] + sig["local"][keep])
                    values.append(sig[key][keep])
                ids_all = np.concatenate(ids) if ids else np.empty(0, np.int64)
                later, first, previous = _bucket_edges(np.concatenate(values) if values else np.empty(0, np.uint64))
                save_arrays(self.layout.edges(column), later=ids_all[later], first=ids_all[first],
                            previous=ids_all[previous])
            self.stat_update("columns")
            self.stat_update("edges", value=len(later))
        return
        yield


class PlanDedup(PipelineStep):
    """Joins every column's edges: which documents exact and near dedup remove (and for whom), and which kept
    ones go to validation (every round(1/val_fraction)-th, by position, as in the in-process path). Writes one
    plan per process task and `work/plan/summary.json` with the stage counts."""

    name = "lit_llm dedup plan"
    type = "🫂 - DEDUP"

    def __init__(self, dedup: DedupConfig, layout: Layout, tasks: int, val_fraction: float) -> None:
        super().__init__()
        self.dedup, self.layout, self.tasks, self.val_fraction = dedup, layout, tasks, val_fraction

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        t0 = time.perf_counter()
        starts = offsets(self.layout, self.tasks)
        passed = np.concatenate([starts[r] + load_arrays(self.layout.signatures(r))["local"]
                                 for r in range(self.tasks)])
        if not len(passed):
            raise DataError(f"the quality filters removed all {int(starts[-1])} documents (their counts by rule are "
                            f"in {self.layout.logs('process')}/stats); relax the rules under filters: in the config")
        removed = np.zeros(len(passed), dtype=np.int8)
        duplicate_of = np.full(len(passed), -1, dtype=np.int64)
        summary = {"passed": len(passed)}
        t_exact = time.perf_counter()
        if self.dedup.exact:
            e = load_arrays(self.layout.edges(0))
            at = np.searchsorted(passed, e["later"])
            removed[at], duplicate_of[at] = EXACT, e["first"]
            summary["exact_removed"] = len(at)
        summary["exact_seconds"] = time.perf_counter() - t_exact
        t_near = time.perf_counter()
        if self.dedup.near:
            remaining = passed[removed == 0]
            rep, matched = _join_clusters(self.layout, columns(self.dedup), remaining)
            own = rep == np.arange(len(remaining))
            at = np.searchsorted(passed, remaining[~own])
            removed[at], duplicate_of[at] = NEAR, remaining[matched[~own]]
            summary["near_removed"] = int((~own).sum())
            summary["clusters"] = int(len(np.unique(rep[~own])))
        summary["near_seconds"] = time.perf_counter() - t_near
        kept = passed[removed == 0]
        is_val = np.zeros(len(kept), dtype=bool)
        if self.val_fraction > 0 and len(kept) >= 2:
            every = max(2, round(1 / self.val_fraction))
            is_val = np.arange(len(kept)) % every == every - 1
        val = kept[is_val]
        # Both id lists are sorted, so each task's part is one slice (linear in documents, whatever the tasks).
        cut_passed, cut_val = np.searchsorted(passed, starts), np.searchsorted(val, starts)
        for r in range(self.tasks):
            part = slice(cut_passed[r], cut_passed[r + 1])
            mine = removed[part] > 0
            save_arrays(self.layout.plan(r), removed_local=passed[part][mine] - starts[r], reason=removed[part][mine],
                        duplicate_of=duplicate_of[part][mine],
                        val_local=val[cut_val[r]:cut_val[r + 1]] - starts[r], offset=starts[r])
        summary.update(kept=len(kept), val=int(is_val.sum()), train=int((~is_val).sum()),
                       seconds=time.perf_counter() - t0)
        save_json(self.layout.plan_summary, summary)
        return
        yield


def _join_clusters(layout: Layout, cols: list[int], ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(representative, matched) over positions in `ids` (the documents near dedup sees), from the band columns'
    edges; edges touching a document outside `ids` (an exact duplicate) are dropped."""
    n = len(ids)
    pair_keys, link_u, link_v = [], [], []
    for column in (c for c in cols if c > 0):
        e = load_arrays(layout.edges(column))
        later, first, previous = (_positions(ids, e[k]) for k in ("later", "first", "previous"))
        keys = []
        for other in (first, previous):
            both = (later >= 0) & (other >= 0)
            link_u.append(later[both])
            link_v.append(other[both])
            keys.append(later[both] * n + other[both])
        pair_keys.append(np.unique(np.concatenate(keys)))  # each pair once per band it shares
    labels = np.arange(n, dtype=np.int64)
    if not link_u or not sum(len(u) for u in link_u):
        return labels, labels.copy()
    labels = _union_find(labels, np.concatenate(link_u), np.concatenate(link_v))
    keys, shared = np.unique(np.concatenate(pair_keys), return_counts=True)
    return labels, best_match(keys // n, keys % n, shared, labels)


def _positions(ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each value in the sorted `ids`, -1 where it is not there."""
    pos = np.searchsorted(ids, values)
    ok = pos < len(ids)
    ok[ok] = ids[pos[ok]] == values[ok]
    return np.where(ok, pos, -1)
