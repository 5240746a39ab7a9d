"""Windows, window samplers (random/sequential, multi-rank), resumable loading, PretrainDataModule."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from lit_llm.data.pretrain import PretrainDataModule, ResumableDataLoader, WindowDataset, WindowSampler
from lit_llm.prepare.shards import TokenWriter, open_token_file
from lit_llm.errors import DataError


def arange_tokens(n: int) -> np.ndarray:
    # Token value == position, so any window tells where in the corpus it came from.
    return np.arange(n, dtype=np.uint16)


def write_bin(path, ids, vocab_size):
    with TokenWriter(path, vocab_size) as w:
        w.write(ids)


# ---- WindowDataset --------------------------------------------------------------------------------


def test_window_items_are_shifted_by_one():
    g = np.random.default_rng(0)
    tokens = g.integers(0, 500, size=50).astype(np.uint16)
    ds = WindowDataset(tokens, block_size=8)
    assert len(ds) == 42
    for start in (0, 7, 41):
        item = ds[start]
        assert item["input_ids"].dtype == torch.int64 and item["targets"].dtype == torch.int64
        assert item["input_ids"].tolist() == tokens[start : start + 8].tolist()
        assert item["targets"].tolist() == tokens[start + 1 : start + 9].tolist()
        assert torch.equal(item["input_ids"][1:], item["targets"][:-1])


# ---- WindowSampler --------------------------------------------------------------------------------


def test_sequential_order():
    ds = WindowDataset(arange_tokens(107), block_size=10)
    s = WindowSampler(ds, shuffle=False)
    assert len(s) == 10
    assert list(s) == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]
    s.set_epoch(3)
    assert list(s) == list(range(0, 100, 10))  # the epoch does not matter


def shifted_grid(starts: list[int], block_size: int, num_tokens: int) -> int:
    """Assert `starts` is a full grid 0, bs, 2bs... shifted by one offset that keeps windows in range."""
    s = sorted(starts)
    shift = s[0]
    num_windows = (num_tokens - 1) // block_size
    assert s == [shift + i * block_size for i in range(num_windows)]
    assert 0 <= shift and s[-1] + block_size + 1 <= num_tokens
    return shift


def test_random_order_is_a_shifted_permutation_that_changes_with_epoch():
    N, bs = 107, 10  # 10 windows, the grid can shift by 0..6
    ds = WindowDataset(arange_tokens(N), block_size=bs)
    orders, shifts = [], set()
    for epoch in range(8):
        s = WindowSampler(ds, shuffle=True, seed=7)
        s.set_epoch(epoch)
        order = list(s)
        shifts.add(shifted_grid(order, bs, N))
        orders.append(order)
        # Same seed and epoch -> same order, in a fresh sampler too.
        again = WindowSampler(ds, shuffle=True, seed=7)
        again.set_epoch(epoch)
        assert list(again) == order
    assert len({tuple(o) for o in orders}) == 8
    assert len(shifts) > 1  # the grid offset moves between epochs
    assert all(sorted(o) != o for o in orders[:3])  # shuffled, not just shifted
    other = WindowSampler(ds, shuffle=True, seed=8)
    assert list(other) != orders[0]


def test_random_windows_stay_inside_the_corpus():
    N, bs = 1000, 33
    ds = WindowDataset(arange_tokens(N), block_size=bs)
    for epoch in range(20):
        s = WindowSampler(ds, shuffle=True, seed=1)
        s.set_epoch(epoch)
        shifted_grid(list(s), bs, N)
        for start in list(s)[:3]:
            assert len(ds[start]["targets"]) == bs


@pytest.mark.parametrize("shuffle", [False, True])
def test_two_ranks_split_the_single_process_order(shuffle):
    N, bs, b = 118, 10, 2  # 11 windows: 5 per rank, the odd one is dropped
    ds = WindowDataset(arange_tokens(N), block_size=bs)
    single = WindowSampler(ds, shuffle=shuffle, seed=3)
    ranks = [WindowSampler(ds, shuffle=shuffle, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    for s in [single, *ranks]:
        s.set_epoch(2)
    glob = list(single)
    r0, r1 = list(ranks[0]), list(ranks[1])
    assert len(r0) == len(r1) == len(ranks[0]) == 5
    assert not set(r0) & set(r1)
    assert r0 == glob[0:10:2] and r1 == glob[1:10:2]
    # Per step, the two ranks' micro-batches together are the single process's batch of 2b.
    for step in range(len(r0) // b):
        union = sorted(r0[step * b : (step + 1) * b] + r1[step * b : (step + 1) * b])
        assert union == sorted(glob[step * 2 * b : (step + 1) * 2 * b])


# ---- ResumableDataLoader --------------------------------------------------------------------------


def make_loader(shuffle: bool, epoch: int = 0, **sampler_kwargs) -> ResumableDataLoader:
    ds = WindowDataset(arange_tokens(403), block_size=8)  # 50 windows
    sampler = WindowSampler(ds, shuffle=shuffle, seed=5, **sampler_kwargs)
    sampler.set_epoch(epoch)
    return ResumableDataLoader(ds, batch_size=4, sampler=sampler, drop_last=True)


def assert_same_batches(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["targets"], b["targets"])


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("k", [1, 5, 11])
def test_resume_yields_exactly_the_remaining_batches(shuffle, k):
    full = list(make_loader(shuffle, epoch=1))
    assert len(full) == 12  # 50 windows // 4, last partial batch dropped

    loader = make_loader(shuffle, epoch=1)
    it = iter(loader)
    seen = [next(it) for _ in range(k)]
    assert_same_batches(seen, full[:k])
    state = loader.state_dict()
    assert state == {"epoch": 1, "consumed": 4 * k, "world_size": 1}

    fresh = make_loader(shuffle, epoch=1)
    fresh.load_state_dict(state)
    rest = list(fresh)
    assert_same_batches(rest, full[k:])
    # The skip applies once: the next pass over the loader is a whole epoch again.
    assert_same_batches(list(fresh), full)


def test_resume_state_of_another_epoch_or_world_size_restarts_the_epoch():
    full = list(make_loader(True, epoch=2))
    loader = make_loader(True, epoch=2)
    loader.load_state_dict({"epoch": 1, "consumed": 8, "world_size": 1})
    assert_same_batches(list(loader), full)
    loader = make_loader(True, epoch=2)
    loader.load_state_dict({"epoch": 2, "consumed": 8, "world_size": 4})
    assert_same_batches(list(loader), full)


def test_resume_per_rank():
    full = list(make_loader(True, num_replicas=2, rank=1))
    loader = make_loader(True, num_replicas=2, rank=1)
    it = iter(loader)
    next(it), next(it)
    fresh = make_loader(True, num_replicas=2, rank=1)
    fresh.load_state_dict(loader.state_dict())
    assert_same_batches(list(fresh), full[2:])


# ---- PretrainDataModule ---------------------------------------------------------------------------


def test_missing_train_file_names_the_path(tmp_path):
    dm = PretrainDataModule(data_dir=str(tmp_path), block_size=8, batch_size=2)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "train.bin"))):
        dm.setup()


def test_block_size_larger_than_corpus(tmp_path):
    write_bin(tmp_path / "train.bin", np.arange(50) % 20, vocab_size=20)
    dm = PretrainDataModule(data_dir=str(tmp_path), block_size=64, batch_size=1, val_file=None)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "train.bin"))) as exc:
        dm.setup()
    assert "block_size 64" in str(exc.value)


def test_fewer_windows_than_one_batch(tmp_path):
    write_bin(tmp_path / "train.bin", np.arange(50) % 20, vocab_size=20)
    dm = PretrainDataModule(data_dir=str(tmp_path), block_size=16, batch_size=4, val_file=None)
    with pytest.raises(DataError, match="fewer than one batch"):
        dm.setup()  # (50 - 1) // 16 = 3 windows < 4


def test_held_out_tail_is_disjoint_from_training_tokens(tmp_path):
    write_bin(tmp_path / "train.bin", np.arange(1000), vocab_size=1000)
    dm = PretrainDataModule(
        data_dir=str(tmp_path), block_size=16, batch_size=4, val_file=None, val_fraction=0.1, sampling="random"
    )
    dm.setup()
    assert dm.val_tokens.tolist() == list(range(900, 1000))
    assert dm.train_tokens.tolist() == list(range(900))
    train_seen = set()
    for batch in dm.train_dataloader():
        train_seen.update(batch["input_ids"].flatten().tolist())
        train_seen.update(batch["targets"].flatten().tolist())
    val_seen = set()
    for batch in dm.val_dataloader():
        val_seen.update(batch["input_ids"].flatten().tolist())
        val_seen.update(batch["targets"].flatten().tolist())
    assert train_seen and val_seen
    assert max(train_seen) < 900 <= min(val_seen)
    assert len(train_seen) > 850  # one epoch covers nearly all training tokens


def test_raw_nanogpt_files_through_the_data_module(tmp_path):
    np.arange(300, dtype=np.uint16).tofile(tmp_path / "train.bin")
    (np.arange(100, dtype=np.uint16) + 300).tofile(tmp_path / "val.bin")
    with pytest.raises(DataError, match="vocab_size"):
        PretrainDataModule(data_dir=str(tmp_path), block_size=8, batch_size=2).setup()
    dm = PretrainDataModule(data_dir=str(tmp_path), block_size=8, batch_size=2, vocab_size=400, sampling="sequential")
    assert dm.vocab_size == 400
    first = next(iter(dm.train_dataloader()))
    assert first["input_ids"].tolist() == [list(range(0, 8)), list(range(8, 16))]
    assert dm.val_tokens[0] == 300


def test_prepare_runs_the_pipeline_into_data_dir_and_is_cached(tmp_path):
    data_dir = tmp_path / "builtin"
    prepare = {
        "sources": ["builtin:200"], "output_dir": "ignored", "num_proc": 1,
        "filters": {"min_words": 10, "gopher_min_words": 10, "gopher_min_stop_words": None},
        "tokenizer": {"vocab_size": 300},
    }
    dm = PretrainDataModule(data_dir=str(data_dir), prepare=prepare, block_size=32, batch_size=4)
    dm.prepare_data()
    for name in ("train.bin", "train.json", "val.bin", "val.json", "tokenizer.json", "prepare_stats.json"):
        assert (data_dir / name).is_file(), name
    assert not (tmp_path / "ignored").exists()
    stats = json.loads((data_dir / "prepare_stats.json").read_text())
    dm.setup()
    tok = dm.tokenizer
    assert tok is not None and tok.vocab_size == 300 and tok.eos_id is not None
    assert dm.vocab_size == 300
    train = open_token_file(data_dir / "train.bin")
    val = open_token_file(data_dir / "val.bin")
    n_train, n_val = stats["splits"]["train"]["num_documents"], stats["splits"]["val"]["num_documents"]
    assert n_train + n_val == stats["documents_out"] < 200
    assert int((train.tokens == tok.eos_id).sum()) == n_train and int((val.tokens == tok.eos_id).sum()) == n_val
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (4, 32) and batch["targets"].shape == (4, 32)
    assert int(batch["input_ids"].max()) < 300
    assert dm.val_tokens is not None and len(dm.val_tokens) == len(val)
    # The hyperparameters stay plain data, so checkpoints load with weights_only=True.
    assert dm.hparams.prepare == prepare
    # A second prepare_data with the same config leaves the files alone; a changed config reruns.
    before = (data_dir / "train.bin").stat().st_mtime_ns
    PretrainDataModule(data_dir=str(data_dir), prepare=prepare).prepare_data()
    assert (data_dir / "train.bin").stat().st_mtime_ns == before
    changed = {**prepare, "tokenizer": {"vocab_size": 320}}
    PretrainDataModule(data_dir=str(data_dir), prepare=changed).prepare_data()
    assert open_token_file(data_dir / "train.bin").vocab_size == 320


def test_prepare_accepts_a_yaml_path(tmp_path):
    config = tmp_path / "data.yaml"
    config.write_text("sources: [builtin:50]\nnum_proc: 1\nfilters: {min_words: 5, gopher_min_words: null, "
                      "gopher_min_stop_words: null}\ndedup: {near: false}\ntokenizer: {vocab_size: 280}\n")
    dm = PretrainDataModule(data_dir=str(tmp_path / "out"), prepare=str(config))
    assert dm.prepare_config().output_dir == str(tmp_path / "out")
    assert dm.prepare_config().dedup.near is False
    dm.prepare_data()
    assert open_token_file(tmp_path / "out" / "train.bin").vocab_size == 280


# ---- token shards read as one corpus ------------------------------------------------------------------


def test_sharded_tokens_read_windows_across_shard_ends_as_one_file(tmp_path):
    from lit_llm.prepare.shards import ShardedTokens

    parts = [np.arange(0, 7), np.arange(7, 8), np.arange(8, 30), np.arange(30, 41)]
    tokens = ShardedTokens([p.astype(np.uint16) for p in parts])
    assert len(tokens) == 41
    for start in range(41):
        for stop in range(start, 42):
            assert tokens[start:stop].tolist() == list(range(start, min(stop, 41))), (start, stop)
    head, tail = tokens.split(20)
    assert (len(head), len(tail)) == (20, 21)
    assert head[0:20].tolist() == list(range(20)) and tail[0:21].tolist() == list(range(20, 41))
    assert tokens.split(0)[0][0:5].tolist() == [] and tokens.split(41)[1][0:5].tolist() == []


@pytest.mark.parametrize("train_file", ["shards", "shards/train-*.bin"])
def test_a_folder_of_token_shards_trains_like_the_one_file_holding_them(tmp_path, train_file):
    """Three shards (as three prepare tasks write them) give the windows, batches, held-out tail and resume of one
    file with the same tokens: no merge step."""
    ids = (np.arange(3000) * 7) % 500
    write_bin(tmp_path / "train.bin", ids, vocab_size=500)
    (tmp_path / "shards").mkdir()
    for i, (a, b) in enumerate([(0, 1234), (1234, 1235), (1235, 3000)]):
        write_bin(tmp_path / "shards" / f"train-{i:05d}.bin", ids[a:b], vocab_size=500)
    options = dict(block_size=16, batch_size=4, val_file=None, val_fraction=0.1, sampling="random", seed=3)
    one = PretrainDataModule(data_dir=str(tmp_path), **options)
    sharded = PretrainDataModule(data_dir=str(tmp_path), train_file=train_file, **options)
    one.setup(), sharded.setup()
    assert len(sharded.train_tokens) == len(one.train_tokens) == 2700
    for a, b in zip(one.train_dataloader(), sharded.train_dataloader()):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["targets"], b["targets"])
    assert [b["input_ids"].tolist() for b in one.val_dataloader()] == [
        b["input_ids"].tolist() for b in sharded.val_dataloader()
    ]
    loader = sharded.train_dataloader()
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    rest = [b["input_ids"] for b in it]
    resumed = sharded.train_dataloader()
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(rest, [b["input_ids"] for b in resumed]))


def test_shards_of_different_runs_or_none_at_all_are_refused(tmp_path):
    (tmp_path / "shards").mkdir()
    with pytest.raises(DataError, match=r"no token files \(\*\.bin\) match .*shards"):
        PretrainDataModule(data_dir=str(tmp_path), train_file="shards", block_size=8, batch_size=2).setup()
    write_bin(tmp_path / "shards" / "train-00000.bin", np.arange(100) % 50, vocab_size=50)
    write_bin(tmp_path / "shards" / "train-00001.bin", np.arange(100) % 50, vocab_size=70000)  # uint32 ids
    with pytest.raises(DataError, match=r"train-00001.bin differs from .*train-00000.bin in its vocabulary size and "
                                        r"dtype"):  # fmt: skip
        PretrainDataModule(data_dir=str(tmp_path), train_file="shards", block_size=8, batch_size=2).setup()
