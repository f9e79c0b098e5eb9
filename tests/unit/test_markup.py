"""Untrusted text in Markdown, CSV, HTML and inline JSON."""

from __future__ import annotations

import csv
import io
import json

import pytest

from proxy.core.markup import csv_cell, html_text, md, script_json

HOSTILE = "a|b `code` *em* _u_ [link](http://x) <img src=x onerror=alert(1)> # h \\ ~~s~~ &amp;"


def test_markdown_escapes_every_markup_character() -> None:
    out = md(HOSTILE)
    for ch in "|`*_[]()<>#~&":
        # every occurrence is preceded by a backslash
        for i, c in enumerate(out):
            if c == ch:
                assert out[i - 1] == "\\", (ch, out)
    assert "\n" not in md("line1\nline2\r\n")
    assert md("line1\nline2") == "line1\\\\x0aline2"


def test_markdown_table_cell_cannot_be_split() -> None:
    row = f"| {md('x | y')} | {md('z')} |"
    # GFM splits only on unescaped pipes
    unescaped = [i for i, c in enumerate(row) if c == "|" and row[i - 1] != "\\"]
    assert len(unescaped) == 3


def test_markdown_shows_control_and_bidi_characters() -> None:
    out = md("INC-1 \x1b[31m\u202etxt.exe")
    assert "\x1b" not in out
    assert "\u202e" not in out
    assert "\\\\x1b" in out
    assert "202E" in out


def test_markdown_escapes_a_colon_only_where_it_could_make_a_link() -> None:
    # A time reads as written; a scheme (http:, mailto:, javascript:) cannot autolink.
    assert md("deadline 2026-12-03T18:09:59.000Z") == "deadline 2026-12-03T18:09:59.000Z"
    assert md("see http://x and mailto:a@b") == "see http\\://x and mailto\\:a@b"
    assert md("JavaScript:alert") == "JavaScript\\:alert"


def test_markdown_empty() -> None:
    assert md(None) == ""
    assert md("") == ""


@pytest.mark.parametrize(
    "value",
    ["=1+1", "+1", "-1", "@SUM(A1)", "\t=cmd", "\r=cmd", "=cmd|' /C calc'!A0", "\uff1d1+1"],
)
def test_csv_neutralises_formulas(value: str) -> None:
    cell = csv_cell(value)
    assert cell.startswith("'")


def test_csv_keeps_plain_text_and_shows_controls() -> None:
    assert csv_cell("INC-1 disk full") == "INC-1 disk full"
    assert csv_cell("a\nb") == "a\\x0ab"
    assert csv_cell(None) == ""
    buf = io.StringIO()
    csv.writer(buf).writerow([csv_cell('say "hi", =now'), csv_cell("=x")])
    row = next(csv.reader(io.StringIO(buf.getvalue())))
    assert row == ['say "hi", =now', "'=x"]


def test_html_escapes_markup_and_quotes() -> None:
    out = html_text('<script>alert("x")</script> \' & \x1b')
    assert "<" not in out
    assert ">" not in out
    assert '"' not in out
    assert "'" not in out
    assert "&lt;script&gt;" in out
    assert "\x1b" not in out


def test_script_json_cannot_close_the_element_and_round_trips() -> None:
    value = {
        "cast": "</script><script>alert(1)</script><!-- \u2028 \ud800 & >",
        "n": [1, 2.5],
    }
    out = script_json(value)
    assert "<" not in out
    assert ">" not in out
    assert "&" not in out
    assert out.isascii()
    assert json.loads(out) == value
