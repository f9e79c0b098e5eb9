"""When the proxy cannot reach the target: the engineer gets one clear line and status
255, the command never runs anywhere, and the audit log says which way it failed."""

from __future__ import annotations

import re

from tests.integration.conftest import BADKEY, DOWN
from tests.integration.harness import Deployment, Reason, SshResult, events_of

UPSTREAM_FAILED = 255  # what OpenSSH's own failures give, so scripts need one check


def the_clear_line(result: SshResult, target: str) -> str:
    """The one stderr line that names the target; OpenSSH may add one framing line
    (e.g. "Connection to ... closed"), nothing more (no traceback, no noise)."""
    lines = [line.strip() for line in result.stderr.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    naming = [line for line in lines if target in line]
    assert len(naming) == 1, result.describe()
    assert len(lines) <= 2, result.describe()
    return naming[0]


def test_a_target_that_is_down_gives_one_clear_line_and_255(
    deployment: Deployment, person: str
) -> None:
    code = deployment.code(person)

    result = deployment.ssh(person, DOWN, code, "echo should-not-run")

    assert result.returncode == UPSTREAM_FAILED, result.describe()
    assert b"should-not-run" not in result.stdout
    line = the_clear_line(result, DOWN)
    assert re.search(r"unreachable|refused|connect|reach", line, re.IGNORECASE), line
    session = deployment.wait_for_session(person)
    assert [e["data"].get("reason") for e in events_of(session, "upstream_failed")] == [
        Reason.TARGET_UNREACHABLE
    ], session["events"]
    assert session["end_reason"] == Reason.TARGET_ERROR
    assert session["target"] == DOWN


def test_a_host_key_mismatch_is_refused_with_one_clear_line(
    deployment: Deployment, person: str
) -> None:
    # BADKEY is the real, working target pinned to another target's host key: a
    # proxy that skipped the check would run the command there.
    code = deployment.code(person)

    result = deployment.ssh(person, BADKEY, code, "echo should-not-run")

    assert result.returncode == UPSTREAM_FAILED, result.describe()
    assert b"should-not-run" not in result.stdout
    line = the_clear_line(result, BADKEY)
    assert "host key" in line.lower(), line
    session = deployment.wait_for_session(person)
    assert [e["data"].get("reason") for e in events_of(session, "upstream_failed")] == [
        Reason.HOST_KEY_MISMATCH
    ], session["events"]
    assert session["end_reason"] == Reason.TARGET_ERROR


def test_the_next_login_to_a_good_target_still_works(deployment: Deployment, person: str) -> None:
    code = deployment.code(person)
    failed = deployment.ssh(person, DOWN, code, "true")
    assert failed.returncode == UPSTREAM_FAILED, failed.describe()

    result = deployment.ssh(person, "db01", code, "echo fine")

    assert result.returncode == 0, result.describe()
    assert result.stdout == b"fine\n"
