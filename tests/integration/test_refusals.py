"""What a break-glass session may not do: forward ports (-L -R -D -W), forward the agent
(-A) or X11 (-X), or open subsystems other than sftp. Each is refused with an audit event,
and a refusal inside a working session leaves that session working.

Most cases run a command that waits for a line on stdin: the test triggers the refused
request while the session is live, waits for the request_refused event, then releases the
command and checks it still ran (so "refused" can never mean "the session broke").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tests.integration.conftest import TARGET
from tests.integration.harness import (
    Deployment,
    SshAgent,
    SshdTarget,
    SshResult,
    free_port,
    poke,
    socks4_connect,
)

# The remote side reports what it was given: forwarded agent or display would show here.
GATED = 'read line; echo "got-$line agent=${SSH_AUTH_SOCK:-none} display=${DISPLAY:-none}"'
RELEASED = b"got-go agent=none display=none\n"


def mentions(*words: str) -> Callable[[Mapping[str, Any]], bool]:
    """Match a request_refused event whose data mentions every word (case-insensitive)."""

    def match(event: Mapping[str, Any]) -> bool:
        text = json.dumps(event.get("data") or {}).lower()
        return all(word.lower() in text for word in words)

    return match


def refused_in_a_working_session(
    deployment: Deployment,
    person: str,
    args: Sequence[str],
    match: Callable[[Mapping[str, Any]], bool],
    *,
    trigger: Callable[[], object] | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[SshResult, dict[str, Any]]:
    code = deployment.code(person)
    run = deployment.ssh_start(person, TARGET, code, GATED, args=args, env=env)
    try:
        live = deployment.wait_for_session(person, ended=False)
        if trigger is not None:
            trigger()
        event = deployment.wait_for_event(str(live["id"]), "request_refused", where=match)
    except BaseException:
        run.kill()
        raise
    result = run.wait(stdin=b"go\n")
    assert result.returncode == 0, result.describe()
    assert result.stdout == RELEASED, result.describe()
    assert "request" in event["data"], event
    return result, event


def test_local_forwarding_is_refused(
    deployment: Deployment, person: str, target: SshdTarget
) -> None:
    local = free_port()
    forward = f"127.0.0.1:{local}:127.0.0.1:{target.port}"
    received: list[bytes] = []

    refused_in_a_working_session(
        deployment,
        person,
        ["-L", forward],
        mentions("direct-tcpip"),
        trigger=lambda: received.append(poke(local)),
    )

    # Had the proxy opened the channel, the target's SSH banner would have come back.
    assert not any(chunk.startswith(b"SSH-") for chunk in received), received


def test_dynamic_forwarding_is_refused(
    deployment: Deployment, person: str, target: SshdTarget
) -> None:
    local = free_port()
    received: list[bytes] = []

    refused_in_a_working_session(
        deployment,
        person,
        ["-D", f"127.0.0.1:{local}"],
        mentions("direct-tcpip"),
        trigger=lambda: received.append(poke(local, socks4_connect("127.0.0.1", target.port))),
    )

    assert not any(b"SSH-" in chunk for chunk in received), received


def test_remote_forwarding_is_refused(deployment: Deployment, person: str) -> None:
    remote = free_port()

    refused_in_a_working_session(
        deployment,
        person,
        ["-R", f"127.0.0.1:{remote}:127.0.0.1:9"],
        mentions("tcpip-forward"),
    )


def test_agent_forwarding_is_refused(
    deployment: Deployment, person: str, ssh_agent: SshAgent
) -> None:
    # ssh only asks for agent forwarding when it has an agent; RELEASED checks that
    # no SSH_AUTH_SOCK reached the command.
    refused_in_a_working_session(deployment, person, ["-A"], mentions("agent"), env=ssh_agent.env())


def test_x11_forwarding_is_refused(deployment: Deployment, person: str) -> None:
    # A display number nothing serves: ssh still asks, with a fake cookie.
    result, _ = refused_in_a_working_session(
        deployment, person, ["-X"], mentions("x11"), env={"DISPLAY": ":93"}
    )

    assert b"X11 forwarding request failed" in result.stderr, result.describe()


def test_stdio_forwarding_is_refused(
    deployment: Deployment, person: str, target: SshdTarget
) -> None:
    # -W (and ProxyJump, which is -W underneath) is a bare direct-tcpip channel: no
    # session channel to keep working, so ssh gives up with its own message.
    code = deployment.code(person)

    result = deployment.ssh(person, TARGET, code, None, args=["-W", f"127.0.0.1:{target.port}"])

    assert result.returncode != 0, result.describe()
    assert not result.stdout.startswith(b"SSH-"), result.describe()
    assert b"stdio forwarding failed" in result.stderr, result.describe()
    session = deployment.wait_for_session(person)
    deployment.wait_for_event(str(session["id"]), "request_refused", where=mentions("direct-tcpip"))
    assert_next_session_works(deployment, person)


def test_a_subsystem_other_than_sftp_is_refused(deployment: Deployment, person: str) -> None:
    code = deployment.code(person)

    result = deployment.ssh(person, TARGET, code, "netconf", args=["-s"])

    assert result.returncode != 0, result.describe()
    assert b"subsystem request failed" in result.stderr, result.describe()
    session = deployment.wait_for_session(person)
    deployment.wait_for_event(
        str(session["id"]), "request_refused", where=mentions("subsystem", "netconf")
    )
    assert_next_session_works(deployment, person)


def assert_next_session_works(deployment: Deployment, person: str) -> None:
    code = deployment.code(person)
    result = deployment.ssh(person, TARGET, code, "echo still-fine")
    assert result.returncode == 0, result.describe()
    assert result.stdout == b"still-fine\n"


def test_mosh_server_is_refused_with_the_reason(deployment: Deployment, person: str) -> None:
    # What the mosh client runs over ssh: its shell would then go over UDP, unrecorded.
    code = deployment.code(person)

    result = deployment.ssh(
        person, TARGET, code, "mosh-server new -c 256 -s -l LANG=C.UTF-8", tty=True
    )

    assert result.returncode == 255, result.describe()
    assert b"MOSH CONNECT" not in result.stdout, result.describe()  # mosh-server never ran
    stderr = result.stderr.decode(errors="replace")
    assert "breakglass: mosh is not allowed" in stderr, result.describe()
    assert "UDP" in stderr, result.describe()
    session = deployment.wait_for_session(person)
    deployment.wait_for_event(
        str(session["id"]), "request_refused", where=mentions("exec", "mosh-server new")
    )
    assert session["channels"] == [], session["channels"]
    assert_next_session_works(deployment, person)
