"""Token files: writer/reader round trip, dtype choice, nanoGPT raw files, errors, write_documents."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lit_llm.prepare.shards import TokenWriter, open_token_file, sidecar_path, token_dtype, write_documents
from lit_llm.errors import DataError


def write(path: Path, ids, vocab_size: int, **kwargs) -> dict:
    with TokenWriter(path, vocab_size, **kwargs) as w:
        w.write(ids)
    return json.loads(sidecar_path(path).read_text())


def test_round_trip(tmp_path):
    path = tmp_path / "sub" / "train.bin"
    with TokenWriter(path, vocab_size=1000) as w:
        w.write([1, 2, 3], text_bytes=7)
        w.write(np.array([999, 0]), text_bytes=5, documents=2)
    meta = json.loads((tmp_path / "sub" / "train.json").read_text())
    assert meta["num_tokens"] == 5 and meta["num_bytes"] == 12 and meta["num_documents"] == 3
    assert meta["max_token_id"] == 999 and meta["vocab_size"] == 1000 and meta["dtype"] == "uint16"
    tf = open_token_file(path)
    assert tf.tokens.tolist() == [1, 2, 3, 999, 0]
    assert len(tf) == 5 and tf.vocab_size == 1000 and tf.num_bytes == 12
    assert path.stat().st_size == 5 * 2
    assert not (tmp_path / "sub" / "train.bin.tmp").exists()


def test_tokenizer_reference_is_resolved_relative_to_the_sidecar(tmp_path):
    write(tmp_path / "train.bin", [1, 2], vocab_size=10, tokenizer="tokenizer.json")
    assert open_token_file(tmp_path / "train.bin").tokenizer == (tmp_path / "tokenizer.json").resolve()
    write(tmp_path / "other.bin", [1, 2], vocab_size=10)
    assert open_token_file(tmp_path / "other.bin").tokenizer is None


@pytest.mark.parametrize(
    "vocab, dtype", [(256, np.uint16), (65536, np.uint16), (65537, np.uint32), (200_000, np.uint32)]
)
def test_dtype_choice(vocab, dtype):
    assert token_dtype(vocab) == np.dtype(dtype)


def test_uint16_at_65536_and_uint32_at_65537_keep_the_ids(tmp_path):
    ids16 = [0, 65535, 1234]
    meta = write(tmp_path / "a.bin", ids16, vocab_size=65536)
    assert meta["dtype"] == "uint16"
    assert (tmp_path / "a.bin").stat().st_size == 3 * 2
    tf = open_token_file(tmp_path / "a.bin")
    assert tf.tokens.dtype == np.uint16 and tf.tokens.tolist() == ids16

    ids32 = [0, 65535, 65536, 7]
    meta = write(tmp_path / "b.bin", ids32, vocab_size=65537)
    assert meta["dtype"] == "uint32"
    assert (tmp_path / "b.bin").stat().st_size == 4 * 4
    tf = open_token_file(tmp_path / "b.bin")
    assert tf.tokens.dtype == np.uint32 and tf.tokens.tolist() == ids32


def test_raw_nanogpt_bin_opens_with_vocab_size(tmp_path):
    path = tmp_path / "train.bin"
    ids = np.array([0, 5, 64, 10, 3], dtype=np.uint16)
    ids.tofile(path)
    tf = open_token_file(path, vocab_size=65)
    assert tf.tokens.dtype == np.uint16 and tf.tokens.tolist() == ids.tolist()
    assert tf.vocab_size == 65 and tf.num_bytes is None and tf.tokenizer is None


def test_raw_bin_without_vocab_size_names_file_and_vocab_size(tmp_path):
    path = tmp_path / "train.bin"
    np.array([1, 2, 3], dtype=np.uint16).tofile(path)
    with pytest.raises(DataError, match=re.escape(str(path))) as exc:
        open_token_file(path)
    assert "vocab_size" in str(exc.value)


def test_raw_bin_with_ids_beyond_vocab_names_file_and_id(tmp_path):
    path = tmp_path / "train.bin"
    np.array([1, 70, 3, 12], dtype=np.uint16).tofile(path)
    with pytest.raises(DataError, match=re.escape(str(path))) as exc:
        open_token_file(path, vocab_size=65)
    assert "70" in str(exc.value)
    assert open_token_file(path, vocab_size=71).tokens.tolist() == [1, 70, 3, 12]


@pytest.mark.parametrize("bad", [[1, 2, 10], [1, -1, 2]])
def test_out_of_vocab_ids_at_write_time(tmp_path, bad):
    path = tmp_path / "train.bin"
    with pytest.raises(DataError, match=re.escape(str(path))) as exc:
        write(path, bad, vocab_size=10)
    offending = [t for t in bad if not 0 <= t < 10][0]
    assert re.search(rf"token id {offending}\b", str(exc.value))
    # The aborted write leaves nothing behind.
    assert not path.exists() and not sidecar_path(path).exists()
    assert not (tmp_path / "train.bin.tmp").exists()


def test_missing_file(tmp_path):
    path = tmp_path / "nope.bin"
    with pytest.raises(DataError, match=re.escape(str(path))):
        open_token_file(path, vocab_size=10)


def test_empty_file(tmp_path):
    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"")
    with pytest.raises(DataError, match=re.escape(str(raw))):
        open_token_file(raw, vocab_size=10)
    written = tmp_path / "written.bin"
    write(written, [], vocab_size=10)
    with pytest.raises(DataError, match=re.escape(str(written))):
        open_token_file(written)


def test_corrupt_sidecar_json(tmp_path):
    path = tmp_path / "train.bin"
    write(path, [1, 2, 3], vocab_size=10)
    sidecar_path(path).write_text('{"dtype": "uint16", "vocab_')
    with pytest.raises(DataError, match=re.escape(str(sidecar_path(path)))):
        open_token_file(path)


def test_sidecar_inconsistencies(tmp_path):
    path = tmp_path / "train.bin"
    write(path, [1, 2, 3], vocab_size=10)
    meta = json.loads(sidecar_path(path).read_text())
    with pytest.raises(DataError, match="vocab_size 5 is smaller"):
        open_token_file(path, vocab_size=5)
    sidecar_path(path).write_text(json.dumps({k: v for k, v in meta.items() if k != "dtype"}))
    with pytest.raises(DataError, match="'dtype'"):
        open_token_file(path)
    sidecar_path(path).write_text(json.dumps({**meta, "dtype": "uint32"}))  # 6 bytes is not a multiple of 4
    with pytest.raises(DataError, match="not a multiple"):
        open_token_file(path)


# ---- write_documents ------------------------------------------------------------------------------


class ByteTokenizer:
    """One id per UTF-8 byte; EOS is 256. Enough of the Tokenizer interface for write_documents."""

    eos_id = 256
    vocab_size = 257

    def encode_batch(self, texts):
        return [list(t.encode("utf-8")) for t in texts]

    def save(self, path):
        Path(path).write_text("{}")


def test_write_documents_eos_val_routing_and_counts(tmp_path):
    docs = [f"doc {i} " + "é" * (i % 3) for i in range(45)]
    metas = write_documents(docs, ByteTokenizer(), tmp_path, val_fraction=0.05, batch_size=7)
    val_idx = [19, 39]  # every 20th document
    train_idx = [i for i in range(45) if i not in val_idx]

    def expected(idx):
        return [t for i in idx for t in list(docs[i].encode("utf-8")) + [256]]

    train = open_token_file(tmp_path / "train.bin")
    val = open_token_file(tmp_path / "val.bin")
    assert train.tokens.tolist() == expected(train_idx)
    assert val.tokens.tolist() == expected(val_idx)
    assert (train.tokens == 256).sum() == 43 and (val.tokens == 256).sum() == 2
    assert train.tokens[-1] == 256 and val.tokens[-1] == 256

    for split, idx in (("train", train_idx), ("val", val_idx)):
        meta = json.loads((tmp_path / f"{split}.json").read_text())
        assert metas[split]["num_tokens"] == meta["num_tokens"]
        assert meta["num_documents"] == len(idx)
        assert meta["num_tokens"] == sum(len(docs[i].encode("utf-8")) + 1 for i in idx)
        assert meta["num_bytes"] == sum(len(docs[i].encode("utf-8")) for i in idx)
        assert meta["tokenizer"] == "tokenizer.json"
    assert metas["train"]["num_documents"] + metas["val"]["num_documents"] == len(docs)
    assert (tmp_path / "tokenizer.json").exists()


def test_write_documents_without_val_leaves_no_val_file(tmp_path):
    metas = write_documents(["a", "bc"], ByteTokenizer(), tmp_path, val_fraction=0.0)
    assert set(metas) == {"train"}
    assert not (tmp_path / "val.bin").exists() and not (tmp_path / "val.json").exists()
    assert open_token_file(tmp_path / "train.bin").tokens.tolist() == [97, 256, 98, 99, 256]


def test_write_documents_with_a_trained_tokenizer(token_dir):
    # conftest's token_dir: 600 documents, val_fraction 0.1 -> every 10th document to val.
    train = json.loads((token_dir / "train.json").read_text())
    val = json.loads((token_dir / "val.json").read_text())
    assert train["num_documents"] == 540 and val["num_documents"] == 60
    tf = open_token_file(token_dir / "train.bin")
    from lit_llm.text.tokenizer import Tokenizer

    tok = Tokenizer(token_dir / "tokenizer.json")
    assert int((tf.tokens == tok.eos_id).sum()) == 540
    assert tf.tokens[-1] == tok.eos_id
    assert train["num_tokens"] == len(tf) and train["max_token_id"] == int(tf.tokens.max())
