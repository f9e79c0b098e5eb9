"""The proxy run in-process, and an SSH client that does what OpenSSH never would.

``in_process_proxy`` runs ``proxy.service.serve`` in the test's own event loop and hands
back the ``App`` (its argon2 check counter, its failure counters, its delays), so a test
can prove how much work a login did instead of guessing from timings.
``ScriptedClient`` is an asyncssh client that answers keyboard-interactive challenges
from a script: it changes its username between attempts, in the middle of a
justification round, sends raw bytes (invalid UTF-8) as a response, and offers public
keys it never signs.

asyncssh's client keeps one username per connection and has no call to send a
hand-made message, so this module uses private parts of asyncssh 2.24.1's
``SSHClientConnection`` (each use is marked "private asyncssh API"), rather than a
hand-written SSH transport (key exchange, encryption) that would prove less:

- ``_username``: the name put into the next USERAUTH_REQUEST (asyncssh connection.py:2063);
- ``send_userauth_request(method, *args)``: a USERAUTH_REQUEST for ``_username``;
- ``send_packet(pkttype, *args)`` with ``_auth_complete`` briefly set (``send_raw``):
  any message, encrypted, at any point of the login;
- ``_packet_handlers``: an instance copy of the dispatch table, to see each
  USERAUTH_FAILURE (methods, partial success) before asyncssh acts on it.

Raw bytes as an answer need no private API: asyncssh's ``String()`` sends bytes as they
are and only encodes ``str`` as UTF-8.

Benchmarks reuse this module, so nothing here depends on pytest. Loopback only; every
wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.constants import MSG_USERAUTH_FAILURE
from asyncssh.packet import Boolean, SSHPacket, String
from asyncssh.saslprep import SASLPrepError, saslprep

from proxy.config import load_config
from proxy.core.credentials import Credential, generate_code, parse_code
from proxy.core.failsummary import FailureSummariser, SummaryLimits
from proxy.service import App, serve
from proxy.store.base import NewEvent, SessionFilter, SessionRow
from tests.integration.harness import (
    LOOPBACK,
    AuditEvent,
    issue_code,
    read_events,
    run_cli,
    write_proxy_config,
)
from tests.waiting import eventually_async

KBDINT = "keyboard-interactive"
# Failure counters high enough that no test is throttled by another test's failures;
# the brute-force tests configure their own.
NO_THROTTLE = {
    "rules": {
        "failed_logins_per_source": {"count": 100_000, "window": "10m"},
        "failed_logins_per_person": {"count": 100_000, "window": "10m"},
    }
}
FAST_FAILURE_DELAY = 0.01  # App.failure_delay_base in tests: 10, 20, 40 ms
# Every failure written as its own event, unless a test is about the summaries: the
# other tests count login_failed events from one loopback address.
UNSUMMARISED = SummaryLimits(per_source=100_000, total=100_000)


# --------------------------------------------------------------------------- the proxy


@dataclass
class InProcessProxy:
    app: App
    config_path: Path
    port: int

    @property
    def database(self) -> Path:
        return self.app.config.storage.database

    @property
    def recordings(self) -> Path:
        return self.app.config.storage.recordings

    async def code(self, person: str, **options: Any) -> str:
        """A fresh code for ``person`` from the real CLI (``cred issue``), ~1 s each."""
        return await asyncio.to_thread(issue_code, self.config_path, person, **options)

    async def quick_code(
        self,
        person: str,
        *,
        targets: Sequence[str] = ("*",),
        uses: int = 0,
        valid: float = 86400.0,
        window: float = 4 * 3600.0,
    ) -> str:
        """A fresh code stored the way ``cred issue`` stores it (same hasher, same store
        call), without starting a CLI process: the tests that need many codes use this."""
        now = time.time()
        new = generate_code(secrets.token_bytes)
        cred = Credential(
            cred_id=new.cred_id,
            person=person,
            issued_by="test",
            issued_at=now,
            valid_until=now + valid,
            window=window,
            max_uses=uses,
            uses=0,
            targets=tuple(targets),
            max_session=None,
            activated_at=None,
            revoked_at=None,
            revoke_reason=None,
        )
        code_hash = await asyncio.to_thread(self.app.hasher.hash, new.cred_id, new.secret)
        event = NewEvent(
            "cred_issued",
            now,
            data={"id": new.cred_id, "person": person, "issued_by": "test"},
        )
        await self.app.store.issue_credential(cred, code_hash, event)
        return new.code

    async def revoke(self, code: str) -> None:
        parsed = parse_code(code)
        assert parsed is not None
        revoked = await self.app.store.revoke_credential(parsed[0], "test", "test", time.time())
        assert revoked is not None

    async def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(run_cli, self.config_path, *args)

    async def sessions(self) -> list[SessionRow]:
        return await self.app.store.list_sessions(SessionFilter())

    async def session_ids(self) -> set[str]:
        return {row.id for row in await self.sessions()}

    def events(self, event_type: str | None = None) -> list[AuditEvent]:
        events = read_events(self.database)
        return [e for e in events if event_type is None or e.type == event_type]

    async def wait_events(
        self,
        event_type: str,
        where: Callable[[AuditEvent], bool] = lambda event: True,
        *,
        count: int = 1,
        within: float = 10.0,
    ) -> list[AuditEvent]:
        """At least ``count`` events of ``event_type`` matching ``where`` (polled, bounded)."""
        found: list[AuditEvent] = await eventually_async(
            lambda: (
                found
                if len(found := [e for e in self.events(event_type) if where(e)]) >= count
                else None
            ),
            within=within,
            what=f"{count} {event_type} event(s)",
        )
        return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def in_process_proxy(
    directory: Path,
    targets: Mapping[str, Mapping[str, object]],
    *,
    failure_delay_base: float = FAST_FAILURE_DELAY,
    alerts: Mapping[str, object] | None = None,
    failure_limits: SummaryLimits = UNSUMMARISED,
    **config_options: Any,
) -> AsyncIterator[InProcessProxy]:
    """``serve()`` in this event loop until the block ends (then a clean stop, bounded).

    Failure counters are off unless ``alerts`` says otherwise; the per-connection delay
    after a failure is ``failure_delay_base`` (the product's default is 1 s); failures
    are summarised past ``failure_limits`` (by default never).
    """
    for attempt in range(3):
        config_path = write_proxy_config(
            directory, _free_port(), targets, alerts=alerts or NO_THROTTLE, **config_options
        )
        config = load_config(config_path)
        stop = asyncio.Event()
        ready: asyncio.Future[App] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(serve(config, stop, on_ready=ready.set_result))
        either: set[asyncio.Future[Any]] = {task, ready}
        await asyncio.wait(either, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            break
        if task.done():
            exc = task.exception()
            if isinstance(exc, OSError) and attempt < 2:
                continue  # the free port was taken before serve() bound it
            raise AssertionError(f"serve() ended before it was ready: {exc!r}")
        task.cancel()
        raise AssertionError("serve() was not ready within 20s")
    app = ready.result()
    app.failure_delay_base = failure_delay_base
    app.failure_log.summariser = FailureSummariser(failure_limits)
    try:
        yield InProcessProxy(app, config_path, config.listen.port)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 30)
        except TimeoutError:
            raise AssertionError("serve() did not stop within 30s") from None


# --------------------------------------------------------------------------- the client


@dataclass(frozen=True)
class Step:
    """One answer the client gives: for a code+justification challenge both are used;
    for a justification-only challenge (asked again) only the justification is, provided
    the username is the one in force (else the client starts over under this name)."""

    username: str
    # bytes go on the wire as they are (e.g. invalid UTF-8); a code of None means:
    # answer with the justification only, whatever was asked
    code: str | bytes | None
    justification: str | bytes


@dataclass(frozen=True)
class Challenge:
    username: str  # the name the client was using when it got this challenge
    name: str
    instruction: str
    prompts: tuple[tuple[str, bool], ...]


@dataclass
class ScriptedClient(asyncssh.SSHClient):
    """Answers keyboard-interactive challenges from ``steps``; gives up when they run out.

    Before each keyboard-interactive USERAUTH_REQUEST it switches to the next step's
    username. When asked for the justification again and the next step has another
    username, it abandons the round with a new USERAUTH_REQUEST under that name.
    ``pubkey_queries`` are (username, key) pairs offered unsigned before the first
    keyboard-interactive request (publickey with has-signature FALSE, RFC 4252 §7).
    """

    steps: Sequence[Step]
    pubkey_queries: Sequence[tuple[str, asyncssh.SSHKey]] = ()
    # On a message-only round (no prompts), start over under the next step's name
    # instead of sending the empty answer the protocol expects.
    skip_messages: bool = False
    challenges: list[Challenge] = field(default_factory=list)
    usernames_sent: list[str] = field(default_factory=list)
    # Each USERAUTH_FAILURE the server sent: (methods that can continue, partial success).
    failures: list[tuple[tuple[str, ...], bool]] = field(default_factory=list)
    # time.perf_counter() when each answer was handed to asyncssh (sent at once) and
    # when each USERAUTH_FAILURE arrived: the server's answer time, for benchmarks.
    answered_at: list[float] = field(default_factory=list)
    failed_at: list[float] = field(default_factory=list)
    # Each authentication banner the server sent (what OpenSSH prints on stderr).
    banners: list[str] = field(default_factory=list)
    conn: asyncssh.SSHClientConnection | None = None
    _next: int = 0
    _queries_sent: bool = False

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn
        self._record_failures()

    def auth_banner_received(self, msg: str, lang: str) -> None:
        self.banners.append(msg)

    def _record_failures(self) -> None:
        """Keep what each USERAUTH_FAILURE said, then let asyncssh handle it as usual."""
        conn: Any = self.conn
        handlers = type(conn)._packet_handlers
        original = handlers[MSG_USERAUTH_FAILURE]

        def record(conn_: Any, pkttype: int, pktid: int, packet: Any) -> Any:
            self.failed_at.append(time.perf_counter())
            copy = SSHPacket(packet.get_remaining_payload())
            methods = tuple(m.decode(errors="replace") for m in copy.get_namelist())
            self.failures.append((methods, copy.get_boolean()))
            return original(conn_, pkttype, pktid, packet)

        # private asyncssh API: packets are dispatched through self._packet_handlers
        # (asyncssh packet.py SSHPacketHandler.process_packet); an instance copy shadows the
        # class's table for this connection only.
        conn._packet_handlers = {**handlers, MSG_USERAUTH_FAILURE: record}

    def _set_username(self, username: str) -> None:
        assert self.conn is not None
        self.conn._username = username  # private asyncssh API, see the module doc
        self.usernames_sent.append(username)

    @property
    def username(self) -> str:
        assert self.conn is not None
        return str(self.conn._username)  # private asyncssh API

    async def kbdint_auth_requested(self) -> str | None:
        # asyncssh calls this before every keyboard-interactive USERAUTH_REQUEST it
        # sends (after each failure too): the place to change the username.
        if not self._queries_sent and self.pubkey_queries:
            self._queries_sent = True
            await self._send_pubkey_queries()
        if self._next >= len(self.steps):
            return None  # out of answers: the client gives up (PermissionDenied)
        self._set_username(self.steps[self._next].username)
        return ""

    async def _send_pubkey_queries(self) -> None:
        assert self.conn is not None
        for username, key in self.pubkey_queries:
            self._set_username(username)
            # private asyncssh API: an unsigned publickey request; the server answers
            # USERAUTH_FAILURE, which asyncssh would take as the failure of the
            # keyboard-interactive attempt in progress, so wait for each answer here.
            failed = self._watch_failure()
            await self.conn.send_userauth_request(
                b"publickey",
                Boolean(False),
                String(key.algorithm),
                String(key.public_data),
            )
            await asyncio.wait_for(failed, 10)

    def _watch_failure(self) -> asyncio.Future[None]:
        """Resolve at the next USERAUTH_FAILURE instead of letting asyncssh act on it."""
        conn: Any = self.conn
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        recording = conn._packet_handlers  # private asyncssh API, as above

        def once(_conn: Any, _pkttype: int, _pktid: int, packet: Any) -> None:
            conn._packet_handlers = recording
            methods = tuple(m.decode(errors="replace") for m in packet.get_namelist())
            self.failures.append((methods, packet.get_boolean()))
            packet.check_end()
            if not future.done():
                future.set_result(None)

        conn._packet_handlers = {**recording, MSG_USERAUTH_FAILURE: once}
        return future

    async def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
    ) -> Sequence[str] | None:
        self.challenges.append(Challenge(self.username, name, instructions, tuple(prompts)))
        if not prompts:
            if self.skip_messages and self._next < len(self.steps):
                await self._restart_as(self.steps[self._next].username)
            return []  # a message only
        if self._next >= len(self.steps):
            return None
        step = self.steps[self._next]
        if len(prompts) == 2:
            self._next += 1
            self.answered_at.append(time.perf_counter())
            if step.code is None:
                return [step.justification]  # type: ignore[list-item]
            return [step.code, step.justification]  # type: ignore[list-item]
        if step.username == self.username:
            self._next += 1
            self.answered_at.append(time.perf_counter())
            return [step.justification]  # type: ignore[list-item]
        await self._restart_as(step.username)
        return None  # not reached: the restart cancels this task

    async def _restart_as(self, username: str) -> None:
        """Abandon the round: a new keyboard-interactive USERAUTH_REQUEST under
        ``username``. The server's challenge for it arrives at the same auth object,
        which cancels this task (asyncssh auth.py Auth.create_task)."""
        assert self.conn is not None
        self._set_username(username)
        await self.conn.send_userauth_request(b"keyboard-interactive", String(""), String(""))
        await asyncio.Future()  # cancelled when the next challenge arrives


async def connect(
    port: int,
    client: ScriptedClient,
    *,
    within: float = 30.0,
    local_addr: str | None = None,
    **options: Any,
) -> asyncssh.SSHClientConnection:
    """Log in with ``client`` (its first step's username); raises what asyncssh raises.

    asyncssh's client refuses a username that fails SASLprep (control characters...)
    when the connection is set up; such a name is sent by the keyboard-interactive
    request only, after a "none" request under a placeholder name."""
    username = client.steps[0].username if client.steps else "nobody@nowhere"
    try:
        saslprep(username)
    except SASLPrepError:
        username = "placeholder"
    kwargs: dict[str, Any] = {
        "username": username,
        "known_hosts": None,  # the proxy's fresh host key; the target leg is pinned
        "client_factory": lambda: client,
        "preferred_auth": [KBDINT],
        "client_keys": None,
        "agent_path": None,
        "config": None,
        "gss_host": None,
        "kbdint_auth": True,
        "password": None,
    }
    if local_addr is not None:
        kwargs["local_addr"] = (local_addr, 0)
    kwargs.update(options)
    async with asyncio.timeout(within):
        return await asyncssh.connect(LOOPBACK, port, **kwargs)


async def login(
    port: int, steps: Sequence[Step], *, within: float = 30.0, **options: Any
) -> tuple[ScriptedClient, asyncssh.SSHClientConnection | Exception]:
    """Run a scripted login; the connection (closed by the caller) or the exception."""
    client = ScriptedClient(steps)
    try:
        conn = await connect(port, client, within=within, **options)
    except (OSError, asyncssh.Error) as exc:
        return client, exc
    return client, conn


async def close(conn: asyncssh.SSHClientConnection) -> None:
    conn.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(conn.wait_closed(), 10)


def send_raw(conn: asyncssh.SSHClientConnection, pkttype: int, *args: bytes) -> None:
    """Send any message now, on the encrypted transport, whatever the auth state.

    private asyncssh API: the client's send_packet holds back messages above
    USERAUTH_LAST until authentication completes (asyncssh connection.py:1796-1802); claiming it
    has completed for the duration of the call sends them at once.
    """
    raw: Any = conn
    saved = raw._auth_complete
    raw._auth_complete = True
    try:
        raw.send_packet(pkttype, *args)
    finally:
        raw._auth_complete = saved
