"""Rendering untrusted text so it is safe to show in a terminal, a log line or a report.

Owns: ``escape`` (str -> str), ``escape_bytes`` (bytes -> str) and ``truncate``.
Everything a person, a client or a target sends (user names, justifications, exec
command lines, file names, SSH version strings) passes through here before it is
printed, so that it can neither move the cursor, hide text (bidi overrides, zero-width
characters), forge extra log lines, nor be confused with a neighbouring field.

Rendering is injective: a literal backslash becomes ``\\\\``, so ``\\x1b`` in the output
always means an escaped ESC, never the four characters someone typed.

Must never: do I/O, raise on any input, or let a control/format/separator character
through unescaped.
"""

from __future__ import annotations

import json
import re
import unicodedata

# Explicitly listed even though every one is also caught by the category test below:
# these are the characters used in real attacks (Trojan Source, log forging), and
# listing them keeps them escaped whatever Unicode database the interpreter ships.
_ALWAYS_ESCAPE = frozenset(
    chr(cp)
    for cp in (
        0x2028,  # LINE SEPARATOR
        0x2029,  # PARAGRAPH SEPARATOR
        0x200B,  # ZERO WIDTH SPACE
        0x200C,  # ZERO WIDTH NON-JOINER
        0x200D,  # ZERO WIDTH JOINER
        0x200E,  # LEFT-TO-RIGHT MARK
        0x200F,  # RIGHT-TO-LEFT MARK
        *range(0x202A, 0x202F),  # LRE RLE PDF LRO RLO
        *range(0x2066, 0x206A),  # LRI RLI FSI PDI
        0xFEFF,  # ZERO WIDTH NO-BREAK SPACE / BOM
    )
)

UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
"""Unicode general categories that are always escaped (controls, format, separators,
surrogates, private use, unassigned)."""


def _escape_char(ch: str) -> str:
    """Render one character of a ``str``; C1 controls use the one-byte ``\\xNN`` form."""
    cp = ord(ch)
    if ch == "\\":
        return "\\\\"
    if cp < 0x20 or 0x7F <= cp <= 0x9F:
        return f"\\x{cp:02x}"
    if ch in _ALWAYS_ESCAPE or (
        # isprintable() is a fast C check; only consult the database when it says no
        # (it is also False for harmless spaces such as U+00A0, category Zs).
        not ch.isprintable() and unicodedata.category(ch) in UNSAFE_CATEGORIES
    ):
        return f"\\u{{{cp:04X}}}"
    return ch


def escape(text: str) -> str:
    """Return ``text`` with every character that could mislead a reader escaped.

    - ``\\`` -> ``\\\\``
    - C0 controls (including ``\\n \\r \\t`` ESC NUL), DEL and C1 (U+0080-U+009F) -> ``\\xNN``
      (two lower-case hex digits)
    - U+2028/U+2029, bidi controls, zero-width characters, U+FEFF and any other character
      in category Cc/Cf/Zl/Zp/Cs/Co/Cn -> ``\\u{XXXX}`` (upper-case hex, 4 to 6 digits)
    - everything else (letters, marks, symbols, spaces such as U+00A0) is kept.
    """
    # Fast paths: the overwhelmingly common case is plain printable text. Printable
    # ASCII holds none of _ALWAYS_ESCAPE, so only other text needs that set checked.
    if (
        text.isprintable()
        and "\\" not in text
        and (text.isascii() or not _ALWAYS_ESCAPE.intersection(text))
    ):
        return text
    return "".join(map(_escape_char, text))


def escape_bytes(data: bytes | bytearray | memoryview) -> str:
    """Decode ``data`` as UTF-8 and render it like ``escape``.

    Each byte that is not part of valid UTF-8 becomes ``\\xNN``. To keep the rendering
    reversible, ``\\xNN`` here always stands for exactly one byte: C0 controls and DEL
    (one byte in UTF-8) keep the ``\\xNN`` form, while C1 controls (two bytes in UTF-8,
    e.g. ``c2 85``) are shown as ``\\u{0085}`` so they cannot be confused with the
    invalid single byte ``\\x85``.
    """
    # surrogateescape maps each undecodable byte 0xNN to the lone surrogate U+DCNN.
    # A strict UTF-8 decode never yields a surrogate otherwise, so every U+DC80..U+DCFF
    # below came from a raw byte (unlike backslashreplace, whose "\xNN" text could not
    # be told apart from a literal backslash the sender typed).
    text = bytes(data).decode("utf-8", "surrogateescape")
    out: list[str] = []
    for ch in text:
        cp = ord(ch)
        if 0xDC80 <= cp <= 0xDCFF:
            out.append(f"\\x{cp - 0xDC00:02x}")
        elif 0x80 <= cp <= 0x9F:
            out.append(f"\\u{{{cp:04X}}}")
        else:
            out.append(_escape_char(ch))
    return "".join(out)


def truncate(text: str, limit: int) -> str:
    """Shorten ``text`` to at most ``limit`` characters, ending in "…" when cut.

    Apply it to the raw text *before* ``escape`` so an escape sequence is never cut in
    half; the escaped result may then be longer than ``limit``.
    """
    if limit < 1:
        raise ValueError("truncate limit must be at least 1")
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def safe_json(doc: object, indent: int | None = None, compact: bool = False) -> str:
    """JSON that is safe on a terminal. JSON escapes C0 controls only; C1 controls
    (U+009B is CSI), bidi overrides and line separators, which can only sit inside
    strings, are written as \\uXXXX there: the same value, no effect on a terminal."""
    separators = (",", ":") if compact else None
    return json_terminal_safe(
        json.dumps(doc, indent=indent, ensure_ascii=False, separators=separators)
    )


# Runs of characters past "~" (DEL and beyond ASCII): the only ones that
# json.dumps(ensure_ascii=False) leaves raw and escape() may change. Matching runs, not
# characters, keeps a long document of plain text one C-level scan (a per-character
# loop took seconds on a big report).
_PAST_TILDE_RUN = re.compile(r"[^\x00-\x7e]+")


def json_terminal_safe(text: str) -> str:
    """``text`` (JSON from json.dumps(ensure_ascii=False)) with every character past
    "~" that ``escape`` would change written as \\uXXXX: see ``safe_json``. Works on
    any slice of a document that does not split a character."""
    if text.isascii() and "\x7f" not in text:
        return text
    return _PAST_TILDE_RUN.sub(_json_safe_run, text)


def _json_safe_run(m: re.Match[str]) -> str:
    run = m.group()
    if escape(run) == run:
        return run
    return "".join(_json_safe(ch) for ch in run)


def _json_safe(ch: str) -> str:
    return json.dumps(ch)[1:-1] if ord(ch) > 0x7E and escape(ch) != ch else ch
