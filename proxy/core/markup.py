"""Untrusted text inside Markdown, CSV, HTML and inline JSON: escaped for each.

Owns: ``md`` (Markdown text and table cells), ``csv_cell`` (spreadsheet-safe cells),
``html_text`` (HTML text and attribute values) and ``script_json`` (JSON that is safe
inside a ``<script>`` element). Each first renders control, format and bidi characters
visibly with ``core.text.escape`` (so a justification cannot hide text, forge lines or
reorder a report), then applies the format's own escaping.

Must never: do I/O, raise on any input, or let markup, a formula or a script through.
"""

from __future__ import annotations

import html
import json
import re

from proxy.core.text import escape

# Markdown punctuation that can start emphasis, code, links, HTML, tables, headings,
# strikethrough, entities or autolinks (``scheme:``). CommonMark lets a backslash escape
# any ASCII punctuation, so escaping these keeps the rendered text exactly as written.
_MD_SPECIAL = "\\`*_{}[]<>()#+!|~&:"
# A colon only makes a link after a scheme's last letter (``http:``, ``mailto:``; GFM's
# extended autolinks): one after a digit (``18:09:59``) is left as it is, readable.
_MD_TABLE = str.maketrans({ch: "\\" + ch for ch in _MD_SPECIAL if ch != ":"})
_SCHEME_COLON = re.compile(r"(?<=[A-Za-z]):")
# Text made only of printable ASCII that is not special (nor a backslash, which is)
# comes out of md() unchanged: one regex match instead of escape() and translate(),
# which a report calls a million times.
_MD_PLAIN = re.compile(
    "[" + "".join(re.escape(chr(c)) for c in range(0x20, 0x7F) if chr(c) not in _MD_SPECIAL) + "]*"
).fullmatch

# A spreadsheet treats a cell starting with one of these as a formula (OWASP CSV
# injection); a leading apostrophe makes it text in Excel, LibreOffice and Sheets.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def md(text: str | None) -> str:
    """Plain Markdown text (also valid inside a GFM table cell): no markup survives,
    ``|`` cannot split a cell, no newline can start a block."""
    if not text:
        return ""
    if _MD_PLAIN(text):
        return text
    return md_escaped(text)


def md_escaped(text: str) -> str:
    """``md`` without its fast path (which must give the same)."""
    shown = escape(text).translate(_MD_TABLE)
    return _SCHEME_COLON.sub(r"\\:", shown) if ":" in shown else shown


def csv_cell(text: str | None) -> str:
    """A CSV cell that no spreadsheet evaluates, with control characters made visible."""
    if text is None:
        return ""
    shown = escape(text)
    if text.startswith(_FORMULA_START) or shown.startswith(_FORMULA_START):
        return "'" + shown
    return shown


def html_text(text: str | None) -> str:
    """Text for an HTML element or a quoted attribute value."""
    if text is None:
        return ""
    return html.escape(escape(text), quote=True)


def script_json(value: object) -> str:
    """JSON to put inside ``<script type="application/json">``: ``<``, ``>`` and ``&``
    become ``\\u003c`` etc., so no ``</script>`` or ``<!--`` can end or bend the element;
    everything non-ASCII is escaped too (a lone surrogate from a JSON event cannot make
    the page invalid UTF-8). ``JSON.parse`` reads it back unchanged."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
