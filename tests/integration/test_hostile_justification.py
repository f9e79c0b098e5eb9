"""Justification rules and hostile justifications (issue 4, point 4).

A justification that breaks a rule (too short, over 2 KiB, no ticket id) is asked for
again with the rule in the instruction, the code is not asked again. Whatever a
justification contains (newlines, NUL, ANSI/OSC escape sequences, bidi overrides) is
stored exactly as received and never reaches a terminal or a log line unescaped:
sudo CVE-2023-28486/28487 (control characters in logs and in sudoreplay -l), CWE-117
log forging. Invalid UTF-8 never gets that far: asyncssh refuses it as a protocol error
(asyncssh auth.py _ServerKbdIntAuth._process_info_response), so the test checks that
the connection is cut, audited, and the next login works.

OpenSSH sends at most 1023 bytes per prompt and stops at a newline, so these cases use
the asyncssh client of tests/integration/inproc.py; raw bytes as a response go through
asyncssh's own encoder unchanged (``String(bytes)``), no patching needed.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from tests.integration.conftest import TARGET, standard_targets
from tests.integration.harness import GOOD_JUSTIFICATION, SshdTarget, new_person
from tests.integration.inproc import (
    InProcessProxy,
    Step,
    close,
    in_process_proxy,
    login,
)

PATTERN = r"INC-\d+"
HOSTILE = (
    "INC-77 "
    "\x1b]52;c;ZWNobyBwd25lZA==\x07"  # OSC 52: write the clipboard
    "\x1b[2J"  # clear the screen
    "\x1b[31mred\x1b[0m "
    "line one\nFORGED log line\r\n"
    "nul\x00byte "
    "\u202etxt.exe "  # RIGHT-TO-LEFT OVERRIDE
    "\u2028next \x9b1m C1-CSI \x07 bell"
)
RAW = ("\x1b", "\x00", "\u202e", "\u2028", "\x9b", "\x07", "\r")


@pytest.fixture
async def proxy(
    tmp_path: Path, target: SshdTarget, other_target: SshdTarget
) -> AsyncIterator[InProcessProxy]:
    async with in_process_proxy(
        tmp_path / "proxy",
        standard_targets(target, other_target),
        policy={"justification": {"min_length": 15, "pattern": PATTERN}},
    ) as p:
        yield p


def user(person: str) -> str:
    return f"{person}@{TARGET}"


@pytest.mark.parametrize(
    ("bad", "reason", "rule"),
    [
        ("INC-1 short", "justification_too_short", "at least 15 characters"),
        # 501 two-byte characters: 507 characters but 1008 bytes, over the 1000 default.
        ("INC-1 " + "é" * 501, "justification_too_long", "at most 1000 bytes"),
        ("no ticket id here, just a long reason", "justification_pattern", PATTERN),
    ],
)
async def test_a_bad_justification_is_asked_again_with_the_rule_and_not_the_code(
    proxy: InProcessProxy, bad: str, reason: str, rule: str
) -> None:
    person = new_person()
    code = await proxy.quick_code(person)
    checks = proxy.app.hasher.checks

    client, conn = await login(
        proxy.port,
        [Step(user(person), code, bad), Step(user(person), None, GOOD_JUSTIFICATION)],
    )

    assert not isinstance(conn, Exception), conn
    await close(conn)
    first, again = client.challenges
    assert first.prompts[0][0].startswith("Break-glass code for")
    assert len(again.prompts) == 1
    prompt, echo = again.prompts[0]
    assert "ustification" in prompt
    assert "code" not in prompt.lower()
    assert echo is True
    assert rule in again.instruction, again.instruction
    assert proxy.app.hasher.checks - checks == 1  # the code was checked once, at the end
    [failure] = await proxy.wait_events("login_failed", lambda e: e.data.get("person") == person)
    assert failure.data["reason"] == reason
    # Stored as received up to the policy's max_bytes (issue 15), with its full length.
    assert failure.data["justification"] == bad.encode()[:1000].decode("utf-8", "ignore")
    assert failure.data["justification_length"] == len(bad)
    [session] = await proxy.sessions()
    assert session.justification == GOOD_JUSTIFICATION


async def test_a_hostile_justification_is_stored_verbatim_and_shown_escaped(
    proxy: InProcessProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="breakglass")
    person = new_person()
    code = await proxy.quick_code(person)

    _, conn = await login(proxy.port, [Step(user(person), code, HOSTILE)])
    assert not isinstance(conn, Exception), conn
    await close(conn)

    # Stored exactly: the session_start event, the sessions row, show --json.
    [start] = await proxy.wait_events("session_start", lambda e: e.data.get("person") == person)
    assert start.data["justification"] == HOSTILE
    with sqlite3.connect(f"file:{proxy.database}?mode=ro", uri=True) as db:
        [(stored,)] = db.execute(
            "SELECT justification FROM sessions WHERE person = ?", (person,)
        ).fetchall()
    assert stored == HOSTILE
    session_id = start.row["session_id"]
    shown_json = await proxy.cli("show", session_id, "--json")
    assert shown_json.returncode == 0, shown_json.stderr
    assert json.loads(shown_json.stdout)["justification"] == HOSTILE

    # Shown escaped: the human outputs carry no raw control, bidi or separator character.
    table = await proxy.cli("sessions")
    shown = await proxy.cli("show", session_id)
    for result in (table, shown):
        assert result.returncode == 0, result.stderr
        found = [ch for ch in RAW if ch in result.stdout + result.stderr]
        assert found == [], (result.args, found, result.stdout)
    assert "\\x1b]52;c;" in shown.stdout
    assert "line one\\x0aFORGED log line" in shown.stdout
    assert "\\u{202E}txt.exe" in shown.stdout
    assert not any(line.startswith("FORGED") for line in shown.stdout.splitlines())

    # And never in a log line.
    for record in caplog.records:
        message = record.getMessage()
        assert not any(ch in message for ch in (*RAW, "\n")), (record.name, message)
        assert "FORGED" not in message


async def test_json_output_round_trips_and_carries_no_raw_terminal_controls(
    proxy: InProcessProxy,
) -> None:
    # --json is for scripts, but it is printed on the auditor's terminal too: JSON
    # escapes C0 controls only, so C1 controls (U+009B is CSI), bidi overrides and line
    # separators must be written as \\uXXXX (same value for any JSON reader).
    person = new_person()
    code = await proxy.quick_code(person)
    _, conn = await login(proxy.port, [Step(user(person), code, HOSTILE)])
    assert not isinstance(conn, Exception), conn
    await close(conn)
    [session] = await proxy.sessions()

    for args in (("sessions", "--json"), ("show", session.id, "--json")):
        result = await proxy.cli(*args)
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        row = document[0] if isinstance(document, list) else document
        assert row["justification"] == HOSTILE
        found = [ch for ch in RAW if ch in result.stdout]
        assert found == [], (args, found)


async def test_a_rejected_hostile_justification_is_audited_verbatim_not_logged(
    proxy: InProcessProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="breakglass")
    person = new_person()
    code = await proxy.quick_code(person)
    hostile_short = "\x1b[2J\n\x00\u202e"

    _, result = await login(proxy.port, [Step(user(person), code, hostile_short)])

    assert isinstance(result, asyncssh.PermissionDenied), result
    [failure] = await proxy.wait_events("login_failed", lambda e: e.data.get("person") == person)
    assert failure.data["justification"] == hostile_short
    for record in caplog.records:
        message = record.getMessage()
        assert not any(ch in message for ch in (*RAW, "\n")), (record.name, message)


@pytest.mark.parametrize("field", ["justification", "code"])
async def test_invalid_utf8_in_a_response_cuts_the_connection_and_is_audited(
    proxy: InProcessProxy, caplog: pytest.LogCaptureFixture, field: str
) -> None:
    person = new_person()
    code = await proxy.quick_code(person)
    invalid = b"INC-1 \xff\xfe\xc3\x28 not UTF-8 at all"
    # bytes answers go on the wire as they are (asyncssh encodes only str as UTF-8)
    step = (
        Step(user(person), code, invalid)
        if field == "justification"
        else Step(user(person), invalid, GOOD_JUSTIFICATION)
    )
    _, result = await login(proxy.port, [step], local_addr="127.0.0.8")

    assert isinstance(result, asyncssh.ProtocolError), result
    assert await proxy.sessions() == []
    [aborted] = await proxy.wait_events("login_aborted", lambda e: e.data["source"] == "127.0.0.8")
    assert "nvalid keyboard interactive" in aborted.data["detail"], aborted.data
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    # The proxy still serves: the same person logs in right after.
    _, conn = await login(proxy.port, [Step(user(person), code, GOOD_JUSTIFICATION)])
    assert not isinstance(conn, Exception), conn
    await close(conn)
    assert [s.person for s in await proxy.sessions()] == [person]
