"""Tests for proxy.core.text: escaping untrusted text for terminals, logs and reports."""

from __future__ import annotations

import re
import sys
import unicodedata

import pytest

from proxy.core.text import UNSAFE_CATEGORIES, escape, escape_bytes, truncate

# One token of escaped output: an escape sequence or one kept character.
_TOKEN = re.compile(r"\\\\|\\x[0-9a-f]{2}|\\u\{[0-9A-F]{4,6}\}|[^\\]", re.DOTALL)


def _unescape(text: str) -> str:
    """Reference inverse of escape(); raises if the text is not well-formed output."""
    out: list[str] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        assert m is not None, f"malformed escape at {pos}: {text[pos : pos + 12]!r}"
        tok = m.group()
        if tok == "\\\\":
            out.append("\\")
        elif tok.startswith("\\x"):
            out.append(chr(int(tok[2:], 16)))
        elif tok.startswith("\\u{"):
            out.append(chr(int(tok[3:-1], 16)))
        else:
            out.append(tok)
        pos = m.end()
    return "".join(out)


def _unescape_bytes(text: str) -> bytes:
    """Reference inverse of escape_bytes(): \\xNN is one raw byte."""
    out = bytearray()
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        assert m is not None
        tok = m.group()
        if tok == "\\\\":
            out += b"\\"
        elif tok.startswith("\\x"):
            out.append(int(tok[2:], 16))
        elif tok.startswith("\\u{"):
            out += chr(int(tok[3:-1], 16)).encode("utf-8", "surrogatepass")
        else:
            out += tok.encode("utf-8")
        pos = m.end()
    return bytes(out)


def _is_unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in UNSAFE_CATEGORIES


# ---------------------------------------------------------------- escape(): each class


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain text", "plain text"),
        ("", ""),
        ("back\\slash", "back\\\\slash"),
        ("\\x1b", "\\\\x1b"),  # typed text that looks like an escape stays distinguishable
        ("a\nb", "a\\x0ab"),
        ("a\rb", "a\\x0db"),
        ("a\tb", "a\\x09b"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("nul\x00", "nul\\x00"),
        ("del\x7f", "del\\x7f"),
        ("c1\x85\x9b\x80\x9f", "c1\\x85\\x9b\\x80\\x9f"),
        ("ls\u2028rm", "ls\\u{2028}rm"),
        ("p\u2029q", "p\\u{2029}q"),
        ("user\u202eexe.txt", "user\\u{202E}exe.txt"),
        ("\u200e\u200f", "\\u{200E}\\u{200F}"),
        ("\u2066\u2067\u2068\u2069", "\\u{2066}\\u{2067}\\u{2068}\\u{2069}"),
        ("a\u200bb\u200cc\u200dd", "a\\u{200B}b\\u{200C}c\\u{200D}d"),
        ("\ufeffbom", "\\u{FEFF}bom"),
        ("\u00ad", "\\u{00AD}"),  # soft hyphen, Cf
        ("\ue000", "\\u{E000}"),  # private use, Co
        ("\U0010fffd", "\\u{10FFFD}"),  # plane 16 private use
        ("\u0378", "\\u{0378}"),  # unassigned, Cn
        ("\U000e0001", "\\u{E0001}"),  # language tag, Cf
        ("\ud800", "\\u{D800}"),  # lone surrogate, Cs
        ("héllo wörld", "héllo wörld"),
        ("日本語 🎉", "日本語 🎉"),
        ("e\u0301", "e\u0301"),  # combining mark stays
        ("a\u00a0b\u3000c", "a\u00a0b\u3000c"),  # Zs spaces are printable
        ("~!@#$%^&*()_+{}|:\"<>?`-=[];',./", "~!@#$%^&*()_+{}|:\"<>?`-=[];',./"),
    ],
)
def test_escape_cases(raw: str, expected: str) -> None:
    assert escape(raw) == expected
    assert _unescape(expected) == raw


@pytest.mark.parametrize("cp", [*range(0x20), 0x7F, *range(0x80, 0xA0)])
def test_every_c0_c1_and_del_is_hex_escaped(cp: int) -> None:
    assert escape(chr(cp)) == f"\\x{cp:02x}"


@pytest.mark.parametrize(
    "cp",
    [
        0x2028,
        0x2029,
        *range(0x200B, 0x2010),
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
        0xFEFF,
    ],
)
def test_listed_invisible_and_bidi_characters_are_escaped(cp: int) -> None:
    assert escape(f"x{chr(cp)}y") == f"x\\u{{{cp:04X}}}y"


def test_no_unsafe_character_survives_over_the_whole_code_space() -> None:
    everything = "".join(map(chr, range(sys.maxunicode + 1)))
    out = escape(everything)
    survivors = {ch for ch in set(out) if _is_unsafe(ch) or ord(ch) < 0x20 or ord(ch) == 0x7F}
    assert not survivors, sorted(map(hex, map(ord, survivors)))[:20]
    # Injective: the escaped text decodes back to exactly the input.
    assert _unescape(out) == everything


def test_each_unsafe_code_point_escapes_alone() -> None:
    # Per code point (not only in bulk) so the fast path is exercised for each one.
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        if _is_unsafe(ch):
            out = escape(ch)
            assert out.startswith("\\"), hex(cp)
            assert len(out) > 1, hex(cp)


def test_output_is_a_single_line_for_every_line_breaking_character() -> None:
    breakers = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    out = escape(f"a{breakers}b")
    assert len(out.splitlines()) == 1
    assert out.isprintable()


# ---------------------------------------------------------------- escape_bytes()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"ls -la", "ls -la"),
        ("héllo €".encode(), "héllo €"),
        (b"\xff", "\\xff"),
        (b"\\xff", "\\\\xff"),  # literal backslash-x-f-f typed by someone
        (b"a\xffb\xfe", "a\\xffb\\xfe"),
        (b"\xe2\x82", "\\xe2\\x82"),  # truncated multibyte character
        (b"\xe2\x82\xac", "€"),
        (b"\xed\xa0\x80", "\\xed\\xa0\\x80"),  # UTF-8-encoded surrogate is invalid
        (b"\xc0\xaf", "\\xc0\\xaf"),  # overlong "/"
        (b"\x1b[2J\r\n", "\\x1b[2J\\x0d\\x0a"),
        (b"\x00", "\\x00"),
        (b"\x7f", "\\x7f"),
        (b"\xc2\x85", "\\u{0085}"),  # C1 char: \u{} so \xNN always means one byte
        (b"\x85", "\\x85"),  # the invalid single byte 0x85
        ("\u202e".encode(), "\\u{202E}"),
        ("\ufeff".encode(), "\\u{FEFF}"),
    ],
)
def test_escape_bytes_cases(raw: bytes, expected: str) -> None:
    assert escape_bytes(raw) == expected
    assert _unescape_bytes(expected) == raw


def test_escape_bytes_round_trips_every_byte_and_pair() -> None:
    for b in range(256):
        one = bytes([b])
        assert _unescape_bytes(escape_bytes(one)) == one
        for c in range(0x80, 0x100, 7):
            two = bytes([b, c])
            assert _unescape_bytes(escape_bytes(two)) == two


def test_escape_bytes_output_has_no_control_characters() -> None:
    data = bytes(range(256)) * 2 + "\u2028\u202e\u200b\x85".encode() + b"\xf4\x90\x80\x80"
    out = escape_bytes(data)
    assert out.isprintable()
    assert not any(_is_unsafe(ch) for ch in out)
    assert _unescape_bytes(out) == data


def test_escape_bytes_accepts_bytearray_and_memoryview() -> None:
    assert escape_bytes(bytearray(b"a\x1b")) == "a\\x1b"
    assert escape_bytes(memoryview(b"a\xff")) == "a\\xff"


# ---------------------------------------------------------------- truncate()


def test_truncate() -> None:
    assert truncate("short", 10) == "short"
    assert truncate("exactly10!", 10) == "exactly10!"
    assert truncate("eleven char", 10) == "eleven ch…"
    assert len(truncate("x" * 1000, 50)) == 50
    assert truncate("abc", 1) == "…"
    with pytest.raises(ValueError, match="at least 1"):
        truncate("abc", 0)
