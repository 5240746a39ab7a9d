#!/usr/bin/env python
"""Tokenizer speed: `lit_llm.text.tokenizer` against calling the `tokenizers` library directly.

  training: `train_bpe(texts, vocab_size)` against a `tokenizers.Tokenizer` built by hand with the same model
            (BPE), pre-tokenizer (ByteLevel, no prefix space, GPT-2 regex), decoder, trainer settings (vocab size,
            min_frequency 2, the same special tokens, the byte alphabet) and the same list of texts.
  encoding: `Tokenizer.encode_batch(texts)` against `tokenizers`' `encode_batch(texts, add_special_tokens=False)`
            with the ids taken out of each encoding (what any caller needs), on the tokenizer just trained.

After one untimed run of each, runs alternate ours, direct, ours, direct, ... and medians are reported; MB/s is
UTF-8 bytes of the texts (1 MB = 10^6 bytes) over wall seconds. Both sides run in one process, so they share one
Rayon thread pool (`--threads` sets RAYON_NUM_THREADS before its first use; default: one thread per core). The text
comes from `lit_llm.prepare.corpus.generate_corpus` (nothing is downloaded); its small grammar runs out of pairs to merge
near 700 tokens, so a larger `--vocab-size` ends there. On a small shared machine single runs drift by 10% or more:
trust the medians, and raise `--rounds` when the two sides are close. The last line printed is the headline:

    tokenizer training: ours/direct MB/s ratio R (X MB/s); encoding Y MB/s (ours/direct E)

    python benchmarks/tokenizer_speed.py [--mb 10] [--vocab-size 8192] [--rounds 3] [--threads N]

`training_speed` and `encoding_speed` can be called from another benchmark script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from lit_llm.prepare.corpus import generate_corpus
from lit_llm.text.tokenizer import SPECIAL_TOKENS, Tokenizer, train_bpe

MB = 1e6


def _text_mb(texts: list[str]) -> float:
    return sum(len(t.encode("utf-8")) for t in texts) / MB


def _alternate(a: Callable[[], Any], b: Callable[[], Any], rounds: int) -> tuple[list[float], list[float]]:
    """Seconds of `a` and `b` run A B A B ...: slow phases of a shared machine hit both sides alike."""
    a(), b()  # untimed: the first run pays for starting the thread pool and growing the heap
    times_a, times_b = [], []
    for _ in range(rounds):
        for fn, times in ((a, times_a), (b, times_b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return times_a, times_b


def _train_direct(texts: list[str], vocab_size: int) -> Any:
    """What `train_bpe` does, written against `tokenizers` alone."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def _summary(mb: float, ours: list[float], direct: list[float]) -> dict[str, Any]:
    ours_mb_s, direct_mb_s = mb / statistics.median(ours), mb / statistics.median(direct)
    return {
        "mb": mb,
        "ours_s": [round(t, 3) for t in ours],
        "direct_s": [round(t, 3) for t in direct],
        "ours_mb_s": ours_mb_s,
        "direct_mb_s": direct_mb_s,
        "ratio": ours_mb_s / direct_mb_s,
    }


def training_speed(texts: list[str], vocab_size: int, rounds: int = 3) -> dict[str, Any]:
    """MB/s of `train_bpe` and of plain `tokenizers` training on `texts`: medians over `rounds`, ratio ours/direct.

    Also checks that both sides learn the same vocabulary, so the comparison is like for like.
    """
    results: dict[str, Any] = {}

    def ours() -> None:
        results["ours"] = train_bpe(texts, vocab_size)

    def direct() -> None:
        results["direct"] = _train_direct(texts, vocab_size)

    ours_s, direct_s = _alternate(ours, direct, rounds)
    ours_vocab = results["ours"]._tok.get_vocab(with_added_tokens=True)
    if ours_vocab != results["direct"].get_vocab(with_added_tokens=True):
        raise AssertionError("train_bpe and the direct tokenizers call learned different vocabularies")
    return {**_summary(_text_mb(texts), ours_s, direct_s), "vocab_size": len(ours_vocab)}


def encoding_speed(tokenizer: Tokenizer, texts: list[str], rounds: int = 3) -> dict[str, Any]:
    """MB/s of `tokenizer.encode_batch(texts)` and of `tokenizers`' own `encode_batch`, ratio ours/direct,
    and UTF-8 bytes per token."""
    hf = tokenizer._tok
    results: dict[str, Any] = {}

    def ours() -> None:
        results["ours"] = tokenizer.encode_batch(texts)

    def direct() -> None:
        results["direct"] = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]

    ours_s, direct_s = _alternate(ours, direct, rounds)
    if results["ours"] != results["direct"]:
        raise AssertionError("Tokenizer.encode_batch and tokenizers' encode_batch gave different ids")
    mb = _text_mb(texts)
    num_tokens = sum(len(ids) for ids in results["ours"])
    return {**_summary(mb, ours_s, direct_s), "num_tokens": num_tokens, "bytes_per_token": mb * MB / num_tokens}


def corpus(mb: float, seed: int = 0) -> list[str]:
    """Built-in generated documents adding up to at least `mb` MB of UTF-8 text."""
    texts, size = [], 0
    for doc in generate_corpus(10**9, seed=seed):
        texts.append(doc)
        size += len(doc.encode("utf-8"))
        if size >= mb * MB:
            return texts
    return texts


def _row(name: str, r: dict[str, Any]) -> str:
    runs = " ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(r["ours_s"], r["direct_s"]))
    return (
        f"{name:9s} ours {r['ours_mb_s']:7.2f} MB/s  direct {r['direct_mb_s']:7.2f} MB/s  ratio {r['ratio']:.3f}"
        f"  (seconds ours/direct per round: {runs})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=10.0, help="MB of generated text to train and encode on")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=3, help="A B rounds (each runs both sides once)")
    parser.add_argument("--threads", type=int, default=None, help="RAYON_NUM_THREADS for both sides")
    args = parser.parse_args()
    if args.threads is not None:
        # Read by Rayon when tokenizers first runs in parallel, which is after this line.
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)

    start = time.perf_counter()
    texts = corpus(args.mb)
    print(f"text: {len(texts):,} documents, {_text_mb(texts):.2f} MB generated in {time.perf_counter() - start:.1f} s")
    threads = os.environ.get("RAYON_NUM_THREADS", f"default ({os.cpu_count()} cores)")
    print(f"threads: RAYON_NUM_THREADS={threads}, rounds {args.rounds}, vocab_size {args.vocab_size}")
    train = training_speed(texts, args.vocab_size, rounds=args.rounds)
    print(_row("training", train) + f"  vocabulary {train['vocab_size']}")
    enc = encoding_speed(train_bpe(texts, args.vocab_size), texts, rounds=args.rounds)
    print(_row("encoding", enc) + f"  {enc['num_tokens']:,} tokens, {enc['bytes_per_token']:.2f} bytes/token")
    print(
        f"tokenizer training: ours/direct MB/s ratio {train['ratio']:.2f} ({train['ours_mb_s']:.2f} MB/s); "
        f"encoding {enc['ours_mb_s']:.2f} MB/s (ours/direct {enc['ratio']:.2f})"
    )


if __name__ == "__main__":
    main()
