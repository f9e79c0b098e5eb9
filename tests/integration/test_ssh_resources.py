"""Resources accessed (issue 5), for files and non-interactive commands: real sftp, scp
(SFTP mode and -O, both ways) and ``ssh host bash < script`` through the proxy, each
checked against the exact events ``show --json`` lists, and found by ``sessions --path``
/ ``--command``."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import TARGET
from tests.integration.harness import Deployment, cli_json
from tests.integration.sshtools import channel_cast, remote, run_client, scp_argv, sftp_argv

KEEP = ("path", "target_path", "flags", "bytes_read", "bytes_written", "size", "status", "source")


def resources(session: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(type, chosen data fields) of each command/file_* event, in order."""
    out = []
    for e in session.get("events") or []:
        if e["type"] == "command" or e["type"].startswith(("file_", "sftp_", "scp_")):
            out.append((e["type"], {k: v for k, v in e["data"].items() if k in (*KEEP, "text")}))
    return out


def found(deployment: Deployment, *args: str) -> list[str]:
    return [str(row["id"]) for row in cli_json(deployment.config, "sessions", *args)]


def test_an_sftp_batch_is_one_event_per_file_operation(
    deployment: Deployment, person: str, tmp_path: Path
) -> None:
    code = deployment.code(person)
    local = tmp_path / "fix.conf"
    content = b"listen 8080;\n" * 5000
    local.write_bytes(content)
    back = tmp_path / "back.conf"
    d = tmp_path / "remote" / "xyz-dir"
    d.parent.mkdir()
    batch = (
        f"mkdir {d}\n"
        f"put {local} {d}/fix.conf\n"
        f"rename {d}/fix.conf {d}/fix2.conf\n"
        f"get {d}/fix2.conf {back}\n"
        f"ln -s {d}/fix2.conf {d}/link\n"
        f"rm {d}/link\n"
        f"rm {d}/fix2.conf\n"
        f"rm {d}/missing\n"
        f"rmdir {d}\n"
    ).encode()
    result = run_client(sftp_argv(deployment.port, person), code, stdin=batch)
    assert result.returncode != 0 or b"missing" in result.stderr, result.describe()
    assert back.read_bytes() == content
    session = deployment.wait_for_session(person)
    digest = hashlib.sha256(content).hexdigest()
    n = len(content)
    wr = ["write", "creat", "trunc"]
    events = resources(session)
    # sftp stats, realpaths and reads the file back: only what touches files is listed.
    assert events == [
        ("file_mkdir", {"path": f"{d}", "status": "ok", "source": "sftp"}),
        ("file_open", {"path": f"{d}/fix.conf", "flags": wr, "status": "ok", "source": "sftp"}),
        (
            "file_close",
            {
                "path": f"{d}/fix.conf",
                "flags": wr,
                "bytes_read": 0,
                "bytes_written": n,
                "status": "ok",
                "source": "sftp",
            },
        ),
        (
            "file_rename",
            {
                "path": f"{d}/fix.conf",
                "target_path": f"{d}/fix2.conf",
                "status": "ok",
                "source": "sftp",
            },
        ),
        (
            "file_open",
            {"path": f"{d}/fix2.conf", "flags": ["read"], "status": "ok", "source": "sftp"},
        ),
        (
            "file_close",
            {
                "path": f"{d}/fix2.conf",
                "flags": ["read"],
                "bytes_read": n,
                "bytes_written": 0,
                "status": "ok",
                "source": "sftp",
            },
        ),
        (
            "file_symlink",
            {
                "path": f"{d}/link",
                "target_path": f"{d}/fix2.conf",
                "status": "ok",
                "source": "sftp",
            },
        ),
        ("file_remove", {"path": f"{d}/link", "status": "ok", "source": "sftp"}),
        ("file_remove", {"path": f"{d}/fix2.conf", "status": "ok", "source": "sftp"}),
        ("file_remove", {"path": f"{d}/missing", "status": "no such file", "source": "sftp"}),
        ("file_rmdir", {"path": f"{d}", "status": "ok", "source": "sftp"}),
    ], events
    closes = [e["data"] for e in session["events"] if e["type"] == "file_close"]
    assert closes[0]["sha256"] == digest
    assert closes[1]["read_sha256"] == digest
    assert all(
        isinstance(e["data"]["offset"], float)
        for e in session["events"]
        if e["type"].startswith("file_")
    )
    cast = channel_cast(deployment, session["channels"][0]).read_text()
    assert f'"m", "rename {d}/fix.conf -> {d}/fix2.conf"' in cast, cast
    assert "listen 8080" not in cast
    assert found(deployment, "--path", f"{d}/fix2*") == [session["id"]]
    assert found(deployment, "--path", "/nowhere/*") == []


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-O"])
def test_scp_both_ways_is_a_file_write_then_a_file_read(
    deployment: Deployment, person: str, tmp_path: Path, legacy: bool
) -> None:
    code = deployment.code(person)
    local = tmp_path / "dump.sql"
    local.write_bytes(b"INSERT 1;\n" * 3000)
    n = local.stat().st_size
    uploaded = tmp_path / "remote" / "xyz-dump.sql"
    uploaded.parent.mkdir()
    back = tmp_path / "back.sql"
    up = run_client(
        scp_argv(deployment.port, str(local), remote(person, uploaded), legacy=legacy), code
    )
    assert up.returncode == 0, up.describe()
    first = deployment.wait_for_session(person)
    down = run_client(
        scp_argv(deployment.port, remote(person, uploaded), str(back), legacy=legacy), code
    )
    assert down.returncode == 0, down.describe()
    second = deployment.wait_for_session(person, count=2)
    assert back.read_bytes() == local.read_bytes()
    if legacy:
        assert resources(first) == [
            ("command", {"text": f"scp -t {uploaded}", "source": "exec"}),
            ("file_write", {"path": str(uploaded), "size": n, "status": "ok", "source": "scp"}),
        ]
        assert resources(second) == [
            ("command", {"text": f"scp -f {uploaded}", "source": "exec"}),
            ("file_read", {"path": str(uploaded), "size": n, "status": "ok", "source": "scp"}),
        ]
    else:
        [open_w, close_w] = [e for e in resources(first) if e[0] in ("file_open", "file_close")]
        assert open_w[0] == "file_open"
        assert close_w == (
            "file_close",
            {
                "path": str(uploaded),
                "flags": ["write", "creat"],  # scp truncates with an fsetstat instead
                "bytes_read": 0,
                "bytes_written": n,
                "status": "ok",
                "source": "sftp",
            },
        )
        reads = [e for e in resources(second) if e[0] == "file_close"]
        assert [(e[1]["path"], e[1]["bytes_read"]) for e in reads] == [(str(uploaded), n)]
    ids = found(deployment, "--path", str(tmp_path / "remote" / "xyz*"))
    assert sorted(ids) == sorted([first["id"], second["id"]])


def test_scp_then_a_shell_is_not_taken_for_scp(deployment: Deployment, person: str) -> None:
    code = deployment.code(person)
    command = "scp -t /tmp/bg-nonexistent-xyz; echo bypass-$((40 + 2))"
    result = deployment.ssh(person, TARGET, code, command)
    assert b"bypass-42" in result.stdout, result.describe()
    session = deployment.wait_for_session(person)
    assert resources(session) == [("command", {"text": command, "source": "exec"})]
    assert found(deployment, "--command", "*bypass-*") == [session["id"]]


def test_a_script_piped_to_bash_is_one_command_event_per_line(
    deployment: Deployment, person: str
) -> None:
    code = deployment.code(person)
    script = b"echo xyz-one\n\ncd /tmp && echo \"in $(pwd)\"\nprintf 'last\\n'"
    result = deployment.ssh(person, TARGET, code, "bash", stdin=script)
    assert result.returncode == 0, result.describe()
    assert result.stdout == b"xyz-one\nin /tmp\nlast\n", result.describe()
    session = deployment.wait_for_session(person)
    assert resources(session) == [
        ("command", {"text": "bash", "source": "exec"}),
        ("command", {"text": "echo xyz-one", "source": "stdin"}),
        ("command", {"text": 'cd /tmp && echo "in $(pwd)"', "source": "stdin"}),
        ("command", {"text": "printf 'last\\n'", "source": "stdin"}),
    ]
    assert found(deployment, "--command", "echo xyz-*") == [session["id"]]
    cast = channel_cast(deployment, session["channels"][0]).read_text()
    assert '"m", "echo xyz-one"' in cast, cast
