"""Stats of a data-pipeline run: one record per stage, totals that must add up, and the printed table."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from lit_llm.errors import DataError


def stage(name: str, docs_in: int, docs_out: int, seconds: float, removed: dict[str, int] | None = None) -> dict:
    """A stage record; `removed` maps reasons to document counts and must account for docs_in - docs_out."""
    removed = dict(removed or {})
    if docs_in - docs_out != sum(removed.values()):
        raise DataError(f"stage {name}: {docs_in} in, {docs_out} out, but removals add up to {sum(removed.values())}")
    return {"stage": name, "docs_in": docs_in, "docs_out": docs_out, "removed": removed, "seconds": round(seconds, 3)}


def summarize(source_stats: Any, stages: list[dict], splits: dict[str, dict]) -> dict[str, Any]:
    """The run's stats: stages, token files, and `removed_by` over all stages, with
    documents_in == documents_out + sum(removed_by)."""
    removed_by: dict[str, int] = {}
    for s in stages:
        for reason, n in s["removed"].items():
            removed_by[reason] = removed_by.get(reason, 0) + n
    tokens = sum(m["num_tokens"] for m in splits.values())
    n_bytes = sum(m.get("num_bytes", 0) for m in splits.values())
    docs_out = sum(m.get("num_documents", 0) for m in splits.values())
    stats = {
        "documents_in": source_stats.records,
        "documents_out": docs_out,
        "removed_by": removed_by,
        "sources": asdict(source_stats),
        "stages": stages,
        "splits": splits,
        "tokens": tokens,
        "bytes": n_bytes,
        "bytes_per_token": round(n_bytes / tokens, 4) if tokens else None,
        "seconds": round(sum(s["seconds"] for s in stages), 3),
    }
    if stats["documents_in"] != docs_out + sum(removed_by.values()):
        raise DataError(f"documents do not add up: {stats['documents_in']} in, {docs_out} out, removed {removed_by}")
    return stats


def format_table(stats: dict[str, Any]) -> str:
    """The stats as a fixed-width table: documents per stage and per reason, bytes, tokens, seconds."""
    lines = [f"{'stage':<26}{'docs in':>11}{'docs out':>11}{'removed':>10}{'MB out':>10}{'seconds':>10}"]
    for s in stats["stages"]:
        mb = f"{s['bytes_out'] / 1e6:.2f}" if "bytes_out" in s else ""
        removed = s["docs_in"] - s["docs_out"]
        lines.append(f"{s['stage']:<26}{s['docs_in']:>11,}{s['docs_out']:>11,}{removed:>10,}{mb:>10}{s['seconds']:>10.2f}")
        for reason, n in sorted(s["removed"].items(), key=lambda kv: -kv[1]):
            lines.append(f"  {reason:<46}{n:>10,}")
        if s.get("decode_replacements"):  # not a removal: the documents stay, with U+FFFD for the bad bytes
            lines.append(f"  {'non-UTF-8 docs kept, bytes replaced (U+FFFD)':<46}{s['decode_replacements']:>10,}")
    for name, meta in stats["splits"].items():
        bpt = meta["num_bytes"] / meta["num_tokens"] if meta["num_tokens"] else 0.0
        label = f"{name}/ ({meta['shards']} shards)" if "shards" in meta else f"{name}.bin"
        lines.append(
            f"{label:<26}{meta.get('num_documents', 0):>11,} docs {meta['num_tokens']:>12,} tokens "
            f"{meta['num_bytes'] / 1e6:>8.2f} MB {bpt:>6.2f} bytes/token"
        )
    lines.append(
        f"total: {stats['documents_in']:,} documents in = {stats['documents_out']:,} out + "
        f"{sum(stats['removed_by'].values()):,} removed; {stats['tokens']:,} tokens, "
        f"{stats['bytes_per_token'] or 0:.2f} bytes/token, {stats['seconds']:.1f} s"
    )
    return "\n".join(lines)
