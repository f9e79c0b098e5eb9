"""``sessions`` filters, ``show``, ``review`` and ``report`` on a real store: what the
auditor searches for is found, and untrusted text stays inert in every format."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from proxy.cli import main
from tests.integration.auditdata import Chan, open_trail, write_config

NOW = time.time()
DAY = 86400.0
EVIL = '=HYPERLINK("http://x") | `rm` <b>x</b>\x1b]52;c;QQ==\x07\nforged line'


@dataclass
class Data:
    cfg: Path
    root: Path
    ids: dict[str, str]


def build(tmp: Path) -> Data:
    async def run() -> Data:
        trail = await open_trail(tmp)
        ids: dict[str, str] = {}
        b = await trail.session(
            t=NOW - 40 * DAY, person="old", justification="INC-1 long ago", duration=60
        )
        ids["old"] = b.session_id
        b = await trail.session(
            t=NOW - 5 * DAY,
            person="alice",
            target="db01",
            justification=EVIL,
            channels=[Chan(command="sudo systemctl restart postgresql")],
            duration=600,
            extra=[
                (3, "alert", {"rule": "session_start", "detail": "break-glass used"}),
                (4, "command", {"text": "cat /etc/shadow", "offset": 1.5}),
                (5, "file_open", {"path": "/etc/passwd", "flags": ["read"], "status": "ok"}),
            ],
        )
        ids["alice"] = b.session_id
        b = await trail.session(
            t=NOW - 3 * DAY,
            person="bob",
            target="web01",
            channels=[Chan(command="uptime")],
            duration=3600,
            end_reason="time_limit",
            extra=[(2, "flag", {"rule": "quiet_hours"})],
        )
        ids["bob"] = b.session_id
        b = await trail.session(
            t=NOW - 1 * DAY, person="alice", target="web01", channels=[Chan(command="df -h")]
        )
        ids["alice2"] = b.session_id
        cfg = write_config(tmp, trail)
        await trail.store.close()
        return Data(cfg, trail.root, ids)

    return asyncio.run(run())


@pytest.fixture
def data(tmp_path: Path) -> Data:
    return build(tmp_path)


def cli(d: Data, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(["-c", str(d.cfg), *args])
    return rc, out.getvalue(), err.getvalue()


def ids_of(d: Data, *args: str) -> list[str]:
    rc, out, _ = cli(d, "sessions", "--json", *args)
    assert rc == 0
    return [s["id"] for s in json.loads(out)]


def test_sessions_filters(data: Data) -> None:
    i = data.ids
    assert ids_of(data) == [i["old"], i["alice"], i["bob"], i["alice2"]]
    assert ids_of(data, "--since", "7d") == [i["alice"], i["bob"], i["alice2"]]
    assert ids_of(data, "--since", "7d", "--until", "2d") == [i["alice"], i["bob"]]
    assert ids_of(data, "--person", "alice") == [i["alice"], i["alice2"]]
    assert ids_of(data, "--target", "web01") == [i["bob"], i["alice2"]]
    assert ids_of(data, "--end-reason", "time_limit") == [i["bob"]]
    assert ids_of(data, "--flagged") == [i["bob"]]  # an alert alone does not flag
    assert ids_of(data, "--command", "*systemctl*") == [i["alice"]]
    assert ids_of(data, "--command", "cat /etc/*") == [i["alice"]]  # a command event
    assert ids_of(data, "--command", "uptime") == [i["old"], i["bob"]]
    assert ids_of(data, "--command", "upt") == []  # globs match the whole line
    assert ids_of(data, "--path", "/etc/pass*") == [i["alice"]]
    assert ids_of(data, "--path", "/var/*") == []
    # A date works as well as a duration.
    day = time.strftime("%Y-%m-%d", time.gmtime(NOW - 2 * DAY))
    assert ids_of(data, "--since", day, "--person", "alice") == [i["alice2"]]


def test_sessions_json_shape_and_bad_arguments(data: Data) -> None:
    _rc, out, _ = cli(data, "sessions", "--json", "--person", "bob")
    doc = json.loads(out)
    assert set(doc[0]) == {
        "id", "person", "credential_id", "source", "client_version", "target", "login",
        "justification", "started_at", "ended_at", "duration", "deadline", "end_reason",
        "end_detail", "channels",
    }  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        cli(data, "sessions", "--since", "yesterday")
    assert exc.value.code == 2


def test_human_table_escapes_untrusted_text(data: Data) -> None:
    rc, out, _ = cli(data, "sessions", "--person", "alice")
    assert rc == 0
    assert "\x1b" not in out
    assert "\x07" not in out
    assert len(out.splitlines()) == 3  # header + 2 rows: the newline did not forge a row


def test_show_has_resources_system_response_and_recording_check(data: Data) -> None:
    sid = data.ids["alice"]
    rc, out, _ = cli(data, "show", sid, "--json")
    doc = json.loads(out)
    assert doc["justification"] == EVIL  # verbatim in JSON
    assert doc["channels"][0]["recording_check"] == "ok"
    assert [r["kind"] for r in doc["resources"]] == ["exec", "command", "file_open"]
    assert doc["resources"][1]["text"] == "cat /etc/shadow"
    assert doc["resources"][1]["offset"] == 1.5
    assert doc["alerts"][0]["data"]["rule"] == "session_start"
    assert doc["reviews"] == []
    rc, text, _ = cli(data, "show", sid)
    assert rc == 0
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "cat /etc/shadow" in text
    assert "/etc/passwd" in text
    assert "(not reviewed)" in text
    cast = data.root / sid[:4] / sid / "1.cast"
    cast.write_bytes(cast.read_bytes() + b'[9, "o", "x"]\n')
    doc = json.loads(cli(data, "show", sid, "--json")[1])
    assert doc["channels"][0]["recording_check"] == "MISMATCH"
    cast.unlink()
    doc = json.loads(cli(data, "show", sid, "--json")[1])
    assert doc["channels"][0]["recording_check"] == "missing"
    assert "missing" in cli(data, "show", sid)[1]


def test_review_is_recorded_and_shown(data: Data) -> None:
    sid = data.ids["bob"]
    note = "Checked against INC-77 | ok `x` \x1b[2J"
    rc, _out, _ = cli(data, "review", sid, "--note", note)
    assert rc == 0
    doc = json.loads(cli(data, "show", sid, "--json")[1])
    assert len(doc["reviews"]) == 1
    assert doc["reviews"][0]["note"] == note
    assert doc["reviews"][0]["by"]
    text = cli(data, "show", sid)[1]
    assert "Checked against INC-77" in text
    assert "\x1b" not in text
    assert cli(data, "review", "nosuch", "--note", "x")[0] == 1
    assert cli(data, "review", sid, "--note", "  ")[0] == 2
    report = cli(data, "report", "--since", "7d")[1]
    assert "Checked against INC\\-77" in report or "Checked against INC-77" in report
    # The chain still verifies with the review in it.
    assert cli(data, "verify")[0] == 0


def test_report_markdown(data: Data) -> None:
    rc, out, _ = cli(data, "report")  # default: the last 30 days
    assert rc == 0
    assert data.ids["old"] not in out
    for sid in (data.ids["alice"], data.ids["bob"], data.ids["alice2"]):
        assert f"### {sid}" in out
    assert "| alice | 2 |" in out
    assert "| bob | 1 |" in out
    assert "time\\_limit" in out
    assert "\x1b" not in out
    assert "\x07" not in out
    # The hostile justification cannot add table cells, code, HTML or lines.
    why = next(line for line in out.splitlines() if line.startswith("| Why |"))
    unescaped_pipes = [j for j, c in enumerate(why) if c == "|" and why[j - 1] != "\\"]
    assert len(unescaped_pipes) == 3
    assert "<b>" not in why
    assert "\\<b\\>" in why
    assert "\\`rm\\`" in why
    assert "forged line" in why  # same line: the newline is shown, not obeyed
    assert "cat /etc/shadow" in out


def test_report_json_summary(data: Data) -> None:
    rc, out, _ = cli(data, "report", "--since", "30d", "--format", "json")
    assert rc == 0
    doc: dict[str, Any] = json.loads(out)
    sm = doc["summary"]
    assert sm["sessions"] == 3
    assert sm["by_person"]["alice"]["sessions"] == 2
    assert sm["by_target"]["web01"]["sessions"] == 2
    assert sm["by_person"]["bob"]["longest"] == 3600
    assert sm["end_reasons"] == {"client_exit": 2, "time_limit": 1}
    assert sm["alerts"] == 1
    assert sm["flags"] == 1
    assert sm["flagged_sessions"] == 1
    assert sm["recordings"] == {"ok": 3}
    assert sm["durations"]["longest"] == 3600
    s = next(x for x in doc["sessions"] if x["id"] == data.ids["alice"])
    assert s["justification"] == EVIL
    assert s["alerts"][0]["data"]["detail"] == "break-glass used"
    _rc, out, _ = cli(data, "report", "--since", "7d", "--until", "2d", "--format", "json")
    assert [x["id"] for x in json.loads(out)["sessions"]] == [data.ids["alice"], data.ids["bob"]]


def test_report_csv_is_spreadsheet_safe(data: Data) -> None:
    rc, out, _ = cli(data, "report", "--format", "csv")
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 3
    alice = next(r for r in rows if r["session"] == data.ids["alice"])
    assert alice["justification"].startswith("'=HYPERLINK")
    assert "\n" not in alice["justification"]
    assert "\x1b" not in alice["justification"]
    assert "cat /etc/shadow" in alice["resources"]
    for r in rows:
        for key, value in r.items():
            if key not in ("duration_seconds",) and value:
                assert value[0] not in "=+-@\t\r", (key, value)
