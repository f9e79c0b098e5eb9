"""A session ends at its deadline (here the code's --max-session), with a message saying
why, whatever the command is doing; the audit log says time_limit."""

from __future__ import annotations

import re

import pytest

from tests.integration.conftest import TARGET
from tests.integration.harness import Deployment, Reason

# Well under the command's own 30 s: finishing inside it proves the proxy closed it.
BOUND = 20.0
TIME_LIMIT_WORDS = re.compile(r"time.?limit|deadline|max(imum)?.?session", re.IGNORECASE)


@pytest.mark.slow
def test_a_pty_session_is_closed_at_the_codes_max_session(
    deployment: Deployment, person: str
) -> None:
    code = deployment.code(person, max_session="3s")

    result = deployment.ssh(person, TARGET, code, "sleep 30", tty=True, timeout=BOUND)

    output = (result.stdout + result.stderr).decode(errors="replace")
    assert TIME_LIMIT_WORDS.search(output), result.describe()
    assert result.returncode != 0, result.describe()
    session = deployment.wait_for_session(person)
    assert session["end_reason"] == Reason.TIME_LIMIT
    assert session["deadline"]


@pytest.mark.slow
def test_an_exec_session_is_told_why_on_stderr(deployment: Deployment, person: str) -> None:
    code = deployment.code(person, max_session="3s")

    result = deployment.ssh(
        person, TARGET, code, "echo started; sleep 30; echo not-reached", timeout=BOUND
    )

    assert result.stdout.startswith(b"started\n"), result.describe()
    assert b"not-reached" not in result.stdout
    assert TIME_LIMIT_WORDS.search(result.stderr.decode(errors="replace")), result.describe()
    assert result.returncode != 0, result.describe()
    assert deployment.wait_for_session(person)["end_reason"] == Reason.TIME_LIMIT
