"""A thin wrapper over a `tokenizers` tokenizer.json, plus training a byte-level BPE."""

from __future__ import annotations

import json

from collections.abc import Iterable, Iterator
from pathlib import Path

from lit_llm.errors import DataError

SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>"]


class Tokenizer:
    """Encode and decode text with a tokenizer.json; knows its BOS/EOS/pad ids."""

    def __init__(self, path: str | Path | None = None, *, json_str: str | None = None) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        if json_str is not None:
            self.path = None
            self._tok = HFTokenizer.from_str(json_str)
        else:
            path = Path(path)
            if path.is_dir():
                path = path / "tokenizer.json"
            if not path.is_file():
                raise DataError(f"tokenizer file not found: {path}")
            try:
                self._tok = HFTokenizer.from_file(str(path))
            except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
                raise DataError(f"could not read tokenizer {path}: {exc}") from exc
            self.path = path
        vocab = self._tok.get_vocab(with_added_tokens=True)
        self.bos_id = _first_id(vocab, ["<s>", "<|begin_of_text|>", "<|endoftext|>"])
        self.eos_id = _first_id(vocab, ["</s>", "<|end_of_text|>", "<|endoftext|>"])
        self.pad_id = _first_id(vocab, ["<pad>"])

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def to_json(self) -> str:
        return self._tok.to_str()

    def save(self, path: str | Path) -> None:
        self._tok.save(str(path))

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_byte_lengths(self) -> list[int]:
        """UTF-8 bytes each token id stands for (0 for special tokens), for bits-per-byte."""
        special = set(self._tok.get_added_tokens_decoder())
        decoder = json.loads(self._tok.to_str()).get("decoder") or {}
        # In a byte-level vocabulary every character of a token string stands for exactly one byte;
        # decoding a lone token would turn partial UTF-8 sequences into 3-byte replacement characters.
        byte_level = decoder.get("type") == "ByteLevel"
        lengths = []
        for i in range(self.vocab_size):
            if i in special:
                lengths.append(0)
            elif byte_level:
                lengths.append(len(self._tok.id_to_token(i)))
            else:
                lengths.append(len(self._tok.decode([i], skip_special_tokens=False).encode("utf-8")))
        return lengths


def _first_id(vocab: dict[str, int], candidates: list[str]) -> int | None:
    for c in candidates:
        if c in vocab:
            return vocab[c]
    return None


def train_bpe(texts: Iterable[str] | Iterator[str], vocab_size: int, special_tokens: list[str] | None = None) -> Tokenizer:
    """Train a byte-level BPE (GPT-2 style): every byte is in the alphabet, so decoding is lossless."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS if special_tokens is None else special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(json_str=tok.to_str())
