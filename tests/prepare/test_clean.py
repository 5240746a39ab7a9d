"""Text cleaning: mojibake repair, NFC, HTML, URLs/e-mails, control characters, whitespace, and each switch off."""

from __future__ import annotations

from dataclasses import fields

import pytest

from lit_llm.prepare.clean import CleanConfig, clean_batch, clean_text

ALL_OFF = CleanConfig(**{f.name: False for f in fields(CleanConfig)})


def only(**switches: bool) -> CleanConfig:
    """A config with every step off except those named."""
    return CleanConfig(**{f.name: switches.get(f.name, False) for f in fields(CleanConfig)})


# --- mojibake ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("broken", "fixed"),
    [
        # UTF-8 read as Windows-1252 twice: two layers of repair, and the curly apostrophe is kept.
        ("doesnÃ¢â‚¬â„¢t", "doesn’t"),
        ("doesnâ€™t", "doesn’t"),
        ("Ã¢â‚¬Å“helloÃ¢â‚¬\x9d", "“hello”"),
        ("cafÃ©", "café"),
        ("naÃ¯ve rÃ©sumÃ©", "naïve résumé"),
    ],
)
def test_mojibake_repaired(broken: str, fixed: str) -> None:
    assert clean_text(broken) == fixed
    assert clean_text(broken, only(fix_mojibake=True)) == fixed


def test_mojibake_with_lost_byte_is_only_partly_repaired() -> None:
    # The closing quote ” is E2 80 9D; 0x9D has no Windows-1252 character, so scraped copies often
    # lose it. ftfy then cannot restore the quote: at the end of the text it undoes one layer only,
    # and before a space it reads the space as a lost 0xA0 byte, yielding U+2020 DAGGER and eating
    # the space.
    assert clean_text("Ã¢â‚¬Å“helloÃ¢â‚¬") == "“helloâ€"
    assert clean_text("He said Ã¢â‚¬Å“hiÃ¢â‚¬ to me") == "He said “hi†to me"


def test_mojibake_fix_leaves_correct_text_alone() -> None:
    # ftfy's own extras (uncurling quotes, full-width folding, ligatures, HTML, NFC) are turned off.
    text = "It’s “quoted” — ＡＢＣ ﬁne &amp; e\u0301"
    assert clean_text(text, only(fix_mojibake=True)) == text


def test_terminal_escapes_removed_from_ascii_text() -> None:
    # ESC is ASCII, so the pure-ASCII shortcut past ftfy must not skip this.
    assert clean_text("\x1b[31mred\x1b[0m alert") == "red alert"


# --- NFC --------------------------------------------------------------------------------------


def test_nfc() -> None:
    assert clean_text("e\u0301") == "é"
    assert clean_text("Ange\u0301lique", only(unicode_nfc=True)) == "Angélique"


def test_nfc_applies_to_combining_marks_from_entities() -> None:
    assert clean_text("e&#769;") == "é"


# --- HTML -------------------------------------------------------------------------------------


def test_html_paragraphs_and_script() -> None:
    html = "<p>Hello <b>world</b> &amp; friends</p><script>var x=1;</script><p>Next</p>"
    assert clean_text(html) == "Hello world & friends\n\nNext"


def test_html_breaks_lists_headings_style_comments() -> None:
    html = (
        '<html><head><style type="text/css">p { color: red; }</style></head><body>'
        "<h1>Title</h1><!-- nav --><div>one<br>two<br/>three</div>"
        "<ul><li>a</li><li>b</li></ul></body></html>"
    )
    assert clean_text(html) == "Title\n\none\ntwo\nthree\n\na\nb"


def test_html_script_case_insensitive_and_multiline() -> None:
    assert clean_text("before<SCRIPT type='x'>\nif (a < b) {}\n</Script>after") == "beforeafter"


def test_html_entities() -> None:
    assert clean_text("a&nbsp;b it&#8217;s 1 &lt; 2 &gt; 0 &quot;q&quot;") == "a b it’s 1 < 2 > 0 \"q\""
    # Without whitespace normalisation the NBSP from &nbsp; stays what it is.
    assert clean_text("a&nbsp;b", only(strip_html=True)) == "a\xa0b"


def test_html_escaped_markup_kept_as_text() -> None:
    assert clean_text("use &lt;b&gt; for bold") == "use <b> for bold"


def test_html_leaves_comparisons_in_prose() -> None:
    assert clean_text("if a < b and c > d then x<3") == "if a < b and c > d then x<3"


# --- URLs and e-mails -------------------------------------------------------------------------

URL_TEXT = "See https://example.com/a?b=1. Or www.example.org, or http://x.io/p_(q) now."
EMAIL_TEXT = "Write to jane.doe+news@mail.example.co.uk or bob@www.example.com today."


def test_urls_removed_only_when_enabled() -> None:
    assert clean_text(URL_TEXT) == URL_TEXT
    assert clean_text(URL_TEXT, CleanConfig(remove_urls=True)) == "See . Or , or ) now."


def test_emails_removed_only_when_enabled() -> None:
    assert clean_text(EMAIL_TEXT) == EMAIL_TEXT
    # The URL switch does not eat the "www." inside an e-mail domain.
    assert clean_text(EMAIL_TEXT, CleanConfig(remove_urls=True)) == EMAIL_TEXT
    assert clean_text(EMAIL_TEXT, CleanConfig(remove_emails=True)) == "Write to or today."


# --- control characters -----------------------------------------------------------------------


def test_control_chars_removed() -> None:
    text = "a\x00b\x07c\x7fd\u00ade\ufefff\u200bg\u202eh"
    assert clean_text(text) == "abcdefgh"


def test_control_chars_keep_newline_tab_and_replacement_char() -> None:
    text = "col1\tcol2\nrow\ufffd"
    assert clean_text(text, only(remove_control_chars=True)) == text


def test_control_chars_form_feed_becomes_line_break() -> None:
    assert clean_text("page one\x0cpage two") == "page one\npage two"


def test_emoji_joiners_and_flags_kept() -> None:
    scotland = "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"
    text = f"👩\u200d💻 coder, 👨\u200d👩\u200d👧 family, {scotland} flag"
    assert clean_text(text) == text


def test_persian_zwnj_kept_stray_joiners_dropped() -> None:
    persian = "می\u200cخواهم"
    assert clean_text(persian) == persian
    assert clean_text("\u200dab\u200dc \u200cd") == "abc d"


# --- whitespace -------------------------------------------------------------------------------


def test_whitespace() -> None:
    assert clean_text("a  \t b\n\n\n\nc \n") == "a b\n\nc"


def test_whitespace_crlf_cr_nbsp_and_line_edges() -> None:
    assert clean_text("  one\r\ntwo\rthree\xa0\xa0four \r\n\r\n\r\n\r\n five  ") == "one\ntwo\nthree four\n\nfive"


def test_whitespace_keeps_single_blank_line() -> None:
    assert clean_text("para one\n\npara two\nline") == "para one\n\npara two\nline"


# --- switches off -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("switch", "text"),
    [
        ("fix_mojibake", "doesnÃ¢â‚¬â„¢t cafÃ©"),
        ("unicode_nfc", "e\u0301"),
        ("strip_html", "<p>a &amp; b</p>"),
        ("remove_control_chars", "a\x00b\u200bc"),
        ("normalize_whitespace", "  a  b\r\n\n\n\nc  "),
    ],
)
def test_each_switch_off_leaves_its_feature_alone(switch: str, text: str) -> None:
    assert clean_text(text, CleanConfig(**{switch: False})) == clean_text(text, ALL_OFF) == text
    assert clean_text(text) != text


def test_all_off_is_identity() -> None:
    text = " <b>x</b>\x00 cafÃ© e\u0301 www.a.com a@b.org \r\n\n\n"
    assert clean_text(text, ALL_OFF) == text


# --- idempotence and batches ------------------------------------------------------------------

CLEAN_SAMPLES = [
    "The quick brown fox jumps over the lazy dog.",
    "日本語のテキスト，中文文本。\n\n한국어 텍스트",
    "party 🎉🚀 and 👍🏽 and 👨\u200d👩\u200d👧 family",
    "naïve café résumé Ångström — “quoted” it’s…",
    "line one\nline two\n\nparagraph two",
    "مرحبا بالعالم and שלום",
]


@pytest.mark.parametrize("text", CLEAN_SAMPLES)
def test_clean_text_unchanged(text: str) -> None:
    assert clean_text(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "<p>Hello <b>world</b> &amp; friends</p><p>Next</p>",
        "doesnÃ¢â‚¬â„¢t  stop \r\n\r\n\r\n cafÃ©\x00",
        "👩\u200d💻\u200d  x\xa0\xa0y",
    ],
)
def test_idempotent(text: str) -> None:
    once = clean_text(text)
    assert clean_text(once) == once


def test_clean_batch_matches_clean_text() -> None:
    texts = CLEAN_SAMPLES + ["<p>a</p>", "cafÃ©", "", "  \n\n "]
    config = CleanConfig(remove_urls=True, remove_emails=True)
    assert clean_batch(texts) == [clean_text(t) for t in texts]
    assert clean_batch(texts, config) == [clean_text(t, config) for t in texts]
    assert clean_batch([]) == []
