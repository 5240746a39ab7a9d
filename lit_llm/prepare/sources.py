"""Reading raw data for the training pipelines: local text, JSON Lines, JSON, Parquet and CSV files (directories,
globs, gzip variants) and Hugging Face datasets. `iter_documents` yields one document string at a time for
pretraining; `iter_records` yields whole records (dicts) for the fine-tuning and preference stages. Both share
the record formats' readers, so a JSON line, table row or dataset record is read the same way for either.

Bad input is handled in two ways. Whole-source problems (a path that matches nothing, an unsupported extension,
a missing column, an unreadable file) raise `DataError`. Single bad records (a malformed JSON line, a record
that is not a JSON object, and for documents one without the text field or whose text is not a string) are
skipped, warned about and counted in `SourceStats`, or raise `DataError` naming `file:line` with `strict=True`.
For every format, records seen = documents + bad_records, so a run's losses can be accounted for from the stats.
"""

from __future__ import annotations

import csv
import glob
import gzip
import json
import re
import sys
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lit_llm.errors import DataError

TXT_EXTENSIONS: tuple[str, ...] = (".txt", ".md", ".txt.gz", ".md.gz")
JSONL_EXTENSIONS: tuple[str, ...] = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
RECORD_EXTENSIONS: tuple[str, ...] = (*JSONL_EXTENSIONS, ".json", ".parquet", ".csv")
SUPPORTED_EXTENSIONS: tuple[str, ...] = (*TXT_EXTENSIONS, *RECORD_EXTENSIONS)

HF_PREFIX = "hf:"
# "builtin" or "builtin:N": the project's generated raw corpus (lit_llm.prepare.corpus.generate_raw_corpus), no files.
BUILTIN = "builtin"
BUILTIN_DEFAULT_DOCUMENTS = 6000
# Packaged `datasets` builders that read local files: "hf:json:data/*.jsonl" means
# load_dataset("json", data_files="data/*.jsonl"), not a dataset named "json" with split "data/*.jsonl".
HF_FILE_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow"})

# Paragraph breaks are found in the raw bytes: ASCII never occurs inside a multi-byte UTF-8 sequence, so the
# split is safe before decoding, and each block can then be decoded (and counted as replaced) on its own.
_PARAGRAPH_BREAK_RE = re.compile(rb"\n[ \t\r\f\v]*\n\s*")
_UTF8_BOM = b"\xef\xbb\xbf"
_GLOB_CHARS_RE = re.compile(r"[*?\[]")
_RECORD_FORMATS = f"record sources are {', '.join(RECORD_EXTENSIONS)} files and hf: datasets"


class SourceWarning(UserWarning):
    """A skipped record or an empty file; the data were read, but not all of them became documents."""


@dataclass
class SourceStats:
    """Counts filled in by `iter_documents` and `iter_records` as they read; pass one instance to accumulate
    over several calls."""

    documents: int = 0  # documents yielded (by iter_records: records yielded)
    files: int = 0  # local files opened (hf: sources are not files)
    records: int = 0  # records seen: text documents/paragraphs, non-blank JSON lines, JSON/table rows
    bad_records: int = 0  # malformed JSON lines, non-objects, records without a string text field: skipped
    decode_replacements: int = 0  # documents whose bytes were not valid UTF-8 (decoded with U+FFFD replacement)
    empty_files: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # bad-record counts by reason

    def _bad(self, reason: str) -> None:
        self.bad_records += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


def iter_documents(
    sources: list[str],
    text_field: str = "text",
    txt_mode: Literal["file", "paragraphs"] = "file",
    strict: bool = False,
    streaming: bool = True,
    stats: SourceStats | None = None,
) -> Iterator[str]:
    """Yield the documents of `sources` in order: each source in the order given, the files a directory or
    glob expands to in sorted path order.

    A source is a file, a directory (recursed; hidden files and directories are skipped), a glob (``**``
    recurses), ``hf:NAME_OR_PATH[@CONFIG][:SPLIT]`` for ``datasets.load_dataset(NAME_OR_PATH, CONFIG,
    split=SPLIT or "train")``,
    or ``hf:BUILDER:DATA_FILES`` for a packaged builder (json, csv, parquet, text, arrow) over local files,
    or ``builtin[:N]`` for N documents of the generated raw corpus (default 6000).
    `text_field` names the text in JSON records, table columns and datasets; `txt_mode` makes a .txt/.md file
    one document, or one document per blank-line-separated paragraph. With `strict`, the first bad record
    raises `DataError` instead of being skipped.
    """
    if txt_mode not in ("file", "paragraphs"):
        raise DataError(f"txt_mode must be 'file' or 'paragraphs', got {txt_mode!r}")
    stats = stats if stats is not None else SourceStats()
    # Resolve everything first, so that a typo in the last source fails before hours of reading the first.
    resolved = _resolve_all(sources)
    for source, paths in resolved:
        if paths is None and _is_builtin(source):
            yield from _iter_builtin(source, stats)
            continue
        if paths is None:
            bad = _BadRecords(source, text_field, strict, stats)
            # Only the text column is selected, so the other columns are never decoded.
            records = _hf_records(source, [text_field], streaming, stats, narrow_each=False)
            yield from (text for _, text in _accepted(records, bad, stats))
            continue
        for path in paths:
            stats.files += 1
            if _extension(path) in TXT_EXTENSIONS:
                yield from _iter_txt(path, txt_mode, stats)
                continue
            bad = _BadRecords(str(path), text_field, strict, stats)
            # Parquet and CSV read only the text column; JSON records are parsed whole either way.
            yield from (text for _, text in _accepted(_file_records(path, [text_field], bad, stats), bad, stats))


def iter_records(
    sources: list[str],
    strict: bool = False,
    streaming: bool = False,
    stats: SourceStats | None = None,
    columns: list[str] | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (location, record) for each record of `sources`: .jsonl/.ndjson (+.gz), .json (list or {"data": [...]}),
    .parquet, .csv files, directories and globs of them (same resolution rules as iter_documents), and hf:NAME[:SPLIT] /
    hf:BUILDER:DATA_FILES through datasets.load_dataset.

    `location` names where the record came from, for the caller's own messages ("data/sft.jsonl:17: record has
    no 'output' field"): ``path:LINE`` for JSON Lines (1-based file line), ``path[record I]`` for a JSON list
    (0-based), ``path row N`` for Parquet and CSV (1-based data row) and ``hf:...[record I]`` for datasets.
    `columns` makes Parquet, CSV and datasets read only those columns (a missing one raises `DataError` naming
    the source and its columns); JSON records are returned whole. CSV values are strings, as written.

    A malformed JSON line or a record that is not a JSON object is a bad record: counted in `stats` (reasons
    ``malformed_json``, ``not_an_object``) and warned about with `SourceWarning`, or, with `strict`, raises
    `DataError` naming its location. Here ``stats.documents`` counts the records yielded, so
    ``stats.records == stats.documents + stats.bad_records``. Text files (.txt, .md) and ``builtin`` hold no
    records and raise `DataError` before anything is read.
    """
    if columns is not None and (isinstance(columns, str) or not columns):
        raise DataError(f"columns must be None or a non-empty list of column names, got {columns!r}")
    stats = stats if stats is not None else SourceStats()
    resolved = _resolve_all(sources)
    for source, paths in resolved:
        if paths is None and _is_builtin(source):
            raise DataError(f"{source}: the built-in corpus is plain text, not records; {_RECORD_FORMATS}")
        for path in paths or ():
            if _extension(path) in TXT_EXTENSIONS:
                where = str(path) if Path(source).expanduser() == path else f"{source}: {path}"
                raise DataError(f"{where}: a text file is not a record format; {_RECORD_FORMATS}")
    for source, paths in resolved:
        if paths is None:
            bad = _BadRecords(source, None, strict, stats)
            yield from _accepted(_hf_records(source, columns, streaming, stats, narrow_each=True), bad, stats)
            continue
        for path in paths:
            stats.files += 1
            bad = _BadRecords(str(path), None, strict, stats)
            yield from _accepted(_file_records(path, columns, bad, stats), bad, stats)


# --- resolving sources ------------------------------------------------------------------------


def _resolve_all(sources: list[str]) -> list[tuple[str, list[Path] | None]]:
    if isinstance(sources, str):
        # A bare string would otherwise be read character by character as a list of one-letter paths.
        raise DataError(f"sources must be a list of paths, got the string {sources!r}; wrap it in a list")
    return [(source, _resolve(source)) for source in sources]


def _extension(path: Path) -> str | None:
    name = path.name.lower()
    # Longest first, so that "x.jsonl.gz" is gzipped JSON Lines rather than an unsupported ".gz".
    for ext in sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True):
        if name.endswith(ext):
            return ext
    return None


def _check_supported(path: Path) -> Path:
    if _extension(path) is None:
        raise DataError(f"{path}: unsupported file type; supported extensions are {', '.join(SUPPORTED_EXTENSIONS)}")
    return path


def _files_under(root: Path) -> list[Path]:
    # Hidden entries are editor, VCS and OS droppings (.git, .DS_Store), never data; anything else with an
    # unknown extension raises rather than being skipped, so data in an unexpected format is not silently lost.
    return sorted(
        _check_supported(p)
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _resolve(source: str) -> list[Path] | None:
    """The files `source` names, sorted; None for an hf: or builtin source."""
    if source.startswith(HF_PREFIX):
        return None
    if _is_builtin(source):
        _builtin_size(source)  # fail early on "builtin:many"
        return None
    path = Path(source).expanduser()
    if path.is_file():
        return [_check_supported(path)]
    if path.is_dir():
        files = _files_under(path)
        if not files:
            raise DataError(f"{source}: directory contains no data files")
        return files
    if _GLOB_CHARS_RE.search(source):
        files: list[Path] = []
        for match in sorted(glob.glob(str(path), recursive=True)):
            match_path = Path(match)
            if match_path.is_dir():
                files.extend(_files_under(match_path))
            elif match_path.is_file():
                files.append(_check_supported(match_path))
        if files:
            return files
    raise DataError(f"{source}: no such file, directory or glob match")


# --- local files ------------------------------------------------------------------------------


def _open_bytes(path: Path) -> Any:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _read_bytes(path: Path) -> bytes:
    try:
        with _open_bytes(path) as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        # gzip reports a truncated or non-gzip file as OSError/EOFError; name the file rather than the codec.
        raise DataError(f"{path}: cannot read: {e}") from e


def _decode(data: bytes, stats: SourceStats) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        stats.decode_replacements += 1
        return data.decode("utf-8", errors="replace")


def _warn(message: str) -> None:
    """Warn as from the first caller outside this module, however deeply its readers are nested."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, SourceWarning, stacklevel=level)


def _warn_empty(path: Path, stats: SourceStats) -> None:
    stats.empty_files += 1
    _warn(f"{path}: empty file, no documents")


def _iter_txt(path: Path, txt_mode: str, stats: SourceStats) -> Iterator[str]:
    data = _read_bytes(path).removeprefix(_UTF8_BOM)
    if not data.strip():
        _warn_empty(path, stats)
        return
    blocks = [data] if txt_mode == "file" else [b for b in _PARAGRAPH_BREAK_RE.split(data) if b.strip()]
    for block in blocks:
        stats.records += 1
        text = _decode(block.strip() if txt_mode == "paragraphs" else block, stats)
        stats.documents += 1
        yield text


class _BadRecords:
    """Skips or raises on bad records of one source, and warns once per source about the shape problems
    (a malformed line is warned about on its own: it usually means a truncated or concatenated file).
    With a `text_field` it accepts a record's string text (documents), without one any JSON object (records)."""

    def __init__(self, where: str, text_field: str | None, strict: bool, stats: SourceStats) -> None:
        self.where, self.text_field, self.strict, self.stats = where, text_field, strict, stats
        self.field_problems = 0
        self.first_location = ""

    def malformed(self, location: str, error: Exception) -> None:
        message = f"{location}: malformed JSON ({error})"
        if self.strict:
            raise DataError(message)
        self.stats._bad("malformed_json")
        _warn(f"{message}; line skipped")

    def accept(self, record: Any, location: str) -> Any:
        """The record's text (documents) or the record itself (records); None, after counting it, if bad."""
        if self.text_field is not None:
            return self.text_of(record, location)
        if isinstance(record, dict):
            return record
        return self._skip(location, "not_an_object", f"record is a {type(record).__name__}, not an object")

    def text_of(self, record: Any, location: str) -> str | None:
        """The record's text, or None (after counting it) when the record has none."""
        if not isinstance(record, dict):
            reason, detail = "not_an_object", f"record is a {type(record).__name__}, not an object"
        elif self.text_field not in record:
            keys = ", ".join(map(str, record)) or "none"
            reason, detail = "missing_field", f"record has no {self.text_field!r} field (fields: {keys})"
        elif not isinstance(record[self.text_field], str):
            value_type = type(record[self.text_field]).__name__
            reason, detail = "not_a_string", f"field {self.text_field!r} is a {value_type}, not a string"
        else:
            return record[self.text_field]
        return self._skip(location, reason, detail)

    def _skip(self, location: str, reason: str, detail: str) -> None:
        if self.strict:
            raise DataError(f"{location}: {detail}")
        self.stats._bad(reason)
        self.field_problems += 1
        self.first_location = self.first_location or f"{location}: {detail}"

    def finish(self) -> None:
        if self.field_problems:
            what = "that are not JSON objects"
            if self.text_field is not None:
                what = f"without a string {self.text_field!r} field"
            _warn(f"{self.where}: skipped {self.field_problems} record(s) {what}; first at {self.first_location}")


# A record as a reader yields it: (location, parsed record, whether its bytes were not valid UTF-8).
_Read = tuple[str, Any, bool]


def _accepted(records: Iterator[_Read], bad: _BadRecords, stats: SourceStats) -> Iterator[tuple[str, Any]]:
    """(location, text or record) for each record of one source that `bad` accepts; the rest are counted."""
    for location, record, replaced in records:
        value = bad.accept(record, location)
        if value is not None:
            stats.decode_replacements += replaced
            stats.documents += 1
            yield location, value
    bad.finish()


def _file_records(path: Path, columns: list[str] | None, bad: _BadRecords, stats: SourceStats) -> Iterator[_Read]:
    """The records of a JSON Lines, JSON, Parquet or CSV file; `columns` narrows tables (None: all columns)."""
    ext = _extension(path)
    if ext in JSONL_EXTENSIONS:
        return _jsonl_records(path, bad, stats)
    if ext == ".json":
        return _json_records(path, stats)
    if ext == ".parquet":
        return _parquet_records(path, columns, stats)
    return _csv_records(path, columns, stats)


def _jsonl_records(path: Path, bad: _BadRecords, stats: SourceStats) -> Iterator[_Read]:
    seen = 0
    try:
        with _open_bytes(path) as f:
            # Binary lines split on b"\n" only; text-mode or str.splitlines would also split on \r, U+2028 and
            # U+2029, which JSON allows unescaped inside strings, and so break valid records into bad lines.
            for lineno, raw in enumerate(f, start=1):
                if lineno == 1:
                    raw = raw.removeprefix(_UTF8_BOM)
                if not raw.strip():
                    continue
                seen += 1
                stats.records += 1
                location = f"{path}:{lineno}"
                try:
                    line = raw.decode("utf-8")
                    replaced = False
                except UnicodeDecodeError:
                    line, replaced = raw.decode("utf-8", errors="replace"), True
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    bad.malformed(location, e)
                    continue
                yield location, record, replaced
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read: {e}") from e
    if not seen:
        _warn_empty(path, stats)


def _json_records(path: Path, stats: SourceStats) -> Iterator[_Read]:
    data = _read_bytes(path)
    if not data.strip():
        _warn_empty(path, stats)
        return
    try:
        # A whole-file document cannot be partly read, so a syntax error here is the file's fault, not a record's.
        parsed = json.loads(data.removeprefix(_UTF8_BOM).decode("utf-8", errors="replace"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON ({e})") from e
    if isinstance(parsed, dict) and isinstance(parsed.get("data"), list):
        records = parsed["data"]
    elif isinstance(parsed, list):
        records = parsed
    else:
        raise DataError(f'{path}: expected a list of records or {{"data": [...]}}, got a {type(parsed).__name__}')
    if not records:
        _warn_empty(path, stats)
        return
    for index, record in enumerate(records):
        stats.records += 1
        yield f"{path}[record {index}]", record, False


def _check_columns(where: str, columns: list[str] | None, available: list[str]) -> None:
    missing = [c for c in columns or () if c not in available]
    if missing:
        names = ("column " if len(missing) == 1 else "columns ") + ", ".join(map(repr, missing))
        raise DataError(f"{where}: no {names}; available columns: {', '.join(available) or 'none'}")


def _table_records(path: Path, batches: Iterator[Any], stats: SourceStats) -> Iterator[_Read]:
    """Table rows as records; a null cell stays None (and is a bad record to documents, like in JSON)."""
    row = 0
    for batch in batches:
        for record in batch.to_pylist():
            row += 1
            stats.records += 1
            yield f"{path} row {row}", record, False


def _parquet_records(path: Path, columns: list[str] | None, stats: SourceStats) -> Iterator[_Read]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: cannot read Parquet: {e}") from e
    _check_columns(str(path), columns, parquet.schema_arrow.names)
    if parquet.metadata.num_rows == 0:
        _warn_empty(path, stats)
        return
    # Batches keep memory bounded on large files, and only the wanted columns are decoded.
    yield from _table_records(path, parquet.iter_batches(columns=columns), stats)


def _csv_records(path: Path, columns: list[str] | None, stats: SourceStats) -> Iterator[_Read]:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        header = next(csv.reader(f), None)
    if header is None:
        _warn_empty(path, stats)
        return
    header[0] = header[0].removeprefix("\ufeff")
    _check_columns(str(path), columns, header)
    wanted = header if columns is None else columns
    convert = pcsv.ConvertOptions(
        include_columns=wanted,
        # Read as text whatever it looks like: a column of "1", "2" must stay strings, and "" or "NA"
        # are documents (empty or not), not nulls.
        column_types=dict.fromkeys(wanted, pa.string()),
        strings_can_be_null=False,
    )
    # Quoted fields may span lines, so positions are reported as data rows, not file lines.
    parse = pcsv.ParseOptions(newlines_in_values=True)
    try:
        # Read whole, so that a parse error anywhere is raised before any of the file's records are yielded.
        table = pcsv.open_csv(path, parse_options=parse, convert_options=convert).read_all()
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: cannot read CSV: {e}") from e
    if not table.num_rows:
        _warn_empty(path, stats)
        return
    yield from _table_records(path, iter(table.to_batches()), stats)


# --- the built-in generated corpus ------------------------------------------------------------


def _is_builtin(source: str) -> bool:
    return source == BUILTIN or source.startswith(BUILTIN + ":")


def _builtin_size(source: str) -> int:
    size = source.partition(":")[2] if ":" in source else str(BUILTIN_DEFAULT_DOCUMENTS)
    if not size.isdigit() or int(size) < 1:
        raise DataError(f"{source}: expected {BUILTIN} or {BUILTIN}:N with N a positive number of documents")
    return int(size)


def _iter_builtin(source: str, stats: SourceStats) -> Iterator[str]:
    from lit_llm.prepare.corpus import generate_raw_corpus

    for text in generate_raw_corpus(_builtin_size(source)):
        stats.records += 1
        stats.documents += 1
        yield text


# --- Hugging Face datasets --------------------------------------------------------------------


def _parse_hf(source: str) -> tuple[str, dict[str, Any], str]:
    """(path, extra load_dataset kwargs, split) of an hf: source."""
    rest = source[len(HF_PREFIX) :]
    name, sep, tail = rest.partition(":")
    if not name:
        raise DataError(f"{source}: expected hf:NAME_OR_PATH[:SPLIT] or hf:BUILDER:DATA_FILES")
    if name in HF_FILE_BUILDERS:
        if not tail:
            raise DataError(f"{source}: the {name} builder needs data files, e.g. hf:{name}:data/*.{name}")
        return name, {"data_files": tail}, "train"
    # Everything after the first colon is the split, so slices such as "train[:10%]" survive; NAME@CONFIG names a
    # configuration (hf:openai/gsm8k@main:test).
    name, at, config = name.partition("@")
    if at and not (name and config):
        raise DataError(f"{source}: expected hf:NAME@CONFIG[:SPLIT], e.g. hf:openai/gsm8k@main:train")
    return name, ({"name": config} if at else {}), tail or "train"


def _hf_records(
    source: str, columns: list[str] | None, streaming: bool, stats: SourceStats, narrow_each: bool
) -> Iterator[_Read]:
    """The records of an hf: source, only `columns` of them if given. A streaming dataset may not know its
    columns before the first record; then records come whole, or with `narrow_each` are narrowed one by one."""
    import datasets

    name, kwargs, split = _parse_hf(source)
    data_files = kwargs.get("data_files")
    if data_files and "://" not in data_files and not glob.glob(str(Path(data_files).expanduser()), recursive=True):
        # datasets 5.2's json builder meets an empty file list with a bare StopIteration, which inside this
        # generator turns into an unexplained RuntimeError; local patterns are checked here instead.
        raise DataError(f"{source}: no files match {data_files!r}")
    try:
        dataset = datasets.load_dataset(name, split=split, streaming=streaming, **kwargs)
    except StopIteration as e:
        # The same quirk when the files exist but hold no records.
        raise DataError(f"{source}: no records in the data files") from e
    except FileNotFoundError as e:
        raise DataError(f"{source}: no such dataset or data files: {e}") from e
    except ValueError as e:
        # An unknown split is a ValueError; so are bad builder arguments. Both are the source string's fault.
        raise DataError(f"{source}: cannot load: {e}") from e
    available = dataset.column_names
    if available is not None:
        _check_columns(source, columns, available)
        if columns is not None and list(available) != columns:
            dataset = dataset.select_columns(columns)
    for index, record in enumerate(dataset):
        stats.records += 1
        location = f"{source}[record {index}]"
        if narrow_each and available is None and columns is not None:
            _check_columns(location, columns, list(record))
            record = {c: record[c] for c in columns}
        yield location, record, False
