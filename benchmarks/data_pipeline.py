#!/usr/bin/env python
"""Data pipeline: dedup recall/precision on planted duplicates, clean+filter+dedup throughput and its scaling,
tokenizer training and encoding speed.

The corpus is generated (nothing is downloaded): ~1 KB documents of Zipf-distributed words (English function
words at the head, a 30k-word synthetic vocabulary in the tail) in sentences and paragraphs; 4% carry
accented words (so mojibake repair runs) and 4% arrive as HTML. Planted into it:

  * exact duplicates (3%): copies of earlier documents, a third of them upper-cased or re-spaced;
  * near duplicates (5%): copies of earlier documents with 5-15% of their words edited (replaced, inserted or
    deleted) in one or two contiguous passages, the way mirrored pages differ by a changed sentence or
    boilerplate block.

Every copy is placed after its original, so the pipeline (which keeps the first document of a cluster)
should drop the copy. Near-duplicate recall is the share of planted near copies removed as near duplicates
of their own original (or of another copy of it); precision is the share of near-duplicate removals that are
such planted copies. An edit of 15% of the words in one passage leaves a 5-gram Jaccard similarity of ~0.70,
in two passages ~0.63, so the near-dedup threshold is set below that (`--threshold`, default 0.5, which with
128 permutations gives 25 bands of 5 rows: P(candidate) 0.93 at Jaccard 0.63, 0.99 at 0.70, 0.06 at 0.3). At
the library's default of 0.8 (9 bands of 13 rows, P = 0.40 at 0.8) most of these copies are, by that
definition, not near duplicates; the script prints recall by edit rate at 0.8 as well.

Throughput is the documents per second of the clean, filter, exact-dedup and near-dedup stages together
(`lit_llm.prepare.run` with num_proc = all cores, stage seconds from its stats), at N and 2N documents.
The last line is the headline.

    python benchmarks/data_pipeline.py [--documents 100000] [--threshold 0.5] [--tokenizer-mb 20]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import shutil
import tempfile
import time
import warnings
from dataclasses import replace
from operator import itemgetter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lit_llm.prepare.dedup import DedupConfig  # noqa: E402
from lit_llm.prepare.run import PrepareConfig, TokenizerConfig, prepare  # noqa: E402
from lit_llm.prepare.stats import format_table  # noqa: E402

FUNCTION_WORDS = (
    "the of and to a in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no will more can who its out about"
).split()
ACCENTED = ["café", "naïve", "déjà", "façade", "señor", "crème", "über", "smörgåsbord"]
SYLLABLES = ["ka", "to", "ri", "men", "sa", "lo", "ver", "in", "ta", "pe", "dor", "al", "ex", "un", "ny", "qui",
             "bel", "ro", "an", "te", "mi", "gra", "sol", "vi", "pan", "cor", "lu", "nes", "tri", "of"]


def vocabulary(rng: random.Random, size: int = 30_000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return FUNCTION_WORDS + sorted(words)


class Corpus:
    """Documents as word-index arrays, rendered to text on demand, with the planted pairs recorded."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.rng = rng
        self.words = vocabulary(rng)
        vocab = len(self.words)
        ranks = np.arange(1, vocab + 1)
        self.p = (1.0 / ranks**1.05) / np.sum(1.0 / ranks**1.05)
        self.texts: list[str] = []
        self.group: list[int] = []  # id of the original each document copies (itself for originals)
        self.near_rate: dict[int, float] = {}  # near copy id -> share of words edited
        self.exact: set[int] = set()
        n_exact, n_near = int(0.03 * n), int(0.05 * n)
        n_orig = n - n_exact - n_near
        kinds = np.array(["orig"] * n_orig + ["exact"] * n_exact + ["near"] * n_near)
        # Originals first in each stretch, so every copy finds an earlier original to copy.
        self.np_rng.shuffle(kinds[n // 20 :])
        token_lists: list[list[int]] = []
        for i, kind in enumerate(kinds):
            originals = [j for j in range(max(0, i - 5000), i) if self.group[j] == j] if kind != "orig" else []
            if kind == "orig" or not originals:
                ids = self._words(int(rng.gauss(175, 25)))
                token_lists.append(ids)
                self.texts.append(self._render(ids, html=rng.random() < 0.04, accents=rng.random() < 0.04))
                self.group.append(i)
                continue
            src = rng.choice(originals)
            self.group.append(src)
            if kind == "exact":
                text = self.texts[src]
                roll = rng.random()
                text = text.upper() if roll < 0.15 else text.replace(" ", "  ", 3) if roll < 0.3 else text
                self.texts.append(text)
                token_lists.append(token_lists[src])
                self.exact.add(i)
            else:
                rate = rng.uniform(0.05, 0.15)
                ids = self._edit(token_lists[src], rate)
                token_lists.append(ids)
                self.texts.append(self._render(ids, html=False, accents=False))
                self.near_rate[i] = rate

    def _words(self, n: int) -> list[int]:
        return self.np_rng.choice(len(self.words), size=max(n, 60), p=self.p).tolist()

    def _edit(self, ids: list[int], rate: float) -> list[int]:
        ids = list(ids)
        n_edit = max(1, round(rate * len(ids)))
        spans = [n_edit] if self.rng.random() < 0.5 else [n_edit // 2, n_edit - n_edit // 2]
        for span in spans:
            start = self.rng.randrange(0, len(ids) - span)
            op = self.rng.random()
            new = self._words(span)[:span]
            if op < 0.6:
                ids[start : start + span] = new  # rewrite a passage
            elif op < 0.8:
                ids[start:start] = new  # insert one
            else:
                del ids[start : start + span]  # cut one
        return ids

    def _render(self, ids: list[int], html: bool, accents: bool) -> str:
        words = list(itemgetter(*ids)(self.words))
        if accents:
            for k in self.rng.sample(range(len(words)), 3):
                words[k] = self.rng.choice(ACCENTED)
        # Sentences of 8-20 words, paragraphs of 3-6 sentences.
        sentences, i = [], 0
        while i < len(words):
            n = self.rng.randint(8, 20)
            s = " ".join(words[i : i + n])
            sentences.append(s[0].upper() + s[1:] + ".")
            i += n
        paragraphs, i = [], 0
        while i < len(sentences):
            n = self.rng.randint(3, 6)
            paragraphs.append(" ".join(sentences[i : i + n]))
            i += n
        if html:
            return "<div>" + "".join(f"<p>{p}</p>" for p in paragraphs) + "</div> &copy; 2024"
        return "\n\n".join(paragraphs)

    def write_jsonl(self, folder: Path, files: int = 8) -> int:
        """The corpus as `files` JSON Lines files in order (datatrove's tasks split input by file)."""
        folder.mkdir(parents=True, exist_ok=True)
        cuts = np.linspace(0, len(self.texts), files + 1).round().astype(int)
        for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
            with open(folder / f"part-{k:03d}.jsonl", "w") as f:
                for t in self.texts[a:b]:
                    f.write(json.dumps({"text": t}) + "\n")
        return sum(p.stat().st_size for p in folder.glob("*.jsonl"))


def dedup_quality(corpus: Corpus, out: Path) -> dict:
    """Near-dup recall and precision from an output folder's rejected.jsonl (in-process) or rejected/*.jsonl."""
    removed = {}
    files = [out / "rejected.jsonl"] if (out / "rejected.jsonl").is_file() else sorted(out.glob("rejected/*.jsonl"))
    for path in files:
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                if r["stage"] == "near_dedup":
                    removed[r["id"]] = r["duplicate_of"]
    group = corpus.group
    planted = corpus.near_rate
    found = {i for i, kept in removed.items() if i in planted and group[kept] == group[i]}
    true_removals = len(found)
    by_rate = {}
    for lo, hi in ((0.05, 0.08), (0.08, 0.11), (0.11, 0.15)):
        ids = [i for i, r in planted.items() if lo <= r < hi or (hi == 0.15 and r == 0.15)]
        by_rate[f"{lo:.2f}-{hi:.2f}"] = sum(i in found for i in ids) / max(len(ids), 1)
    return {
        "planted": len(planted),
        "removed": len(removed),
        "recall": true_removals / max(len(planted), 1),
        "precision": true_removals / max(len(removed), 1),
        "recall_by_rate": by_rate,
    }


def run(n: int, args, work: Path, threshold: float, label: str, tokenizer: str | None = None):
    t0 = time.perf_counter()
    corpus = Corpus(n, seed=args.seed)
    size = corpus.write_jsonl(work / label)
    print(f"[{label}] generated {n:,} documents, {size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s", flush=True)
    config = _config(args, work, label, threshold, tokenizer)
    stats = prepare(config, progress=False)
    quality = dedup_quality(corpus, work / f"out-{label}")
    return stats, quality, corpus


def _config(args, work: Path, label: str, threshold: float, tokenizer: str | None, executor: dict | None = None,
            out: str | None = None) -> PrepareConfig:
    return PrepareConfig(
        sources=[str(work / label)], output_dir=str(work / (out or f"out-{label}")), num_proc=args.num_proc,
        val_fraction=0.0, dedup=DedupConfig(threshold=threshold),
        # Tokenizer training is measured on its own below; here a small vocabulary keeps the run short, and the
        # 2N run reuses the N run's tokenizer.
        tokenizer=TokenizerConfig(vocab_size=1024, path=tokenizer), executor=executor,
    )


def engines(n: int, args, work: Path, label: str, corpus: Corpus, tokenizer: str) -> dict:
    """Whole `prepare` wall clock (read to token files, the same tokenizer given to both) in process and on
    datatrove's local executor, alternated A B A B; medians, and both runs' planted-duplicate quality."""
    executor = {"type": "local", "tasks": 2 * args.num_proc, "workers": args.num_proc}
    times: dict[str, list[float]] = {"in-process": [], "datatrove-local": []}
    quality = {}
    for rep in range(args.repeats):
        for name, ex in (("in-process", None), ("datatrove-local", executor)):
            out = f"time-{label}-{name}-{rep}"
            config = _config(args, work, label, args.threshold, tokenizer, ex, out)
            t0 = time.perf_counter()
            prepare(config, progress=False)
            times[name].append(time.perf_counter() - t0)
            quality[name] = dedup_quality(corpus, work / out)
            shutil.rmtree(work / out)
    seconds = {name: float(np.median(t)) for name, t in times.items()}
    for name in times:
        q = quality[name]
        print(f"[{label}] {name:<16} {n / seconds[name]:>9,.0f} docs/s (median of {', '.join(f'{t:.1f}' for t in times[name])} s); "
              f"near-dup recall {q['recall']:.4f} precision {q['precision']:.4f}", flush=True)
    return {"seconds": seconds, "quality": quality}


def pass_seconds(stats: dict) -> float:
    """Wall clock of the clean + filter + dedup pass (worker processes and the main process's selection)."""
    return stats["clean_filter_dedup_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--num-proc", type=int, default=os.cpu_count())
    parser.add_argument("--tokenizer-mb", type=float, default=20.0, help="MB of kept text to train/encode on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per engine and size, alternated")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import datasets

    datasets.disable_progress_bars()
    n = args.documents
    print(f"cores: {os.cpu_count()}, num_proc: {args.num_proc}, threshold: {args.threshold}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stats_n, quality, corpus = run(n, args, work, args.threshold, "N")
        print(format_table(stats_n))
        t_n = pass_seconds(stats_n)
        print(f"[N] near dedup: planted {quality['planted']:,}, removed {quality['removed']:,}, "
              f"recall {quality['recall']:.4f}, precision {quality['precision']:.4f}")
        print("[N] recall by edit rate: " + ", ".join(f"{k}: {v:.3f}" for k, v in quality["recall_by_rate"].items()))

        # The same corpus at the common 0.8 threshold, only re-deduplicated (cleaning and filtering are cached).
        cfg = PrepareConfig.from_dict(stats_n["config"])
        prepare(replace(cfg, dedup=DedupConfig(threshold=0.8)), progress=False)
        q08 = dedup_quality(corpus, Path(cfg.output_dir))
        print(f"[N] at threshold 0.8: recall {q08['recall']:.4f}, precision {q08['precision']:.4f}; by edit rate: "
              + ", ".join(f"{k}: {v:.3f}" for k, v in q08["recall_by_rate"].items()))

        kept_texts = _kept_texts(work / "out-N", stats_n, args.tokenizer_mb)
        tokenizer = str(work / "out-N" / "tokenizer.json")
        side_n = engines(n, args, work, "N", corpus, tokenizer)
        del corpus
        stats_2n, _, corpus2 = run(2 * n, args, work, args.threshold, "2N", tokenizer)
        side_2n = engines(2 * n, args, work, "2N", corpus2, tokenizer)
        del corpus2
        t_2n = pass_seconds(stats_2n)
        print(f"{'engine':<18}{'docs/s N':>10}{'docs/s 2N':>11}{'2N/N time':>11}{'recall':>8}{'precision':>10}")
        for name in side_n["seconds"]:
            a, b = side_n["seconds"][name], side_2n["seconds"][name]
            q = side_2n["quality"][name]
            print(f"{name:<18}{n / a:>10,.0f}{2 * n / b:>11,.0f}{b / a:>11.2f}{q['recall']:>8.4f}{q['precision']:>10.4f}")
        local_vs = side_n["seconds"]["in-process"] / side_n["seconds"]["datatrove-local"]
        local_vs_2n = side_2n["seconds"]["in-process"] / side_2n["seconds"]["datatrove-local"]
        local_ratio = side_2n["seconds"]["datatrove-local"] / side_n["seconds"]["datatrove-local"]
        print(f"clean+filter+dedup: {n:,} docs in {t_n:.1f} s = {n / t_n:,.0f} docs/s; "
              f"{2 * n:,} docs in {t_2n:.1f} s = {2 * n / t_2n:,.0f} docs/s; time ratio 2N/N {t_2n / t_n:.2f}")

        from tokenizer_speed import encoding_speed, training_speed

        mb = sum(len(t.encode()) for t in kept_texts) / 1e6
        train = training_speed(kept_texts, vocab_size=8192)
        print(f"tokenizer training on {mb:.1f} MB: {_fmt(train)}")
        from lit_llm.text.tokenizer import train_bpe

        tok = train_bpe(kept_texts, vocab_size=8192)
        enc = encoding_speed(tok, kept_texts)
        print(f"encoding: {_fmt(enc)}")
    print(
        f"headline: near-dup recall {quality['recall']:.3f} precision {quality['precision']:.3f}; "
        f"clean+filter+dedup {n / t_n:,.0f} docs/s ({args.num_proc} procs), 2N/N time {t_2n / t_n:.2f}; "
        f"datatrove-local/in-process docs/s {local_vs:.2f} (N) {local_vs_2n:.2f} (2N), its 2N/N time {local_ratio:.2f}; "
        f"tokenizer training ours/direct {train.get('ratio', float('nan')):.3f}; encoding "
        f"{enc.get('ours_mb_s', enc.get('mb_s', float('nan'))):.1f} MB/s"
    )


def _kept_texts(out: Path, stats: dict, mb: float) -> list[str]:
    """About `mb` MB of the kept (cleaned, filtered, deduplicated) documents, decoded back from train.bin."""
    from lit_llm.prepare.shards import open_token_file
    from lit_llm.text.tokenizer import Tokenizer

    tok = Tokenizer(out)
    tokens = open_token_file(out / "train.bin").tokens
    ends = np.flatnonzero(tokens == tok.eos_id)
    texts, total, start = [], 0, 0
    for end in ends:
        text = tok.decode(tokens[start:end].tolist())
        texts.append(text)
        total += len(text.encode())
        start = end + 1
        if total >= mb * 1e6:
            break
    return texts


def _fmt(d: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items())


if __name__ == "__main__":
    main()
