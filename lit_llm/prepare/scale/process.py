"""The process stage's blocks (one task per block of input pieces): read, clean, quality-filter, hash.

The same functions as the in-process path (`lit_llm.prepare.steps._process_batch`): `clean_text`,
`remove_boilerplate_lines`, `first_failing_rule`, `exact_hashes` and `MinHasher.band_hashes`, here as datatrove
blocks, so per-rule counts land in datatrove's stats (`dropped_rule:<name>`) and rejected documents go through an
exclusion writer. What the next stages need is written per task: the documents that passed (Arrow) and their
dedup signatures (.npz), under the run's `work/` folder.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import asdict

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.jsonl import JsonlWriter

from lit_llm.errors import DataError
from lit_llm.prepare.clean import CleanConfig, clean_text
from lit_llm.prepare.dedup import DedupConfig, MinHasher, dedup_words, exact_hashes
from lit_llm.prepare.filters import FilterConfig, first_failing_rule, remove_boilerplate_lines
from lit_llm.prepare.scale.layout import Layout, Piece, save_arrays, save_json
from lit_llm.prepare.sources import SourceStats, _builtin_size, iter_documents

_BATCH = 1000  # documents hashed together (MinHasher is vectorized over a batch)


class ReadPieces(PipelineStep):
    """lit_llm's readers (files, globs, hf:, builtin) over this task's pieces; each document's metadata holds its
    index within the task ("local"). Writes the task's SourceStats, which also give the next stages its offset."""

    name = "lit_llm sources"
    type = "📖 - READER"

    def __init__(self, pieces: list[list[Piece]], layout: Layout, text_field: str, txt_mode: str, strict: bool,
                 streaming: bool) -> None:
        super().__init__()
        self.pieces, self.layout = pieces, layout
        self.options = dict(text_field=text_field, txt_mode=txt_mode, strict=strict, streaming=streaming)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        stats = SourceStats()
        local = 0
        try:
            for piece in self.pieces[rank]:
                for text in _piece_documents(piece, stats, **self.options):
                    self.stat_update("documents")
                    yield Document(text=text, id=f"{rank}/{local}", metadata={"local": local})
                    local += 1
        except DataError as exc:
            raise DataError(f"task {rank}: {exc}") from exc
        save_json(self.layout.read_stats(rank), asdict(stats))


def _piece_documents(piece: Piece, stats: SourceStats, **options) -> Iterator[str]:
    if piece.start is None:
        yield from iter_documents([piece.path or piece.source], stats=stats, **options)
        return
    from lit_llm.prepare.corpus import generate_raw_corpus

    corpus = generate_raw_corpus(_builtin_size(piece.source))
    for text in itertools.islice(corpus, piece.start, piece.stop):
        stats.records += 1
        stats.documents += 1
        yield text


class CleanText(PipelineStep):
    """`clean_text` then `remove_boilerplate_lines`; counts bytes in and out and the lines removed."""

    name = "lit_llm clean"
    type = "✂️ - FORMATTER"

    def __init__(self, clean: CleanConfig, filters: FilterConfig) -> None:
        super().__init__()
        self.clean, self.filters = clean, filters

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            with self.track_time():
                raw_bytes = len(doc.text.encode("utf-8"))
                text = clean_text(doc.text, self.clean)
                text, lines = remove_boilerplate_lines(text, self.filters)
                doc.text = text
                doc.metadata["bytes"] = len(text.encode("utf-8"))
            self.stat_update("bytes_in", value=raw_bytes)
            self.stat_update("bytes_out", value=doc.metadata["bytes"])
            self.stat_update("boilerplate_lines_removed", value=lines)
            self.stat_update("documents")
            yield doc


class QualityFilter(BaseFilter):
    """The named quality rules (`first_failing_rule`): a rejected document is dropped with reason `rule:<name>`."""

    name = "lit_llm quality rules"

    def __init__(self, filters: FilterConfig, exclusion_writer=None) -> None:
        super().__init__(exclusion_writer)
        self.filters = filters

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        rule = first_failing_rule(doc.text, self.filters)
        return True if rule is None else (False, f"rule:{rule}")


def rejected_writer(folder, prefix: str) -> JsonlWriter:
    """An exclusion writer of rejected.jsonl's records: id, stage, reason (and duplicate_of), text."""
    return JsonlWriter(str(folder), output_filename=prefix + "-${rank}.jsonl", compression=None,
                       adapter=_rejected_record)


def _rejected_record(writer, doc: Document) -> dict:
    reason = doc.metadata["filter_reason"]
    stage = doc.metadata.get("stage", "filter")
    record = {"id": doc.metadata.get("id", doc.id), "stage": stage,
              "reason": reason[5:] if reason.startswith("rule:") else reason}
    if "duplicate_of" in doc.metadata:
        record["duplicate_of"] = doc.metadata["duplicate_of"]
    record["text"] = doc.text
    return record


class WriteSignatures(PipelineStep):
    """Hashes the documents that passed the rules (exact hash, MinHash band hashes) and writes them with their
    text: `work/signatures/<rank>.npz` (local, exact, bands, valid) and `work/documents/<rank>.arrow`."""

    name = "lit_llm dedup signatures"
    type = "🫂 - DEDUP"

    def __init__(self, dedup: DedupConfig, layout: Layout) -> None:
        super().__init__()
        self.dedup, self.layout = dedup, layout

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import pyarrow as pa

        hasher = MinHasher(self.dedup) if self.dedup.near else None
        local, exact, bands, valid = [], [], [], []
        schema = pa.schema([("local", pa.int64()), ("text", pa.large_string()), ("bytes", pa.int64())])
        path = self.layout.documents(rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with pa.OSFile(str(partial), "wb") as f, pa.ipc.new_file(f, schema) as writer:
            for batch in _batched(data, _BATCH):
                with self.track_time("batch"):
                    texts = [d.text for d in batch]
                    words = [dedup_words(t) for t in texts]
                    ids = [d.metadata["local"] for d in batch]
                    local.append(np.asarray(ids, dtype=np.int64))
                    exact.append(exact_hashes(texts, words) if self.dedup.exact else np.zeros(len(batch), np.uint64))
                    if hasher is not None:
                        b, v = hasher.band_hashes(texts, words)
                        bands.append(b)
                        valid.append(v)
                    writer.write_batch(pa.record_batch(
                        [pa.array(ids, pa.int64()), pa.array(texts, pa.large_string()),
                         pa.array([d.metadata["bytes"] for d in batch], pa.int64())], schema))
                self.stat_update("documents", value=len(batch))
                self.stat_update("bytes", value=sum(d.metadata["bytes"] for d in batch))
        n_bands = hasher.bands if hasher is not None else 0
        all_bands = np.concatenate(bands) if bands else np.empty((0, n_bands), np.uint64)
        # One member per band, so that a buckets task loads only the bands it handles.
        save_arrays(
            self.layout.signatures(rank),
            local=np.concatenate(local) if local else np.empty(0, np.int64),
            exact=np.concatenate(exact) if exact else np.empty(0, np.uint64),
            valid=np.concatenate(valid) if valid else np.zeros(0, bool),
            **{f"band_{j}": np.ascontiguousarray(all_bands[:, j]) for j in range(n_bands)},
        )
        partial.replace(path)
        return
        yield  # a generator that ends the pipeline


def _batched(docs: DocumentsPipeline, size: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
