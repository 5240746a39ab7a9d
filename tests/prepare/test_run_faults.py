"""The data pipeline when things go wrong: interrupted and concurrent runs, stale and mismatched files, killed
workers, bad tokenizer sizes; and the details that must be right when they do not (duplicate_of, the val order)."""

from __future__ import annotations

import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lit_llm.atomic import FolderLock, OutputError
from lit_llm.prepare import run as prepare_module
from lit_llm.prepare import steps
from lit_llm.prepare.dedup import DedupConfig, near_duplicates
from lit_llm.prepare.run import STATS_FILE, PrepareConfig, TokenizerConfig, prepare
from lit_llm.data.pretrain import PretrainDataModule, WindowDataset, WindowSampler
from lit_llm.prepare.shards import TokenWriter, file_digest, open_token_file
from lit_llm.prepare.stats import format_table
from lit_llm.text.tokenizer import Tokenizer, train_bpe
from lit_llm.errors import ConfigError, DataError
from tests.prepare import test_run as test_prepare
from tests.prepare.test_run import config, prose

corpus = test_prepare.corpus  # the fixture: 40 documents and planted copies, bad lines, HTML

pytestmark = pytest.mark.filterwarnings("ignore::lit_llm.prepare.sources.SourceWarning")


def assert_consistent(out: Path, vocab_size: int) -> None:
    """Token files, their sidecars, the tokenizer and the stats are all of one run."""
    stats = json.loads((out / STATS_FILE).read_text())
    tok = Tokenizer(out)
    assert tok.vocab_size == vocab_size == next(s for s in stats["stages"] if s["stage"] == "tokenizer")["vocab_size"]
    for name, meta in stats["splits"].items():
        tf = open_token_file(out / f"{name}.bin")  # checks sizes and the tokenizer hash
        assert json.loads((out / f"{name}.json").read_text()) == meta
        assert meta["tokenizer_sha256"] == file_digest(out / "tokenizer.json")
        assert int(tf.tokens.max()) < tok.vocab_size and tf.vocab_size == vocab_size
    assert not list(out.glob(".tmp-*"))
    PretrainDataModule(data_dir=str(out), block_size=8, batch_size=2).setup()


# ---- interrupted runs -----------------------------------------------------------------------------


def test_a_run_interrupted_while_tokenizing_leaves_the_finished_outputs_whole(tmp_path, corpus, monkeypatch):
    path, _ = corpus
    big, small = config(tmp_path, [str(path)]), config(tmp_path, [str(path)], tokenizer=TokenizerConfig(vocab_size=280))
    prepare(big, progress=False)
    out = tmp_path / "out"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lit_llm.lock"}

    calls = []

    def dies_midway(writer, tok, texts):
        calls.append(len(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a Ctrl-C in the middle of tokenizing raises
        real_append(writer, tok, texts)

    real_append = steps.append_documents
    monkeypatch.setattr(steps, "append_documents", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        prepare(small, progress=False)
    monkeypatch.undo()
    # Nothing of the interrupted run is visible: the old outputs and their fingerprint are untouched.
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lit_llm.lock"} == before
    assert prepare(big, progress=False)["up_to_date"]
    assert_consistent(out, 300)
    redone = prepare(small, progress=False)
    assert not redone.get("up_to_date")
    assert_consistent(out, 280)


def test_a_run_interrupted_while_moving_its_files_in_is_never_up_to_date(tmp_path, corpus, monkeypatch):
    path, _ = corpus
    big, small = config(tmp_path, [str(path)]), config(tmp_path, [str(path)], tokenizer=TokenizerConfig(vocab_size=280))
    prepare(big, progress=False)
    out = tmp_path / "out"
    real_fsync, calls = prepare_module._fsync, []

    def dies_after_the_first_file(p):
        calls.append(p.name)
        if len(calls) == 2:  # train.bin is already replaced, its sidecar is not
            raise KeyboardInterrupt
        real_fsync(p)

    monkeypatch.setattr(prepare_module, "_fsync", dies_after_the_first_file)
    with pytest.raises(KeyboardInterrupt):
        prepare(small, progress=False)
    monkeypatch.undo()
    assert calls == ["train.bin", "train.json"]
    assert not (out / STATS_FILE).exists()  # the old fingerprint went before the first file was replaced
    with pytest.raises(DataError, match=r"train\.bin holds .* tokens but its sidecar train\.json says"):
        PretrainDataModule(data_dir=str(out), block_size=8, batch_size=2).setup()
    redone = prepare(big, progress=False)
    assert not redone.get("up_to_date")
    assert_consistent(out, 300)


# ---- mismatched files -----------------------------------------------------------------------------


def test_a_tokenizer_that_is_not_the_one_of_the_token_files_is_found(tmp_path, corpus):
    path, _ = corpus
    cfg = config(tmp_path, [str(path)])
    prepare(cfg, progress=False)
    out = tmp_path / "out"
    train_bpe([prose(random.Random(5)) for _ in range(30)], vocab_size=300).save(out / "tokenizer.json")
    with pytest.raises(DataError, match=re.escape(f"{out / 'train.bin'} was not made with {out / 'tokenizer.json'}")):
        PretrainDataModule(data_dir=str(out), block_size=8, batch_size=2).setup()
    redone = prepare(cfg, progress=False)
    assert not redone.get("up_to_date")
    assert_consistent(out, 300)

    # Outputs of an older version record no tokenizer hash: never up to date, they are redone once.
    for name in ("train.json", "val.json"):
        meta = json.loads((out / name).read_text())
        del meta["tokenizer_sha256"]
        (out / name).write_text(json.dumps(meta))
    stats = json.loads((out / STATS_FILE).read_text())
    for meta in stats["splits"].values():
        del meta["tokenizer_sha256"]
    (out / STATS_FILE).write_text(json.dumps(stats))
    assert not prepare(cfg, progress=False).get("up_to_date")
    assert prepare(cfg, progress=False)["up_to_date"]


def test_token_ids_beyond_the_tokenizer_are_refused(tmp_path):
    # The reported folder: a 2048-token sidecar without a tokenizer hash, ids up to 936, a 300-token tokenizer.
    with TokenWriter(tmp_path / "train.bin", 2048) as w:
        w.write(np.arange(0, 937, 3))
    train_bpe([prose(random.Random(1)) for _ in range(20)], vocab_size=300).save(tmp_path / "tokenizer.json")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'train.bin'} holds token id 936, but its tokenizer ")
                       + r".*tokenizer\.json has only 300 tokens"):
        PretrainDataModule(data_dir=str(tmp_path), block_size=8, batch_size=2).setup()


# ---- concurrent runs, stale files, killed workers -------------------------------------------------


def test_a_second_run_on_a_held_folder_refuses_naming_the_holder(tmp_path, corpus):
    path, _ = corpus
    cfg = config(tmp_path, [str(path)])
    prepare(cfg, progress=False)
    with FolderLock(tmp_path / "out", "lit-llm prepare"):
        # Even the up-to-date answer waits for the holder: it may be replacing the files right now.
        with pytest.raises(OutputError, match=rf"out is in use by another run \(lit-llm prepare, pid {os.getpid()}"):
            prepare(cfg, progress=False)
    assert prepare(cfg, progress=False)["up_to_date"]
    elsewhere = replace(cfg, cache_dir=str(tmp_path / "shared-cache"))
    with FolderLock(tmp_path / "shared-cache", "lit-llm prepare"):
        with pytest.raises(OutputError, match="shared-cache is in use by another run"):
            prepare(elsewhere, progress=False)


def test_stale_temporary_files_of_a_killed_run_are_removed(tmp_path, corpus):
    path, _ = corpus
    cfg = config(tmp_path, [str(path)])
    prepare(cfg, progress=False)
    out, cache = tmp_path / "out", tmp_path / "out" / "cache"
    (out / ".tmp-prepare-x1y2").mkdir()
    (out / ".tmp-prepare-x1y2" / "train.bin").write_bytes(b"\0" * 10)
    read = next(cache.glob("read-*"))
    stale = [out / ".tmp-train.bin.ab12cd", read / "data.partial", read / ".tmp-stats.json.q"]
    for p in stale:
        p.write_bytes(b"half")
    (cache / "tmpa1b2_c3d").write_bytes(b"\xff\xff\xff\xff\x10\x00")  # datasets.map's unrenamed Arrow output
    (cache / "tmpzz99_000").write_bytes(b"")
    stale += [cache / "tmpa1b2_c3d", cache / "tmpzz99_000"]
    # Not what a run leaves (another program's temporary file, a user's notes): left alone.
    kept = [cache / "tmpq1w2e3r4", cache / "tmp_notes.txt", out / "notes.txt"]
    for p in kept:
        p.write_text("mine")
    assert prepare(cfg, progress=False)["up_to_date"]
    assert not (out / ".tmp-prepare-x1y2").exists() and not any(p.exists() for p in stale)
    assert all(p.read_text() == "mine" for p in kept)


_SLOW_WORKERS = textwrap.dedent("""
    import os, time
    from pathlib import Path
    from lit_llm.prepare import steps

    _real = steps._process_batch

    def slow(batch, **kwargs):
        out = _real(batch, **kwargs)
        if os.getpid() != kwargs["parent_pid"]:  # a worker: say so, then stay busy
            (Path(os.environ["READY_DIR"]) / str(os.getpid())).write_text("")
            time.sleep(60)
        return out
""")

_RUN_PREPARE = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import slow_workers
    from lit_llm.prepare import steps
    steps._process_batch = slow_workers.slow
    from lit_llm.prepare.run import PrepareConfig, prepare
    prepare(PrepareConfig.from_dict(json.loads(sys.argv[2])), progress=False)
""")


def _children(pid: int) -> list[int]:
    """The processes `pid` forked (the workers and datasets' Manager server), read from /proc."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        import psutil
    except ImportError:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_sigkilled_prepare_leaves_no_workers_and_holds_the_folder_until_then(tmp_path, corpus):
    path, _ = corpus
    cfg = config(tmp_path, [str(path)])
    cfg = replace(cfg, num_proc=2)  # 44 documents, batches of 16: two workers
    (tmp_path / "slow_workers.py").write_text(_SLOW_WORKERS)
    ready = tmp_path / "ready"
    ready.mkdir()
    env = {**os.environ, "READY_DIR": str(ready), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with open(tmp_path / "log.txt", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", _RUN_PREPARE, str(tmp_path), json.dumps(cfg.to_dict())],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while len(list(ready.iterdir())) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [int(p.name) for p in ready.iterdir()]
        assert len(workers) == 2, (tmp_path / "log.txt").read_text()[-3000:]
        with pytest.raises(OutputError, match=rf"in use by another run \(lit-llm prepare, pid {proc.pid} "):
            prepare(cfg, progress=False)
        forked = _children(proc.pid)
        assert set(workers) < set(forked), forked  # and the Manager server
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in forked) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [pid for pid in forked if _alive(pid)]
    for pid in survivors:  # do not leave them behind when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not survivors
    # The forked processes (the workers and datasets' Manager server) held the inherited lock; with them gone the
    # next run goes ahead and finishes cleanly. The kernel drops the lock once the last holder's files are closed,
    # which on a loaded machine can trail the process's disappearance by a moment: allow a few seconds for it.
    deadline = time.monotonic() + 10
    while True:
        try:
            stats = prepare(replace(cfg, num_proc=1), progress=False)
            break
        except OutputError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert not stats.get("up_to_date")
    assert_consistent(tmp_path / "out", 300)


# ---- bad configs, the table -----------------------------------------------------------------------


def test_a_vocab_below_the_byte_alphabet_fails_at_config_time(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"tokenizer\.vocab_size must be at least 264, got 200: a byte-level BPE "
                                          r"holds all 256 byte values plus the 8 special tokens"):
        PrepareConfig.from_dict({"sources": [str(tmp_path / "missing.jsonl")], "tokenizer": {"vocab_size": 200}})
    with pytest.raises(ConfigError, match="at least 257"):
        TokenizerConfig(vocab_size=256, special_tokens=["</s>"])
    TokenizerConfig(vocab_size=100, path=str(tmp_path / "tok.json"))  # an existing tokenizer: no vocab to train
    with pytest.raises(ConfigError, match=r"tokenizer\.vocab_size must be at least 264"):
        PretrainDataModule(data_dir=str(tmp_path / "out"), prepare={"tokenizer": {"vocab_size": 200}})
    from lit_llm.cli.commands import main

    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--sources", f"[{tmp_path / 'missing.jsonl'}]", "--tokenizer.vocab_size", "200"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "tokenizer.vocab_size must be at least 264" in err and "Traceback" not in err


def test_the_table_shows_replaced_non_utf8_documents(tmp_path):
    rng = random.Random(3)
    (tmp_path / "a.txt").write_bytes(prose(rng).encode() + b" caf\xe9 " + prose(rng).encode())
    (tmp_path / "b.txt").write_text(prose(rng))
    stats = prepare(config(tmp_path, [str(tmp_path / "*.txt")], val_fraction=0.0), progress=False)
    line = next(line for line in format_table(stats).splitlines() if "non-UTF-8" in line)
    assert line.split()[-1] == "1"


def test_read_only_outputs_are_served_without_a_lock_and_unwritable_folders_get_one_line(tmp_path, corpus,
                                                                                         monkeypatch):
    path, _ = corpus
    cfg = config(tmp_path, [str(path)])
    prepare(cfg, progress=False)
    out = tmp_path / "out"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == out else real_access(p, mode))
    with FolderLock(out, "lit-llm fit"):  # a read-only folder: nobody can be writing it, no lock is needed
        assert prepare(cfg, progress=False)["up_to_date"]
    monkeypatch.undo()

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(out / ".tmp-prepare-x"))

    monkeypatch.setattr(prepare_module.tempfile, "mkdtemp", refused)
    message = f"cannot write {out}: permission denied (the folder is read-only)"
    with pytest.raises(OutputError, match="^" + re.escape(message)):
        prepare(replace(cfg, val_fraction=0.1), progress=False)


def test_a_read_only_folder_serves_its_outputs_and_refuses_new_ones(tmp_path, corpus):
    path, _ = corpus
    cfg = config(tmp_path, [str(path)])
    prepare(cfg, progress=False)
    out = tmp_path / "out"
    out.chmod(0o555)
    try:
        try:
            (out / "probe").touch()
        except PermissionError:
            pass
        else:
            pytest.skip("this user writes into read-only folders (root)")
        assert prepare(cfg, progress=False)["up_to_date"]
        with pytest.raises(OutputError, match=re.escape(f"cannot write {out}: permission denied")):
            prepare(replace(cfg, val_fraction=0.1), progress=False)
    finally:
        out.chmod(0o755)


# ---- duplicate_of ---------------------------------------------------------------------------------


def test_near_duplicates_match_the_closest_earlier_candidate():
    bands = np.array(
        [
            [1, 2, 3, 4],  # A
            [1, 2, 5, 6],  # B: 2 bands of A
            [1, 9, 5, 6],  # C: 1 band of A, 3 of B
            [70, 71, 72, 73],
            [80, 81, 82, 83],  # D: linked to the cluster only through E, which comes later
            [1, 31, 82, 83],  # E: 1 band of A, 2 of D
        ],
        dtype=np.uint64,
    )
    rep, matched = near_duplicates(bands)
    assert rep.tolist() == [0, 0, 0, 3, 0, 0]
    assert matched.tolist() == [0, 0, 1, 3, 0, 4]  # D has no earlier candidate: its cluster's kept A


def test_duplicate_of_names_the_document_a_near_copy_was_matched_with(tmp_path):
    rng = random.Random(0)
    a = prose(rng, 300).split()
    b = [f"b{i}" for i in range(45)] + a[45:]  # A with its first 45 words replaced
    c = b[:255] + [f"c{i}" for i in range(45)]  # B with its last 45 words replaced
    # 5-gram Jaccard: A-B 0.74, B-C 0.74, A-C 0.53. The cluster {A, B, C} keeps A; C is B's copy.
    docs = [" ".join(a), " ".join(b), " ".join(c)] + [prose(rng) for _ in range(20)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    dedup = DedupConfig(threshold=0.5, num_perm=256)  # 42 bands: enough to tell 0.74 from 0.53 by band count
    cfg = config(tmp_path, [str(tmp_path / "docs.jsonl")], val_fraction=0.0, dedup=dedup)
    prepare(cfg, progress=False)
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["id"], r["reason"], r["duplicate_of"]) for r in rejected] == [
        (1, "near_duplicate", 0),
        (2, "near_duplicate", 1),  # not 0, the first of the cluster
    ]


# ---- validation order -----------------------------------------------------------------------------


@pytest.mark.parametrize("num_windows", [7, 50, 1000])
def test_validation_order_spreads_every_prefix_over_the_file(num_windows):
    bs = 4
    ds = WindowDataset(np.arange(num_windows * bs + 1, dtype=np.uint32), block_size=bs)
    order = list(WindowSampler(ds, shuffle=False, spread=True))
    again = WindowSampler(ds, shuffle=False, spread=True)
    again.set_epoch(3)
    assert list(again) == order  # the same windows every time, whatever the epoch
    assert sorted(order) == list(range(0, num_windows * bs, bs))  # the full pass scores each window once
    for fraction in (0.2, 0.5):
        k = int(num_windows * fraction)
        if k < 5:
            continue
        starts = sorted(order[:k])
        assert starts[-1] > 0.8 * num_windows * bs - bs
        assert max(np.diff([*starts, starts[0] + num_windows * bs])) <= 2 * num_windows * bs / k
    # Two ranks deal the one order round-robin: together a prefix is the single process's prefix.
    ranks = [list(WindowSampler(ds, shuffle=False, spread=True, num_replicas=2, rank=r)) for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1]) and len(ranks[0]) == len(ranks[1]) == num_windows // 2
    assert ranks[0] == order[0 : 2 * (num_windows // 2) : 2] and ranks[1] == order[1 : 2 * (num_windows // 2) : 2]


def test_the_validation_loader_is_spread_and_the_training_loader_is_not(tmp_path):
    with TokenWriter(tmp_path / "train.bin", 4000) as w:
        w.write(np.arange(2001))
    with TokenWriter(tmp_path / "val.bin", 4000) as w:
        w.write(np.arange(2000, 3001))
    dm = PretrainDataModule(data_dir=str(tmp_path), block_size=10, batch_size=4, sampling="sequential")
    dm.setup()
    val = [b["input_ids"][:, 0].tolist() for b in dm.val_dataloader()]
    first = [start for batch in val[:5] for start in batch]  # what limit_val_batches=5 scores: 20 of 100 windows
    assert max(first) > 2000 + 0.8 * 1000 and min(first) < 2000 + 0.2 * 1000
    assert sorted(s for batch in val for s in batch) == list(range(2000, 3000, 10))
    train = next(iter(dm.train_dataloader()))["input_ids"][:, 0].tolist()
    assert train == [0, 10, 20, 30]
