"""The last stage (one task): merge every task's stats into one prepare_stats.json, in the in-process path's
form, check that the counts add up across tasks, and move the outputs into place, the stats written last."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from lit_llm.atomic import atomic_write_text, fsync_dir
from lit_llm.errors import DataError
from lit_llm.prepare import stats as report
from lit_llm.prepare.scale.layout import STATS_FILE, Layout, load_json, replace_into
from lit_llm.prepare.sources import SourceStats

OUTPUTS = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "train", "val", "rejected")
# The in-process path's files, which would otherwise sit beside the shards of a --force rerun on its folder.
IN_PROCESS_OUTPUTS = ("train.bin", "train.json", "val.bin", "val.json", "rejected.jsonl")


def block_stats(folder: Path) -> dict[str, dict[str, Any]]:
    """datatrove's per-task stats of one stage summed by block name: {block: {"seconds": s, label: total}}."""
    merged: dict[str, dict[str, Any]] = {}
    for path in sorted((folder / "stats").glob("*.json")):
        for block in json.loads(path.read_text()):
            into = merged.setdefault(block["name"], {"seconds": 0.0})
            into["seconds"] += _total(block.get("time_stats"))
            for label, value in block.get("stats", {}).items():
                into[label] = into.get(label, 0) + _total(value)
    return merged


def _total(value: Any) -> float:
    return value.get("total", 0) if isinstance(value, dict) else (value or 0)


def _block(blocks: dict, name: str) -> dict[str, Any]:
    return next((v for k, v in blocks.items() if name in k), {"seconds": 0.0})


def merged_stats(layout: Layout, tasks: int) -> dict[str, Any]:
    """The run's stats from every task's files; DataError when they do not add up."""
    source = SourceStats()
    for r in range(tasks):
        part = load_json(layout.read_stats(r))
        for key, value in part.items():
            if key == "reasons":
                for reason, n in value.items():
                    source.reasons[reason] = source.reasons.get(reason, 0) + n
            else:
                setattr(source, key, getattr(source, key) + value)
    if source.documents == 0:
        raise DataError(f"no documents in the sources: {source.files} file(s), {source.records} record(s), "
                        f"{source.bad_records} bad, {source.empty_files} empty file(s)")
    process, tokenize = block_stats(layout.logs("process")), block_stats(layout.logs("tokenize"))
    read, clean = _block(process, "sources"), _block(process, "clean")
    rules, hashed = _block(process, "quality rules"), _block(process, "signatures")
    plan, tokenizer = load_json(layout.plan_summary), load_json(layout.work / "plan" / "tokenizer.json")
    n = source.documents
    if clean.get("documents", 0) != n or rules.get("total", 0) != n or rules.get("forwarded", 0) != plan["passed"]:
        raise DataError(f"task stats do not add up: {n} documents read, {clean.get('documents', 0)} cleaned, "
                        f"{rules.get('total', 0)} judged by the rules, {rules.get('forwarded', 0)} passed them, "
                        f"{plan['passed']} hashed; a task's files are from another run: rerun with --force")
    rule_counts = sorted(((k[len("dropped_"):], int(v)) for k, v in rules.items()
                          if k.startswith("dropped_rule:")), key=lambda kv: -kv[1])
    stages = [
        report.stage("read", source.records, n, read["seconds"],
                     removed={f"bad_record:{k}": v for k, v in source.reasons.items()})
        | {"decode_replacements": source.decode_replacements, "empty_files": source.empty_files},
        report.stage("clean", n, n, clean["seconds"]) | {"bytes_in": int(clean.get("bytes_in", 0)),
                                                         "bytes_out": int(clean.get("bytes_out", 0))},
        report.stage("filter", n, plan["passed"], rules["seconds"], removed=dict(rule_counts))
        | {"boilerplate_lines_removed": int(clean.get("boilerplate_lines_removed", 0)),
           "bytes_out": int(hashed.get("bytes", 0))},
    ]
    kept = plan["passed"]
    if "exact_removed" in plan:
        stages.append(report.stage("exact_dedup", kept, kept - plan["exact_removed"], plan["exact_seconds"],
                                   removed={"exact_duplicate": plan["exact_removed"]}))
        kept -= plan["exact_removed"]
    if "near_removed" in plan:
        stages.append(report.stage("near_dedup", kept, kept - plan["near_removed"], plan["near_seconds"],
                                   removed={"near_duplicate": plan["near_removed"]}) | {"clusters": plan["clusters"]})
    stages.append(report.stage("tokenizer", plan["train"], plan["train"], tokenizer["seconds"])
                  | {k: v for k, v in tokenizer.items() if k not in ("seconds", "documents")})
    shards = _shards(layout)
    splits = {split: {"num_tokens": sum(m["num_tokens"] for m in metas),
                      "num_bytes": sum(m["num_bytes"] for m in metas),
                      "num_documents": sum(m["num_documents"] for m in metas), "shards": len(metas)}
              for split, metas in shards.items() if metas}
    written = sum(s["num_documents"] for s in splits.values())
    stages.append(report.stage("tokenize", written, written, _block(tokenize, "token shards")["seconds"]))
    stats = report.summarize(source, stages, splits)
    if written != plan["kept"]:
        raise DataError(f"the shards hold {written} documents but the plan kept {plan['kept']}")
    stats["shards"] = {split: [{"file": f"{split}/{m['file']}", **{k: v for k, v in m.items() if k != "file"}}
                               for m in metas] for split, metas in shards.items()}
    return stats


def _shards(layout: Layout) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for split in ("train", "val"):
        folder = layout.staged / split
        out[split] = [{"file": p.name, **json.loads(p.with_suffix(".json").read_text())}
                      for p in sorted(folder.glob("*.bin"))] if folder.is_dir() else []
    return out


def commit(layout: Layout, stats: dict[str, Any]) -> None:
    """Move the staged outputs into output_dir; the stats (the fingerprint) are removed first and written last."""
    out = layout.out
    (out / STATS_FILE).unlink(missing_ok=True)
    fsync_dir(out)
    for name in IN_PROCESS_OUTPUTS:
        (out / name).unlink(missing_ok=True)
    for name in OUTPUTS:
        src = layout.staged / name
        if src.exists():
            replace_into(src, out / name)
        elif (out / name).exists():
            replace_into(out / name, layout.work / f"stale-{name}")  # out of the way, removed with work/
    fsync_dir(out)
    atomic_write_text(out / STATS_FILE, json.dumps(stats, indent=2))


class Finalize(PipelineStep):
    name = "lit_llm finalize"
    type = "📊 - STATS"

    def __init__(self, layout: Layout, tasks: int, extra: dict[str, Any]) -> None:
        super().__init__()
        self.layout, self.tasks, self.extra = layout, tasks, extra

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> Iterator:
        stats = merged_stats(self.layout, self.tasks)
        stats.update(self.extra)
        commit(self.layout, stats)
        return
        yield
