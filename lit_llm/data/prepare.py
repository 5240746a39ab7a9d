"""The pretraining data pipeline: sources -> clean -> quality filters -> exact and near dedup -> tokenizer ->
token files, with a stats JSON in which every input document is accounted for.

Each step is a function over a `datasets.Dataset` (batched `map` with `num_proc`, so every core works) and
can be called on its own from Python; `prepare` runs them all. Intermediate datasets are cached as Arrow
files under `cache_dir`, keyed by a hash of everything that produced them, so changing the dedup threshold
reruns dedup but not cleaning. The whole run is keyed the same way: a second `prepare` with an unchanged
config and unchanged input files returns at once.

`lit-llm prepare --config configs/data/<name>.yaml` and `PretrainDataModule(prepare=...)` both end up here.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lit_llm.data import stats as report
from lit_llm.data import steps
from lit_llm.data.clean import CleanConfig
from lit_llm.data.dedup import DedupConfig
from lit_llm.data.filters import FilterConfig
from lit_llm.data.sources import SourceStats, _is_builtin, _resolve, iter_documents
from lit_llm.errors import ConfigError, DataError

log = logging.getLogger(__name__)

STATS_FILE = "prepare_stats.json"
REJECTED_FILE = "rejected.jsonl"


@dataclass
class TokenizerConfig:
    """Train a byte-level BPE, or use an existing tokenizer.json (GPT-2's, Llama's) given as `path`."""

    path: str | None = None
    vocab_size: int = 8192
    min_frequency: int = 2
    special_tokens: list[str] | None = None  # None: <pad> <unk> <s> </s> and the chat-role tokens


@dataclass
class PrepareConfig:
    """Everything `prepare` does; the YAML of `lit-llm prepare --config` has these keys."""

    sources: list[str] = field(default_factory=lambda: ["builtin"])
    output_dir: str = "data/prepared"
    text_field: str = "text"  # JSON key / table column / dataset column holding the text
    txt_mode: Literal["file", "paragraphs"] = "file"  # .txt: one document per file, or per blank-line block
    strict: bool = False  # a bad record raises (naming file:line) instead of being skipped and counted
    streaming: bool = True  # hf: datasets are streamed rather than downloaded whole into the HF cache
    max_documents: int | None = None  # stop reading after this many documents
    num_proc: int | None = None  # worker processes for cleaning, filtering and hashing; None: every core
    batch_size: int = 1000  # documents per map batch
    val_fraction: float = 0.05  # every round(1/val_fraction)-th kept document goes to val.bin
    write_rejected: bool = True  # rejected.jsonl: each removed document with its stage and reason
    cache_dir: str | None = None  # intermediate Arrow files; None: <output_dir>/cache
    clean: CleanConfig = field(default_factory=CleanConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)

    def __post_init__(self) -> None:
        if isinstance(self.sources, str) or not self.sources:
            raise ConfigError(f"prepare config: sources must be a non-empty list, got {self.sources!r}")
        if not 0.0 <= self.val_fraction <= 0.5:
            raise ConfigError(f"prepare config: val_fraction must be in [0, 0.5], got {self.val_fraction}")
        for name in ("num_proc", "batch_size", "max_documents"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"prepare config: {name} must be >= 1, got {value}")

    def to_dict(self) -> dict[str, Any]:
        """The options as plain JSON data (what prepare_stats.json and checkpoint hyperparameters hold)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "prepare config") -> PrepareConfig:
        """Build from a plain dict (a YAML file's content); unknown keys are an error naming the key."""
        nested = {"clean": CleanConfig, "filters": FilterConfig, "dedup": DedupConfig, "tokenizer": TokenizerConfig}
        kwargs = dict(_checked(cls, data, where))
        for key, sub in nested.items():
            if key in kwargs and not isinstance(kwargs[key], sub):
                kwargs[key] = sub(**_checked(sub, kwargs[key] or {}, f"{where}: {key}"))
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path) -> PrepareConfig:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"data config not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of prepare options, got a {type(data).__name__}")
        return cls.from_dict(data, where=str(path))


def _checked(cls: type, data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
    return data


# ---- the whole run --------------------------------------------------------------------------------


def prepare(config: PrepareConfig, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run every step, write the token files, tokenizer, stats and rejected documents to `output_dir`.

    Returns the stats (also written to prepare_stats.json). Skips the work when `output_dir` already holds
    the outputs of the same config and inputs, unless `force`.
    """
    out = Path(config.output_dir)
    key = config_hash(config)
    previous = _read_json(out / STATS_FILE)
    if not force and previous and previous.get("config_hash") == key and _outputs_exist(out, previous):
        log.info("%s is up to date (config hash %s)", out, key)
        return {**previous, "up_to_date": True}
    import datasets

    cache = Path(config.cache_dir) if config.cache_dir else out / "cache"
    was_enabled = datasets.is_progress_bar_enabled()
    (datasets.enable_progress_bars if progress else datasets.disable_progress_bars)()
    try:
        return _run(config, out, cache, key, progress)
    finally:
        (datasets.enable_progress_bars if was_enabled else datasets.disable_progress_bars)()


def _run(config: PrepareConfig, out: Path, cache: Path, key: str, progress: bool) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    with steps.RejectedWriter(out / REJECTED_FILE if config.write_rejected else None) as rejected:
        ds, source_stats, read_stage = read_documents(config, cache, progress)
        t0 = time.perf_counter()
        ds, seconds = steps.process_documents(
            ds, config.clean, config.filters, config.dedup, config.num_proc, config.batch_size, cache
        )
        ds, stages = steps.select_documents(ds, config.dedup, seconds, rejected)
        pass_seconds = time.perf_counter() - t0
    train_ds, val_ds = steps.split(ds, config.val_fraction)
    tc = config.tokenizer
    tok, tok_stage = steps.build_tokenizer(
        train_ds, tc.path, tc.vocab_size, tc.min_frequency, tc.special_tokens, config.batch_size, progress
    )
    splits, write_stage = steps.write_token_files({"train": train_ds, "val": val_ds}, tok, out, config.batch_size,
                                                  progress)
    stats = report.summarize(source_stats, [read_stage, *stages, tok_stage, write_stage], splits)
    stats.update(
        clean_filter_dedup_seconds=round(pass_seconds, 3),  # wall clock of the pass, all workers together
        config_hash=key,
        pipeline_version=steps.PIPELINE_VERSION,
        config=config.to_dict(),
        rejected_file=REJECTED_FILE if config.write_rejected else None,
    )
    (out / STATS_FILE).write_text(json.dumps(stats, indent=2))
    return stats


def read_documents(config: PrepareConfig, cache: Path, progress: bool = True):
    """The sources as a Dataset with columns id (input order) and text, cached as Arrow by a hash of the
    source options and the input files' sizes and modification times. Returns (dataset, source stats, stage)."""
    import datasets
    import pyarrow as pa
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    key = steps.fingerprint(_source_options(config), _input_fingerprint(config.sources), steps.PIPELINE_VERSION)
    folder = cache / f"read-{key}"
    arrow, stats_file = folder / "data.arrow", folder / "stats.json"
    cached = _read_json(stats_file)
    if cached is None or not arrow.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        source_stats = SourceStats()
        docs = iter_documents(
            config.sources, config.text_field, config.txt_mode, config.strict, config.streaming, source_stats
        )
        # islice stops before pulling the next document, so a capped read counts exactly the records it saw.
        docs = itertools.islice(docs, config.max_documents)
        schema = pa.schema([("id", pa.int64()), ("text", pa.large_string())])
        partial = arrow.with_suffix(".partial")
        with pa.OSFile(str(partial), "wb") as f, pa.ipc.new_stream(f, schema) as writer, tqdm(
            desc="read", unit="doc", disable=not progress
        ) as bar:
            for ids, texts in steps.batches(docs):
                columns = [pa.array(ids, pa.int64()), pa.array(texts, pa.large_string())]
                writer.write_batch(pa.record_batch(columns, schema))
                bar.update(len(ids))
        partial.rename(arrow)
        cached = asdict(source_stats)
        stats_file.write_text(json.dumps(cached))
    source_stats = SourceStats(**cached)
    if source_stats.documents == 0:
        raise DataError(
            f"no documents in {', '.join(config.sources)}: {source_stats.files} file(s), {source_stats.records} "
            f"record(s), {source_stats.bad_records} bad ({_reasons(source_stats.reasons)}), "
            f"{source_stats.empty_files} empty file(s)"
        )
    ds = datasets.Dataset.from_file(str(arrow))
    stage = report.stage(
        "read", source_stats.records, len(ds), time.perf_counter() - t0,
        removed={f"bad_record:{k}": v for k, v in source_stats.reasons.items()},
    )
    stage.update(decode_replacements=source_stats.decode_replacements, empty_files=source_stats.empty_files)
    return ds, source_stats, stage


# ---- hashing, caching helpers --------------------------------------------------------------------


def config_hash(config: PrepareConfig) -> str:
    """Hash of everything that determines the outputs: the config (less where things are written and how
    many processes run) and the input files' sizes and modification times."""
    data = config.to_dict()
    for irrelevant in ("output_dir", "cache_dir", "num_proc", "batch_size"):
        data.pop(irrelevant)
    tokenizer_file = config.tokenizer.path
    inputs = _input_fingerprint(config.sources)
    return steps.fingerprint(data, inputs, _file_digest(tokenizer_file), steps.PIPELINE_VERSION)


def _source_options(config: PrepareConfig) -> dict[str, Any]:
    return {k: getattr(config, k) for k in ("sources", "text_field", "txt_mode", "strict", "max_documents")}


def _input_fingerprint(sources: list[str]) -> list:
    """(path, size, mtime) of every local input file; hf: and builtin sources are named as they are."""
    out: list = []
    for source in sources:
        paths = None if _is_builtin(source) else _resolve(source)
        if paths is None:
            out.append(source)
            continue
        for p in paths:
            st = p.stat()
            out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return out


def _file_digest(path: str | None) -> str | None:
    if not path:
        return None
    p = Path(path)
    return steps.file_digest(p / "tokenizer.json" if p.is_dir() else p)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _outputs_exist(out: Path, stats: dict) -> bool:
    names = ["tokenizer.json", *(f"{s}.bin" for s in stats.get("splits", {}))]
    return all((out / n).is_file() for n in names)


def _reasons(reasons: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in reasons.items()) or "none"
