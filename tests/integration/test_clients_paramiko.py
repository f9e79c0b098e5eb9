"""paramiko as the engineer's client (issue 19, item 1).

paramiko asks for the ``ssh-userauth`` service again before each method it tries; stock
asyncssh disconnects at the second request ("Unexpected service in service request"),
so ``auth_none`` or a refused key before ``auth_interactive`` never reached the code
prompt. proxy/ssh/compat.py accepts the repeated request. These tests drive the real
paramiko (in a thread: it is a blocking library) against the real proxy, and check that
a repeated request changes nothing of the login in progress: its failure count, its
growing delay, a justification being asked again.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import pytest
from asyncssh.constants import MSG_SERVICE_ACCEPT, MSG_SERVICE_REQUEST
from asyncssh.packet import String

from tests.integration.conftest import TARGET, standard_targets
from tests.integration.harness import (
    GOOD_JUSTIFICATION,
    LOOPBACK,
    SSH_KEYGEN,
    Deployment,
    SshdTarget,
    user_at,
)
from tests.integration.inproc import (
    ScriptedClient,
    Step,
    close,
    connect,
    in_process_proxy,
    send_raw,
)
from tests.waiting import eventually_async

WRONG = "BG-ZZZZZZ-0000-0000-0000-0000-0000-0000"


@dataclass
class Answers:
    """A paramiko keyboard-interactive handler answering code and justification."""

    code: str
    justification: str = GOOD_JUSTIFICATION
    prompts: list[str] = field(default_factory=list)

    def __call__(
        self, title: str, instructions: str, prompts: Sequence[tuple[str, bool]]
    ) -> list[str]:
        answers = []
        for prompt, _echo in prompts:
            self.prompts.append(prompt)
            answers.append(self.justification if "ustification" in prompt else self.code)
        return answers


def _transport(port: int) -> paramiko.Transport:
    sock = socket.create_connection((LOOPBACK, port), timeout=10)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = 10
    transport.auth_timeout = 30
    transport.start_client(timeout=10)
    return transport


def _run(transport: paramiko.Transport, command: str) -> bytes:
    channel = transport.open_session(timeout=30)
    channel.settimeout(30)
    channel.exec_command(command)
    out = b""
    while chunk := channel.recv(4096):
        out += chunk
    channel.recv_exit_status()
    return out


@pytest.fixture
def transport(deployment: Deployment) -> Iterator[paramiko.Transport]:
    transport = _transport(deployment.port)
    yield transport
    transport.close()


def test_auth_none_then_interactive(
    deployment: Deployment, person: str, transport: paramiko.Transport
) -> None:
    user = user_at(person, TARGET)
    with pytest.raises(paramiko.BadAuthenticationType) as refused:
        transport.auth_none(user)
    assert refused.value.allowed_types == ["keyboard-interactive"]

    answers = Answers(deployment.code(person))
    assert transport.auth_interactive(user, answers) == []
    assert transport.is_authenticated()
    assert len(answers.prompts) == 2, answers.prompts
    assert _run(transport, "echo paramiko-none") == b"paramiko-none\n"


def test_sshclient_with_a_refused_key_reaches_the_prompts(
    deployment: Deployment, person: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``SSHClient.connect`` offers the key in ``~/.ssh`` (refused), then the same
    connection goes on with keyboard-interactive through a handler."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(home / ".ssh" / "id_ed25519")],
        check=True,
        timeout=30,
    )
    monkeypatch.setenv("HOME", str(home))
    user = user_at(person, TARGET)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        with pytest.raises(paramiko.AuthenticationException):
            client.connect(
                LOOPBACK,
                deployment.port,
                username=user,
                allow_agent=False,
                look_for_keys=True,
                timeout=10,
                auth_timeout=30,
            )
        transport = client.get_transport()
        assert transport is not None
        assert transport.is_active()
        answers = Answers(deployment.code(person))
        transport.auth_interactive(user, answers)
        assert transport.is_authenticated()
        assert answers.prompts[0].startswith(f"Break-glass code for {person}")
        _, stdout, _ = client.exec_command("echo paramiko-key", timeout=30)
        assert stdout.read() == b"paramiko-key\n"
    finally:
        client.close()


# ------------------------------------------- a repeated request changes nothing


@pytest.mark.asyncio
async def test_repeated_requests_keep_the_failure_count_and_delays(
    tmp_path: Path, target: SshdTarget, other_target: SshdTarget
) -> None:
    """Each ``auth_interactive`` sends a new service request; the third wrong code in
    the connection is still its third: it waits the third delay (4 x the first), then
    the connection is cut (MAX_FAILURES)."""
    base = 0.5
    async with in_process_proxy(
        tmp_path, standard_targets(target, other_target), failure_delay_base=base
    ) as proxy:

        def three_wrong_codes() -> tuple[list[float], bool]:
            transport = _transport(proxy.port)
            took = []
            try:
                for _ in range(3):
                    started = time.monotonic()
                    with pytest.raises(paramiko.AuthenticationException):
                        transport.auth_interactive(user_at("pk", TARGET), Answers(WRONG))
                    took.append(time.monotonic() - started)
                deadline = time.monotonic() + 10
                while transport.is_active() and time.monotonic() < deadline:
                    time.sleep(0.05)
                return took, transport.is_active()
            finally:
                transport.close()

        took, still_open = await asyncio.to_thread(three_wrong_codes)
        assert len(proxy.events("login_failed")) == 3
        assert not still_open, "the third failure did not cut the connection"
        # The server sleeps failure_delay(n) before answering the n-th failure: 0.5, 1,
        # 2 s here. A count restarted by the service request would answer in ~0.5 s.
        assert took[2] >= 4 * base, took


@dataclass
class ServiceAgain(ScriptedClient):
    """Asks for the userauth service again when the justification is asked again,
    and answers only once the proxy accepted that request."""

    accepted: list[bytes] = field(default_factory=list)

    async def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
    ) -> Sequence[str] | None:
        if len(prompts) == 1 and not self.accepted:
            conn: Any = self.conn

            def accept(_conn: Any, _pkttype: int, _pktid: int, packet: Any) -> None:
                self.accepted.append(packet.get_string())

            # private asyncssh API (tests/integration/inproc.py): this client's own
            # dispatch table, so the accept of the repeated request is only recorded.
            conn._packet_handlers = {**conn._packet_handlers, MSG_SERVICE_ACCEPT: accept}
            send_raw(self.conn, MSG_SERVICE_REQUEST, String(b"ssh-userauth"))  # type: ignore[arg-type]
            await eventually_async(lambda: self.accepted, within=10, what="the service accept")
        return await super().kbdint_challenge_received(name, instructions, lang, prompts)


@pytest.mark.asyncio
async def test_repeated_request_keeps_the_justification_asked_again(
    tmp_path: Path, target: SshdTarget, other_target: SshdTarget
) -> None:
    async with in_process_proxy(tmp_path, standard_targets(target, other_target)) as proxy:
        user = user_at("pk", TARGET)
        code = await proxy.quick_code("pk")
        client = ServiceAgain([Step(user, code, "too short"), Step(user, None, GOOD_JUSTIFICATION)])
        conn = await connect(proxy.port, client)
        try:
            assert client.accepted == [b"ssh-userauth"]
            assert [len(c.prompts) for c in client.challenges] == [2, 1]
            [start] = await proxy.wait_events("session_start")
            assert start.data["justification"] == GOOD_JUSTIFICATION
            assert [e.data["reason"] for e in proxy.events("login_failed")] == [
                "justification_too_short"
            ]
        finally:
            await close(conn)
