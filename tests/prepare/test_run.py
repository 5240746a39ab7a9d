"""The data pipeline end to end: stats that add up, rejected documents, caching, bad input, the CLI."""

from __future__ import annotations

import json
import random

import pytest

from lit_llm.prepare.clean import CleanConfig
from lit_llm.prepare.dedup import DedupConfig
from lit_llm.prepare.filters import FilterConfig
from lit_llm.prepare.run import PrepareConfig, TokenizerConfig, prepare
from lit_llm.prepare.shards import open_token_file
from lit_llm.prepare.sources import SourceWarning
from lit_llm.prepare.stats import format_table
from lit_llm.text.tokenizer import Tokenizer
from lit_llm.errors import ConfigError, DataError

WORDS = [f"w{i}" for i in range(3000)]
LOOSE = FilterConfig(min_words=5, gopher_min_words=5, gopher_min_stop_words=None, min_ascii_alpha_ratio=None)


def prose(rng: random.Random, n_words: int = 120) -> str:
    """Random words from a large vocabulary with the stop words Gopher asks for: unrelated documents share
    almost no 5-grams, so only planted copies can be near duplicates."""
    words = [rng.choice(WORDS) if rng.random() > 0.2 else rng.choice(["the", "and", "of", "to"]) for _ in range(n_words)]
    return " ".join(words) + "."


def config(tmp_path, sources, **kwargs) -> PrepareConfig:
    kwargs.setdefault("filters", LOOSE)
    kwargs.setdefault("tokenizer", TokenizerConfig(vocab_size=300))
    return PrepareConfig(sources=sources, output_dir=str(tmp_path / "out"), num_proc=1, batch_size=16, **kwargs)


@pytest.fixture
def corpus(tmp_path):
    """40 distinct documents, then a case-changed exact copy of doc 3, a near copy of doc 5 (one contiguous
    5-word span replaced), an HTML document, a too-short one, a malformed line and a record without text."""
    rng = random.Random(0)
    docs = [prose(rng) for _ in range(40)]
    words = docs[5].split()
    near = " ".join(words[:50] + ["zz1", "zz2", "zz3", "zz4", "zz5"] + words[55:])
    lines = [json.dumps({"text": d}) for d in docs]
    lines += [
        json.dumps({"text": docs[3].upper()}),
        json.dumps({"text": near}),
        json.dumps({"text": f"<p>{prose(rng)}</p>&amp; more"}),
        json.dumps({"text": "too short"}),
        '{"text": "unterminated',
        json.dumps({"body": "no text field"}),
    ]
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, docs


def test_pipeline_counts_add_up_and_removes_what_was_planted(tmp_path, corpus):
    path, docs = corpus
    with pytest.warns(SourceWarning):
        stats = prepare(config(tmp_path, [str(path)]), progress=False)
    assert stats["documents_in"] == 46
    assert stats["removed_by"] == {
        "bad_record:malformed_json": 1,
        "bad_record:missing_field": 1,
        "rule:min_chars": 1,
        "exact_duplicate": 1,
        "near_duplicate": 1,
    }
    assert stats["documents_out"] == 41 == 46 - 5
    by_stage = {s["stage"]: s for s in stats["stages"]}
    assert [s["stage"] for s in stats["stages"]] == [
        "read", "clean", "filter", "exact_dedup", "near_dedup", "tokenizer", "tokenize"
    ]
    for name in ("read", "clean", "filter", "exact_dedup", "near_dedup"):
        s = by_stage[name]
        assert s["docs_in"] - s["docs_out"] == sum(s["removed"].values())
    assert by_stage["filter"]["docs_in"] == 44 and by_stage["near_dedup"]["docs_out"] == 41
    assert by_stage["clean"]["bytes_out"] < by_stage["clean"]["bytes_in"]  # HTML tags and entity went

    out = tmp_path / "out"
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [(r["id"], r["stage"], r["reason"], r.get("duplicate_of")) for r in rejected] == [
        (43, "filter", "min_chars", None),
        (40, "exact_dedup", "exact_duplicate", 3),
        (41, "near_dedup", "near_duplicate", 5),
    ]
    assert rejected[0]["text"] == "too short"

    # Every kept document is in a token file, EOS-terminated, and decodes back to its cleaned text.
    tok = Tokenizer(out)
    train, val = open_token_file(out / "train.bin"), open_token_file(out / "val.bin")
    assert stats["splits"]["train"]["num_documents"] + stats["splits"]["val"]["num_documents"] == 41
    assert stats["splits"]["val"]["num_documents"] == 2  # every 20th of 41
    assert int((train.tokens == tok.eos_id).sum()) + int((val.tokens == tok.eos_id).sum()) == 41
    first = train.tokens[: int((train.tokens == tok.eos_id).argmax())].tolist()
    assert tok.decode(first) == docs[0]
    assert stats["tokens"] == len(train) + len(val)
    assert stats["bytes_per_token"] == pytest.approx(stats["bytes"] / stats["tokens"], abs=1e-3)

    table = format_table(stats)
    assert "rule:min_chars" in table and "near_duplicate" in table
    assert "46 documents in = 41 out + 5 removed" in table


def test_second_run_is_cached_and_input_changes_rerun(tmp_path, corpus):
    path, _ = corpus
    cfg = config(tmp_path, [str(path)], write_rejected=False)
    with pytest.warns(SourceWarning):
        first = prepare(cfg, progress=False)
    assert not (tmp_path / "out" / "rejected.jsonl").exists()
    mtime = (tmp_path / "out" / "train.bin").stat().st_mtime_ns
    again = prepare(cfg, progress=False)  # no warnings: nothing is read
    assert again["up_to_date"] and again["config_hash"] == first["config_hash"]
    assert (tmp_path / "out" / "train.bin").stat().st_mtime_ns == mtime

    # A new dedup threshold reuses the documents read (the read- folder) but reruns the processing pass.
    cache = tmp_path / "out" / "cache"
    cached = {p.name for p in cache.glob("*.arrow")}
    reads = sorted(p.name for p in cache.glob("read-*"))
    assert len(reads) == 1
    # The read step is cached too: no warnings this time, but its counts are replayed into the stats.
    pass_two = prepare(PrepareConfig(**{**cfg.__dict__, "dedup": DedupConfig(threshold=0.5)}), progress=False)
    assert pass_two["removed_by"]["bad_record:malformed_json"] == 1
    new = {p.name for p in cache.glob("*.arrow")} - cached
    assert [n.split("-")[0] for n in new] == ["process"]
    assert sorted(p.name for p in cache.glob("read-*")) == reads
    assert pass_two["config_hash"] != first["config_hash"]

    # Appending to an input file changes its size and mtime: the run starts over.
    with open(path, "a") as f:
        f.write(json.dumps({"text": prose(random.Random(9))}) + "\n")
    with pytest.warns(SourceWarning):
        third = prepare(PrepareConfig(**{**cfg.__dict__, "dedup": DedupConfig(threshold=0.5)}), progress=False)
    assert third["documents_in"] == 47 and not third.get("up_to_date")


def test_an_existing_tokenizer_is_used_instead_of_training(tmp_path, corpus):
    path, _ = corpus
    from lit_llm.text.tokenizer import train_bpe

    existing = train_bpe([prose(random.Random(1)) for _ in range(20)], vocab_size=290)
    existing.save(tmp_path / "tok.json")
    cfg = config(tmp_path, [str(path)], tokenizer=TokenizerConfig(path=str(tmp_path / "tok.json")))
    with pytest.warns(SourceWarning):
        stats = prepare(cfg, progress=False)
    tokenizer_stage = next(s for s in stats["stages"] if s["stage"] == "tokenizer")
    assert tokenizer_stage["trained"] is False and tokenizer_stage["vocab_size"] == 290
    assert Tokenizer(tmp_path / "out").to_json() == existing.to_json()


def test_strict_mode_names_the_bad_line(tmp_path, corpus):
    path, _ = corpus
    with pytest.raises(DataError, match=r"docs\.jsonl:45: malformed JSON"):
        prepare(config(tmp_path, [str(path)], strict=True), progress=False)


def test_filtering_everything_names_the_rule(tmp_path):
    path = tmp_path / "short.jsonl"
    path.write_text("".join(json.dumps({"text": f"tiny doc {i}"}) + "\n" for i in range(5)))
    with pytest.raises(DataError, match=r"removed all 5 documents \(most by rule 'min_chars'"):
        prepare(config(tmp_path, [str(path)]), progress=False)


def test_no_documents_and_missing_field_are_clear(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.warns(SourceWarning, match="empty file"), pytest.raises(DataError, match="no documents in .*1 empty"):
        prepare(config(tmp_path, [str(empty)]), progress=False)
    table = tmp_path / "t.csv"
    table.write_text("body\nhello\n")
    with pytest.raises(DataError, match=r"t\.csv: no column 'text'; available columns: body"):
        prepare(config(tmp_path, [str(table)]), progress=False)


def test_non_utf8_bytes_are_replaced_and_counted(tmp_path):
    rng = random.Random(3)
    (tmp_path / "a.txt").write_bytes(prose(rng).encode() + b" caf\xe9 " + prose(rng).encode())
    (tmp_path / "b.txt").write_text(prose(rng))
    stats = prepare(config(tmp_path, [str(tmp_path / "*.txt")], val_fraction=0.0), progress=False)
    assert stats["sources"]["decode_replacements"] == 1
    assert stats["documents_out"] == 2 and list(stats["splits"]) == ["train"]
    assert not (tmp_path / "out" / "val.bin").exists()


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match=r"data\.yaml: dedup: unknown key\(s\) treshold"):
        PrepareConfig.from_dict({"dedup": {"treshold": 0.5}}, where="data.yaml")
    with pytest.raises(ConfigError, match="unknown key.*sorces"):
        PrepareConfig.from_dict({"sorces": ["x"]})
    with pytest.raises(ConfigError, match="val_fraction"):
        PrepareConfig(val_fraction=0.9)
    cfg = PrepareConfig.from_dict({"clean": {"remove_urls": True}, "dedup": {"near": False}})
    assert cfg.clean == CleanConfig(remove_urls=True) and cfg.dedup.near is False


def test_prepare_command_runs_from_yaml(tmp_path, corpus, capsys):
    from lit_llm.cli.commands import main

    path, _ = corpus
    yaml_file = tmp_path / "data.yaml"
    yaml_file.write_text(
        f"sources: [{path}]\noutput_dir: {tmp_path / 'cli'}\nnum_proc: 1\n"
        "filters:\n  min_words: 5\n  gopher_min_words: 5\n  gopher_min_stop_words: null\n"
        "tokenizer:\n  vocab_size: 300\n"
    )
    with pytest.warns(SourceWarning):
        main(["prepare", "--config", str(yaml_file), "--progress", "false", "--dedup.near", "false"])
    out = capsys.readouterr().out
    assert "46 documents in = 42 out + 4 removed" in out  # the near copy stays: near dedup is off
    stats = json.loads((tmp_path / "cli" / "prepare_stats.json").read_text())
    assert stats["config"]["dedup"]["near"] is False and stats["documents_out"] == 42

    main(["prepare", "--config", str(yaml_file), "--progress", "false", "--dedup.near", "false"])
    assert "up to date" in capsys.readouterr().out

    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--config", str(yaml_file), "--dedup.treshold", "0.5"])
    assert exc.value.code == 2
    assert "treshold" in capsys.readouterr().err


def test_a_builtin_source_goes_stale_when_the_code_that_writes_it_changes(monkeypatch):
    from lit_llm.prepare import corpus
    from lit_llm.prepare.run import _input_fingerprint

    before = _input_fingerprint(["builtin:10"])
    assert before == _input_fingerprint(["builtin:10"])
    monkeypatch.setattr(corpus, "generator_digest", lambda: "edited")
    assert _input_fingerprint(["builtin:10"]) != before
