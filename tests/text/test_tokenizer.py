"""Byte-level BPE: lossless round trips, special tokens, per-token byte lengths, file errors, transformers parity."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_llm.text.tokenizer import (
    BASE_SPECIAL_TOKENS,
    CHAT_SPECIAL_TOKENS,
    SPECIAL_TOKENS,
    Tokenizer,
    train_bpe,
)
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
    # What transformers' clean_up_tokenization would rewrite (" ," -> ","), were it on.
    "cleanup": "Hello , world ! isn 't it ? do n't . I 'm , 're 've",
    "spaces": " one leading, two trailing  ",
    "combining": "e\u0301 a\u0308 Z\u0335\u0336 \u200d\u200b\ufeff",
}


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_bpe(TRAIN_TEXTS, vocab_size=300)


def test_vocab_size_and_merges(tok):
    assert tok.vocab_size == 300
    # 8 specials + 256 bytes + merges: common words become single tokens.
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
    assert BASE_SPECIAL_TOKENS == ["<pad>", "<unk>", "<s>", "</s>"]
    assert CHAT_SPECIAL_TOKENS == ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    assert SPECIAL_TOKENS == BASE_SPECIAL_TOKENS + CHAT_SPECIAL_TOKENS
    assert [vocab[s] for s in SPECIAL_TOKENS] == list(range(8))
    assert tok.special_ids == {s: i for i, s in enumerate(SPECIAL_TOKENS)}
    assert [tok.token_id(s) for s in SPECIAL_TOKENS] == list(range(8))
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


# ---- special tokens ------------------------------------------------------------------------------


def test_token_id_of_a_missing_token_names_it(tok):
    last = tok._tok.id_to_token(tok.vocab_size - 1)  # the last merge: ordinary tokens work too
    assert tok.token_id(last) == tok.vocab_size - 1
    with pytest.raises(DataError, match=re.escape("'<|tool|>'")):
        tok.token_id("<|tool|>")


def test_special_token_strings_in_text_encode_to_their_id(tok):
    # tokenizers matches added tokens in the input text even with add_special_tokens=False (that flag only turns the
    # post-processor's BOS/EOS template off); transformers does the same by default (split_special_tokens=False).
    # So text that spells a chat token IS that token: the SFT stage must not let user text spell them.
    user = tok.token_id("<|user|>")
    ids = tok.encode("<|user|>hi")
    assert ids[0] == user and tok.decode(ids[1:]) == "hi"
    assert ids == [user] + tok.encode("hi")
    text = "<|system|>Be brief.<|end|><|user|>hi<|end|><|assistant|>hello</s>"
    ids = tok.encode(text)
    assert [i for i in ids if i < len(SPECIAL_TOKENS)] == [4, 7, 5, 7, 6, 3]
    assert tok.decode(ids, skip_special_tokens=False) == text  # exact
    assert tok.decode(ids) == "Be brief.hihello"  # the default drops them
    # Only the exact string matches: no case folding, no partial match, no stripping of the spaces around it.
    for near in ("<|USER|>", "<|user", "<| user |>", "< s>"):
        assert not set(tok.encode(near)) & set(tok.special_ids.values()), near
    assert tok.decode(tok.encode(" <|user|> x ")) == "  x "


# ---- lossless round trips ------------------------------------------------------------------------

UNICODE = st.text(st.characters(exclude_categories=("Cs",)))  # every character UTF-8 can hold
# Text stitched from arbitrary pieces, special-token strings and runs of whitespace.
PIECES = st.lists(st.one_of(UNICODE, st.sampled_from(SPECIAL_TOKENS + [" ", "  ", "\n", "\r\n", "\t", " \n "]))).map(
    "".join
)


@settings(max_examples=300, deadline=None)
@given(UNICODE)
def test_round_trip_of_any_unicode_text(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids, skip_special_tokens=False) == text
    if not any(s in text for s in SPECIAL_TOKENS):
        assert tok.decode(ids) == text


@settings(max_examples=200, deadline=None)
@given(PIECES)
def test_round_trip_with_special_tokens_and_whitespace(tok, text):
    assert tok.decode(tok.encode(text), skip_special_tokens=False) == text
    assert tok.encode_batch([text, text]) == [tok.encode(text)] * 2


def test_decoder_only_maps_bytes(tok):
    spec = json.loads(tok.to_json())
    assert spec["normalizer"] is None  # nothing rewrites the input
    assert spec["decoder"]["type"] == "ByteLevel" and "cleanup" not in spec["decoder"]
    assert spec["pre_tokenizer"]["add_prefix_space"] is False


# ---- training options and errors -----------------------------------------------------------------


def merges(tok: Tokenizer) -> int:
    return len(json.loads(tok.to_json())["model"]["merges"])


def test_min_frequency_limits_the_merges():
    # Words "ab" x3 and "cd" x1: the pair (a, b) is seen 3 times, (c, d) once.
    texts = ["ab"] * 3 + ["cd"]
    counts = {f: merges(train_bpe(texts, vocab_size=1000, min_frequency=f)) for f in (1, 2, 3, 4)}
    assert counts == {1: 2, 2: 1, 3: 1, 4: 0}
    assert train_bpe(texts, vocab_size=1000, min_frequency=1).vocab_size == 256 + 8 + 2
    # The mixed corpus with each text twice: every pair is seen at least twice, few of them 3 times or more.
    texts = TRAIN_TEXTS[:6] * 2
    counts = {f: merges(train_bpe(texts, vocab_size=2000, min_frequency=f)) for f in (1, 2, 3, 5, 10)}
    assert counts == {1: 158, 2: 158, 3: 22, 5: 5, 10: 0}


def test_streamed_texts_train_like_a_list(tok):
    def stream():
        yield ""  # skipped while looking for the first text, which must not be lost
        yield from TRAIN_TEXTS

    streamed = train_bpe(stream(), vocab_size=300, show_progress=False, length=len(TRAIN_TEXTS) + 1)
    assert streamed.to_json() == tok.to_json()


def test_custom_special_tokens():
    t = train_bpe(TRAIN_TEXTS, vocab_size=300, special_tokens=["<|endoftext|>"])
    assert t.special_ids == {"<|endoftext|>": 0}
    assert (t.bos_id, t.eos_id, t.pad_id) == (0, 0, None)


def test_vocab_too_small_raises_data_error():
    with pytest.raises(DataError, match=re.escape("vocab_size 263 is too small")) as err:
        train_bpe(TRAIN_TEXTS, vocab_size=263)
    assert "256 bytes + 8 special tokens = 264" in str(err.value)
    assert merges(train_bpe(TRAIN_TEXTS, vocab_size=264)) == 0  # the bare minimum works
    with pytest.raises(DataError, match="256 bytes \\+ 1 special tokens = 257"):
        train_bpe(TRAIN_TEXTS, vocab_size=256, special_tokens=["<|endoftext|>"])


@pytest.mark.parametrize("texts", [[], ["", ""], iter([]), (t for t in [""])], ids=["list", "blank", "iter", "gen"])
def test_no_text_raises_data_error(texts):
    with pytest.raises(DataError, match="no text to train the tokenizer on"):
        train_bpe(texts, vocab_size=300)


# ---- existing tokenizer.json files (GPT-2, Llama 3), built here: no downloads -----------------------


def byte_level_bpe(path, special_tokens: list[str]) -> Tokenizer:
    """A tokenizer.json shaped like GPT-2's (BPE + ByteLevel, trim_offsets off), written by `tokenizers` itself."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=special_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    hf.train_from_iterator(TRAIN_TEXTS, trainer=trainer)
    hf.save(str(path))
    return Tokenizer(path)


def test_gpt2_style_tokenizer_file(tmp_path):
    t = byte_level_bpe(tmp_path / "tokenizer.json", ["<|endoftext|>"])
    eot = t._tok.token_to_id("<|endoftext|>")
    assert (t.bos_id, t.eos_id, t.pad_id, t.unk_id) == (eot, eot, None, None)
    assert t.special_ids == {"<|endoftext|>": eot} and t.token_id("<|endoftext|>") == eot
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'tokenizer.json'} has no token '<|user|>'")):
        t.token_id("<|user|>")
    for text in SAMPLES.values():
        assert t.decode(t.encode(text)) == text
    assert t.encode("a<|endoftext|>b") == t.encode("a") + [eot] + t.encode("b")
    assert t.special_tokens_map() == {
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "additional_special_tokens": [],
    }


def test_llama3_style_tokenizer_file(tmp_path):
    t = byte_level_bpe(tmp_path / "tokenizer.json", ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
    assert (t.bos_id, t.eos_id, t.pad_id) == (0, 1, None)
    assert t.special_ids == {"<|begin_of_text|>": 0, "<|end_of_text|>": 1, "<|eot_id|>": 2}


def test_save_pretrained_writes_a_transformers_folder(tok, tmp_path):
    out = tok.save_pretrained(tmp_path / "tok", model_max_length=2048)
    files = ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    assert sorted(p.name for p in out.iterdir()) == files
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config == {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "additional_special_tokens": CHAT_SPECIAL_TOKENS,
        "model_max_length": 2048,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
    }
    assert json.loads((out / "special_tokens_map.json").read_text()) == tok.special_tokens_map()
    assert Tokenizer(out).to_json() == tok.to_json()
    assert json.loads(tok.save_pretrained(tmp_path / "big").joinpath("tokenizer_config.json").read_text())[
        "model_max_length"
    ] == int(1e30)


# ---- transformers parity -------------------------------------------------------------------------

PARITY = list(SAMPLES.values()) + [
    "",
    " ",
    "<|system|>Be brief.<|end|><|user|>hi<|end|><|assistant|>hello</s>",
    "<s>begin and pad<pad><pad>",
    "x" * 300 + " " * 7 + "end",
]


def load_hf(directory):
    transformers = pytest.importorskip("transformers")
    return (
        transformers.PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json")),
        transformers.AutoTokenizer.from_pretrained(str(directory)),
    )


def assert_same_as_transformers(ours: Tokenizer, hf, texts: list[str]) -> None:
    for text in texts:
        ids = ours.encode(text)
        assert hf(text)["input_ids"] == ids, text  # nothing added around the text, even by default
        assert hf.encode(text, add_special_tokens=False) == ids, text
        for skip in (False, True):
            assert hf.decode(ids, skip_special_tokens=skip) == ours.decode(ids, skip_special_tokens=skip), text
    assert hf(texts)["input_ids"] == ours.encode_batch(texts)


def test_transformers_loads_the_saved_folder_with_the_same_ids(tok, tmp_path):
    bare, auto = load_hf(tok.save_pretrained(tmp_path))
    for hf in (bare, auto):
        assert_same_as_transformers(tok, hf, PARITY)
    # A bare tokenizer.json carries no roles; the folder's config gives them.
    assert (auto.bos_token_id, auto.eos_token_id, auto.pad_token_id) == (tok.bos_id, tok.eos_id, tok.pad_id)
    assert auto.unk_token_id == tok.unk_id == 1
    assert [auto.convert_tokens_to_ids(s) for s in CHAT_SPECIAL_TOKENS] == [4, 5, 6, 7]
    assert set(CHAT_SPECIAL_TOKENS) <= set(auto.all_special_tokens)
    assert auto.decode(tok.encode(SAMPLES["cleanup"])) == SAMPLES["cleanup"]  # no space clean-up


@settings(max_examples=100, deadline=None)
@given(text=PIECES)
def test_transformers_parity_on_any_text(tok, hf_auto, text):
    ids = tok.encode(text)
    assert hf_auto(text)["input_ids"] == ids
    assert hf_auto.decode(ids) == tok.decode(ids, skip_special_tokens=False)


@pytest.fixture(scope="module")
def hf_auto(tok, tmp_path_factory):
    return load_hf(tok.save_pretrained(tmp_path_factory.mktemp("hf")))[1]


def test_transformers_parity_for_a_gpt2_style_file(tmp_path):
    t = byte_level_bpe(tmp_path / "src.json", ["<|endoftext|>"])
    bare, auto = load_hf(t.save_pretrained(tmp_path / "out"))
    for hf in (bare, auto):
        assert_same_as_transformers(t, hf, PARITY + ["a<|endoftext|>b"])
    assert (auto.bos_token_id, auto.eos_token_id, auto.pad_token_id) == (t.bos_id, t.eos_id, None)


def test_split_digits_gives_one_token_per_digit():
    texts = ["What is 1234 + 5678? It is 6912, and 12 + 34 is 46."] * 50
    split = train_bpe(texts, vocab_size=300, split_digits=True)
    plain = train_bpe(texts, vocab_size=300)
    ids = split.encode("1234 + 5678")
    assert [split.decode([i]) for i in ids] == ["1", "2", "3", "4", " +", " ", "5", "6", "7", "8"]
    assert split.decode(ids) == "1234 + 5678"
    assert len(plain.encode("1234 + 5678")) < len(ids)  # without it, digit groups merge
