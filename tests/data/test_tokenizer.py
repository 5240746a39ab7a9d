"""Byte-level BPE: lossless round trips, special tokens, per-token byte lengths, file errors."""

from __future__ import annotations

import re

import pytest

from lit_llm.data.tokenizer import SPECIAL_TOKENS, Tokenizer, train_bpe
from lit_llm.errors import DataError

TRAIN_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How's it going? (Fine, thanks.)",
    "naïve café résumé Zürich façade",
    "日本語のテキストと中文文本",
    "emoji 🎉🚀 party time 😀",
    "tabs\tand\nnewlines\n\n  spaces   here",
] * 10

SAMPLES = {
    "ascii": "The lazy dog sleeps all day long",
    "punctuation": "Wait... what?! (yes); [no] {maybe} -- 'quote' \"double\" #1 @x $5 %y ^z &~`|\\/<>=+*_",
    "whitespace": "  leading\ttab\n\nnew  lines\r\n   trailing   \n",
    "emoji": "party 🎉🚀 and 👍🏽 and 👨‍👩‍👧 family",
    "cjk": "日本語のテキスト，中文文本。한국어 텍스트",
    "accented": "naïve café résumé Ångström crème brûlée œuvre",
    "mixed": "Hello 🎉 世界 naïve\n\t  x ¿Qué? Ça va… «ok» — fin",
}


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_bpe(TRAIN_TEXTS, vocab_size=300)


def test_vocab_size_and_merges(tok):
    assert tok.vocab_size == 300
    # 4 specials + 256 bytes + merges: common words become single tokens.
    assert len(tok.encode("the quick brown fox")) < len("the quick brown fox")


@pytest.mark.parametrize("kind", list(SAMPLES))
def test_round_trip_is_exact(tok, kind):
    text = SAMPLES[kind]
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_round_trip_of_unseen_bytes_and_batch(tok):
    texts = ["\x00\x01 control \x7f", "Ω≈ç√∫ ∑ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", ""]
    assert [tok.decode(ids) for ids in tok.encode_batch(texts)] == texts
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


def test_special_tokens_and_ids(tok):
    vocab = tok._tok.get_vocab(with_added_tokens=True)
    for s in SPECIAL_TOKENS:
        assert s in vocab
    assert SPECIAL_TOKENS == ["<pad>", "<unk>", "<s>", "</s>"]
    assert tok.pad_id == vocab["<pad>"]
    assert tok.bos_id == vocab["<s>"]
    assert tok.eos_id == vocab["</s>"]
    assert len({tok.pad_id, tok.bos_id, tok.eos_id, vocab["<unk>"]}) == 4
    # Special tokens vanish on decode by default and survive when asked.
    ids = [tok.bos_id] + tok.encode("hi") + [tok.eos_id]
    assert tok.decode(ids) == "hi"
    assert tok.decode(ids, skip_special_tokens=False) == "<s>hi</s>"


def test_token_byte_lengths_per_token(tok):
    lengths = tok.token_byte_lengths()
    assert len(lengths) == tok.vocab_size
    special = {tok._tok.token_to_id(s) for s in SPECIAL_TOKENS}
    assert all(lengths[i] == 0 for i in special)
    checked = 0
    for i in range(tok.vocab_size):
        if i in special:
            continue
        assert lengths[i] >= 1
        text = tok.decode([i])
        if "\ufffd" not in text:  # a complete UTF-8 sequence
            assert lengths[i] == len(text.encode("utf-8")), (i, text)
            checked += 1
    assert checked > 100
    assert max(lengths) > 1  # merged tokens are longer than one byte


@pytest.mark.parametrize("kind", ["emoji", "cjk", "accented", "mixed", "whitespace"])
def test_token_byte_lengths_sum_to_the_text_bytes(tok, kind):
    text = SAMPLES[kind]
    lengths = tok.token_byte_lengths()
    ids = tok.encode(text)
    assert sum(lengths[i] for i in ids) == len(text.encode("utf-8"))
    if kind in ("emoji", "cjk"):
        # Multi-byte characters are split across byte tokens, which decode alone to U+FFFD.
        assert any("\ufffd" in tok.decode([i]) for i in ids)


def test_save_and_reload(tok, tmp_path):
    tok.save(tmp_path / "tokenizer.json")
    for loaded in (Tokenizer(tmp_path / "tokenizer.json"), Tokenizer(tmp_path), Tokenizer(json_str=tok.to_json())):
        assert loaded.vocab_size == tok.vocab_size
        assert (loaded.eos_id, loaded.bos_id, loaded.pad_id) == (tok.eos_id, tok.bos_id, tok.pad_id)
        assert loaded.encode(SAMPLES["mixed"]) == tok.encode(SAMPLES["mixed"])
    assert Tokenizer(tmp_path).path == tmp_path / "tokenizer.json"


def test_missing_tokenizer_file_raises_data_error(tmp_path):
    path = tmp_path / "missing.json"
    with pytest.raises(DataError, match=re.escape(str(path))):
        Tokenizer(path)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "tokenizer.json"))):
        Tokenizer(tmp_path)  # a folder without tokenizer.json


def test_malformed_tokenizer_file_raises_data_error(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match=re.escape(str(path))):
        Tokenizer(path)
