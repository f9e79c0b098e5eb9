"""The fast paths of the auditor's output give exactly what the plain code gave: times,
Markdown escaping, terminal-safe JSON, the sessions table and the store's row makers."""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import math
import time
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.audit.views import (
    rfc3339,
    sessions_table,
    sessions_table_lines,
    write_json_lines_array,
    write_lines,
)
from proxy.core.markup import md, md_escaped
from proxy.core.text import escape, json_terminal_safe, safe_json
from proxy.core.units import format_duration
from proxy.store.base import ChannelRow, SessionRow
from proxy.store.rows import channel_row, loads, session_row

LAST = 253402300799.0  # 9999-12-31T23:59:59Z


def _rfc3339_reference(t: float) -> str:
    stamp = dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


EDGES = [0.0, 0.0005, 0.9995, 1 / 128, 0.9999995, 0.4999995, 1e-7, 59.9999996, 86399.9999995]


@pytest.mark.parametrize("fraction", EDGES)
@pytest.mark.parametrize("base", [0, 1_800_000_000, 1_800_000_059, 2_000_000_000, 253402214399])
def test_rfc3339_rounds_like_datetime_at_the_edges(base: int, fraction: float) -> None:
    t = base + fraction
    for near in (t, math.nextafter(t, 0), math.nextafter(t, LAST)):
        assert rfc3339(near) == _rfc3339_reference(near), near


@given(st.floats(min_value=0, max_value=LAST))
@settings(max_examples=3000)
def test_rfc3339_is_datetime_isoformat(t: float) -> None:
    assert rfc3339(t) == _rfc3339_reference(t)


def test_rfc3339_out_of_range_raises_as_datetime_does() -> None:
    assert rfc3339(None) is None
    for t in (LAST + 1, math.inf, math.nan):
        with pytest.raises((ValueError, OverflowError)):
            rfc3339(t)


@given(st.text(alphabet=st.characters(max_codepoint=0x7F)) | st.text())
@settings(max_examples=2000)
def test_md_fast_path_changes_nothing(text: str) -> None:
    assert md(text) == (md_escaped(text) if text else "")


def _safe_json_reference(doc: object, indent: int | None = None, compact: bool = False) -> str:
    separators = (",", ":") if compact else None
    text = json.dumps(doc, indent=indent, ensure_ascii=False, separators=separators)
    return "".join(
        json.dumps(ch)[1:-1] if ord(ch) > 0x7E and escape(ch) != ch else ch for ch in text
    )


JSON_DOCS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(JSON_DOCS, st.sampled_from([None, 2]))
@settings(max_examples=1000)
def test_safe_json_matches_the_per_character_version(doc: object, indent: int | None) -> None:
    assert safe_json(doc, indent=indent) == _safe_json_reference(doc, indent=indent)
    assert safe_json(doc, compact=True) == _safe_json_reference(doc, compact=True)


def test_terminal_safe_json_escapes_c1_bidi_and_separators() -> None:
    text = json.dumps(["\x9b31m \u202e \u2028 é 😀"], ensure_ascii=False)
    out = json_terminal_safe(text)
    assert out == '["\\u009b31m \\u202e \\u2028 é 😀"]'
    assert json.loads(out) == json.loads(text)


def _table_reference(rows: Sequence[SessionRow]) -> str:
    """sessions_table as it was."""

    @functools.lru_cache(maxsize=4096)
    def cell(text: str | None, width: int) -> str:
        shown = escape(text or "-")
        return shown if len(shown) <= width else shown[: width - 1] + "…"

    lines = [
        f"{'SESSION':12}  {'STARTED (UTC)':19}  {'DURATION':>8}  {'PERSON':12}  "
        f"{'TARGET':16}  {'END':14}  JUSTIFICATION"
    ]
    for s in rows:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.started_at))
        duration = (
            "live" if s.ended_at is None else format_duration(round(s.ended_at - s.started_at))
        )
        lines.append(
            f"{s.id:12}  {started:19}  {duration:>8}  {cell(s.person, 12):12}  "
            f"{cell(s.login + '@' + s.target, 16):16}  {cell(s.end_reason or 'live', 14):14}  "
            f"{cell(s.justification, 60)}"
        )
    if not rows:
        lines.append("(no sessions)")
    return "\n".join(lines)


WORDS = st.sampled_from(
    ["alice", "a-very-long-person-name", "é", "x|y", "\x1b[2J", "\u202eevil", "", "db01"]
)


@st.composite
def session_rows(draw: st.DrawFn) -> SessionRow:
    started = draw(st.floats(min_value=1e9, max_value=2e9))
    duration = draw(st.none() | st.floats(min_value=0, max_value=90 * 86400))
    ended = None if duration is None else started + duration
    return SessionRow(
        id=draw(st.text(min_size=1, max_size=14)),
        person=draw(WORDS),
        credential_id="C1",
        source="127.0.0.1",
        client_version="SSH-2.0",
        target=draw(WORDS),
        login=draw(WORDS),
        justification=draw(st.text() | WORDS),
        started_at=started,
        deadline=started + 60,
        ended_at=ended,
        end_reason=draw(st.none() | WORDS),
        end_detail=None,
    )


@given(st.lists(session_rows(), max_size=8))
@settings(max_examples=300)
def test_sessions_table_is_unchanged(rows: list[SessionRow]) -> None:
    assert sessions_table(rows) == _table_reference(rows)
    out = io.StringIO()
    write_lines(out, sessions_table_lines(rows), batch=3)
    assert out.getvalue() == _table_reference(rows) + "\n"


@pytest.mark.parametrize("n", [0, 1, 5, 2500])
def test_json_lines_array_is_one_document(n: int) -> None:
    docs = [{"id": i, "text": "\x9b\u202e é\n", "x": [None, 1.5]} for i in range(n)]
    out = io.StringIO()
    write_json_lines_array(out, docs, batch=7)
    text = out.getvalue()
    assert json.loads(text) == docs
    assert text.count("\n") == (n + 2 if n else 1)  # "[", one line each, "]"
    assert "\x9b" not in text
    assert "\u202e" not in text


def test_row_makers_equal_the_constructors() -> None:
    c = ("s1", 2, "exec", "ls", 1, None, 5.0, None, 0, None, "/r/s1/2.cast", "ab", 10, 3, 4)
    made = channel_row(c)
    assert made == ChannelRow("s1", 2, "exec", "ls", True, None, 5.0, None, 0, None,
                              "/r/s1/2.cast", "ab", 10, 3, 4)  # fmt: skip
    assert type(made.pty) is bool
    s = ("s1", "alice", "C1", "127.0.0.1", "SSH", "db01", "root", "why", 1, 61, None, None, None)
    row = session_row(s, [made])
    assert row == SessionRow(*s[:8], 1.0, 61.0, None, None, None, (made,))
    assert type(row.started_at) is float
    assert hash(row.channels[0]) == hash(made)
    assert repr(row).startswith("SessionRow(id='s1'")
    with pytest.raises(AttributeError):
        row.person = "bob"  # type: ignore[misc]


@pytest.mark.parametrize(
    "text", ['{"a":1}', '{"a": [1, 2.5, "x", null, true]}', "[]", '"s"', "1", " {}", '{"a":1} ']
)
def test_loads_is_json_loads(text: str) -> None:
    assert loads(text) == json.loads(text)


@pytest.mark.parametrize("text", ["", "{", '{"a":1}x', "nan!"])
def test_loads_raises_as_json_loads(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        loads(text)
