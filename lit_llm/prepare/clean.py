"""Text cleaning for the pretraining data pipeline: mojibake repair, NFC, HTML stripping, URL/e-mail
removal, control characters and whitespace, each step switchable through `CleanConfig`."""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass

import ftfy


@dataclass
class CleanConfig:
    """Which cleaning steps run (order is fixed: mojibake, NFC, HTML, URLs/e-mails,
    control chars, whitespace)."""

    fix_mojibake: bool = True  # ftfy's encoding repair only; see _FTFY_CONFIG
    unicode_nfc: bool = True
    strip_html: bool = True  # script/style dropped, block ends become line/paragraph breaks, entities decoded
    remove_urls: bool = False
    remove_emails: bool = False
    remove_control_chars: bool = True  # Cc/Cf except \n, \t, \r and joiners inside emoji/scripts; U+FFFD is kept
    normalize_whitespace: bool = True  # one space within lines, lines stripped, at most one blank line


_DEFAULT_CONFIG = CleanConfig()

# ftfy only repairs encoding damage here. Its HTML, line-break, control-character and normalization
# work belongs to the switches above, and it must not rewrite text that was never damaged: uncurling
# quotes, unfolding ligatures or narrowing full-width characters would change correct CJK and typography.
_FTFY_CONFIG = ftfy.TextFixerConfig(
    unescape_html=False,
    fix_line_breaks=False,
    remove_control_chars=False,
    normalization=None,
    uncurl_quotes=False,
    fix_latin_ligatures=False,
    fix_character_width=False,
    explain=False,
)

# HTML. Script and style bodies are code, not text, so they go with their tags.
_HTML_DROP_BLOCK_RE = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_HTML_COMMENT_RE = re.compile(r"<!--.*?-->", re.DOTALL)
_HTML_LINE_BREAK_RE = re.compile(r"<br\b[^<>]*>|</(?:li|tr|dt|dd)\s*>", re.IGNORECASE)
_HTML_PARAGRAPH_BREAK_RE = re.compile(
    r"</(?:p|div|h[1-6]|blockquote|pre|table|ul|ol|dl|section|article|header|footer)\s*>", re.IGNORECASE
)
# A tag must start with a letter (or !, ?, /letter) so that prose such as "a < b" or "x<3" survives.
_HTML_TAG_RE = re.compile(r"<(?:/?[A-Za-z][^<>]*|![^<>]*|\?[^<>]*)>")

# URLs and e-mails. The lookbehind keeps "www." inside an e-mail domain for the e-mail pattern, and
# the last character class leaves sentence punctuation after a URL in place.
_URL_RE = re.compile(r"(?<![\w@.\-/])(?:https?://|www\.)[^\s<>\"]*[^\s<>\".,;:!?)\]}'’”]", re.IGNORECASE)
_EMAIL_RE = re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)*\.[A-Za-z]{2,}")


# These controls separate lines or records; deleting them would glue the words on either side together.
_LINE_BREAK_CONTROLS = "\x0b\x0c\x1c\x1d\x1e\x85"
_LINE_BREAK_CONTROLS_TABLE = str.maketrans(dict.fromkeys(_LINE_BREAK_CONTROLS, "\n"))
_LINE_BREAK_CONTROLS_RE = re.compile(f"[{_LINE_BREAK_CONTROLS}]")


def _control_char_class(code_points: range, keep: set[int]) -> str:
    """A regex character class body (ranges, not single characters, to keep it short) of the Cc/Cf code points."""
    ranges: list[list[int]] = []
    for cp in code_points:
        if cp in keep or unicodedata.category(chr(cp)) not in ("Cc", "Cf"):
            continue
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


# Prepended concatenation marks (Arabic number signs and the like) are Cf but render as visible signs.
_VISIBLE_FORMAT_CHARS = {0x0600, 0x0601, 0x0602, 0x0603, 0x0604, 0x0605, 0x06DD, 0x070F, 0x0890, 0x0891, 0x08E2}
_VISIBLE_FORMAT_CHARS_ASTRAL = {0x110BD, 0x110CD}
_JOINERS = {0x200C, 0x200D}
_EMOJI_TAGS = set(range(0xE0020, 0xE0080))
_KEPT_BMP_CONTROLS = {*map(ord, "\n\t\r" + _LINE_BREAK_CONTROLS), *_JOINERS, *_VISIBLE_FORMAT_CHARS}

# The BMP and the astral planes get separate patterns: a class that reaches past U+FFFF compiles to a
# linear list of ranges and scans several times slower than a BMP-only class, and most documents
# hold no astral character at all.
_CONTROL_BMP_RE = re.compile(f"[{_control_char_class(range(0x10000), _KEPT_BMP_CONTROLS)}]+")
_ASTRAL_RE = re.compile(r"[\U00010000-\U0010FFFF]")
# Astral Cc/Cf characters exist only in planes 1 and 14; scanning all 1.1M code points would add a
# tenth of a second to every import, including each datasets.map worker. Emoji tag characters
# (subdivision flags such as 🏴󠁧󠁢󠁳󠁣󠁴󠁿) are kept as a whole run after U+1F3F4 WAVING BLACK FLAG.
_CONTROL_ASTRAL_RE = re.compile(
    f"[{_control_char_class(range(0x10000, 0x20000), _VISIBLE_FORMAT_CHARS_ASTRAL)}"
    f"{_control_char_class(range(0xE0000, 0xE1000), _EMOJI_TAGS)}]+"
    r"|(?<![\U0001F3F4\U000E0020-\U000E007F])[\U000E0020-\U000E007F]+"
)
# ZWJ and ZWNJ join emoji sequences ("👩‍💻") and are spelling in Persian and Indic scripts, so they are
# kept between two visible non-ASCII characters and dropped anywhere else.
_STRAY_JOINER_RE = re.compile(r"(?<![^\x00-\x7f\s])[\u200c\u200d]|[\u200c\u200d](?![^\x00-\x7f\s])")

# Whitespace. Only runs that actually change are matched: a plain single space between words, the
# common case, is left to the scanner instead of being replaced by itself hundreds of times per document.
_HSPACE_RE = re.compile(r"[^\S\n]{2,}|[^\S\n ]")
_ODD_SPACE_RE = re.compile(r"[^\S\n ]")
_LINE_EDGE_SPACE_RE = re.compile(r" \n ?|\n ")
_BLANK_LINES_RE = re.compile(r"\n{3,}")
# The ASCII members of the patterns above, for the fast paths taken by ASCII text.
_ASCII_ODD_SPACES = "".join(c for c in map(chr, range(128)) if c.isspace() and c not in "\n ")
_ASCII_CONTROL_BYTES = bytes(b for b in range(128) if unicodedata.category(chr(b)) == "Cc" and chr(b) not in "\n\t\r")


def clean_text(text: str, config: CleanConfig | None = None) -> str:
    """Return `text` with the steps enabled in `config` (default: `CleanConfig()`) applied in fixed order."""
    if config is None:
        config = _DEFAULT_CONFIG
    if config.fix_mojibake and not (text.isascii() and "\x1b" not in text):
        # Pure ASCII cannot hold mojibake; the only thing ftfy would still touch there is a terminal
        # escape, so skipping it saves most of the cost on English web text.
        text = ftfy.fix_text(text, _FTFY_CONFIG)
    if config.unicode_nfc:
        text = _nfc(text)
    if config.strip_html:
        text = _strip_html(text)
        if config.unicode_nfc:
            # Entities such as &#769; can decode to combining marks that the NFC step has not seen.
            text = _nfc(text)
    if config.remove_urls:
        text = _URL_RE.sub("", text)
    if config.remove_emails and "@" in text:
        text = _EMAIL_RE.sub("", text)
    if config.remove_control_chars:
        text = _remove_control_chars(text)
    if config.normalize_whitespace:
        text = _normalize_whitespace(text)
    return text


def clean_batch(texts: list[str], config: CleanConfig | None = None) -> list[str]:
    """`clean_text` over a list, for `datasets.Dataset.map(batched=True)`."""
    if config is None:
        config = _DEFAULT_CONFIG
    return [clean_text(t, config) for t in texts]


def _nfc(text: str) -> str:
    if text.isascii() or unicodedata.is_normalized("NFC", text):
        return text
    return unicodedata.normalize("NFC", text)


def _strip_html(text: str) -> str:
    if "<" in text:
        text = _HTML_DROP_BLOCK_RE.sub("", text)
        text = _HTML_COMMENT_RE.sub("", text)
        text = _HTML_LINE_BREAK_RE.sub("\n", text)
        text = _HTML_PARAGRAPH_BREAK_RE.sub("\n\n", text)
        text = _HTML_TAG_RE.sub("", text)
    # Unescaping comes after tag removal so that escaped markup ("&lt;b&gt;") survives as literal text.
    if "&" in text:
        text = html.unescape(text)
    return text


def _remove_control_chars(text: str) -> str:
    if text.isascii():
        # Deleting the control bytes in C and comparing lengths answers "any control character?" several
        # times faster than a regex scan; most ASCII documents have none and return here.
        data = text.encode("ascii")
        if len(data.translate(None, _ASCII_CONTROL_BYTES)) == len(data):
            return text
    if _LINE_BREAK_CONTROLS_RE.search(text):
        text = text.translate(_LINE_BREAK_CONTROLS_TABLE)
    text = _CONTROL_BMP_RE.sub("", text)
    if not text.isascii():
        if "\u200c" in text or "\u200d" in text:
            text = _STRAY_JOINER_RE.sub("", text)
        if _ASTRAL_RE.search(text):
            text = _CONTROL_ASTRAL_RE.sub("", text)
    return text


def _has_odd_space(text: str) -> bool:
    if text.isascii():
        # Substring tests run at memchr speed; the regex steps through the text character by character.
        return any(c in text for c in _ASCII_ODD_SPACES)
    return _ODD_SPACE_RE.search(text) is not None


def _normalize_whitespace(text: str) -> str:
    # Each pattern runs only when a substring test says it will change something: on clean text the
    # tests cost a few microseconds, the substitutions several times that.
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\u2028" in text or "\u2029" in text:
        text = text.replace("\u2028", "\n").replace("\u2029", "\n\n")
    if "  " in text or _has_odd_space(text):
        text = _HSPACE_RE.sub(" ", text)
    if " \n" in text or "\n " in text:
        text = _LINE_EDGE_SPACE_RE.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANK_LINES_RE.sub("\n\n", text)
    return text.strip()
