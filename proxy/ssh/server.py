"""The engineer-facing SSH server: authentication and what a connection may ask for.

Owns the login flow (PRODUCT.md "Reaching a target"): parse PERSON[@LOGIN]@TARGET, ask
for the code and the justification by keyboard-interactive, ask again for a bad
justification only, check everything at a constant cost, count the code's use and commit
the session start before the target is contacted. Identity is bound only when
authentication completes. Every failure says "Access denied" to the client and the exact
reason to the audit log. Every forwarding is refused and audited.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncssh

from proxy.alerts.payload import AlertContext
from proxy.core import ids
from proxy.core.credentials import UseDecision, check_use, parse_code
from proxy.core.policy import (
    check_justification,
    describe_rule,
    failure_delay,
    login_for,
    parse_username,
    session_deadline,
)
from proxy.core.text import escape
from proxy.errors import StoreError
from proxy.ssh.relay import ChannelBridge
from proxy.ssh.session import LiveSession, SessionInfo
from proxy.store.base import NewAlert, NewEvent

if TYPE_CHECKING:
    from proxy.service import App

log = logging.getLogger("breakglass")

CODE_PROMPT = "Break-glass code for {person}: "
JUSTIFICATION_PROMPT = "Justification (ticket and reason): "
MAX_FAILURES = 3
MAX_JUSTIFICATION_TRIES = 3
# How long a refused-after-proof connection stays open to deliver its message.
REFUSAL_LINGER = 5.0


@dataclass
class _Pending:
    """A code already typed in this connection while the justification is asked again."""

    username: str
    code: str
    tries: int


class RefusedChannel(asyncssh.SSHServerSession[bytes]):
    """A channel that only says why the proxy cannot serve, then exits 255."""

    def __init__(self, message: str) -> None:
        self._message = message
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        return True

    def session_started(self) -> None:
        if self._chan is not None:
            self._chan.write_stderr(f"breakglass: {self._message}\r\n".encode())
            self._chan.exit(255)


class ConnectionHandler(asyncssh.SSHServer):
    """One per TCP connection."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.config = app.config  # the config in force when the connection arrived
        self.conn: asyncssh.SSHServerConnection | None = None
        self.source = "?"
        self.source_port = 0
        self.client_version = ""
        self.failures = 0
        self._pending: _Pending | None = None
        self._authed: tuple[str, SessionInfo | None] | None = None
        self.session: LiveSession | None = None
        self._admitted = False
        self._aborted_audited = False
        # Why a proven engineer cannot be served (disk full, store down, at capacity):
        # told on the channel's stderr, which every client shows whatever its LogLevel.
        self._refusal: str | None = None

    # -- connection -------------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.source, self.source_port = str(peer[0]), int(peer[1])
        self._admitted = self.app.admit(self.source)
        if self._admitted:
            self.app.logins.add(self)
        else:
            log.warning("refused a connection from %s: too many unauthenticated", self.source)
            # After asyncssh has sent its version line (it does, right after this
            # returns): a DISCONNECT before it reaches OpenSSH as "banner line contains
            # invalid characters"; after it, as "Too many connections".
            asyncio.get_running_loop().call_soon(
                conn.disconnect, asyncssh.DISC_TOO_MANY_CONNECTIONS, "Too many connections"
            )

    def _release(self) -> None:
        self.app.logins.discard(self)
        if self._admitted:
            self._admitted = False
            self.app.release(self.source)

    def cut(self, message: str) -> None:
        """End a connection that has not logged in yet (the proxy is stopping): its
        check in progress is cancelled and the attempt recorded."""
        self._audit_aborted(message)
        if self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, message)

    def _audit_aborted(self, detail: str) -> None:
        if self._aborted_audited:
            return
        self._aborted_audited = True
        self.app.tasks.spawn(
            self.app.append_quietly(
                NewEvent(
                    "login_aborted",
                    time.time(),
                    data={
                        "source": self.source,
                        "client_version": self._client_version(),
                        "detail": detail[:200],
                    },
                )
            ),
            "audit login_aborted",
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        if self.session is None and exc is not None and self._client_version_or_none():
            # Cut during login (protocol error, login timeout, invalid UTF-8 in a
            # response): nobody got in, but the attempt is part of the record.
            self._audit_aborted(str(exc))
        session = self.session
        if session is not None:
            self.app.tasks.spawn(session.finish(), f"finish {session.info.id}")

    def _client_version(self) -> str:
        return self._client_version_or_none() or ""

    def _client_version_or_none(self) -> str | None:
        if self.conn is None:
            return None
        version = self.conn.get_extra_info("client_version")
        return str(version)[:255] if version else None

    # -- authentication -----------------------------------------------------------------

    def begin_auth(self, username: str) -> bool:
        # A new username restarts everything: nothing typed for another name carries over.
        self._pending = None
        self._authed = None
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return True

    def get_kbdint_challenge(
        self, username: str, lang: str, submethods: str
    ) -> tuple[str, str, str, list[tuple[str, bool]]]:
        self._pending = None
        parsed = parse_username(username)
        person = parsed.person if parsed else escape(username[:64])
        instruction = "All activity is recorded and every use raises an alert."
        return (
            "Break-glass access",
            instruction,
            "",
            [(CODE_PROMPT.format(person=person), False), (JUSTIFICATION_PROMPT, True)],
        )

    async def validate_kbdint_response(
        self, username: str, responses: Sequence[str]
    ) -> bool | tuple[str, str, str, list[tuple[str, bool]]]:
        try:
            return await self._validate(username, responses)
        except asyncio.CancelledError:
            raise
        except Exception:
            # An exception here would kill the connection with no audit; fail closed.
            log.exception("login check failed unexpectedly")
            await self._fail(username, "internal_error", None)
            return False

    async def _validate(
        self, username: str, responses: Sequence[str]
    ) -> bool | tuple[str, str, str, list[tuple[str, bool]]]:
        pending = self._pending if self._pending and self._pending.username == username else None
        self._pending = None
        if pending is not None and len(responses) == 1:
            code, justification, tries = pending.code, responses[0], pending.tries
        elif pending is None and len(responses) == 2:
            code, justification, tries = responses[0], responses[1], 0
        else:
            await self._fail(username, "bad_response", None)
            return False

        rule = self.config.policy.justification
        problem = check_justification(justification, rule)
        if problem is not None:
            tries += 1
            self._audit_failure(username, problem, justification)
            if tries >= MAX_JUSTIFICATION_TRIES:
                await self._fail(username, problem, justification, audited=True)
                return False
            self._pending = _Pending(username, code, tries)
            return (
                "",
                f"Justification rejected: it must have {describe_rule(rule)}.",
                "",
                [(JUSTIFICATION_PROMPT, True)],
            )

        # Exactly one argon2 check whatever is wrong, so the answer and its timing
        # do not tell a wrong person from a wrong code from an unknown target.
        parsed = parse_username(username)
        await self._throttle(parsed.person if parsed else None)
        code_parts = parse_code(code)
        found = None
        try:
            # Input that is no code at all is looked up too (as an id nothing has), so it
            # is not the one answer that skips the store's read.
            found = await self.app.store.get_credential(code_parts[0] if code_parts else "")
        except StoreError as exc:
            log.critical("audit store unreadable at login: %s", exc)
        if code_parts is None:
            found = None
        encoded = found[1] if found else None
        cred_id, secret = code_parts if code_parts else ("", "")
        code_ok = await self.app.verify_code(encoded, cred_id, secret)

        reason: str | None = None
        target = self.config.targets.get(parsed.target) if parsed else None
        login = login_for(parsed.login, target.login, target.logins) if parsed and target else None
        if parsed is None:
            reason = "bad_username"
        elif found is None:
            reason = "unknown_code"
        elif not code_ok:
            reason = "wrong_code"
        elif target is None:
            reason = "unknown_target"
        elif login is None:
            reason = "login_not_allowed"
        elif not self.app.source_allowed(self.source):
            reason = "source_not_allowed"
        else:
            # What the commit would refuse (wrong person, revoked, expired, spent, target
            # not allowed) is refused here, from the row already read: such an answer
            # then costs what a wrong code costs instead of a transaction more
            # (benchmarks/login_timing.py). The commit checks again under its lock.
            early = check_use(found[0], parsed.person, target.name, time.time())
            reason = None if early.ok else early.reason
        if reason is not None or parsed is None or target is None or login is None:
            await self._fail(username, reason or "denied", justification, cred_id=cred_id)
            return False

        refusal = self._capacity_refusal()
        if refusal is not None:
            # Not the engineer's fault: no throttling, no use counted, and they are told.
            return self._refuse_served(username, refusal, justification, cred_id)

        now = time.time()
        cred = found[0] if found else None
        assert cred is not None
        info = SessionInfo(
            id=ids.session_id(now, secrets.token_bytes(2)),
            person=parsed.person,
            credential_id=cred.cred_id,
            source=self.source,
            client_version=self._client_version(),
            target=target,
            login=login,
            justification=justification,
            started_at=now,
            deadline=session_deadline(
                now, self.config.policy.max_session, target.max_session, cred.max_session
            ),
        )
        start = NewEvent("session_start", now, info.id, None, self._start_data(info))
        alerts = await self.app.alerts.for_event(start)
        commit = asyncio.ensure_future(
            self.app.store.start_session(
                cred.cred_id, parsed.person, target.name, now, start, alerts=alerts
            )
        )
        try:
            # Shielded: a new USERAUTH_REQUEST or a disconnect cancels this check, but the
            # commit goes on in the store's thread; what it starts must also end.
            decision = await asyncio.shield(commit)
        except asyncio.CancelledError:
            self.app.tasks.spawn(self._end_abandoned(commit, info, alerts), f"abandon {info.id}")
            raise
        except StoreError as exc:
            log.critical("cannot commit a session start: %s", exc)
            self.app.alerts.store_failed(
                f"cannot commit a session start: {exc}", AlertContext.of_data(start.data)
            )
            refusal = (
                "store_unavailable",
                "the audit trail cannot be written, so break-glass access is refused; "
                "tell the proxy's operators",
            )
            return self._refuse_served(username, refusal, justification, cred_id)
        if not decision.ok:
            await self._fail(username, decision.reason, justification, cred_id=cred_id)
            return False
        self.app.alerts.committed(alerts)
        log.warning(
            "break-glass session %s started: person=%s target=%s login=%s source=%s",
            info.id,
            info.person,
            target.name,
            login,
            self.source,
        )
        self._authed = (username, info)
        return True

    async def _end_abandoned(
        self, commit: asyncio.Future[UseDecision], info: SessionInfo, alerts: list[NewAlert]
    ) -> None:
        """The client left, or started over, while its session start was committed:
        nobody got in on it, so that session ends at once (its alert still goes out)."""
        try:
            decision = await commit
        except StoreError:
            return
        if not decision.ok:
            return
        self.app.alerts.committed(alerts)
        log.warning("session %s abandoned before authentication completed", info.id)
        data = {"reason": "client_exit", "detail": "left before authentication completed"}
        await self.app.append_quietly(NewEvent("session_end", time.time(), info.id, None, data))

    def _refuse_served(
        self, username: str, refusal: tuple[str, str], justification: str, cred_id: str
    ) -> bool:
        reason, message = refusal
        self._audit_failure(username, reason, justification, cred_id)
        self._refusal = message
        self._authed = (username, None)
        return True

    def _capacity_refusal(self) -> tuple[str, str] | None:
        """A reason to refuse that is the proxy's state, not the engineer's input."""
        policy, storage = self.config.policy, self.config.storage
        if len(self.app.sessions) >= policy.max_live_sessions:
            return (
                "too_many_sessions",
                f"the proxy is at its limit of {policy.max_live_sessions} live sessions; "
                "try again in a moment or tell the proxy's operators",
            )
        if self.app.free_space() < storage.min_free:
            return (
                "disk_full",
                "the proxy's disk is almost full, so the session could not be recorded "
                "and break-glass access is refused; tell the proxy's operators",
            )
        return None

    async def _throttle(self, person: str | None) -> None:
        """Slow attempts from a source or for a person that failed a lot lately."""
        now = time.time()
        delay = self.app.failures_by_source.delay(self.source, now)
        if person is not None:
            delay = max(delay, self.app.failures_by_person.delay(person, now))
        if delay > 0:
            log.warning("throttling a login attempt from %s by %.0fs", self.source, delay)
            await asyncio.sleep(delay)

    def _start_data(self, info: SessionInfo) -> dict[str, Any]:
        return {
            "person": info.person,
            "credential_id": info.credential_id,
            "source": info.source,
            "source_port": self.source_port,
            "client_version": info.client_version,
            "target": info.target.name,
            "login": info.login,
            "justification": info.justification,
            "deadline": info.deadline,
        }

    def _audit_failure(
        self, username: str, reason: str, justification: str | None, cred_id: str = ""
    ) -> None:
        parsed = parse_username(username)
        data = {
            "reason": reason,
            "username": username[:256],
            "person": parsed.person if parsed else None,
            "target": parsed.target if parsed else None,
            "login": parsed.login if parsed else None,
            "credential_id": cred_id or None,
            "source": self.source,
            "client_version": self._client_version(),
            "justification": justification,
        }
        self.app.tasks.spawn(
            self.app.alerts.record(NewEvent("login_failed", time.time(), data=data)),
            "audit login_failed",
        )
        log.warning(
            "login failed: reason=%s username=%s source=%s",
            reason,
            escape(username[:128]),
            self.source,
        )

    async def _fail(
        self,
        username: str,
        reason: str,
        justification: str | None,
        *,
        cred_id: str = "",
        audited: bool = False,
    ) -> None:
        if not audited:
            self._audit_failure(username, reason, justification, cred_id)
        now = time.time()
        self.app.failures_by_source.record(self.source, now)
        parsed = parse_username(username)
        if parsed is not None:
            self.app.failures_by_person.record(parsed.person, now)
        self.failures += 1
        await asyncio.sleep(failure_delay(self.failures, base=self.app.failure_delay_base))
        if self.failures >= MAX_FAILURES and self.conn is not None:
            self.conn.disconnect(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "Too many authentication failures"
            )

    def auth_completed(self) -> None:
        assert self.conn is not None
        authed = self._authed
        username = self.conn.get_extra_info("username")
        if authed is None or authed[0] != username:
            # Cannot happen with the checks above; if it ever does, nobody gets in.
            log.critical("authentication completed without a matching login; disconnecting")
            self.conn.disconnect(asyncssh.DISC_PROTOCOL_ERROR, "Access denied")
            return
        self._release()
        if authed[1] is None:
            # Refused after proof (see _refuse_served): every channel is told why.
            self.app.tasks.spawn(self._disconnect_later(), "refused disconnect")
            return
        self.session = LiveSession(self.app, authed[1], self.conn)
        self.app.session_started(self.session)
        self.session.start()

    # -- what an authenticated connection may ask for -----------------------------------

    async def _disconnect_later(self) -> None:
        await asyncio.sleep(REFUSAL_LINGER)
        if self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, self._refusal or "refused")

    def session_requested(self) -> ChannelBridge | RefusedChannel | bool:
        if self._refusal is not None:
            return RefusedChannel(self._refusal)
        if self.session is None:
            return False
        return ChannelBridge(self.session)

    def _refuse(self, request: str, detail: str) -> bool:
        if self.session is not None:
            self.session.audit("request_refused", {"request": request, "detail": detail})
        return False

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        return self._refuse("direct-tcpip", f"{dest_host[:255]}:{dest_port}")

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return self._refuse("tcpip-forward", f"{listen_host[:255]}:{listen_port}")

    def unix_connection_requested(self, dest_path: str) -> bool:
        return self._refuse("direct-streamlocal", dest_path[:255])

    def unix_server_requested(self, listen_path: str) -> bool:
        return self._refuse("streamlocal-forward", listen_path[:255])

    def tun_requested(self, unit: int | None) -> bool:
        return self._refuse("tun", str(unit))

    def tap_requested(self, unit: int | None) -> bool:
        return self._refuse("tap", str(unit))
