"""A thin wrapper over a `tokenizers` tokenizer.json, plus training a byte-level BPE.

A trained tokenizer is saved as a folder that `transformers.AutoTokenizer.from_pretrained` loads and that encodes to
the same ids; any existing byte-level tokenizer.json (GPT-2, Llama 3, ...) can be used in its place.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sized
from pathlib import Path
from typing import Any

from lit_llm.errors import DataError

BASE_SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>"]
# Chat roles and end of turn, reserved at pretraining so the SFT stage finds them in the vocabulary.
CHAT_SPECIAL_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
SPECIAL_TOKENS = BASE_SPECIAL_TOKENS + CHAT_SPECIAL_TOKENS

# transformers' own "no limit" value (VERY_LARGE_INTEGER), so a saved config reads the same as one it writes.
NO_MAX_LENGTH = int(1e30)

# Role names as transformers knows them, and the tokens that fill each role: ours, Llama 3's, GPT-2's.
_ROLES = {
    "bos": ["<s>", "<|begin_of_text|>", "<|endoftext|>"],
    "eos": ["</s>", "<|end_of_text|>", "<|endoftext|>"],
    "pad": ["<pad>"],
    "unk": ["<unk>"],
}


class Tokenizer:
    """Encode and decode text with a tokenizer.json; knows its BOS/EOS/pad ids and its special tokens.

    `path` is a tokenizer.json file or a folder holding one; `json_str` is the file's content (as checkpoints store it).
    """

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
        self._index()

    @classmethod
    def _wrap(cls, hf_tokenizer: Any) -> Tokenizer:
        # Wraps a freshly trained tokenizer as is: a JSON round trip would cost time growing with the vocabulary.
        wrapper = cls.__new__(cls)
        wrapper.path = None
        wrapper._tok = hf_tokenizer
        wrapper._index()
        return wrapper

    def _index(self) -> None:
        vocab = self._tok.get_vocab(with_added_tokens=True)
        self.bos_id = _first_id(vocab, _ROLES["bos"])
        self.eos_id = _first_id(vocab, _ROLES["eos"])
        self.pad_id = _first_id(vocab, _ROLES["pad"])
        self.unk_id = _first_id(vocab, _ROLES["unk"])
        added = sorted(self._tok.get_added_tokens_decoder().items())
        self.special_ids: dict[str, int] = {t.content: i for i, t in added if t.special}

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def token_id(self, name: str) -> int:
        """The id of a token by its string, e.g. `token_id("<|user|>")`; DataError if the vocabulary lacks it."""
        i = self.special_ids.get(name)
        if i is None:
            i = self._tok.token_to_id(name)
        if i is None:
            where = f" {self.path}" if self.path is not None else ""
            raise DataError(f"the tokenizer{where} has no token {name!r}")
        return i

    def to_json(self) -> str:
        return self._tok.to_str()

    def save(self, path: str | Path) -> None:
        """Write tokenizer.json alone (what token files and checkpoints refer to)."""
        self._tok.save(str(path))

    def special_tokens_map(self) -> dict[str, Any]:
        """transformers' special-token roles (`bos_token`, ..., `additional_special_tokens`) for the tokens present."""
        roles: dict[str, Any] = {}
        for role in _ROLES:
            i = getattr(self, f"{role}_id")
            if i is not None:
                roles[f"{role}_token"] = self._tok.id_to_token(i)
        roles["additional_special_tokens"] = [t for t in CHAT_SPECIAL_TOKENS if t in self.special_ids]
        return roles

    def save_pretrained(self, directory: str | Path, model_max_length: int = NO_MAX_LENGTH) -> Path:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into `directory` for transformers.

        `AutoTokenizer.from_pretrained(directory)` then gives the same ids as `encode`: nothing is added around the
        text (no BOS/EOS) and decoding does not touch spaces. Returns the folder.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.save(directory / "tokenizer.json")
        roles = self.special_tokens_map()
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **roles,
            "model_max_length": model_max_length,
            "clean_up_tokenization_spaces": False,
            "add_bos_token": False,
            "add_eos_token": False,
        }
        for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", roles)):
            (directory / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return directory

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        """Token ids of `text`, nothing added. Special-token strings in the text (e.g. "<|user|>") become their id,
        unless `allow_special=False`: then they are encoded as ordinary text, so user content can never spell a
        role or end-of-turn token."""
        if allow_special:
            return self._tok.encode(text, add_special_tokens=False).ids
        self._tok.encode_special_tokens = True
        try:
            return self._tok.encode(text, add_special_tokens=False).ids
        finally:
            self._tok.encode_special_tokens = False

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # The fast variant (tokenizers >= 0.21) skips character offsets, which nothing here uses; same ids.
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]

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


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    special_tokens: list[str] | None = None,
    min_frequency: int = 2,
    show_progress: bool = False,
    length: int | None = None,
    split_digits: bool = False,
) -> Tokenizer:
    """Train a byte-level BPE (GPT-2 style): every byte is in the alphabet, so decoding is lossless.

    With `split_digits`, every digit is a token of its own (as in Llama and GPT-4's tokenizers): "1234" is four tokens,
    so a model sees place value the same way in every number instead of memorizing one token per digit group.

    `special_tokens` (default `SPECIAL_TOKENS`) take ids 0, 1, ... in order. Pairs seen fewer than `min_frequency`
    times are not merged, so a small corpus may end below `vocab_size`. `length` is the number of texts, for the
    progress bar only (taken from `len(texts)` when it has one). `texts` is streamed, never held in memory.
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    specials = list(dict.fromkeys(SPECIAL_TOKENS if special_tokens is None else special_tokens))
    if vocab_size < 256 + len(specials):
        raise DataError(
            f"tokenizer vocab_size {vocab_size} is too small: a byte-level BPE needs at least "
            f"256 bytes + {len(specials)} special tokens = {256 + len(specials)}"
        )
    if length is None and isinstance(texts, Sized):
        length = len(texts)
    # Find the first non-empty text here, then hand the rest to tokenizers untouched: a Python generator around
    # every text would cost time per document, and `chain` runs in C.
    rest = iter(texts)
    for first in rest:
        if first:
            break
    else:
        raise DataError("no text to train the tokenizer on: the texts are empty")

    tok = HFTokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]) if split_digits
        else byte_level
    )
    # The ByteLevel decoder only maps characters back to bytes: no space cleanup, so decode(encode(t)) == t.
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator(itertools.chain((first,), rest), trainer=trainer, length=length)
    return Tokenizer._wrap(tok)
