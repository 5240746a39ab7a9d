"""The stages after dedup: the tokenizer (in the plan task), one token shard per task, and the finalize task that
merges every task's stats into prepare_stats.json and moves the outputs into place."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter

from lit_llm.prepare.scale.dedup import EXACT
from lit_llm.prepare.scale.layout import Layout, load_arrays, load_json, save_json
from lit_llm.prepare.shards import TokenWriter, append_documents, require_eos
from lit_llm.text.tokenizer import Tokenizer, train_bpe

_BATCH = 1000


def planned_documents(layout: Layout, rank: int) -> Iterator[tuple[int, str, int, dict]]:
    """(id, text, bytes, plan) of task `rank`'s documents that passed the rules, in order; plan holds "removed"
    (1 exact, 2 near, 0 kept), "duplicate_of" and "val"."""
    import pyarrow as pa

    plan = load_arrays(layout.plan(rank))
    offset = int(plan["offset"])
    removed = dict(zip(plan["removed_local"].tolist(), zip(plan["reason"].tolist(), plan["duplicate_of"].tolist())))
    val = set(plan["val_local"].tolist())
    with pa.memory_map(str(layout.documents(rank))) as source:
        reader = pa.ipc.open_file(source)
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i).to_pydict()
            for local, text, n_bytes in zip(batch["local"], batch["text"], batch["bytes"]):
                reason, dup = removed.get(local, (0, -1))
                yield offset + local, text, n_bytes, {"removed": reason, "duplicate_of": dup, "val": local in val}


class TrainTokenizer(PipelineStep):
    """Trains the byte-level BPE on the kept training documents in input order (what the in-process path trains
    on), or loads `path`; saves it into the staged outputs."""

    name = "lit_llm tokenizer"
    type = "🔢 - TOKENIZER"

    def __init__(self, layout: Layout, tasks: int, tokenizer: dict) -> None:
        super().__init__()
        self.layout, self.tasks, self.tokenizer = layout, tasks, tokenizer

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for _ in data or ():  # the plan block before this one does its work as it is drained
            pass
        t0 = time.perf_counter()
        tc = self.tokenizer
        train = load_json(self.layout.plan_summary)["train"]
        if tc["path"]:
            tok = Tokenizer(tc["path"])
            record = {"trained": False, "path": str(tc["path"])}
        else:
            n_bytes = [0]

            def texts() -> Iterator[str]:
                for r in range(self.tasks):
                    for _, text, b, plan in planned_documents(self.layout, r):
                        if not plan["removed"] and not plan["val"]:
                            n_bytes[0] += b
                            yield text

            kwargs = {} if tc["special_tokens"] is None else {"special_tokens": tc["special_tokens"]}
            tok = train_bpe(texts(), vocab_size=tc["vocab_size"], min_frequency=tc["min_frequency"], length=train,
                            split_digits=tc["split_digits"], **kwargs)
            record = {"trained": True, "mb_per_s": round(n_bytes[0] / 1e6 / max(time.perf_counter() - t0, 1e-9), 2)}
        require_eos(tok)
        self.layout.staged.mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(self.layout.staged)
        record.update(vocab_size=tok.vocab_size, documents=train, seconds=time.perf_counter() - t0)
        save_json(self.layout.work / "plan" / "tokenizer.json", record)
        return
        yield


class PlannedDocuments(PipelineStep):
    """Reads back this task's documents with the plan's verdicts, by their run-wide id; first turns the task's
    filter rejections into rejected/filter-<rank>.jsonl with run-wide ids."""

    name = "lit_llm planned documents"
    type = "📖 - READER"

    def __init__(self, layout: Layout, write_rejected: bool) -> None:
        super().__init__()
        self.layout, self.write_rejected = layout, write_rejected

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if self.write_rejected:
            self._renumber_filter_rejections(rank)
        for doc_id, text, n_bytes, plan in planned_documents(self.layout, rank):
            self.stat_update("documents")
            yield Document(text=text, id=str(doc_id), metadata={"id": doc_id, "bytes": n_bytes, **plan})

    def _renumber_filter_rejections(self, rank: int) -> None:
        from lit_llm.atomic import atomic_write

        offset = int(load_arrays(self.layout.plan(rank))["offset"])
        src = self.layout.filter_rejected / f"filter-{rank:05d}.jsonl"
        dst = self.layout.staged / "rejected" / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(dst, "w") as out:
            if src.is_file():
                with src.open(encoding="utf-8") as f:
                    for line in f:
                        record = json.loads(line)
                        record["id"] = offset + int(str(record["id"]).partition("/")[2])
                        out.write(json.dumps(record, ensure_ascii=False) + "\n")


class RemoveDuplicates(BaseFilter):
    """Drops what the plan removed, with reason exact_duplicate or near_duplicate, to the exclusion writer."""

    name = "lit_llm dedup filter"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        reason = doc.metadata["removed"]
        if not reason:
            return True
        doc.metadata["stage"] = "exact_dedup" if reason == EXACT else "near_dedup"
        return False, "exact_duplicate" if reason == EXACT else "near_duplicate"


class WriteTokenShards(PipelineStep):
    """Tokenizes the kept documents into train/<rank>.bin and val/<rank>.bin (EOS after each document), each with
    its sidecar naming ../tokenizer.json and its SHA-256. A split without documents in this task has no shard."""

    name = "lit_llm token shards"
    type = "🔢 - TOKENIZER"

    def __init__(self, layout: Layout) -> None:
        super().__init__()
        self.layout = layout

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tok = Tokenizer(self.layout.staged / "tokenizer.json")
        writers: dict[str, TokenWriter] = {}
        pending: dict[str, list[str]] = {"train": [], "val": []}

        def flush(split: str) -> None:
            if not pending[split]:
                return
            if split not in writers:
                path = self.layout.shard(split, rank)
                path.parent.mkdir(parents=True, exist_ok=True)
                writers[split] = TokenWriter(path, tok.vocab_size, tokenizer="../tokenizer.json")
            with self.track_time("batch"):
                append_documents(writers[split], tok, pending[split])
            self.stat_update(f"{split}_documents", value=len(pending[split]))
            pending[split] = []

        try:
            for doc in data:
                split = "val" if doc.metadata["val"] else "train"
                pending[split].append(doc.text)
                if len(pending[split]) >= _BATCH:
                    flush(split)
            for split in pending:
                flush(split)
        except BaseException as exc:
            for w in writers.values():
                w.abort(exc)
            raise
        for split in ("train", "val"):
            if split in writers:
                writers[split].close()
            else:  # a rerun after a different plan must not leave an old shard behind
                for stale in (self.layout.shard(split, rank), self.layout.shard(split, rank).with_suffix(".json")):
                    stale.unlink(missing_ok=True)
        return
        yield
