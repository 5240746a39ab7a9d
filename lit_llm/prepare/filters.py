"""Document quality filters for pretraining text: named, configurable rules that say why a document is dropped.

Three families of rules, checked cheapest first and stopping at the first failure:

* the source pipeline's heuristics (length, word count, share of ASCII letters, "..." and "cookie" counts);
* Gopher's quality and repetition rules (Rae et al. 2021, "Scaling Language Models", MassiveText, appendix A);
* C4's document rules (Raffel et al. 2020): no "lorem ipsum", no curly bracket.

C4's line-level cleaning (boilerplate lines, lines without terminal punctuation) changes the text rather than
judging it, so it lives in `remove_boilerplate_lines`, meant to run before `first_failing_rule`.

Every threshold can be set to None to switch its rule off. Words are whitespace-separated tokens, lines are the
non-blank lines with surrounding whitespace stripped, paragraphs are separated by blank lines.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from itertools import compress, filterfalse

from lit_llm.errors import ConfigError

RULES: tuple[str, ...] = (
    "min_chars",
    "max_chars",
    "c4_curly_bracket",
    "max_ellipsis_count",
    "cookie_notice",
    "c4_lorem_ipsum",
    "ascii_alpha_ratio",
    "min_words",
    "gopher_word_count",
    "gopher_mean_word_length",
    "gopher_symbol_ratio",
    "gopher_stop_words",
    "gopher_bullet_lines",
    "gopher_ellipsis_lines",
    "gopher_alpha_words",
    "gopher_dup_lines",
    "gopher_dup_paragraphs",
    "gopher_dup_line_chars",
    "gopher_dup_paragraph_chars",
    "gopher_top_2gram",
    "gopher_top_3gram",
    "gopher_top_4gram",
    "gopher_dup_5gram",
    "gopher_dup_6gram",
    "gopher_dup_7gram",
    "gopher_dup_8gram",
    "gopher_dup_9gram",
    "gopher_dup_10gram",
)

GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
BULLETS = frozenset("•‣◦⁃∙●○▪▫■□◘⦾⦿-*+–—")
ELLIPSES = ("...", "…")
BOILERPLATE_PHRASES = (
    "javascript",
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
)
TERMINAL_PUNCT = (".", "!", "?", '"', "'")

# \b around the alternatives keeps "these" or "bed" from counting as "the" or "be".
_STOP_WORD_RE = re.compile(r"\b(?:" + "|".join(sorted(GOPHER_STOP_WORDS)) + r")\b")
# Any Unicode letter: a word character that is neither a digit nor an underscore.
_LETTER_RE = re.compile(r"[^\W\d_]")
_PARAGRAPH_SPLIT_RE = re.compile(r"\n[ \t\r\f\v]*\n")
# bytes.translate(None, delete) counts ASCII letters in C, far faster than a Python loop over characters.
_NOT_ASCII_LETTER = bytes(b for b in range(256) if not (65 <= b <= 90 or 97 <= b <= 122))

_TOP_NGRAM_SIZES = (2, 3, 4)
_DUP_NGRAM_SIZES = (5, 6, 7, 8, 9, 10)


@dataclass
class FilterConfig:
    """Thresholds for every rule; None switches a rule off. Defaults are the source pipeline's and the papers'."""

    # Source pipeline heuristics.
    min_chars: int | None = 100
    max_chars: int | None = 100_000
    min_words: int | None = 20
    min_ascii_alpha_ratio: float | None = 0.8  # share of letters that are ASCII a-z, a crude English proxy
    max_ellipsis_count: int | None = 10  # more "..." than this: likely truncated
    max_cookie_count: int | None = 5  # more "cookie" than this: a cookie notice
    # Gopher quality rules.
    gopher_min_words: int | None = 50
    gopher_max_words: int | None = 100_000
    gopher_min_mean_word_length: float | None = 3.0
    gopher_max_mean_word_length: float | None = 10.0
    gopher_max_symbol_ratio: float | None = 0.1
    gopher_max_bullet_lines: float | None = 0.9
    gopher_max_ellipsis_lines: float | None = 0.3
    gopher_min_stop_words: int | None = 2
    gopher_min_alpha_words: float | None = 0.8
    # Gopher repetition rules.
    gopher_max_dup_lines: float | None = 0.30
    gopher_max_dup_paragraphs: float | None = 0.30
    gopher_max_dup_line_chars: float | None = 0.20
    gopher_max_dup_paragraph_chars: float | None = 0.20
    gopher_max_top_2gram: float | None = 0.20
    gopher_max_top_3gram: float | None = 0.18
    gopher_max_top_4gram: float | None = 0.16
    gopher_max_dup_5gram: float | None = 0.15
    gopher_max_dup_6gram: float | None = 0.14
    gopher_max_dup_7gram: float | None = 0.13
    gopher_max_dup_8gram: float | None = 0.12
    gopher_max_dup_9gram: float | None = 0.11
    gopher_max_dup_10gram: float | None = 0.10
    # C4 rules.
    c4_lorem_ipsum: bool | None = True
    c4_curly_bracket: bool | None = True
    c4_boilerplate_lines: bool | None = True
    c4_require_terminal_punct: bool | None = False  # off by default: drops headings, lists and most code

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name.startswith("c4_"):
                if not isinstance(value, bool):
                    raise ConfigError(f"filter config: {f.name} must be true, false or null, got {value!r}")
                continue
            # bool is an int subclass; `min_words: true` in a YAML file is a mistake, not 1.
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"filter config: {f.name} must be a number or null, got {value!r}")
            if value < 0:
                raise ConfigError(f"filter config: {f.name} must be >= 0, got {value}")
            if _is_fraction_field(f.name) and value > 1:
                raise ConfigError(f"filter config: {f.name} is a fraction and must be <= 1, got {value}")
        for low, high in (
            ("min_chars", "max_chars"),
            ("gopher_min_words", "gopher_max_words"),
            ("gopher_min_mean_word_length", "gopher_max_mean_word_length"),
        ):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ConfigError(f"filter config: {low} ({lo}) must not exceed {high} ({hi})")


def _is_fraction_field(name: str) -> bool:
    # The symbol ratio counts symbols per word and may legitimately exceed 1; these are shares of a whole.
    return name in (
        "min_ascii_alpha_ratio",
        "gopher_max_bullet_lines",
        "gopher_max_ellipsis_lines",
        "gopher_min_alpha_words",
    ) or name.startswith(("gopher_max_dup_", "gopher_max_top_"))


_DEFAULT = FilterConfig()


def first_failing_rule(text: str, config: FilterConfig | None = None) -> str | None:
    """Name of the first rule (in `RULES` order) that `text` fails, or None to keep the document."""
    c = _DEFAULT if config is None else config
    n_chars = len(text)
    if c.min_chars is not None and n_chars < c.min_chars:
        return "min_chars"
    if c.max_chars is not None and n_chars > c.max_chars:
        return "max_chars"
    if c.c4_curly_bracket and "{" in text:
        return "c4_curly_bracket"
    n_dots = text.count("...")
    if c.max_ellipsis_count is not None and n_dots > c.max_ellipsis_count:
        return "max_ellipsis_count"
    lower = text.lower()
    if c.max_cookie_count is not None and lower.count("cookie") > c.max_cookie_count:
        return "cookie_notice"
    if c.c4_lorem_ipsum and "lorem ipsum" in lower:
        return "c4_lorem_ipsum"
    if c.min_ascii_alpha_ratio is not None and ascii_alpha_ratio(text) < c.min_ascii_alpha_ratio:
        return "ascii_alpha_ratio"

    words = text.split()
    n_words = len(words)
    if c.min_words is not None and n_words < c.min_words:
        return "min_words"
    if (c.gopher_min_words is not None and n_words < c.gopher_min_words) or (
        c.gopher_max_words is not None and n_words > c.gopher_max_words
    ):
        return "gopher_word_count"
    lengths = list(map(len, words))
    word_chars = sum(lengths)
    mean_len = word_chars / n_words if n_words else 0.0
    if (c.gopher_min_mean_word_length is not None and mean_len < c.gopher_min_mean_word_length) or (
        c.gopher_max_mean_word_length is not None and mean_len > c.gopher_max_mean_word_length
    ):
        return "gopher_mean_word_length"
    if c.gopher_max_symbol_ratio is not None:
        n_symbols = text.count("#") + n_dots + text.count("…")
        if n_symbols > c.gopher_max_symbol_ratio * max(n_words, 1):
            return "gopher_symbol_ratio"
    if c.gopher_min_stop_words is not None and not _has_stop_words(lower, c.gopher_min_stop_words):
        return "gopher_stop_words"

    lines = _lines(text)
    n_lines = max(len(lines), 1)
    if c.gopher_max_bullet_lines is not None:
        n_bullets = sum(1 for line in lines if line[0] in BULLETS)
        if n_bullets / n_lines > c.gopher_max_bullet_lines:
            return "gopher_bullet_lines"
    if c.gopher_max_ellipsis_lines is not None:
        n_trailing = sum(1 for line in lines if line.endswith(ELLIPSES))
        if n_trailing / n_lines > c.gopher_max_ellipsis_lines:
            return "gopher_ellipsis_lines"
    if c.gopher_min_alpha_words is not None:
        # isalpha() settles most words in C; only words with punctuation or digits need the regex, and
        # not even those when there are too few of them to fail the rule.
        others = list(filterfalse(str.isalpha, words))
        allowed = (1.0 - c.gopher_min_alpha_words) * n_words
        if len(others) > allowed and sum(1 for w in others if not _LETTER_RE.search(w)) > allowed:
            return "gopher_alpha_words"

    return _first_failing_repetition_rule(text, lines, words, lengths, word_chars, c)


def ascii_alpha_ratio(text: str) -> float:
    """Share of alphabetic characters that are ASCII a-z/A-Z; 0.0 for text without letters."""
    n_ascii = len(text.encode("ascii", "ignore").translate(None, _NOT_ASCII_LETTER))
    if text.isascii():
        return 1.0 if n_ascii else 0.0
    n_other = sum(1 for ch in text if ord(ch) > 127 and ch.isalpha())
    total = n_ascii + n_other
    return n_ascii / total if total else 0.0


def repetition_stats(text: str) -> dict[str, float]:
    """Every Gopher repetition fraction of `text`, keyed by rule name, without stopping early."""
    words = text.split()
    lengths = list(map(len, words))
    word_chars = sum(lengths)
    lines = _lines(text)
    paragraphs = _paragraphs(text)
    line_count, line_chars = _dup_fractions(lines)
    para_count, para_chars = _dup_fractions(paragraphs)
    stats = {
        "gopher_dup_lines": line_count,
        "gopher_dup_paragraphs": para_count,
        "gopher_dup_line_chars": line_chars,
        "gopher_dup_paragraph_chars": para_chars,
    }
    for n in _TOP_NGRAM_SIZES:
        stats[f"gopher_top_{n}gram"] = _top_ngram_fraction(words, n, word_chars)
    for n in _DUP_NGRAM_SIZES:
        stats[f"gopher_dup_{n}gram"] = _dup_ngram_fraction(words, lengths, n, word_chars)
    return stats


def remove_boilerplate_lines(text: str, config: FilterConfig | None = None) -> tuple[str, int]:
    """Drop C4's boilerplate lines (and, if configured, lines without terminal punctuation).

    Returns the kept text, lines joined by "\\n", and how many lines were removed. Blank lines are kept and
    never counted: they carry the paragraph structure the repetition rules rely on.
    """
    c = _DEFAULT if config is None else config
    check_phrases = bool(c.c4_boilerplate_lines)
    check_punct = bool(c.c4_require_terminal_punct)
    if not (check_phrases or check_punct):
        return text, 0
    kept: list[str] = []
    removed = 0
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped:
            kept.append(line)
            continue
        lower = stripped.lower()
        if (check_phrases and any(p in lower for p in BOILERPLATE_PHRASES)) or (
            check_punct and not stripped.endswith(TERMINAL_PUNCT)
        ):
            removed += 1
        else:
            kept.append(line)
    return "\n".join(kept), removed


def filter_batch(texts: Sequence[str], config: FilterConfig | None = None) -> list[str | None]:
    """First failing rule per text (None = keep), for `datasets.map(batched=True)`:

    `ds.map(lambda b: {"reject": filter_batch(b["text"])}, batched=True).filter(lambda r: r is None,
    input_columns="reject")`
    """
    c = _DEFAULT if config is None else config
    return [first_failing_rule(t, c) for t in texts]


def _has_stop_words(lower: str, needed: int) -> bool:
    # Counts occurrences, not distinct words, and stops as soon as enough are seen: in English that is
    # within the first sentence.
    if needed <= 0:
        return True
    seen = 0
    for _ in _STOP_WORD_RE.finditer(lower):
        seen += 1
        if seen >= needed:
            return True
    return False


def _lines(text: str) -> list[str]:
    return [s for s in (line.strip() for line in text.split("\n")) if s]


def _paragraphs(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _PARAGRAPH_SPLIT_RE.split(text)) if s]


def _dup_fractions(items: list[str]) -> tuple[float, float]:
    """(share of items that repeat an earlier one, share of characters in those repeats).

    The first occurrence is the original, so two identical lines out of four give 0.25, not 0.5.
    """
    if not items:
        return 0.0, 0.0
    seen: set[str] = set()
    dup_count = dup_chars = total_chars = 0
    for item in items:
        total_chars += len(item)
        if item in seen:
            dup_count += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return dup_count / len(items), (dup_chars / total_chars if total_chars else 0.0)


def _ngram_counts(words: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(zip(*(words[i:] for i in range(n))))


def _top_ngram_fraction(words: list[str], n: int, word_chars: int, counts: Counter | None = None) -> float:
    """Share of word characters covered by the most frequent n-gram's occurrences; 0.0 if none repeats.

    Ties go to the n-gram covering the most characters, the one that would fail first.
    """
    if counts is None:
        counts = _ngram_counts(words, n)
    if not counts or not word_chars:
        return 0.0
    top = max(counts.values())
    if top < 2:
        return 0.0
    best = 0
    # compress/map keep the scan for the top n-grams in C; there is usually just one.
    for gram in compress(counts, map(top.__eq__, counts.values())):
        best = max(best, _covered_chars(words, gram) if _self_overlaps(gram) else top * sum(map(len, gram)))
    return best / word_chars


def _self_overlaps(gram: tuple[str, ...]) -> bool:
    # Only an n-gram whose tail equals its head ("a b a") can overlap itself; for all others count x length
    # is exact and the slower position scan is unnecessary.
    return any(gram[k:] == gram[: len(gram) - k] for k in range(1, len(gram)))


def _covered_chars(words: list[str], gram: tuple[str, ...]) -> int:
    """Characters of the words inside any occurrence of `gram`, each word counted once."""
    n = len(gram)
    first, rest = gram[0], list(gram[1:])
    covered = bytearray(len(words))
    # Only positions holding the first word can start an occurrence; finding them is one C-speed comparison
    # per word, and building a tuple per position (the obvious loop) costs several times more.
    for i in [i for i, w in enumerate(words[: len(words) - n + 1]) if w == first]:
        if words[i + 1 : i + n] == rest:
            covered[i : i + n] = b"\x01" * n
    return sum(len(w) for w, hit in zip(words, covered) if hit)


def _dup_ngram_fraction(words: list[str], lengths: list[int], n: int, word_chars: int) -> float:
    """Share of word characters inside any n-gram that occurs more than once, each character counted once.

    Every occurrence counts, the first included, and overlapping occurrences mark each word only once.
    """
    grams = list(zip(*(words[i:] for i in range(n))))
    counts = Counter(grams)
    if len(counts) == len(grams) or not word_chars:
        return 0.0
    covered = bytearray(len(words))
    run = b"\x01" * n
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered[i : i + n] = run
    return sum(length for length, hit in zip(lengths, covered) if hit) / word_chars


def _first_failing_repetition_rule(
    text: str, lines: list[str], words: list[str], lengths: list[int], word_chars: int, c: FilterConfig
) -> str | None:
    if c.gopher_max_dup_lines is not None or c.gopher_max_dup_line_chars is not None:
        line_count, line_chars = _dup_fractions(lines)
    else:
        line_count = line_chars = 0.0
    if c.gopher_max_dup_lines is not None and line_count > c.gopher_max_dup_lines:
        return "gopher_dup_lines"
    if c.gopher_max_dup_paragraphs is not None or c.gopher_max_dup_paragraph_chars is not None:
        # A text with no blank line is a single paragraph, which cannot repeat.
        para_count, para_chars = _dup_fractions(_paragraphs(text)) if "\n" in text else (0.0, 0.0)
    else:
        para_count = para_chars = 0.0
    if c.gopher_max_dup_paragraphs is not None and para_count > c.gopher_max_dup_paragraphs:
        return "gopher_dup_paragraphs"
    if c.gopher_max_dup_line_chars is not None and line_chars > c.gopher_max_dup_line_chars:
        return "gopher_dup_line_chars"
    if c.gopher_max_dup_paragraph_chars is not None and para_chars > c.gopher_max_dup_paragraph_chars:
        return "gopher_dup_paragraph_chars"

    # An n-gram can only repeat if every shorter n-gram inside it repeats, so once no n-gram of some size
    # repeats, no longer one does and the remaining rules all pass.
    for n in _TOP_NGRAM_SIZES:
        # A set answers "does anything repeat?" faster than a Counter; most documents stop at the 3-grams.
        if len(set(zip(*(words[i:] for i in range(n))))) == max(len(words) - n + 1, 0):
            return None
        counts = _ngram_counts(words, n)
        limit = getattr(c, f"gopher_max_top_{n}gram")
        if limit is not None and _top_ngram_fraction(words, n, word_chars, counts) > limit:
            return f"gopher_top_{n}gram"
    for n in _DUP_NGRAM_SIZES:
        limit = getattr(c, f"gopher_max_dup_{n}gram")
        if limit is None:
            # Still needed to know whether longer n-grams can repeat; cheap relative to the rest.
            if len(set(zip(*(words[i:] for i in range(n))))) == max(len(words) - n + 1, 0):
                return None
            continue
        fraction = _dup_ngram_fraction(words, lengths, n, word_chars)
        if fraction == 0.0:
            return None
        if fraction > limit:
            return f"gopher_dup_{n}gram"
    return None
