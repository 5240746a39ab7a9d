"""Quality filters: each rule caught by a document that fails only it, None switches it off, exact repetition maths."""

from __future__ import annotations

import dataclasses

import pytest

from lit_llm.prepare.filters import (
    RULES,
    FilterConfig,
    filter_batch,
    first_failing_rule,
    remove_boilerplate_lines,
    repetition_stats,
)
from lit_llm.errors import ConfigError

BASE = """The old lighthouse stands at the northern edge of the harbour, where fishing boats return each evening.
Built in 1872, it guided sailors through fog and storms for more than a century before radar arrived.
Today a small museum occupies the keeper's cottage, and volunteers lead tours on weekend afternoons.

Visitors climb ninety-two iron steps to reach the lantern room, which offers a wide view of the coast.
On clear days you can see the distant islands, seals resting on the rocks, and gulls circling overhead.
The original lens, made in Paris, still rotates slowly, although an electric bulb has replaced the flame.

Local historians have collected letters, logbooks and photographs that describe daily life at the station.
One keeper wrote that winter nights felt endless, with waves striking the tower hard enough to shake cups.
His daughter later became a teacher in town and donated the family diary to the archive.
"""
PARAS = BASE.strip().split("\n\n")
LINES = BASE.strip().split("\n")
LONGEST_LINE = max(LINES, key=len)

GREEK = (
    "Ο παλιός φάρος στέκεται στην άκρη του λιμανιού, όπου οι ψαρόβαρκες επιστρέφουν κάθε βράδυ. "
    "Χτίστηκε πριν από πολλά χρόνια και καθοδηγούσε τους ναυτικούς μέσα από την ομίχλη και τις καταιγίδες. "
    "Σήμερα ένα μικρό μουσείο στεγάζεται στο σπίτι του φύλακα, και εθελοντές οδηγούν ξεναγήσεις."
)
CYRILLIC = (
    "Старый маяк стоит на северном краю гавани, куда каждый вечер возвращаются рыбацкие лодки. "
    "Он был построен в тысяча восемьсот семьдесят втором году и более века указывал путь морякам "
    "сквозь туман и шторма, пока не появились радары. Сегодня в доме смотрителя работает небольшой "
    "музей, а волонтёры по выходным проводят экскурсии для гостей города и туристов."
)
LONG_WORDS = (
    "Comprehensive international telecommunications infrastructure modernization initiatives "
    "fundamentally transformed transcontinental broadcasting organizations, requiring extraordinarily "
    "sophisticated interdisciplinary collaboration between governmental departments and privately "
    "administered manufacturing conglomerates. Simultaneously, environmental sustainability considerations "
    "encouraged revolutionary photovoltaic installations, electrochemical storage technologies, "
    "hydroelectric reconstruction programmes, meteorological forecasting improvements, "
    "agricultural irrigation optimization, semiconductor miniaturization breakthroughs, "
    "cryptographic authentication standards, pharmaceutical manufacturing certifications, "
    "biotechnological laboratories, archaeological documentation projects, "
    "multigenerational apprenticeships, internationally recognized qualifications, "
    "architectural conservation undertakings, astronomical observatories, "
    "oceanographic expeditions, geographical surveys, anthropological fieldwork, "
    "psychological counselling services, philosophical correspondence, "
    "mathematical publications, and economical transportation alternatives."
)
NO_STOP_WORDS = (
    "Cats sleep most afternoons. Dogs bark loudly at passing cars, while parrots repeat whatever visitors say. "
    "Our neighbour keeps bees behind her garage; every summer she sells jars full of dark honey for "
    "five dollars each. Children ride bicycles along quiet streets until dinner, then gather around "
    "tables for soup, bread, cheese, apples, pears, grapes, lemonade. Later, somebody plays guitar "
    "outside while crickets sing, stars appear above rooftops, tired parents finally rest, "
    "owls hunt mice near old barns."
)
TIDES = "Tide readings: " + " ".join(str(100 + 7 * i) for i in range(45)) + "."
PHRASE = "brave copper foxes quietly gather under seven silver maple branches".split()


def _insert_every(text: str, phrase: str, every: int) -> str:
    """Put `phrase` after every `every`-th word, so each copy has different neighbours."""
    out = []
    for i, word in enumerate(text.split(" "), 1):
        out.append(word)
        if i % every == 0:
            out.append(phrase)
    return " ".join(out)


def _dup_ngram_doc(n: int) -> str:
    """A document whose only repeated material is one n-word phrase said twice, padded until its
    duplicated-n-gram fraction lies between the n and n-1 thresholds, so the n rule is the first to fail."""
    config = FilterConfig()
    upper = getattr(config, f"gopher_max_dup_{n - 1}gram") if n > 5 else 1.0
    phrase = " ".join(PHRASE[:n])
    core = f"Some say {phrase} at dawn.\nOthers insist {phrase} by night."
    padding = (BASE + " " + NO_STOP_WORDS).split()
    for k in range(50, len(padding) + 1):
        doc = core + "\n\n" + " ".join(padding[:k])
        if repetition_stats(doc)[f"gopher_dup_{n}gram"] <= upper:
            return doc
    raise AssertionError(f"could not dilute the {n}-word phrase enough")


# (rule, document that fails it first, config, what happens once the rule is switched off)
CASES = [
    ("min_chars", "Too short to keep.", FilterConfig(), "min_words"),
    ("max_chars", BASE, FilterConfig(max_chars=500), None),
    ("c4_curly_bracket", BASE.replace("in 1872,", "in 1872 {approximately},"), FilterConfig(), None),
    ("max_ellipsis_count", BASE.replace(", ", "... ", 11), FilterConfig(), None),
    (
        "cookie_notice",
        BASE + "\nThe cafe sells a ginger cookie, an oat cookie, a lemon cookie, a honey cookie, "
        "a walnut cookie and a chocolate cookie to hungry tourists.\n",
        FilterConfig(),
        None,
    ),
    ("c4_lorem_ipsum", BASE + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.\n", FilterConfig(), None),
    ("ascii_alpha_ratio", BASE + "\n" + GREEK + "\n", FilterConfig(), None),
    (
        "min_words",
        "The lighthouse keeper's granddaughter catalogued extraordinarily detailed meteorological "
        "observations throughout the unforgettable nineteenth century.",
        FilterConfig(),
        "gopher_word_count",
    ),
    ("gopher_word_count", "\n".join(LINES[:2]), FilterConfig(), None),
    ("gopher_mean_word_length", LONG_WORDS, FilterConfig(), None),
    (
        "gopher_symbol_ratio",
        BASE + " ".join(f"#{w.strip('.,').lower()}" for w in LINES[0].split()[1:] + LINES[1].split()[:4]) + "\n",
        FilterConfig(),
        None,
    ),
    ("gopher_stop_words", NO_STOP_WORDS, FilterConfig(), None),
    ("gopher_bullet_lines", "\n".join(f"• {line}" if line else "" for line in BASE.split("\n")), FilterConfig(), None),
    (
        "gopher_ellipsis_lines",
        "\n".join(line[:-1] + "…" if i < 4 else line for i, line in enumerate(BASE.split("\n"))),
        FilterConfig(),
        None,
    ),
    ("gopher_alpha_words", BASE + TIDES + "\n", FilterConfig(), None),
    ("gopher_dup_lines", BASE + "Thanks.\n" * 6, FilterConfig(), None),
    ("gopher_dup_paragraphs", BASE + "\nThank you.\n" * 3, FilterConfig(), None),
    ("gopher_dup_line_chars", BASE + (LONGEST_LINE + "\n") * 3, FilterConfig(), "gopher_dup_5gram"),
    (
        # A repeated paragraph's lines repeat too, so with equal thresholds the line rule always fires first.
        "gopher_dup_paragraph_chars",
        BASE + "\n" + PARAS[0] + "\n",
        FilterConfig(gopher_max_dup_line_chars=None),
        "gopher_dup_5gram",
    ),
    ("gopher_top_2gram", _insert_every(BASE, "sea breeze", 6), FilterConfig(), None),
    ("gopher_top_3gram", _insert_every(BASE, "ox sea ox", 5), FilterConfig(), None),
    ("gopher_top_4gram", _insert_every(BASE, "so we go on", 6), FilterConfig(), None),
    *[(f"gopher_dup_{n}gram", _dup_ngram_doc(n), FilterConfig(), None) for n in range(5, 11)],
]

# Field that switches each rule off; rules with two bounds need both cleared.
RULE_FIELDS = {
    "min_chars": ["min_chars"],
    "max_chars": ["max_chars"],
    "c4_curly_bracket": ["c4_curly_bracket"],
    "max_ellipsis_count": ["max_ellipsis_count"],
    "cookie_notice": ["max_cookie_count"],
    "c4_lorem_ipsum": ["c4_lorem_ipsum"],
    "ascii_alpha_ratio": ["min_ascii_alpha_ratio"],
    "min_words": ["min_words"],
    "gopher_word_count": ["gopher_min_words", "gopher_max_words"],
    "gopher_mean_word_length": ["gopher_min_mean_word_length", "gopher_max_mean_word_length"],
    "gopher_symbol_ratio": ["gopher_max_symbol_ratio"],
    "gopher_stop_words": ["gopher_min_stop_words"],
    "gopher_bullet_lines": ["gopher_max_bullet_lines"],
    "gopher_ellipsis_lines": ["gopher_max_ellipsis_lines"],
    "gopher_alpha_words": ["gopher_min_alpha_words"],
    "gopher_dup_lines": ["gopher_max_dup_lines"],
    "gopher_dup_paragraphs": ["gopher_max_dup_paragraphs"],
    "gopher_dup_line_chars": ["gopher_max_dup_line_chars"],
    "gopher_dup_paragraph_chars": ["gopher_max_dup_paragraph_chars"],
    **{f"gopher_top_{n}gram": [f"gopher_max_top_{n}gram"] for n in (2, 3, 4)},
    **{f"gopher_dup_{n}gram": [f"gopher_max_dup_{n}gram"] for n in range(5, 11)},
}


def test_base_document_passes_everything():
    assert 140 <= len(BASE.split()) <= 160
    assert first_failing_rule(BASE) is None
    assert first_failing_rule(BASE, FilterConfig()) is None


def test_every_rule_has_a_case_and_a_switch():
    assert [case[0] for case in CASES] == list(RULES)
    assert set(RULE_FIELDS) == set(RULES)
    assert len(set(RULES)) == len(RULES)


@pytest.mark.parametrize(("rule", "doc", "config", "_"), CASES, ids=[c[0] for c in CASES])
def test_document_fails_exactly_its_rule(rule, doc, config, _):
    assert first_failing_rule(doc, config) == rule


@pytest.mark.parametrize(("rule", "doc", "config", "after"), CASES, ids=[c[0] for c in CASES])
def test_none_switches_the_rule_off(rule, doc, config, after):
    off = dataclasses.replace(config, **{name: None for name in RULE_FIELDS[rule]})
    assert first_failing_rule(doc, off) == after
    # The rule's check order is fixed: whatever fails next comes later in RULES.
    if after is not None:
        assert RULES.index(after) > RULES.index(rule)


def test_source_cases():
    notice = "This website uses cookies to improve your experience.\n"
    assert first_failing_rule(BASE + notice * 6) == "cookie_notice"
    # Five mentions are allowed; the repeated notice is then left to the repetition rules.
    assert first_failing_rule(BASE + notice * 5) not in (None, "cookie_notice")
    assert first_failing_rule(BASE.replace(", ", "... ", 10)) is None
    assert first_failing_rule(BASE.replace(", ", "... ", 11)) == "max_ellipsis_count"
    assert first_failing_rule("Hello world.") == "min_chars"
    assert first_failing_rule("x" * 99) == "min_chars"
    assert first_failing_rule(GREEK) == "ascii_alpha_ratio"
    assert first_failing_rule(CYRILLIC) == "ascii_alpha_ratio"
    # With the crude English proxy off, Gopher's stop-word rule still catches them.
    assert first_failing_rule(CYRILLIC, FilterConfig(min_ascii_alpha_ratio=None)) == "gopher_stop_words"


def test_max_chars_default_on_a_huge_document():
    huge = (BASE + "\n") * (100_000 // len(BASE) + 1)
    assert len(huge) > 100_000
    assert first_failing_rule(huge) == "max_chars"
    assert first_failing_rule(huge, FilterConfig(max_chars=None)) == "gopher_dup_lines"


def test_repetition_stats_by_hand():
    text = "aa bb\naa bb\ncc\n\ndd ee\n\ndd ee"
    stats = repetition_stats(text)
    # lines: aa bb | aa bb | cc | dd ee | dd ee -> the 2nd and 5th repeat an earlier line.
    assert stats["gopher_dup_lines"] == pytest.approx(2 / 5)
    assert stats["gopher_dup_line_chars"] == pytest.approx(10 / 22)  # 5 + 5 of 5 + 5 + 2 + 5 + 5
    # paragraphs: "aa bb\naa bb\ncc" (14 chars) | dd ee | dd ee
    assert stats["gopher_dup_paragraphs"] == pytest.approx(1 / 3)
    assert stats["gopher_dup_paragraph_chars"] == pytest.approx(5 / 24)
    # words aa bb aa bb cc dd ee dd ee: 18 chars; "aa bb" and "dd ee" each occur twice (2 x 4 chars).
    assert stats["gopher_top_2gram"] == pytest.approx(8 / 18)
    assert stats["gopher_top_3gram"] == 0.0  # no 3-gram repeats
    assert stats["gopher_dup_5gram"] == 0.0


def test_duplicate_ngram_fractions_by_hand():
    # "one two three four five" twice: every word but "six" is inside a duplicated 5-gram.
    stats = repetition_stats("one two three four five six one two three four five")
    assert stats["gopher_dup_5gram"] == pytest.approx(38 / 41)
    assert stats["gopher_dup_6gram"] == 0.0
    # "one two three four" (15 chars) and "two three four five" (16) both occur twice; the longer one wins.
    assert stats["gopher_top_4gram"] == pytest.approx(2 * 16 / 41)
    # Overlapping occurrences count each character once: never above 1.
    stats = repetition_stats("a a a a a a")
    assert stats["gopher_top_2gram"] == 1.0
    assert stats["gopher_dup_5gram"] == 1.0
    assert stats["gopher_dup_6gram"] == 0.0


def test_remove_boilerplate_lines():
    text = (
        "Welcome to the harbour museum.\n"
        "This site uses cookies to give you the best experience.\n"
        "\n"
        "Tours start at ten every Saturday.\n"
        "Read our Terms of Use before booking.\n"
        "Opening hours"
    )
    kept, removed = remove_boilerplate_lines(text)
    assert kept == "Welcome to the harbour museum.\n\nTours start at ten every Saturday.\nOpening hours"
    assert removed == 2
    kept, removed = remove_boilerplate_lines(text, FilterConfig(c4_require_terminal_punct=True))
    assert kept == "Welcome to the harbour museum.\n\nTours start at ten every Saturday."
    assert removed == 3
    assert remove_boilerplate_lines(text, FilterConfig(c4_boilerplate_lines=None)) == (text, 0)
    assert remove_boilerplate_lines(BASE) == (BASE, 0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"min_chars": 500, "max_chars": 100}, "min_chars"),
        ({"gopher_min_words": 200, "gopher_max_words": 100}, "gopher_min_words"),
        ({"gopher_min_mean_word_length": 12}, "gopher_min_mean_word_length"),
        ({"gopher_max_dup_lines": 1.5}, "gopher_max_dup_lines"),
        ({"min_ascii_alpha_ratio": -0.1}, "min_ascii_alpha_ratio"),
        ({"min_words": "20"}, "min_words"),
        ({"min_words": True}, "min_words"),
        ({"c4_curly_bracket": "yes"}, "c4_curly_bracket"),
    ],
)
def test_invalid_config(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        FilterConfig(**kwargs)


def test_filter_batch_matches_first_failing_rule():
    texts = [doc for _, doc, _, _ in CASES] + [BASE, GREEK, ""]
    assert filter_batch(texts) == [first_failing_rule(t) for t in texts]
    config = FilterConfig(gopher_min_words=None, min_words=5)
    assert filter_batch(texts, config) == [first_failing_rule(t, config) for t in texts]
