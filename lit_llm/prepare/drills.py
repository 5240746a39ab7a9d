"""Practice text for the built-in corpus: documents that teach copying, reversing, capital letters, spelling,
counting, sorting and arithmetic, in prose phrasings of their own, so that pretraining gives a tiny model the skills
the verifiable tasks (`lit_llm.tasks`) ask for.

Nothing here can leak a held-out prompt: every statement that matches one of the tasks' prompts (the same words
to reverse, the same numbers to add, the same letter and word to count) is kept only when that prompt falls in the
tasks' train split (`tasks.split_of`); statements outside the tasks' range (two or five words, three-digit sums,
letters of single words) are free to appear. `tests/prepare/test_corpus.py` checks the corpus against every val and
test prompt.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from lit_llm.tasks import WORDS, split_of

_NAMES = ["Ada", "Ben", "Cleo", "Dev", "Ema", "Finn", "Gus", "Hana"]


def _in_train(prompt: str | None) -> bool:
    return prompt is None or split_of(prompt) == "train"


def _draw(rng: random.Random, make: Callable[[random.Random], tuple[str, str | None]]) -> str:
    """A statement from `make`, which returns (text, the task prompt it answers or None); redrawn until that prompt
    is a training prompt."""
    while True:
        text, prompt = make(rng)
        if _in_train(prompt):
            return text


def _reverse(rng: random.Random) -> tuple[str, str | None]:
    words = rng.sample(WORDS, rng.randint(2, 5))
    prompt = f"Reverse the order of the words: {' '.join(words)}" if len(words) in (3, 4) else None
    return f"Backwards, the words {' '.join(words)} read {' '.join(reversed(words))}.", prompt


def _copy(rng: random.Random) -> tuple[str, str | None]:
    text = " ".join(rng.choices(WORDS, k=rng.randint(2, 5)))
    return f"{rng.choice(_NAMES)} wrote {text}, and {rng.choice(_NAMES)} wrote {text} again.", None


def _capitals(rng: random.Random) -> tuple[str, str | None]:
    words = rng.choices(WORDS, k=rng.randint(1, 3))
    text = " ".join(words)
    prompt = f"Write in capital letters: {text}" if len(words) > 1 else None
    return f"In capital letters, {text} is {text.upper()}.", prompt


def _spelling(rng: random.Random) -> tuple[str, str | None]:
    word = rng.choice(WORDS)
    return f"The word {word} is spelled {' '.join(word)} and has {len(word)} letters.", None


def _letter_count(rng: random.Random) -> tuple[str, str | None]:
    word = rng.choice(WORDS)
    letter = rng.choice(word) if rng.random() < 0.7 else rng.choice("abcdefghijklmnopqrstuvwxyz")
    n = word.count(letter)
    prompt = f"How many times does the letter {letter} appear in {word}?"
    return f"In {word} ({' '.join(word)}) the letter {letter} appears {n} {'time' if n == 1 else 'times'}.", prompt


def _sum(rng: random.Random) -> tuple[str, str | None]:
    digits = rng.choice((1, 2, 2, 2, 3))
    a, b = rng.randint(0, 10**digits - 1), rng.randint(0, 10**digits - 1)
    prompt = f"What is {a} + {b}?" if a < 100 and b < 100 else None
    return f"{a} plus {b} makes {a + b}.", prompt


def _product(rng: random.Random) -> tuple[str, str | None]:
    a, b = rng.randint(2, 30), rng.randint(2, 99)
    if rng.random() < 0.5:
        a, b = b, a
    return f"{a} times {b} makes {a * b}.", f"What is {a} * {b}?"


def _order(rng: random.Random) -> tuple[str, str | None]:
    numbers = [rng.randint(0, 99) for _ in range(rng.randint(2, 6))]
    text = " ".join(map(str, numbers))
    prompt = f"Sort from smallest to largest: {text}" if 3 <= len(numbers) <= 5 else None
    return f"Put in order, {text} goes {' '.join(map(str, sorted(numbers)))}.", prompt


# Copying is the skill a small model finds last (it takes an induction head, after ~1,000 steps of the demo's
# pretraining), so the kinds that need it come most often.
_KINDS = (_copy,) * 3 + (_reverse,) * 3 + (_capitals,) * 2 + (_spelling, _letter_count, _sum, _product, _order)


def practice_document(rng: random.Random) -> str:
    """One document of 4 to 8 practice statements of mixed kinds, each on its own line."""
    return "\n".join(_draw(rng, rng.choice(_KINDS)) for _ in range(rng.randint(4, 8)))
