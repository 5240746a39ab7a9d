"""Reading raw documents: every file format, paragraphs mode, bad UTF-8, bad records (skipped or strict), directory
and glob sources, source errors, empty files, tables with and without the text column, local hf: datasets, stats.
Reading whole records (iter_records): every record format, locations, bad records, columns, rejected sources."""

from __future__ import annotations

import gzip
import json
import re
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lit_llm.prepare.sources import SourceStats, SourceWarning, iter_documents, iter_records
from lit_llm.errors import DataError


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read(sources: list[str], **kwargs: object) -> tuple[list[str], SourceStats]:
    stats = SourceStats()
    return list(iter_documents(sources, stats=stats, **kwargs)), stats


def assert_accounted(stats: SourceStats) -> None:
    assert stats.records == stats.documents + stats.bad_records
    assert sum(stats.reasons.values()) == stats.bad_records


# --- formats ----------------------------------------------------------------------------------


def test_txt_and_md_are_one_document_per_file(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("first doc\nline two\n", encoding="utf-8")
    (tmp_path / "b.md").write_text("# Title\n\nbody", encoding="utf-8")
    docs, stats = read([str(tmp_path / "a.txt"), str(tmp_path / "b.md")])
    assert docs == ["first doc\nline two\n", "# Title\n\nbody"]
    assert (stats.documents, stats.files, stats.bad_records) == (2, 2, 0)


def test_jsonl_and_ndjson_yield_records_in_order_and_ignore_blank_lines(tmp_path: Path) -> None:
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"text": "one"}\n\n{"text": "two", "id": 2}\n   \n', encoding="utf-8")
    ndjson = write_jsonl(tmp_path / "b.ndjson", [{"text": "three"}])
    docs, stats = read([str(jsonl), str(ndjson)])
    assert docs == ["one", "two", "three"]
    assert (stats.records, stats.bad_records, stats.empty_files) == (3, 0, 0)


def test_jsonl_keeps_line_separators_inside_strings(tmp_path: Path) -> None:
    # U+2028 and U+2029 are legal unescaped inside JSON strings; splitting on them would break the record.
    path = tmp_path / "a.jsonl"
    path.write_bytes('{"text": "a\u2028b\u2029c"}\r\n'.encode())
    assert read([str(path)])[0] == ["a\u2028b\u2029c"]


def test_json_list_and_data_wrapper(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([{"text": "x"}, {"text": "y"}]), encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps({"data": [{"body": "z"}]}), encoding="utf-8")
    assert read([str(tmp_path / "a.json")])[0] == ["x", "y"]
    assert read([str(tmp_path / "b.json")], text_field="body")[0] == ["z"]


def test_json_of_another_shape_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"rows": []}), encoding="utf-8")
    with pytest.raises(DataError, match="a.json"):
        read([str(path)])


def test_gzip_txt_and_jsonl(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "a.txt.gz", "wt", encoding="utf-8") as f:
        f.write("zipped text")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write('{"text": "zipped record"}\n')
    assert read([str(tmp_path)])[0] == ["zipped text", "zipped record"]


def test_corrupt_gzip_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="a.jsonl.gz"):
        read([str(path)])


def test_paragraphs_mode_splits_on_blank_lines_and_drops_empty_blocks(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("\n\npara one\nstill one\n\n\n\npara two\n  \t\npara three\r\n\r\n\n \n", encoding="utf-8")
    docs, stats = read([str(path)], txt_mode="paragraphs")
    assert docs == ["para one\nstill one", "para two", "para three"]
    assert (stats.documents, stats.files) == (3, 1)


def test_non_utf8_bytes_are_replaced_and_counted(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"caf\xe9 ok")
    (tmp_path / "b.txt").write_bytes("café ok".encode())
    docs, stats = read([str(tmp_path)])
    assert docs == ["caf\ufffd ok", "café ok"]
    assert stats.decode_replacements == 1


def test_non_utf8_counted_per_paragraph_and_per_jsonl_record(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"good\n\nbad \xff\n\nalso bad \xfe")
    (tmp_path / "b.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    docs, stats = read([str(tmp_path)], txt_mode="paragraphs")
    assert docs == ["good", "bad \ufffd", "also bad \ufffd", "ok", "caf\ufffd"]
    assert stats.decode_replacements == 3


# --- bad records ------------------------------------------------------------------------------


def test_malformed_jsonl_line_is_skipped_with_a_warning_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "one"}\n{"text": "two"}\n{"text": "thr\n{"text": "four"}\n', encoding="utf-8")
    with pytest.warns(SourceWarning, match=f"{path}:3"):
        docs, stats = read([str(path)])
    assert docs == ["one", "two", "four"]
    assert (stats.bad_records, stats.reasons) == (1, {"malformed_json": 1})
    assert_accounted(stats)


def test_malformed_jsonl_line_in_strict_mode_raises_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "one"}\n\n{"text": \n{"text": "four"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=f"{path}:3"):
        read([str(path)], strict=True)


def test_missing_and_non_string_fields_are_counted_by_reason(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "a.jsonl", [{"text": "ok"}, {"body": "no text"}, {"text": 5}, {"text": None}, ["a list"]]
    )
    with pytest.warns(SourceWarning, match="'text'"):
        docs, stats = read([str(path)])
    assert docs == ["ok"]
    assert stats.reasons == {"missing_field": 1, "not_a_string": 2, "not_an_object": 1}
    assert_accounted(stats)


def test_missing_field_in_strict_mode_raises_naming_line_and_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"content": "one"}, {"body": "two"}])
    with pytest.raises(DataError, match=r"a\.jsonl:2: record has no 'content' field"):
        read([str(path)], text_field="content", strict=True)


def test_bad_json_record_in_strict_mode_names_the_record_index(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"text": "a"}, {"text": ["not", "a", "string"]}]), encoding="utf-8")
    with pytest.raises(DataError, match=r"a\.json\[record 1\]: field 'text' is a list"):
        read([str(path)], strict=True)


# --- directories, globs and source errors -----------------------------------------------------


def test_directory_is_recursed_in_sorted_order_skipping_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("b/z", encoding="utf-8")
    (tmp_path / "a.txt").write_text("a", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text('{"text": "c"}\n', encoding="utf-8")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x01")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref", encoding="utf-8")
    docs, stats = read([str(tmp_path)])
    assert docs == ["a", "b/z", "c"]
    assert stats.files == 3


def test_glob_sources_are_sorted_and_sources_keep_their_order(tmp_path: Path) -> None:
    for name in ("2.txt", "1.txt", "3.md"):
        (tmp_path / name).write_text(name, encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "4.txt").write_text("4.txt", encoding="utf-8")
    docs, _ = read([str(tmp_path / "*.md"), str(tmp_path / "**" / "*.txt")])
    assert docs == ["3.md", "1.txt", "2.txt", "4.txt"]


def test_source_matching_nothing_is_an_error_naming_it(tmp_path: Path) -> None:
    for missing in (tmp_path / "nope.txt", tmp_path / "*.jsonl"):
        with pytest.raises(DataError, match="no such file") as info:
            read([str(missing)])
        assert str(missing) in str(info.value)


def test_missing_source_fails_before_any_document_is_read(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a", encoding="utf-8")
    documents = iter_documents([str(tmp_path / "a.txt"), str(tmp_path / "typo.txt")])
    with pytest.raises(DataError, match="typo.txt"):
        next(documents)


def test_unsupported_extension_names_the_file_and_supported_ones(tmp_path: Path) -> None:
    path = tmp_path / "data.xml"
    path.write_text("<doc/>", encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.xml.*\.jsonl.*\.parquet"):
        read([str(path)])
    (tmp_path / "ok.txt").write_text("ok", encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.xml"):  # inside a directory too: never dropped silently
        read([str(tmp_path)])


def test_a_bare_string_is_not_taken_for_a_list_of_sources(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="list"):
        read(str(tmp_path))  # type: ignore[arg-type]


def test_empty_files_are_counted_and_warned_not_errors(tmp_path: Path) -> None:
    for name in ("a.txt", "b.jsonl", "c.csv"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "d.jsonl").write_text("\n\n", encoding="utf-8")
    (tmp_path / "e.json").write_text("[]", encoding="utf-8")
    (tmp_path / "f.txt").write_text("real", encoding="utf-8")
    with pytest.warns(SourceWarning, match="empty file"):
        docs, stats = read([str(tmp_path)])
    assert docs == ["real"]
    assert (stats.empty_files, stats.files) == (5, 6)


# --- tables -----------------------------------------------------------------------------------


def test_parquet_reads_only_the_text_column(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    table = pa.table({"id": [1, 2, 3], "content": ["x", None, "z"]})
    pq.write_table(table, path, row_group_size=2)
    with pytest.warns(SourceWarning, match="row 2"):
        docs, stats = read([str(path)], text_field="content")
    assert docs == ["x", "z"]
    assert stats.reasons == {"not_a_string": 1}
    assert_accounted(stats)


def test_parquet_without_the_column_names_file_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": [1], "body": ["x"]}), path)
    with pytest.raises(DataError, match=r"a\.parquet: no column 'text'; available columns: id, body"):
        read([str(path)])


def test_csv_reads_the_text_column_as_strings(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text('id,text\n1,hello\n2,"multi\nline, with comma"\n3,42\n4,\n', encoding="utf-8")
    docs, stats = read([str(path)])
    assert docs == ["hello", "multi\nline, with comma", "42", ""]
    assert (stats.documents, stats.bad_records) == (4, 0)


def test_csv_without_the_column_names_file_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("id,body\n1,x\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"a\.csv: no column 'text'; available columns: id, body"):
        read([str(path)])


# --- hf: datasets (local files only) ----------------------------------------------------------


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the builder's lock files and (non-streaming) Arrow cache inside tmp_path, not ~/.cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")


@pytest.mark.usefixtures("hf_cache")
@pytest.mark.parametrize("streaming", [True, False])
def test_hf_json_builder_loads_local_files(tmp_path: Path, streaming: bool) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "part-0.jsonl", [{"text": "alpha", "id": 0}, {"text": "beta", "id": 1}])
    write_jsonl(data / "part-1.jsonl", [{"text": "gamma", "id": 2}])
    docs, stats = read([f"hf:json:{data}/*.jsonl"], streaming=streaming)
    assert sorted(docs) == ["alpha", "beta", "gamma"]
    assert (stats.documents, stats.files, stats.bad_records) == (3, 0, 0)


@pytest.mark.usefixtures("hf_cache")
def test_hf_json_builder_without_the_column_is_an_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "a.jsonl", [{"body": "x"}])
    with pytest.raises(DataError, match="'text'"):
        read([f"hf:json:{data}/*.jsonl"], strict=True)


@pytest.mark.usefixtures("hf_cache")
def test_hf_json_builder_with_no_matching_files_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="hf:json:"):
        read([f"hf:json:{tmp_path}/*.jsonl"])


@pytest.mark.usefixtures("hf_cache")
def test_hf_json_builder_over_an_empty_file_is_an_error(tmp_path: Path) -> None:
    # datasets 5.2 answers this with a bare StopIteration; it must surface as a DataError naming the source.
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(DataError, match="hf:json:.*no records"):
        read([f"hf:json:{tmp_path}/empty.jsonl"])


# --- stats ------------------------------------------------------------------------------------


def test_stats_add_up_across_formats_and_calls(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"p1\n\np2 \xe9")
    (tmp_path / "b.jsonl").write_text('{"text": "r1"}\nnot json\n{"t": 1}\n{"text": "r2"}\n', encoding="utf-8")
    (tmp_path / "c.json").write_text(json.dumps([{"text": "j1"}, {"text": 2}]), encoding="utf-8")
    pq.write_table(pa.table({"text": ["q1", "q2"]}), tmp_path / "d.parquet")
    (tmp_path / "e.md").write_bytes(b"")
    stats = SourceStats()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SourceWarning)
        docs = list(iter_documents([str(tmp_path)], txt_mode="paragraphs", stats=stats))
        docs += list(iter_documents([str(tmp_path / "a.txt")], stats=stats))  # the same stats accumulate
    assert docs == ["p1", "p2 \ufffd", "r1", "r2", "j1", "q1", "q2", "p1\n\np2 \ufffd"]
    assert stats == SourceStats(
        documents=8,
        files=6,
        records=11,
        bad_records=3,
        decode_replacements=2,
        empty_files=1,
        reasons={"malformed_json": 1, "missing_field": 1, "not_a_string": 1},
    )
    assert_accounted(stats)


# --- the built-in raw corpus -------------------------------------------------------------------


def test_builtin_source_yields_the_generated_raw_corpus() -> None:
    from lit_llm.prepare.corpus import generate_raw_corpus

    stats = SourceStats()
    docs = list(iter_documents(["builtin:300"], stats=stats))
    assert docs == list(generate_raw_corpus(300))
    assert stats.documents == stats.records == 300 and stats.files == 0
    # The planted defects are there for the pipeline to remove: copies, HTML, mojibake, cookie banners.
    assert len(set(docs)) < 300
    assert any("<p>" in d for d in docs) and any("Ã" in d for d in docs) and any("cookies" in d for d in docs)


@pytest.mark.parametrize("source", ["builtin:", "builtin:0", "builtin:many"])
def test_builtin_source_size_must_be_a_positive_number(source: str) -> None:
    with pytest.raises(DataError, match=f"{source}: expected builtin or builtin:N"):
        list(iter_documents([source]))


# --- whole records (iter_records) --------------------------------------------------------------


def records(sources: list[str], **kwargs: object) -> tuple[list[tuple[str, dict]], SourceStats]:
    stats = SourceStats()
    return list(iter_records(sources, stats=stats, **kwargs)), stats


ALPACA = {"instruction": "Add", "input": "2 2", "output": "4"}
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
PREFERENCE = {"prompt": "p", "chosen": "good", "rejected": "bad"}


def test_records_jsonl_and_gzip_are_whole_records_located_by_file_line(tmp_path: Path) -> None:
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps(ALPACA) + "\n\n" + json.dumps(CHAT) + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "pref.ndjson.gz", "wt", encoding="utf-8") as f:
        f.write("\n" + json.dumps(PREFERENCE) + "\n")
    got, stats = records([str(path), str(tmp_path / "pref.ndjson.gz")])
    assert got == [(f"{path}:1", ALPACA), (f"{path}:3", CHAT), (f"{tmp_path / 'pref.ndjson.gz'}:2", PREFERENCE)]
    assert (stats.documents, stats.records, stats.files, stats.bad_records) == (3, 3, 2, 0)


def test_records_json_list_and_data_wrapper_are_located_by_record_index(tmp_path: Path) -> None:
    listed, wrapped = tmp_path / "a.json", tmp_path / "b.json"
    listed.write_text(json.dumps([ALPACA, PREFERENCE]), encoding="utf-8")
    wrapped.write_text(json.dumps({"data": [CHAT], "version": 2}), encoding="utf-8")
    got, stats = records([str(listed), str(wrapped)], columns=["ignored"])  # JSON records come whole
    assert got == [(f"{listed}[record 0]", ALPACA), (f"{listed}[record 1]", PREFERENCE), (f"{wrapped}[record 0]", CHAT)]
    assert (stats.documents, stats.records) == (3, 3)


def test_records_parquet_reads_only_the_given_columns(tmp_path: Path) -> None:
    path = tmp_path / "pref.parquet"
    table = pa.table({"id": [7, 8, 9], "prompt": ["p1", "p2", None], "chosen": ["c1", "c2", "c3"]})
    pq.write_table(table, path, row_group_size=2)
    got, stats = records([str(path)], columns=["prompt", "chosen"])
    assert got == [
        (f"{path} row 1", {"prompt": "p1", "chosen": "c1"}),
        (f"{path} row 2", {"prompt": "p2", "chosen": "c2"}),
        (f"{path} row 3", {"prompt": None, "chosen": "c3"}),  # a null is a value for the caller to judge
    ]
    assert (stats.documents, stats.records, stats.bad_records) == (3, 3, 0)
    everything, _ = records([str(path)])
    assert everything[0] == (f"{path} row 1", {"id": 7, "prompt": "p1", "chosen": "c1"})


def test_records_csv_values_stay_strings_and_rows_are_data_rows(tmp_path: Path) -> None:
    path = tmp_path / "sft.csv"
    path.write_text('instruction,output,n\n"two\nlines",4,1\nsay nothing,,2\n', encoding="utf-8")
    got, stats = records([str(path)])
    assert got == [
        (f"{path} row 1", {"instruction": "two\nlines", "output": "4", "n": "1"}),
        (f"{path} row 2", {"instruction": "say nothing", "output": "", "n": "2"}),
    ]
    assert records([str(path)], columns=["n"])[0] == [(f"{path} row 1", {"n": "1"}), (f"{path} row 2", {"n": "2"})]
    assert stats.documents == 2


def test_records_directory_mixes_formats_in_sorted_order(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [ALPACA])
    (tmp_path / "b.json").write_text(json.dumps([PREFERENCE]), encoding="utf-8")
    pq.write_table(pa.table({"prompt": ["pq"]}), tmp_path / "c.parquet")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.csv").write_text("prompt\ncsv\n", encoding="utf-8")
    (tmp_path / ".hidden.jsonl").write_text("not json\n", encoding="utf-8")
    got, stats = records([str(tmp_path)])
    assert got == [
        (f"{tmp_path / 'a.jsonl'}:1", ALPACA),
        (f"{tmp_path / 'b.json'}[record 0]", PREFERENCE),
        (f"{tmp_path / 'c.parquet'} row 1", {"prompt": "pq"}),
        (f"{tmp_path / 'sub' / 'd.csv'} row 1", {"prompt": "csv"}),
    ]
    assert (stats.files, stats.documents, stats.records, stats.bad_records) == (4, 4, 4, 0)


@pytest.mark.usefixtures("hf_cache")
@pytest.mark.parametrize("streaming", [True, False])
def test_records_hf_json_builder_over_local_files(tmp_path: Path, streaming: bool) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "pref.jsonl", [PREFERENCE, {"prompt": "q", "chosen": "y", "rejected": "n"}])
    source = f"hf:json:{data}/*.jsonl"
    got, stats = records([source], streaming=streaming)
    assert got == [
        (f"{source}[record 0]", PREFERENCE),
        (f"{source}[record 1]", {"prompt": "q", "chosen": "y", "rejected": "n"}),
    ]
    assert (stats.documents, stats.records, stats.files) == (2, 2, 0)
    narrowed, _ = records([source], streaming=streaming, columns=["chosen"])
    assert narrowed == [(f"{source}[record 0]", {"chosen": "good"}), (f"{source}[record 1]", {"chosen": "y"})]


def test_records_malformed_lines_and_non_objects_are_counted_and_warned(tmp_path: Path) -> None:
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps(ALPACA) + '\n{"instruction": \n[1, 2]\n42\n' + json.dumps(CHAT) + "\n", encoding="utf-8")
    with pytest.warns(SourceWarning) as caught:
        got, stats = records([str(path)])
    assert got == [(f"{path}:1", ALPACA), (f"{path}:5", CHAT)]
    messages = [str(w.message) for w in caught]
    assert messages[0].startswith(f"{path}:2: malformed JSON (") and messages[0].endswith("; line skipped")
    assert messages[1] == (
        f"{path}: skipped 2 record(s) that are not JSON objects; first at {path}:3: record is a list, not an object"
    )
    assert stats.reasons == {"malformed_json": 1, "not_an_object": 2}
    assert (stats.records, stats.documents, stats.bad_records) == (5, 2, 3)
    assert_accounted(stats)


def test_records_non_object_in_a_json_list_is_a_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps([ALPACA, "just text", CHAT]), encoding="utf-8")
    with pytest.warns(SourceWarning, match=r"a\.json\[record 1\]: record is a str, not an object"):
        got, stats = records([str(path)])
    assert [location for location, _ in got] == [f"{path}[record 0]", f"{path}[record 2]"]
    assert (stats.reasons, stats.records, stats.documents) == ({"not_an_object": 1}, 3, 2)


def test_records_strict_mode_raises_naming_the_location(tmp_path: Path) -> None:
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps(ALPACA) + "\n\n{broken\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}:3: malformed JSON"):
        records([str(path)], strict=True)
    listed = tmp_path / "a.json"
    listed.write_text(json.dumps([ALPACA, ALPACA, 5]), encoding="utf-8")
    with pytest.raises(DataError, match=f"^{re.escape(str(listed))}\\[record 2\\]: record is a int, not an object$"):
        records([str(listed)], strict=True)


def test_records_reject_text_and_builtin_sources_before_reading(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [ALPACA])
    (tmp_path / "notes.txt").write_text("plain text", encoding="utf-8")
    with pytest.raises(DataError) as info:
        records([str(tmp_path / "notes.txt")])
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'notes.txt'}: a text file is not a record format; record sources are ")
    assert ".jsonl" in message and ".parquet" in message and ".csv" in message and "hf:" in message
    # In a directory the text file is named with the source, and nothing is yielded before the error.
    stream = iter_records([str(tmp_path / "a.jsonl"), str(tmp_path)])
    expected = f"{tmp_path}: {tmp_path / 'notes.txt'}: a text file is not a record format"
    with pytest.raises(DataError, match=f"^{re.escape(expected)}"):
        next(stream)
    with pytest.raises(DataError, match="^builtin:10: the built-in corpus is plain text, not records; record sources"):
        records(["builtin:10"])


def test_records_missing_columns_name_the_source_and_available_columns(tmp_path: Path) -> None:
    parquet, table_csv = tmp_path / "a.parquet", tmp_path / "b.csv"
    pq.write_table(pa.table({"prompt": ["p"], "id": [1]}), parquet)
    table_csv.write_text("prompt,id\np,1\n", encoding="utf-8")
    expected = f"{parquet}: no column 'chosen'; available columns: prompt, id"
    with pytest.raises(DataError, match=f"^{re.escape(expected)}$"):
        records([str(parquet)], columns=["prompt", "chosen"])
    expected = f"{table_csv}: no columns 'chosen', 'rejected'; available columns: prompt, id"
    with pytest.raises(DataError, match=f"^{re.escape(expected)}$"):
        records([str(table_csv)], columns=["chosen", "rejected"])


@pytest.mark.usefixtures("hf_cache")
def test_records_hf_missing_column_names_the_source(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [PREFERENCE])
    source = f"hf:json:{tmp_path}/a.jsonl"
    with pytest.raises(DataError, match=r"hf:json:.*a\.jsonl: no column 'output'; available columns: prompt, chosen"):
        records([source], columns=["output"])


def test_records_reject_bad_arguments(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [ALPACA])
    with pytest.raises(DataError, match="list"):
        records(str(tmp_path / "a.jsonl"))  # type: ignore[arg-type]
    for columns in ("prompt", []):
        with pytest.raises(DataError, match="columns must be None or a non-empty list"):
            records([str(tmp_path / "a.jsonl")], columns=columns)


def test_records_stats_add_up_with_empty_files_and_bad_utf8(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(b'{"output": "caf\xe9"}\n[]\n{"output": "ok"}\n')
    (tmp_path / "b.jsonl").write_bytes(b"")
    (tmp_path / "c.json").write_text("[]", encoding="utf-8")
    (tmp_path / "d.csv").write_text("output\n", encoding="utf-8")  # a header and no rows
    pq.write_table(pa.table({"output": ["q"]}), tmp_path / "e.parquet")
    stats = SourceStats()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = list(iter_records([str(tmp_path)], stats=stats))
    assert [record for _, record in got] == [{"output": "caf\ufffd"}, {"output": "ok"}, {"output": "q"}]
    assert sum("empty file" in str(w.message) for w in caught) == 3
    assert stats == SourceStats(
        documents=3, files=5, records=4, bad_records=1, decode_replacements=1, empty_files=3,
        reasons={"not_an_object": 1},
    )
    assert_accounted(stats)


def test_documents_read_only_the_text_column_of_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.csv as pcsv

    pq.write_table(pa.table({"id": [1], "text": ["from parquet"], "meta": ["m"]}), tmp_path / "a.parquet")
    (tmp_path / "b.csv").write_text("id,text,meta\n1,from csv,m\n", encoding="utf-8")
    asked: list[object] = []
    iter_batches, open_csv = pq.ParquetFile.iter_batches, pcsv.open_csv

    def spy_batches(self: pq.ParquetFile, *args: object, **kwargs: object) -> object:
        asked.append(kwargs["columns"])
        return iter_batches(self, *args, **kwargs)

    def spy_open_csv(*args: object, **kwargs: object) -> object:
        asked.append(kwargs["convert_options"].include_columns)
        return open_csv(*args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy_batches)
    monkeypatch.setattr(pcsv, "open_csv", spy_open_csv)
    assert read([str(tmp_path)])[0] == ["from parquet", "from csv"]
    assert asked == [["text"], ["text"]]
