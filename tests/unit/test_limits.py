"""What a logged-in user controls is bounded (issue 16): terminal sizes where the proxy
uses them, one event's data, repeated refusals, pasted lines, the extractor's failures
as alerts that flag the session."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from proxy.config.model import AlertRules
from proxy.core import anomaly
from proxy.core.chain import canonical
from proxy.core.commands import MAX_PASTE_LINES, TYPING_OUTPUT_LIMIT, CommandExtractor
from proxy.core.limits import (
    MAX_COLUMNS,
    MAX_ENV_KEPT,
    MAX_ENV_NAMES,
    MAX_EVENT_DATA,
    MAX_LINES,
    TARGET_MAX_SIZE,
    EnvRequests,
    OpenRate,
    RefusalTally,
    bound_data,
    clamp_size,
    env_refusal_detail,
    target_size,
)
from proxy.core.recording import CastEncoder
from tests.eventdata import typed

PROMPT = b"user@host:~$ "


def stored_size(data: Any) -> int:
    return len(canonical(data).encode())


# -- terminal sizes ------------------------------------------------------------------


def test_the_proxy_clamps_sizes_and_the_target_gets_what_sshd_can_apply() -> None:
    assert clamp_size(16_000_000, 0xFFFFFFFF) == (MAX_COLUMNS, MAX_LINES)
    assert clamp_size(0, 0) == (80, 24)
    assert clamp_size(0, 50, (100, 30)) == (100, 50)
    assert clamp_size(200, 60) == (200, 60)
    assert target_size((16_000_000, 0xFFFFFFFF, 5, 7)) == (
        TARGET_MAX_SIZE,
        TARGET_MAX_SIZE,
        5,
        7,
    )
    assert target_size((300, 100, 0, 0)) == (300, 100, 0, 0)


def typing(ex: CommandExtractor) -> None:
    for i in range(30):  # a screenful of rows with text on them
        ex.output(b"line %d\r\n" % i, 0.0)
    ex.output(PROMPT, 0.0)
    ex.input(b"ec", 1.0)
    ex.output(b"ec", 1.0)


def test_a_resize_to_16m_columns_and_back_leaves_a_clamped_screen_that_still_reads() -> None:
    ex = CommandExtractor(80, 24)
    typing(ex)
    assert ex.resize(16_000_000, 24, 1.1) == []
    assert ex.resize(80, 24, 1.2) == []
    ex.resize(16_000_000, 0xFFFFFFFF, 1.3)
    assert (ex.columns, ex.lines) == (MAX_COLUMNS, MAX_LINES)
    assert ex._screen is not None
    assert (ex._screen.columns, ex._screen.lines) == (MAX_COLUMNS, MAX_LINES)
    ex.input(b"ho hi\r", 1.4)
    events = ex.output(b"ho hi\r\nhi\r\n" + PROMPT, 1.5)
    assert not ex.disabled
    assert [e["text"] for e in events] == ["echo hi"]


def test_a_terminal_asked_with_4g_lines_is_clamped_from_the_start() -> None:
    ex = CommandExtractor(80, 0xFFFFFFFF)
    assert (ex.columns, ex.lines) == (80, MAX_LINES)
    typing(ex)
    ex.input(b"ho\r", 1.4)
    assert [e["text"] for e in ex.output(b"ho\r\n" + PROMPT, 1.5)] == ["echo"]


def test_the_cast_header_and_resize_events_are_clamped() -> None:
    enc = CastEncoder(width=16_000_000, height=0xFFFFFFFF, timestamp=0, max_bytes=100)
    header = json.loads(enc.header())
    assert (header["width"], header["height"]) == (MAX_COLUMNS, MAX_LINES)
    assert json.loads(enc.resize(1.0, 16_000_000, 30)) == [1.0, "r", f"{MAX_COLUMNS}x30"]
    assert json.loads(enc.resize(2.0, 0, 0)) == [2.0, "r", "80x24"]


# -- pasted and typed input ----------------------------------------------------------


def test_a_paste_of_many_lines_reads_the_first_ones_and_counts_the_rest() -> None:
    ex = CommandExtractor(80, 24)
    ex.output(PROMPT, 0.0)
    lines = 1000
    ex.input(b"ab\r" * lines, 1.0)
    events = []
    for _ in range(lines // 100):
        events += ex.output(b"ab\r\n" * 100, 1.1)
    # The first line (from the screen), then MAX_PASTE_LINES more, one by one.
    assert len(events) == 1 + MAX_PASTE_LINES
    assert ex.lines_not_read == lines - 1 - MAX_PASTE_LINES
    assert not ex.disabled


def test_typing_that_is_never_echoed_is_not_kept_without_bound() -> None:
    ex = CommandExtractor(80, 24)
    ex.output(PROMPT, 0.0)
    for i in range(TYPING_OUTPUT_LIMIT // 32768 + 4):
        ex.input(b"q" * 32768, 1.0 + i / 1000)
    assert sum(map(len, ex._typed)) <= TYPING_OUTPUT_LIMIT
    assert not ex.disabled


# -- event data ------------------------------------------------------------------------


def test_small_data_is_stored_as_it_is() -> None:
    data = {"request": "env", "detail": "FOO,BAR"}
    kept, text = bound_data(data)
    assert kept is data
    assert text == canonical(data)


@pytest.mark.parametrize(
    "data",
    [
        {"request": "env", "detail": ",".join(f"HOSTILE_{i:05d}" for i in range(10_000))},
        {"kind": "exec", "command": "true #" + "z" * 200_000, "pty": False},
        {"kind": "command", "text": "é中" * 100_000, "offset": 1.5},
        {"kind": "x", "names": [f"n{i}" * 10 for i in range(10_000)], "more": {"a": "b" * 90_000}},
    ],
    ids=["env", "exec", "multibyte", "lists"],
)
def test_oversized_data_is_cut_to_the_bound_with_the_whole_hash(data: dict[str, Any]) -> None:
    whole = canonical(data).encode()
    kept, text = bound_data(data)
    assert text == canonical(kept)
    assert len(text.encode()) <= MAX_EVENT_DATA
    assert kept["truncated"] == {"bytes": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}
    assert set(data) <= set(kept)  # every key stays for the readers that expect it


def test_refused_environment_names_are_bounded_and_counted() -> None:
    names = [f"V{i}" for i in range(10_000)]
    detail = env_refusal_detail(names)
    assert len(detail["detail"].split(",")) == MAX_ENV_NAMES
    assert detail["count"] == 10_000
    assert env_refusal_detail(["A", "B"]) == {"detail": "A,B"}


def test_environment_requests_keep_the_locale_and_count_the_rest() -> None:
    env = EnvRequests()
    env.add(b"LANG", b"C.UTF-8")
    for i in range(10_000):
        env.add(b"HOSTILE_%05d" % i, b"x" * 100)
        env.add(b"LC_" + bytes(d + 17 for d in b"%05d" % i), b"y")  # LC_AAAAB ...
    env.add(b"LANG", b"en_US.UTF-8")  # asked again: the last value wins, no new slot
    assert len(env.kept) == MAX_ENV_KEPT
    assert env.kept["LANG"] == b"en_US.UTF-8"
    assert len(env.refused_names) == MAX_ENV_NAMES
    assert env.refused == 20_000 - (MAX_ENV_KEPT - 1)
    refusal = env.refusal()
    assert refusal is not None
    assert refusal["count"] == env.refused
    assert refusal["detail"].split(",")[:2] == ["HOSTILE_00000", "HOSTILE_00001"]
    assert EnvRequests().refusal() is None
    bad = EnvRequests()
    bad.add(b"\xff\xfeX", b"")  # not UTF-8: named, escaped
    assert bad.refusal() == {"detail": "\\xff\\xfeX"}


# -- repeated refusals -------------------------------------------------------------------


def test_repeated_refusals_are_written_in_full_a_few_times_then_counted() -> None:
    tally = RefusalTally()
    written = [tally.note("x11-req") for _ in range(1000)]
    assert written.count(True) == RefusalTally.FULL_PER_KIND
    assert written[: RefusalTally.FULL_PER_KIND] == [True] * RefusalTally.FULL_PER_KIND
    assert [tally.note("session", full=1) for _ in range(5)] == [True, False, False, False, False]
    assert tally.drain() == {"x11-req": 1000 - RefusalTally.FULL_PER_KIND, "session": 4}
    assert tally.drain() == {}


def test_the_kinds_a_client_names_are_bounded_too() -> None:
    tally = RefusalTally()
    for i in range(10_000):
        tally.note(f"unknown-{i}@example.com")
    counts = tally.drain()
    assert counts == {"other": 10_000 - RefusalTally.MAX_KINDS}


# -- extraction failures alert and flag ---------------------------------------------------


@pytest.mark.parametrize(
    "type_", ["command_extraction_error", "sftp_parse_error", "scp_parse_error"]
)
def test_an_extraction_failure_raises_an_alert_that_flags_the_session(type_: str) -> None:
    failure = typed(type_, {"detail": "TypeError: boom"})
    [firing] = anomaly.evaluate(failure, AlertRules(), anomaly.History(), 0.0)
    assert firing.rule == "extraction_failed"
    assert firing.flag
    assert "TypeError: boom" in firing.detail


def test_channel_opens_pass_in_a_burst_then_at_the_rate() -> None:
    rate = OpenRate(burst=5, per_second=2)
    assert [rate.allow(0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert rate.allow(0.4) is False  # 0.8 of an open earned: not yet
    assert rate.allow(0.5) is True
    assert rate.allow(0.6) is False
    # An hour's quiet earns the burst back, never more.
    assert [rate.allow(3600.0) for _ in range(6)] == [True] * 5 + [False]
    # A clock that steps back earns nothing.
    assert rate.allow(10.0) is False
