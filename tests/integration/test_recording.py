"""Every channel is recorded as an asciicast the real `asciinema` plays, the recording's
hash is in the audit trail, and the session record answers who, when, where and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.conftest import TARGET
from tests.integration.harness import (
    Deployment,
    Reason,
    SshdTarget,
    asciinema_cat,
    cast_events,
    cast_text,
    file_mode,
    sha256_file,
)

# Stored and shown back verbatim: quotes, shell metacharacters and non-ASCII included.
JUSTIFICATION = 'INC-7731 «db01» disk full; rm old "WAL" segments $HOME `id` 100%'


def recording_of(deployment: Deployment, channel: dict[str, Any]) -> Path:
    """The channel's cast, which must be a private file under the recordings dir."""
    assert channel.get("recording"), channel
    cast = Path(str(channel["recording"]))
    if not cast.is_absolute():
        cast = deployment.recordings / cast
    assert cast.is_file(), cast
    assert cast.resolve().is_relative_to(deployment.recordings.resolve()), cast
    assert file_mode(cast) == 0o600, oct(file_mode(cast))
    assert channel.get("recording_sha256") == sha256_file(cast)
    return cast


def test_a_pty_session_is_recorded_and_replays(
    deployment: Deployment, person: str, target: SshdTarget
) -> None:
    credential = deployment.issue(person)
    # The marker is computed on the target so only the command's output, never the
    # echo of the typed line, can put "marker-123" in the recording.
    typed = b"echo marker-$((120 + 3)); exit 7\n"

    result = deployment.ssh(
        person,
        TARGET,
        str(credential["code"]),
        None,
        tty=True,
        stdin=typed,
        justifications=[JUSTIFICATION],
    )

    assert result.returncode == 7, result.describe()
    assert b"marker-123" in result.stdout
    session = deployment.wait_for_session(person)
    [channel] = session["channels"]
    assert channel["kind"] == "shell"
    assert channel["pty"] is True
    assert channel["exit_status"] == 7
    assert channel["id"] == f"{session['id']}/1"
    cast = recording_of(deployment, channel)
    header, _ = cast_events(cast)
    assert header.get("version") == 2
    played = asciinema_cat(cast)
    assert played.returncode == 0, played.stderr
    assert b"marker-123" in played.stdout

    assert session["person"] == person
    assert session["credential_id"] == credential["id"]
    assert session["target"] == TARGET
    assert session["login"] == target.login
    assert session["source"] == "127.0.0.1"
    assert "OpenSSH" in str(session["client_version"])
    assert session["justification"] == JUSTIFICATION
    assert session["end_reason"] == Reason.CLIENT_EXIT
    assert session["started_at"]
    assert session["ended_at"]
    assert isinstance(session["duration"], int | float)
    assert session["duration"] >= 0


def test_an_exec_channel_records_stdout_stderr_and_stdin(
    deployment: Deployment, person: str
) -> None:
    code = deployment.code(person)
    command = "cat >/dev/null; echo out-$((400 + 56)); echo err-$((700 + 89)) >&2"

    result = deployment.ssh(person, TARGET, code, command, stdin=b"stdin-payload-31\n")

    assert result.returncode == 0, result.describe()
    assert result.stdout == b"out-456\n"
    session = deployment.wait_for_session(person)
    [channel] = session["channels"]
    assert channel["kind"] == "exec"
    assert channel["command"] == command
    assert channel["pty"] is False
    assert channel["exit_status"] == 0
    cast = recording_of(deployment, channel)
    recorded = cast_text(cast)
    assert "out-456" in recorded
    assert "err-789" in recorded
    assert "stdin-payload-31" in recorded
    played = asciinema_cat(cast)
    assert played.returncode == 0, played.stderr
    assert b"out-456" in played.stdout
    assert session["end_reason"] == Reason.CLIENT_EXIT


def test_each_recording_hash_enters_the_audit_trail(deployment: Deployment, person: str) -> None:
    code = deployment.code(person)
    result = deployment.ssh(person, TARGET, code, "echo hashed")
    assert result.returncode == 0, result.describe()

    session = deployment.wait_for_session(person)

    [channel] = session["channels"]
    cast = recording_of(deployment, channel)
    ends = [e for e in session["events"] if e.get("type") == "channel_end"]
    # The hash was first named "sha256"; "recording_sha256" (as in show's channels)
    # is accepted too: what matters is that the hash is in the chained event.
    hashes = [e["data"].get("sha256") or e["data"].get("recording_sha256") for e in ends]
    assert hashes == [sha256_file(cast)], ends
