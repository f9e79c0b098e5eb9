"""The engineer-facing SSH server: authentication's I/O and what a connection may ask for.

The login is decided by proxy/core/login.py's ``LoginMachine``; this adapter does what it
answers: shows the keyboard-interactive prompts, sleeps the throttles' and failures'
delays, reads the credential row, runs argon2 off the loop, commits the session start
(shielded) before the target is contacted, audits every refusal and ends a connection
after too many. Identity is bound only when authentication completes. Every forwarding
is refused and audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, NoReturn, Protocol

import asyncssh

from proxy.alerts.payload import AlertContext
from proxy.core import answers, events, ids
from proxy.core.credentials import UseDecision
from proxy.core.errors import StoreError
from proxy.core.failsummary import Attempt
from proxy.core.login import (
    Ask,
    Commit,
    Failure,
    LoginMachine,
    LoginRules,
    LoginStateError,
    NeedCredential,
    ProxyState,
    Refuse,
    SessionPlan,
    Spend,
)
from proxy.core.policy import parse_username
from proxy.core.preauth import MAX_USERNAME, kept_text, redact_codes
from proxy.core.text import escape
from proxy.logs import held_note
from proxy.ssh.relay import ChannelBridge
from proxy.ssh.session import LiveSession, SessionHost, SessionInfo
from proxy.store.base import LoginStore, NewAlert, NewEvent

if TYPE_CHECKING:
    from proxy.config import Config
    from proxy.core.throttle import LoginThrottle
    from proxy.failurelog import FailureLog
    from proxy.fleet.codes import FleetCodes
    from proxy.logs import LineBudget
    from proxy.tasks import TaskOwner

log = logging.getLogger("breakglass")

# How long a refused-after-proof connection stays open to deliver its message.
REFUSAL_LINGER = 5.0


class ConnectionHost(SessionHost, Protocol):
    """What a connection needs from the running service (``proxy.service.App``), beyond
    what its session does: the config, login's throttles and slots, the argon2 turn, the
    failure log and the live sessions' count."""

    @property
    def config(self) -> Config: ...

    @property
    def login_store(self) -> LoginStore: ...

    @property
    def failure_delay_base(self) -> float: ...

    @property
    def fleet_codes(self) -> FleetCodes | None:
        """The codes' side of the fleet's ledger (None: a node on its own)."""

    @property
    def login_throttle(self) -> LoginThrottle: ...

    @property
    def logins(self) -> set[ConnectionHandler]:
        """Connections still logging in (cut first at shutdown)."""

    @property
    def stranger_lines(self) -> LineBudget: ...

    @property
    def failure_log(self) -> FailureLog: ...

    @property
    def tasks(self) -> TaskOwner: ...

    @property
    def sessions(self) -> Collection[LiveSession]: ...

    def admit(self, source: str, conn: ConnectionHandler) -> bool: ...

    def release(self, conn: ConnectionHandler) -> None: ...

    async def verify_code(
        self, encoded: str | None, cred_id: str, secret: str, source: str = ""
    ) -> bool: ...

    def free_space(self) -> int: ...

    def session_started(self, session: LiveSession) -> None: ...

    async def append_quietly(self, event: NewEvent) -> None: ...


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

    def __init__(self, app: ConnectionHost) -> None:
        self.app = app
        self.config = app.config  # the config in force when the connection arrived
        self.conn: asyncssh.SSHServerConnection | None = None
        self.source = "?"
        self.source_port = 0
        self.client_version = ""
        self.login = self._login_machine()
        self._authed: tuple[str, SessionInfo | None] | None = None
        self.session: LiveSession | None = None
        self._admitted = False
        self._aborted_audited = False
        self._preauth_timer: asyncio.TimerHandle | None = None
        # Why a proven engineer cannot be served (disk full, store down, at capacity):
        # told on the channel's stderr, which every client shows whatever its LogLevel.
        self._refusal: str | None = None
        # With a fleet: the argon2 hash of the code being checked (the ledger keeps it),
        # and the (use_id, session id) its use was spent under.
        self._code_hash = ""
        self._use: tuple[str, str] | None = None

    # -- connection -------------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.source, self.source_port = str(peer[0]), int(peer[1])
        self.login = self._login_machine()
        self._admitted = self.app.admit(self.source, self)
        if self._admitted:
            self.app.logins.add(self)
            # Until the prompts are shown only the short pre-auth timeout applies: a
            # silent or half-handshaken connection must not hold a slot for the whole
            # login_timeout, which is for a person typing.
            self._preauth_timer = asyncio.get_running_loop().call_later(
                self.config.policy.preauth_timeout, self._preauth_expired
            )
        else:
            if (held := self.app.stranger_lines.allow("refused")) is not None:
                log.warning(
                    "refused a connection from %s: too many unauthenticated%s",
                    self.source,
                    held_note(held),
                )
            # After asyncssh has sent its version line (it does, right after this
            # returns): a DISCONNECT before it reaches OpenSSH as "banner line contains
            # invalid characters"; after it, as "Too many connections".
            asyncio.get_running_loop().call_soon(
                conn.disconnect, asyncssh.DISC_TOO_MANY_CONNECTIONS, "Too many connections"
            )

    def _login_machine(self) -> LoginMachine:
        config = self.config
        rules = LoginRules(
            policy=config.policy,
            targets=config.targets,
            min_free=config.storage.min_free,
            failure_delay_base=self.app.failure_delay_base,
        )
        if config.fleet is not None and self.app.fleet_codes is not None:
            rules = dataclasses.replace(rules, unreachable=config.fleet.unreachable)
        return LoginMachine(rules, self.app.login_throttle, self.source)

    def _release(self) -> None:
        self.app.logins.discard(self)
        self._stop_preauth_timer()
        if self._admitted:
            self._admitted = False
            self.app.release(self)

    def _stop_preauth_timer(self) -> None:
        if self._preauth_timer is not None:
            self._preauth_timer.cancel()
            self._preauth_timer = None

    def _preauth_expired(self) -> None:
        self._preauth_timer = None
        if self.conn is None or self._authed is not None:
            return
        if (held := self.app.stranger_lines.allow("preauth")) is not None:
            log.info(
                "cut a connection from %s: no user-auth request in time%s",
                self.source,
                held_note(held),
            )
        if self._client_version_or_none():
            self._audit_aborted("no user-auth request within preauth_timeout")
        self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, "Login timeout")

    def cut_for_room(self) -> None:
        """Every unauthenticated slot is taken and this is the oldest connection of the
        source holding the most: it makes room (counted in ``login_slots_full``, not
        audited one by one)."""
        self._admitted = False  # the slot table has already given the slot away
        self._aborted_audited = True
        self.app.logins.discard(self)
        self._stop_preauth_timer()
        if self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, "Too many connections")

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
        now = time.time()
        aborted = events.LoginAborted(self.source, self._client_version(), detail[:200])
        # Like a failed login: written singly, or counted into a summary in a flood.
        attempt = Attempt(now, self.source, None, events.LoginAborted.TYPE, None)
        self.app.failure_log.failed(aborted, attempt, verified=False)

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
        self.login.challenge(username)
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
        self._stop_preauth_timer()  # a person is at the prompts: login_timeout applies
        ask = self.login.challenge(username)
        return (ask.name, ask.instruction, "", list(ask.prompts))

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
            return await self._refused(username, self.login.error(username, time.time()))

    async def _validate(
        self, username: str, responses: Sequence[str]
    ) -> bool | tuple[str, str, str, list[tuple[str, bool]]]:
        """Do what the login machine (proxy/core/login.py) answers, until it decides."""
        step = self.login.answers(username, responses, time.time())
        if isinstance(step, NeedCredential):
            step = await self._check(step)
        if isinstance(step, Spend):
            step = await self._spend(step.plan)
        if isinstance(step, Ask):
            if step.failure is not None:
                self._audit_failure(username, step.failure)
            return (step.name, step.instruction, "", list(step.prompts))
        if isinstance(step, Commit):
            return await self._commit(username, step.plan)
        if isinstance(step, Refuse):
            return await self._refused(username, step)
        raise LoginStateError(f"unexpected answer {type(step).__name__}")

    async def _check(self, need: NeedCredential) -> Refuse | Spend | Commit:
        """One credential read and one argon2 check, whatever is wrong."""
        if need.wait > 0:
            if (held := self.app.stranger_lines.allow("throttled")) is not None:
                log.warning(
                    "throttling a login attempt from %s by %.0fs%s",
                    self.source,
                    need.wait,
                    held_note(held),
                )
            self._banner(need.notice)
            await asyncio.sleep(need.wait)
        found = None
        try:
            found = await self.app.login_store.get_credential(need.cred_id)
        except StoreError as exc:
            log.critical("audit store unreadable at login: %s", exc)
        cred, encoded, mismatch = found if found else (None, None, None)
        self._code_hash = encoded or ""
        self._use = None
        verified = await self.app.verify_code(encoded, need.cred_id, need.secret, self.source)
        if mismatch is not None:
            # The row disagrees with its events in the chain (edited by hand?): it is
            # never trusted; the login_failed event raises the credential_tampered alert.
            log.critical("code %s refused: %s", need.cred_id, mismatch)
        state = ProxyState(
            live_sessions=len(self.app.sessions),
            free_bytes=self.app.free_space(),
            allowed_sources=self.app.config.policy.allowed_sources,
        )
        return self.login.credential(
            cred, verified, state, time.time(), tampered=mismatch is not None
        )

    async def _spend(self, plan: SessionPlan) -> Refuse | Commit:
        """Spend the code's use in the fleet's ledger (after argon2 and every local rule
        said yes: a wrong code never reaches the ledger)."""
        codes = self.app.fleet_codes
        assert codes is not None  # the rules ask for a Spend only when there is a fleet
        session_id = ids.session_id(plan.started_at, secrets.token_bytes(2))
        use_id = secrets.token_hex(16)
        try:
            outcome = await codes.spend(
                plan.credential, self._code_hash, plan.target.name, session_id, use_id, time.time()
            )
        except StoreError as exc:
            codes.finished(use_id)
            log.critical("cannot record a pending use of a code: %s", exc)
            self.app.alerts.store_failed(f"cannot record a pending use of a code: {exc}")
            return self.login.commit_failed()
        except BaseException:
            codes.finished(use_id)
            raise
        step = self.login.spent(outcome, time.time())
        if isinstance(step, Commit):
            self._use = (use_id, session_id)
        else:
            codes.finished(use_id)
        return step

    async def _commit(self, username: str, plan: SessionPlan) -> bool:
        """Commit the session start, shielded; the machine says what its outcome means."""
        now = plan.started_at
        use, self._use = self._use, None
        info = SessionInfo(
            id=use[1] if use else ids.session_id(now, secrets.token_bytes(2)),
            person=plan.person,
            credential_id=plan.credential.cred_id,
            source=self.source,
            client_version=self._client_version(),
            target=plan.target,
            login=plan.login,
            justification=plan.justification,
            started_at=now,
            deadline=plan.deadline,
        )
        start = NewEvent.of(
            self._start_event(
                info,
                use_id=use[0] if use else None,
                ledger_unreachable=plan.ledger_unreachable or None,
            ),
            now,
            info.id,
        )
        codes = self.app.fleet_codes if use is not None else None
        try:
            alerts = await self.app.alerts.for_event(start)
        except BaseException:
            if codes is not None and use is not None:
                codes.finished(use[0])
            raise
        commit = asyncio.ensure_future(
            self.app.login_store.start_session(
                plan.credential.cred_id, plan.person, plan.target.name, now, start, alerts=alerts
            )
        )
        if codes is not None and use is not None:
            # Settled by the start once it is committed (by the ledger if it is not).
            use_id = use[0]
            commit.add_done_callback(lambda _: codes.finished(use_id))
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
                f"cannot commit a session start: {exc}", AlertContext.of_event(start.typed())
            )
            return await self._refused(username, self.login.commit_failed())
        outcome = self.login.committed(decision, time.time())
        if isinstance(outcome, Refuse):
            return await self._refused(username, outcome)
        self.app.alerts.committed(alerts)
        # Before USERAUTH_SUCCESS, for every kind of session (exec, scp, sftp, Ansible):
        # OpenSSH prints it on stderr, never stdout, and `-q` hides it.
        self._banner(answers.session_notice(info.id, info.deadline))
        log.warning(
            "break-glass session %s started: person=%s target=%s login=%s source=%s",
            info.id,
            info.person,
            plan.target.name,
            plan.login,
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
        end = events.SessionEnd("client_exit", "left before authentication completed")
        await self.app.append_quietly(NewEvent.of(end, time.time(), info.id))

    async def _refused(self, username: str, refusal: Refuse) -> bool:
        """Audit a refusal and answer the client as the machine said."""
        self._audit_failure(username, refusal.failure)
        if refusal.served:
            # Refused after proof: authentication succeeds so that every channel is told
            # why (on stderr, which every client shows whatever its LogLevel).
            self._refusal = refusal.message
            self._authed = (username, None)
            return True
        if refusal.message:
            self._banner(refusal.message)
        await asyncio.sleep(refusal.wait)
        if refusal.disconnect and self.conn is not None:
            self.conn.disconnect(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "Too many authentication failures"
            )
        return False

    def _banner(self, text: str) -> None:
        """A line the client shows during authentication (OpenSSH: on stderr, unless
        ``-q`` or a LogLevel below INFO)."""
        if text and self.conn is not None:
            with contextlib.suppress(OSError, asyncssh.Error):
                self.conn.send_auth_banner(f"breakglass: {text}\n")

    def _start_event(
        self,
        info: SessionInfo,
        *,
        use_id: str | None = None,
        ledger_unreachable: bool | None = None,
    ) -> events.SessionStart:
        return events.SessionStart(
            person=info.person,
            credential_id=info.credential_id,
            source=info.source,
            source_port=self.source_port,
            client_version=info.client_version,
            target=info.target.name,
            login=info.login,
            justification=info.justification,
            deadline=info.deadline,
            use_id=use_id,
            ledger_unreachable=ledger_unreachable,
        )

    def _audit_failure(self, username: str, failure: Failure) -> None:
        """One failed login into the audit trail (the machine has already cut its text
        and removed any code from it; the username is cut here, to its longest valid
        shape): written singly, or counted into a summary when its source or everyone
        fails too often (``proxy.failurelog``). Verified failures are always single."""
        parsed = parse_username(username)
        # A code typed into the username (as its login or target, say) is no more kept
        # in its parts than in the whole.
        person, target, login = (
            (
                redact_codes(parsed.person),
                redact_codes(parsed.target),
                redact_codes(parsed.login) if parsed.login else None,
            )
            if parsed
            else (None, None, None)
        )
        kept_username, username_length = kept_text(username, MAX_USERNAME)
        failed = events.LoginFailed(
            reason=failure.reason,
            username=kept_username,
            username_length=username_length,
            person=person,
            target=target,
            login=login,
            credential_id=failure.cred_id or None,
            source=self.source,
            client_version=self._client_version(),
            justification=failure.justification,
            justification_length=failure.justification_length,
        )
        attempt = Attempt(time.time(), self.source, person, failure.reason, failure.cred_id or None)
        single = self.app.failure_log.failed(failed, attempt, verified=failure.verified)
        # The log follows the audit: a failure counted into a summary is logged with it
        # (proxy.failurelog). What is logged is what the store keeps (no typed code).
        if single and (held := self.app.stranger_lines.allow("failed")) is not None:
            log.warning(
                "login failed: reason=%s username=%s source=%s%s",
                failure.reason,
                escape(kept_username[:128]),
                self.source,
                held_note(held),
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
        refusal = self.session.channel_refusal()
        if refusal is not None:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, refusal)
        return ChannelBridge(self.session)

    def _refuse(self, request: str, detail: str) -> bool:
        if self.session is not None:
            self.session.refused(request, detail)
            self.session.forwarding_refused()
        return False

    def _prohibit(self, request: str, detail: str) -> NoReturn:
        """Refuse a channel open as "administratively prohibited", with a reason OpenSSH
        prints (channel N: open failed: administratively prohibited: REASON): a bare
        refusal reads "connect failed: Connection refused", as if the target were down."""
        self._refuse(request, detail)
        usage = "ssh PERSON@TARGET@proxy"
        if self.session is not None:
            info = self.session.info
            usage += f" (here: ssh {info.person}@{info.target.name}@proxy)"
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
            f"breakglass does not forward connections (-L, -D, -W, ProxyJump -J); "
            f"log in through it: {usage}",
        )

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        self._prohibit("direct-tcpip", f"{dest_host[:255]}:{dest_port}")

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        # A global request: SSH gives its refusal no reason text.
        return self._refuse("tcpip-forward", f"{listen_host[:255]}:{listen_port}")

    def unix_connection_requested(self, dest_path: str) -> bool:
        self._prohibit("direct-streamlocal", dest_path[:255])

    def unix_server_requested(self, listen_path: str) -> bool:
        return self._refuse("streamlocal-forward", listen_path[:255])

    def tun_requested(self, unit: int | None) -> bool:
        self._prohibit("tun", str(unit))

    def tap_requested(self, unit: int | None) -> bool:
        self._prohibit("tap", str(unit))
