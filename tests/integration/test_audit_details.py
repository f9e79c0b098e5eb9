"""What an auditor reads (issue 19, items 5-7), from real logins through the real proxy
and the real ``breakglass`` CLI: failed attempts (``attempts`` and the report's
summary), RFC 3339 times in every human output, and the HTML export's timeline, chain
check and file directions."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

from tests.integration.conftest import TARGET
from tests.integration.harness import Deployment, new_person
from tests.integration.sshtools import remote, run_client, scp_argv

WRONG = "BG-ZZZZZZ-0000-0000-0000-0000-0000-0000"
EPOCH_FLOAT = re.compile(r"=\d{9,}(\.\d+)?\b")  # deadline=1796322299.4994922


def attempts(deployment: Deployment, *args: str) -> Any:
    done = deployment.cli("attempts", "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_attempts_list_filter_and_summarise(deployment: Deployment) -> None:
    guesser, lost = new_person("guess"), new_person("lost")
    for _ in range(2):
        assert deployment.ssh(guesser, TARGET, WRONG, "true").returncode == 255
    assert deployment.ssh(lost, "nosuch01", deployment.code(lost), "true").returncode == 255
    mine = {guesser, lost}

    doc = attempts(deployment, "--person", guesser)
    assert [a["reason"] for a in doc["attempts"]] == ["unknown_code", "unknown_code"]
    assert {a["source"] for a in doc["attempts"]} == {"127.0.0.1"}
    assert doc["attempts"][0]["time"].endswith("Z")
    assert doc["summary"]["total"] == 2
    assert doc["summary"]["by_person"] == {guesser: 2}

    by_reason = attempts(deployment, "--reason", "unknown_target")["attempts"]
    assert [a["person"] for a in by_reason if a["person"] in mine] == [lost]
    assert by_reason[-1]["target"] == "nosuch01"
    everyone = attempts(deployment, "--source", "127.0.0.0/8", "--since", "1h")["attempts"]
    assert {a["person"] for a in everyone} >= mine
    assert attempts(deployment, "--source", "10.0.0.0/8")["attempts"] == []
    assert attempts(deployment, "--until", "2000-01-01")["attempts"] == []

    table = deployment.cli("attempts", "--person", guesser)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("TIME (UTC)")
    assert len([line for line in lines if guesser in line and "unknown_code" in line]) == 2
    assert "2 failed attempt(s)" in table.stdout
    bad = deployment.cli("attempts", "--source", "not-an-address")
    assert bad.returncode == 2
    assert "neither an address nor a network" in bad.stderr

    report = json.loads(deployment.cli("report", "--format", "json", "--since", "1h").stdout)
    failed = report["summary"]["failed_attempts"]
    assert failed["by_person"][guesser] == 2
    assert failed["by_person"][lost] == 1
    assert failed["by_reason"]["unknown_code"] >= 2
    assert failed["by_source"]["127.0.0.1"] >= 3
    markdown = deployment.cli("report", "--since", "1h").stdout
    section = markdown.split("### Failed login attempts", 1)[1].split("## Sessions", 1)[0]
    assert f"| {guesser} | 2 |" in section
    assert "| unknown\\_target | 1 |" in section


def test_human_output_shows_rfc3339_times(deployment: Deployment, person: str) -> None:
    result = deployment.ssh(person, TARGET, deployment.code(person), "true")
    assert result.returncode == 0, result.describe()
    session = deployment.wait_for_session(person)
    sid = str(session["id"])

    shown = deployment.cli("show", sid)
    assert shown.returncode == 0, shown.stderr
    events = shown.stdout.split("\nEvents\n", 1)[1]
    assert "session_start" in events
    assert not EPOCH_FLOAT.search(shown.stdout), EPOCH_FLOAT.search(shown.stdout)
    assert re.search(r"deadline=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", events), events

    markdown = deployment.cli("report", "--since", "1h").stdout
    assert not re.search(r"\d\\:\d", markdown), re.search(r".{40}\d\\:\d.{20}", markdown)
    assert not EPOCH_FLOAT.search(markdown), EPOCH_FLOAT.search(markdown)
    assert f"### {sid}:" in markdown


def _markers(html: str) -> list[str]:
    labels = re.findall(r'class="bg-marker"[^>]*><span class="bg-t">[^<]*</span>([^<]*)<', html)
    return [label.replace("&quot;", '"').replace("&#x27;", "'") for label in labels]


def test_export_timeline_chain_check_and_file_directions(
    deployment: Deployment, person: str, tmp_path: Path
) -> None:
    code = deployment.code(person)
    command = "echo exported-once"
    assert deployment.ssh(person, TARGET, code, command).returncode == 0
    first = deployment.wait_for_session(person)
    page = tmp_path / "exec.html"
    done = deployment.cli("export", str(first["id"]), "--html", str(page))
    assert done.returncode == 0, done.stderr
    html = page.read_text(encoding="utf-8")
    # The command once in the timeline (it was there as the cast's marker and as
    # "command: ..." from its audit event).
    assert [m for m in _markers(html) if "exported-once" in m] == [command], _markers(html)
    check = re.search(r'<p class="(bg-check-\w+)" id="bg-check">([^<]*)</p>', html)
    assert check is not None
    assert check.group(1) == "bg-check-ok", check.group(2)
    assert re.match(r"Checked against the audit chain at \d{4}-\d\d-\d\dT[\d:.]+Z: OK", check[2])
    assert "recordings checked against their hashes: 1 ok" in check.group(2)

    # A file uploaded and read back with scp (SFTP mode): a write and a read.
    local = tmp_path / "payload.txt"
    local.write_bytes(b"exported file\n")
    uploaded = tmp_path / "uploaded.txt"
    up = run_client(scp_argv(deployment.port, str(local), remote(person, uploaded)), code)
    assert up.returncode == 0, up.describe()
    down = run_client(
        scp_argv(deployment.port, remote(person, uploaded), str(tmp_path / "back.txt")), code
    )
    assert down.returncode == 0, down.describe()
    upload = deployment.sessions(person)[1]
    download = deployment.wait_for_session(person, count=3)
    for session, way in ((upload, "write"), (download, "read")):
        sid = str(session["id"])
        text = deployment.cli("show", sid).stdout
        accessed = text.split("Resources accessed", 1)[1].split("System response", 1)[0]
        lines = [line for line in accessed.splitlines() if str(uploaded) in line]
        opened = [line for line in lines if "file_open" in line or "file_close" in line]
        assert opened, text
        assert all(f"({way})" in line for line in opened), lines
        other = "read" if way == "write" else "write"
        assert not [line for line in lines if f"({other})" in line or "(both)" in line], lines
        doc = json.loads(deployment.cli("show", sid, "--json").stdout)
        assert {r["direction"] for r in doc["resources"] if r["kind"].startswith("file_")} == {way}
        out = tmp_path / f"{sid}.html"
        assert deployment.cli("export", sid, "--html", str(out)).returncode == 0
        exported = out.read_text(encoding="utf-8")
        assert re.search(rf"{re.escape(str(uploaded))} \({way}\)", exported), way


def test_export_states_a_broken_chain(deployment: Deployment, person: str, tmp_path: Path) -> None:
    """A session whose event was changed in the database: the page says so."""
    assert deployment.ssh(person, TARGET, deployment.code(person), "true").returncode == 0
    sid = str(deployment.wait_for_session(person)["id"])
    con = sqlite3.connect(deployment.database)
    try:
        con.execute("DROP TRIGGER IF EXISTS events_no_update")
        con.execute(
            "UPDATE events SET data = replace(data, 'INC-4411', 'INC-9999')"
            " WHERE session_id = ? AND type = 'session_start'",
            (sid,),
        )
        con.commit()
    finally:
        con.close()
    page = tmp_path / "broken.html"
    assert deployment.cli("export", sid, "--html", str(page)).returncode == 0
    check = re.search(r'<p class="(bg-check-\w+)" id="bg-check">([^<]*)</p>', page.read_text())
    assert check is not None
    assert check.group(1) == "bg-check-bad"
    assert "hash does not match its content" in check.group(2)
