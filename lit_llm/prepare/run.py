"""The pretraining data pipeline: sources -> clean -> quality filters -> exact and near dedup -> tokenizer ->
token files, with a stats JSON in which every input document is accounted for.

Each step is a function over a `datasets.Dataset` (batched `map` with `num_proc`, so every core works) and
can be called on its own from Python; `prepare` runs them all. Intermediate datasets are cached as Arrow
files under `cache_dir`, keyed by a hash of everything that produced them, so changing the dedup threshold
reruns dedup but not cleaning. The whole run is keyed the same way: a second `prepare` with an unchanged
config and unchanged input files returns at once.

Outputs appear whole or not at all: a run holds a lock on its folders (a second run refuses at once, naming the
first), writes everything into a temporary folder inside `output_dir`, and only then removes the old
fingerprint (prepare_stats.json), moves the token files, tokenizer and rejected documents into place and writes
the new fingerprint last. Whatever kills a run, the folder holds either the old outputs with their fingerprint,
or outputs without one, which the next run redoes. Being "up to date" also needs every token file's sidecar to
match the stats and to name the SHA-256 of the tokenizer.json beside it.

`lit-llm prepare --config configs/data/<name>.yaml` and `PretrainDataModule(prepare=...)` both end up here.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lit_llm.atomic import (
    TEMP_PREFIX,
    FolderLock,
    OutputError,
    atomic_write_text,
    describe_os_error,
    fsync_dir,
    remove_stale_temp_files,
)
from lit_llm.prepare import stats as report
from lit_llm.prepare import steps
from lit_llm.prepare.clean import CleanConfig
from lit_llm.prepare.dedup import DedupConfig
from lit_llm.prepare.filters import FilterConfig
from lit_llm.prepare.scale.config import ExecutorConfig
from lit_llm.prepare.shards import file_digest, open_token_file, sidecar_path
from lit_llm.prepare.sources import SourceStats, _is_builtin, _resolve, iter_documents
from lit_llm.text.tokenizer import SPECIAL_TOKENS
from lit_llm.errors import ConfigError, DataError, LitLLMError

log = logging.getLogger(__name__)

STATS_FILE = "prepare_stats.json"
REJECTED_FILE = "rejected.jsonl"
# Everything a run writes beside the stats; a file a run does not write (val.bin with val_fraction 0) is removed.
OUTPUT_FILES = ("train.bin", "train.json", "val.bin", "val.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", REJECTED_FILE)
_STAGING_PREFIX = f"{TEMP_PREFIX}prepare-"
_DATASETS_TEMP = re.compile(r"tmp[a-z0-9_]{8}")  # tempfile's names: what datasets.map writes before renaming


@dataclass
class TokenizerConfig:
    """Train a byte-level BPE, or use an existing tokenizer.json (GPT-2's, Llama's) given as `path`."""

    path: str | None = None
    vocab_size: int = 8192
    min_frequency: int = 2
    special_tokens: list[str] | None = None  # None: <pad> <unk> <s> </s> and the chat-role tokens
    split_digits: bool = False  # one token per digit, as Llama and GPT-4 do: arithmetic sees place value

    def __post_init__(self) -> None:
        if self.path:
            return
        specials = list(dict.fromkeys(SPECIAL_TOKENS if self.special_tokens is None else self.special_tokens))
        minimum = 256 + len(specials)
        if isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int) or self.vocab_size < minimum:
            raise ConfigError(
                f"prepare config: tokenizer.vocab_size must be at least {minimum}, got {self.vocab_size!r}: a "
                f"byte-level BPE holds all 256 byte values plus the {len(specials)} special tokens before any merge"
            )
        if isinstance(self.min_frequency, bool) or not isinstance(self.min_frequency, int) or self.min_frequency < 1:
            raise ConfigError(
                f"prepare config: tokenizer.min_frequency must be an integer >= 1, got {self.min_frequency!r}"
            )


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
    # None: in this process. {type: local | slurm | ray, tasks, workers, ...}: on datatrove (lit_llm.prepare.scale)
    executor: ExecutorConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.executor, dict):
            self.executor = ExecutorConfig.from_dict(self.executor)
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
        if kwargs.get("executor") is not None:
            kwargs["executor"] = ExecutorConfig.from_dict(kwargs["executor"], where)
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
    the whole outputs of the same config and inputs, unless `force`. Raises OutputError at once when another
    run holds `output_dir` (or `cache_dir`). With `config.executor` the steps run on datatrove instead
    (`lit_llm.prepare.scale`): token shards under train/ and val/, one per task.
    """
    out = Path(config.output_dir)
    cache = Path(config.cache_dir) if config.cache_dir else out / "cache"
    key = config_hash(config)
    if config.executor is not None:
        from lit_llm.prepare.scale.launch import run_on_executor

        return run_on_executor(config, key, options_hash(config), force=force)
    if not force and out.is_dir() and not os.access(out, os.W_OK):
        # A read-only folder may hold finished outputs (a shared, prepared data set): reading them needs no lock.
        # If it does not, taking the lock below says the folder cannot be written.
        previous = _up_to_date(out, key)
        if previous is not None:
            return previous
    try:
        with _locked(out, cache):
            _remove_stale_files(out, cache)
            if not force:
                previous = _up_to_date(out, key)
                if previous is not None:
                    return previous
            with _progress_bars(progress):
                return _run(config, out, cache, key, progress)
    except OSError as exc:
        folder = _output_folder_of(exc, out, cache)
        if isinstance(exc, LitLLMError) or folder is None:
            raise
        raise OutputError(describe_os_error(exc, folder)) from None


@contextlib.contextmanager
def _progress_bars(on: bool) -> Iterator[None]:
    """datasets' progress bars on or off for the run, and back as they were after."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    (datasets.enable_progress_bars if on else datasets.disable_progress_bars)()
    try:
        yield
    finally:
        (datasets.enable_progress_bars if was_enabled else datasets.disable_progress_bars)()


def _run(config: PrepareConfig, out: Path, cache: Path, key: str, progress: bool) -> dict[str, Any]:
    # Everything is written here first and moved into `out` only once the whole run has succeeded.
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out))
    try:
        with steps.RejectedWriter(staging / REJECTED_FILE if config.write_rejected else None) as rejected:
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
            train_ds, tc.path, tc.vocab_size, tc.min_frequency, tc.special_tokens, config.batch_size, progress,
            tc.split_digits
        )
        splits, write_stage = steps.write_token_files({"train": train_ds, "val": val_ds}, tok, staging,
                                                      config.batch_size, progress)
        stats = report.summarize(source_stats, [read_stage, *stages, tok_stage, write_stage], splits)
        stats.update(
            clean_filter_dedup_seconds=round(pass_seconds, 3),  # wall clock of the pass, all workers together
            config_hash=key,
            pipeline_version=steps.PIPELINE_VERSION,
            config=config.to_dict(),
            rejected_file=REJECTED_FILE if config.write_rejected else None,
        )
        _commit(staging, out, stats)
        return stats
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _commit(staging: Path, out: Path, stats: dict[str, Any]) -> None:
    """Move a finished run's files from `staging` into `out`, the fingerprint (the stats) removed first and
    written last: until it is back, no check calls the folder up to date."""
    produced = [name for name in OUTPUT_FILES if (staging / name).is_file()]
    (out / STATS_FILE).unlink(missing_ok=True)
    fsync_dir(out)
    for name in produced:
        _fsync(staging / name)
        os.replace(staging / name, out / name)
    for name in OUTPUT_FILES:
        if name not in produced:
            (out / name).unlink(missing_ok=True)
    fsync_dir(out)
    atomic_write_text(out / STATS_FILE, json.dumps(stats, indent=2))


def _fsync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def _locked(out: Path, cache: Path) -> Iterator[None]:
    """Hold the output folder, and the cache folder when it is elsewhere, for the whole run."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(FolderLock(out, "lit-llm prepare"))
        if not _inside(cache, out):
            stack.enter_context(FolderLock(cache, "lit-llm prepare"))
        yield


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _remove_stale_files(out: Path, cache: Path) -> None:
    """Delete what a killed run left behind (call holding the locks): its temporary folder in `out`, temporary
    files of lit_llm.atomic, datasets' unrenamed map outputs and the read step's .partial files."""
    removed = 0
    for staging in out.glob(f"{_STAGING_PREFIX}*"):
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
            removed += 1
    stale = [*out.glob("*.bin.tmp"), *cache.glob("read-*/*.partial")]  # *.bin.tmp: older TokenWriter versions
    if cache.is_dir():
        stale += [p for p in cache.iterdir() if _is_datasets_temp(p)]
    for p in stale:
        if p.is_file():
            p.unlink(missing_ok=True)
            removed += 1
    for folder in (out, cache, *cache.glob("read-*")):
        if folder.is_dir():
            removed += remove_stale_temp_files(folder)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run in %s", removed, out)


def _is_datasets_temp(path: Path) -> bool:
    """A file datasets.map was writing when its run was killed: a tempfile name, and empty or an Arrow stream (the
    content check keeps a cache_dir shared with other programs, /tmp say, safe from this clean-up)."""
    if not _DATASETS_TEMP.fullmatch(path.name) or not path.is_file():
        return False
    try:
        with path.open("rb") as f:
            return f.read(4) in (b"", b"\xff\xff\xff\xff")  # the continuation marker an Arrow stream starts with
    except OSError:
        return False


def _up_to_date(out: Path, key: str) -> dict[str, Any] | None:
    """The stats of `out` when it holds the whole outputs of the config and inputs hashed to `key`, else None."""
    previous = _read_json(out / STATS_FILE)
    if not previous or previous.get("config_hash") != key:
        return None
    problem = _outputs_problem(out, previous)
    if problem is not None:
        log.warning("%s does not hold the whole outputs of this config: %s", out, problem)
        return None
    log.info("%s is up to date (config hash %s)", out, key)
    return {**previous, "up_to_date": True}


def _outputs_problem(out: Path, stats: dict) -> str | None:
    """Why the files in `out` are not the ones `stats` describes, or None when they are."""
    if not (out / "tokenizer.json").is_file():
        return f"{out / 'tokenizer.json'} is missing"
    if not stats.get("splits"):
        return f"{out / STATS_FILE} records no token files"
    for name, meta in stats["splits"].items():
        path = out / f"{name}.bin"
        sidecar = sidecar_path(path)
        if _read_json(sidecar) != meta:
            return f"{sidecar} is not the sidecar {STATS_FILE} records"
        if not meta.get("tokenizer_sha256"):
            return f"{sidecar} records no tokenizer hash (written by an older lit_llm)"
        try:
            open_token_file(path)  # checks the size against the sidecar and the tokenizer against its hash
        except DataError as exc:
            return str(exc)
    return None


def _output_folder_of(exc: OSError, out: Path, cache: Path) -> Path | None:
    """The folder an OSError a user can fix (permissions, space) of writing the outputs or the cache is about;
    None for any other error, such as one of reading an input."""
    if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
        return None
    if exc.filename is None:
        return out if exc.errno in (errno.ENOSPC, errno.EDQUOT) else None
    return next((folder for folder in (cache, out) if _inside(Path(exc.filename), folder)), None)


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
        atomic_write_text(stats_file, json.dumps(cached))
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
    inputs = _input_fingerprint(config.sources)
    return steps.fingerprint(_options(config), inputs, _file_digest(config.tokenizer.path), steps.PIPELINE_VERSION)


def options_hash(config: PrepareConfig) -> str:
    """`config_hash` without the input files (an executor run follows those task by task)."""
    return steps.fingerprint(_options(config), _file_digest(config.tokenizer.path), steps.PIPELINE_VERSION)


def _options(config: PrepareConfig) -> dict[str, Any]:
    data = config.to_dict()
    for irrelevant in ("output_dir", "cache_dir", "num_proc", "batch_size", "executor"):
        data.pop(irrelevant)
    return data


def _source_options(config: PrepareConfig) -> dict[str, Any]:
    return {k: getattr(config, k) for k in ("sources", "text_field", "txt_mode", "strict", "max_documents")}


def _input_fingerprint(sources: list[str]) -> list:
    """(path, size, mtime) of every local input file; hf: sources are named as they are, builtin ones with a digest
    of the code that generates them."""
    out: list = []
    for source in sources:
        if _is_builtin(source):
            from lit_llm.prepare.corpus import generator_digest

            out.append([source, generator_digest()])
            continue
        paths = _resolve(source)
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
    return file_digest(p / "tokenizer.json" if p.is_dir() else p)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _reasons(reasons: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in reasons.items()) or "none"
