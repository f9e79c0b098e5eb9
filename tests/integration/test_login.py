"""Logging in through the proxy with the stock OpenSSH client: the happy path, each way a
login is refused (and that the audit log, not the client, says why), and that a refused
login never stands in the way of the next good one."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from tests.integration.conftest import SECOND, TARGET
from tests.integration.harness import (
    GOOD_JUSTIFICATION,
    Deployment,
    Reason,
    SshdTarget,
    SshResult,
    new_person,
)
from tests.waiting import eventually

REFUSED = 255  # OpenSSH's status when it could not log in


def assert_refused(
    deployment: Deployment,
    result: SshResult,
    person: str,
    reason: str,
    *,
    target: str = TARGET,
) -> dict[str, Any]:
    """The client was refused without a hint of why; the audit log has the reason."""
    assert result.returncode == REFUSED, result.describe()
    assert result.stdout == b"", result.describe()
    assert b"Permission denied" in result.stderr, result.describe()
    stderr = result.stderr.decode(errors="replace").lower()
    for hint in {reason, reason.replace("_", " "), "expired", "revoked", "spent", "wrong"}:
        assert hint not in stderr, f"the client was told why: {result.describe()}"

    failures = deployment.wait_for_login_failures(person)
    assert [failure.get("reason") for failure in failures] == [reason], failures
    [failure] = failures
    assert failure.get("target") == target
    assert failure.get("source") == "127.0.0.1"
    return failure


def assert_next_login_works(deployment: Deployment, person: str) -> None:
    code = deployment.code(person)
    result = deployment.ssh(person, TARGET, code, "echo recovered")
    assert result.returncode == 0, result.describe()
    assert result.stdout == b"recovered\n"


def rfc3339_to_unix(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ------------------------------------------------------------------------ it works


def test_exec_prints_the_commands_output(deployment: Deployment, person: str) -> None:
    code = deployment.code(person)

    result = deployment.ssh(person, TARGET, code, "echo hello")

    assert result.returncode == 0, result.describe()
    assert result.stdout == b"hello\n"
    assert result.code_prompts == 1
    assert result.justification_prompts == 1


def test_exit_status_is_propagated(deployment: Deployment, person: str) -> None:
    code = deployment.code(person)

    result = deployment.ssh(person, TARGET, code, "exit 3")

    assert result.returncode == 3, result.describe()


def test_stderr_is_kept_apart_from_stdout(deployment: Deployment, person: str) -> None:
    code = deployment.code(person)

    result = deployment.ssh(person, TARGET, code, "echo to-out; echo to-err >&2")

    assert result.returncode == 0, result.describe()
    assert result.stdout == b"to-out\n"
    assert b"to-err\n" in result.stderr


def test_stdin_reaches_the_command_and_its_end_ends_it(deployment: Deployment, person: str) -> None:
    # `cat` only returns when stdin's EOF crosses the proxy; a lost EOF is a hang.
    code = deployment.code(person)

    result = deployment.ssh(person, TARGET, code, "cat; echo done >&2", stdin=b"x\n")

    assert result.returncode == 0, result.describe()
    assert result.stdout == b"x\n"
    assert b"done\n" in result.stderr


def test_an_allowed_login_can_be_named(
    deployment: Deployment, person: str, target: SshdTarget
) -> None:
    code = deployment.code(person)

    result = deployment.ssh(person, TARGET, code, "id -un", login=target.login)

    assert result.returncode == 0, result.describe()
    assert result.stdout == f"{target.login}\n".encode()
    assert deployment.wait_for_session(person)["login"] == target.login


def test_a_short_justification_is_asked_again_but_not_the_code(
    deployment: Deployment, person: str
) -> None:
    code = deployment.code(person)

    result = deployment.ssh(
        person, TARGET, code, "echo in", justifications=["too short", GOOD_JUSTIFICATION]
    )

    assert result.returncode == 0, result.describe()
    assert result.stdout == b"in\n"
    assert result.code_prompts == 1, result.prompts
    assert result.justification_prompts == 2, result.prompts
    assert deployment.wait_for_session(person)["justification"] == GOOD_JUSTIFICATION


# ------------------------------------------------------------------------ refusals


def test_a_login_the_target_does_not_allow_is_refused(deployment: Deployment, person: str) -> None:
    code = deployment.code(person)

    result = deployment.ssh(person, TARGET, code, "echo in", login="postgres")

    failure = assert_refused(deployment, result, person, Reason.LOGIN_NOT_ALLOWED)
    assert failure.get("login") == "postgres"
    assert_next_login_works(deployment, person)


def test_an_unknown_target_is_refused(deployment: Deployment, person: str) -> None:
    code = deployment.code(person)

    result = deployment.ssh(person, "nosuch01", code, "echo in")

    assert_refused(deployment, result, person, Reason.UNKNOWN_TARGET, target="nosuch01")
    assert_next_login_works(deployment, person)


def test_a_wrong_code_is_refused(deployment: Deployment, person: str) -> None:
    code = deployment.code(person)
    # Same public id, one secret character changed: the hash check itself must fail.
    wrong = code[:-1] + ("A" if code[-1].upper() != "A" else "B")

    result = deployment.ssh(person, TARGET, wrong, "echo in")

    assert_refused(deployment, result, person, Reason.WRONG_CODE)
    # The real code still works: a wrong guess does not burn it.
    again = deployment.ssh(person, TARGET, code, "echo in")
    assert again.returncode == 0, again.describe()


def test_a_single_use_code_is_refused_the_second_time(deployment: Deployment, person: str) -> None:
    code = deployment.code(person, uses=1)
    first = deployment.ssh(person, TARGET, code, "echo first")
    assert first.returncode == 0, first.describe()

    second = deployment.ssh(person, TARGET, code, "echo second")

    assert_refused(deployment, second, person, Reason.SPENT)
    assert_next_login_works(deployment, person)


def test_an_expired_code_is_refused(deployment: Deployment, person: str) -> None:
    credential = deployment.issue(person, valid="1s")
    valid_until = rfc3339_to_unix(str(credential["valid_until"]))
    eventually(
        lambda: time.time() > valid_until + 0.5, within=10, what="the code's valid_until to pass"
    )

    result = deployment.ssh(person, TARGET, str(credential["code"]), "echo in")

    assert_refused(deployment, result, person, Reason.EXPIRED)
    assert_next_login_works(deployment, person)


def test_a_revoked_code_is_refused(deployment: Deployment, person: str) -> None:
    credential = deployment.issue(person)
    revoked = deployment.cli("cred", "revoke", str(credential["id"]), "--reason", "INC-1 test")
    assert revoked.returncode == 0, revoked.stderr

    result = deployment.ssh(person, TARGET, str(credential["code"]), "echo in")

    assert_refused(deployment, result, person, Reason.REVOKED)
    assert_next_login_works(deployment, person)


def test_another_persons_code_is_refused(deployment: Deployment, person: str) -> None:
    owner = new_person("owner")
    code = deployment.code(owner)

    result = deployment.ssh(person, TARGET, code, "echo in")

    assert_refused(deployment, result, person, Reason.WRONG_PERSON)
    # Its owner can still use it.
    owned = deployment.ssh(owner, TARGET, code, "echo owner")
    assert owned.returncode == 0, owned.describe()
    assert_next_login_works(deployment, person)


def test_a_target_outside_the_codes_targets_is_refused(deployment: Deployment, person: str) -> None:
    code = deployment.code(person, targets=SECOND)

    result = deployment.ssh(person, TARGET, code, "echo in")

    assert_refused(deployment, result, person, Reason.TARGET_NOT_ALLOWED)
    allowed = deployment.ssh(person, SECOND, code, "echo allowed")
    assert allowed.returncode == 0, allowed.describe()
    assert allowed.stdout == b"allowed\n"
