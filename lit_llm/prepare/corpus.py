"""The built-in corpus: short English documents generated from a small grammar, no downloads.

The text has real structure for a tiny model to learn (agreement, recurring characters, simple
arithmetic that is stated and then used), so validation loss falls visibly within a CPU minute.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from lit_llm.prepare.drills import practice_document

NAMES = ["Ada", "Ben", "Cleo", "Dev", "Ema", "Finn", "Gus", "Hana", "Ivo", "Juno", "Kai", "Lena", "Milo", "Nia"]
ANIMALS = ["fox", "owl", "cat", "dog", "bear", "hare", "wolf", "duck", "frog", "mouse"]
ADJECTIVES = ["small", "brave", "quiet", "clever", "happy", "sleepy", "curious", "kind", "old", "young"]
PLACES = ["forest", "village", "garden", "valley", "harbor", "meadow", "library", "market", "castle", "farm"]
OBJECTS = ["lamp", "map", "key", "book", "basket", "kite", "drum", "hat", "boat", "bell"]
COLORS = ["red", "blue", "green", "yellow", "white", "black", "brown", "orange"]
FRUITS = ["apple", "pear", "plum", "orange", "lemon", "peach", "cherry", "fig"]
ACTIVITIES = [
    "walked to the river",
    "read a long book",
    "painted the fence",
    "baked fresh bread",
    "watched the clouds",
    "sang an old song",
    "fixed the wooden cart",
    "planted new seeds",
]
FEELINGS = ["glad", "surprised", "proud", "tired", "excited", "thankful"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def _story(rng: random.Random) -> str:
    name, friend = rng.sample(NAMES, 2)
    animal, adj, place = rng.choice(ANIMALS), rng.choice(ADJECTIVES), rng.choice(PLACES)
    obj, color = rng.choice(OBJECTS), rng.choice(COLORS)
    lines = [
        f"Once upon a time, {name} the {adj} {animal} lived in the {place}.",
        f"Every morning, {name} {rng.choice(ACTIVITIES)}.",
        f"One day, {name} found a {color} {obj} near the {rng.choice(PLACES)}.",
        f'"What a strange {obj}," said {name}. "I will show it to {friend}."',
        f"{friend} looked at the {color} {obj} and felt {rng.choice(FEELINGS)}.",
    ]
    if rng.random() < 0.6:
        lines.append(f"Together, {name} and {friend} {rng.choice(ACTIVITIES)}.")
    lines.append(f"From that day on, {name} kept the {obj} in the {place}.")
    return " ".join(lines)


def _plural(word: str, n: int) -> str:
    if n == 1:
        return word
    return word[:-1] + "ies" if word.endswith("y") else word + "s"


def _arithmetic(rng: random.Random) -> str:
    name, friend = rng.sample(NAMES, 2)
    fruit = rng.choice(FRUITS)
    a, b = rng.randint(1, 5), rng.randint(1, 5)
    lines = [
        f"{name} has {NUMBER_WORDS[a]} {_plural(fruit, a)}.",
        f"{friend} gives {name} {NUMBER_WORDS[b]} more.",
        f"Now {name} has {NUMBER_WORDS[a + b]} {_plural(fruit, a + b)}.",
    ]
    if rng.random() < 0.5:
        c = rng.randint(1, a + b)
        rest = a + b - c
        lines += [
            f"{name} eats {NUMBER_WORDS[c]} of them.",
            f"Now {name} has {NUMBER_WORDS[rest]} {_plural(fruit, rest)} left.",
        ]
    return " ".join(lines)


def _description(rng: random.Random) -> str:
    place = rng.choice(PLACES)
    parts = [f"In the {place} there is a {rng.choice(COLORS)} {rng.choice(OBJECTS)}."]
    for _ in range(rng.randint(2, 4)):
        parts.append(f"Next to it sits a {rng.choice(ADJECTIVES)} {rng.choice(ANIMALS)} with a {rng.choice(OBJECTS)}.")
    parts.append(f"People who visit the {place} say it is a {rng.choice(ADJECTIVES)} place.")
    return " ".join(parts)


def generator_digest() -> str:
    """A SHA-256 of the code that writes the built-in corpus (this module, the practice text and the tasks it draws
    from), so that a cache of `builtin:N` goes stale when that code changes, as a file's does when it is edited."""
    import hashlib
    from pathlib import Path

    here = Path(__file__).parent
    digest = hashlib.sha256()
    for path in (here / "corpus.py", here / "drills.py", here.parent / "tasks.py"):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def generate_corpus(num_documents: int = 6000, seed: int = 0, practice: float = 0.0) -> Iterator[str]:
    """Yield `num_documents` documents; the same seed always gives the same corpus. A `practice` share of them are
    practice text (`lit_llm.prepare.drills`: copying, capitals, spelling, counting, sorting, sums, products); by
    default there is none, only stories, sums and descriptions."""
    rng = random.Random(seed)
    kinds = [_story, _arithmetic, _description]
    for _ in range(num_documents):
        if practice and rng.random() < practice:  # no draw without practice: the stories are as before
            yield practice_document(rng)
            continue
        n_paragraphs = rng.randint(1, 3)
        yield "\n\n".join(rng.choice(kinds)(rng) for _ in range(n_paragraphs))


# ---- raw text: the built-in corpus as it would arrive from the web ---------------------------------

_ACCENTED = ["Café Émile", "the naïve señor", "Zoë’s crème brûlée", "a façade in Málaga"]
_COOKIE_LINES = [
    "This website uses cookies to improve your experience.",
    "By continuing you agree to our cookie policy and privacy policy.",
    "Accept all cookies | Manage cookies | Reject cookies",
]
_JUNK = ["Home | About | Contact", "Click here to subscribe!", "Page 2 of 7", "Loading..."]
_FOREIGN = [
    "Το μικρό αλεπουδάκι ζούσε στο δάσος και κάθε πρωί περπατούσε ως το ποτάμι με τον φίλο του.",
    "小狐狸住在森林里，每天早上都和朋友一起走到河边，看着云慢慢地飘过天空。",
    "Маленькая лиса жила в лесу и каждое утро гуляла к реке со своим старым другом.",
]


def _near_copy(text: str, rng: random.Random) -> str:
    """The text with one sentence rewritten, the way a page differs from its mirror."""
    sentences = text.split(". ")
    i = rng.randrange(len(sentences))
    sentences[i] = f"{rng.choice(NAMES)} {rng.choice(ACTIVITIES)} with a {rng.choice(ADJECTIVES)} {rng.choice(ANIMALS)}"
    return ". ".join(sentences)


def generate_raw_corpus(num_documents: int = 6000, seed: int = 0, practice: float = 0.75) -> Iterator[str]:
    """Yield the built-in corpus with the defects of scraped text mixed in, for the data pipeline to remove.

    About 1 in 8 documents is an exact or near copy of an earlier one, and smaller shares arrive wrapped in
    HTML, with UTF-8 read as cp1252 (mojibake), with cookie-banner lines, as navigation junk or in another
    language; the rest is `generate_corpus`'s text, a `practice` share of it practice text (the skills the
    built-in tasks ask for). The same seed always gives the same documents.
    """
    rng = random.Random(seed + 1)
    seen: list[str] = []
    clean = generate_corpus(num_documents, seed, practice)
    for _ in range(num_documents):
        roll = rng.random()
        if seen and roll < 0.06:
            doc = rng.choice(seen)
            yield doc.upper() if rng.random() < 0.2 else doc + "\n"
            continue
        if seen and roll < 0.12:
            yield _near_copy(rng.choice(seen), rng)
            continue
        doc = next(clean)
        roll = rng.random()
        if roll < 0.05:
            body = "".join(f"<p>{p}</p>\n" for p in doc.split("\n\n"))
            doc = f"<html><head><script>track();</script></head><body>{body}&copy; 2024 Tales &amp; Sums</body></html>"
        elif roll < 0.09:
            # A sentence with accents and curly quotes, saved as UTF-8 and read back as cp1252.
            accented = f"{doc}\n\nThey ate at {rng.choice(_ACCENTED)} and said ‘merci’."
            doc = accented.encode("utf-8").decode("cp1252")
        elif roll < 0.12:
            doc = doc + "\n" + "\n".join(_COOKIE_LINES)
        elif roll < 0.15:
            doc = rng.choice(_JUNK)
        elif roll < 0.17:
            doc = rng.choice(_FOREIGN) * rng.randint(1, 3)
        seen.append(doc)
        yield doc
