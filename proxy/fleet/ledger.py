"""Every call a node makes to the fleet ledger: bounded, counted, and cut off when the
ledger misbehaves.

Owns the connections to the ledger (at most ``pool_size``, opened lazily, with
``target_session_attrs=read-write`` so a standby or a read-only server after a failover
is refused at connect), the bound on each call (waiting for a connection, connecting
and the caller's queries all within ``fleet.timeout``), and the breaker: after
``BREAKER_FAILURES`` consecutive failures ``run`` answers ``LedgerUnreachable`` at once,
without touching the network, until a background probe (every ``PROBE_INTERVAL``
seconds, itself bounded) gets an answer.

Any failure is "unreachable": refused, timed out, read-only, authentication, a missing
or mismatched schema, an exhausted pool. A call that overruns its bound has its socket
shut down, so neither the call nor psycopg's query cancellation (which would dial the
same hung server) can wait on it; that connection is discarded, never reused. Messages
name the ledger as ``postgresql://host:port/db`` (no user, no password, no options) and
add libpq's first line, which never holds the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import select
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from proxy.core.errors import BreakglassError

if TYPE_CHECKING:
    from proxy.config.model import FleetConfig

__all__ = [
    "BREAKER_FAILURES",
    "PROBE_INTERVAL",
    "Ledger",
    "LedgerState",
    "LedgerUnreachable",
    "describe_dsn",
]

log = logging.getLogger("breakglass")

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]

BREAKER_FAILURES = 3  # consecutive failures that stop the calls
PROBE_INTERVAL = 1.0  # seconds between the breaker's probes
# After a hung call's socket is shut down, how long its task may take to notice.
_SEVER_GRACE = 1.0
_DETAIL_CHARS = 300


class LedgerUnreachable(BreakglassError):
    """The ledger did not give a clean answer. The message names the ledger, no secret."""

    reason = "ledger_unreachable"

    def __init__(self, ledger: str, detail: str, *, sqlstate: str | None = None) -> None:
        super().__init__(f"the fleet ledger {ledger} is unreachable: {detail}")
        self.ledger = ledger
        self.detail = detail
        # The server's error code when it answered with an error (e.g. "P0001" for a
        # ledger trigger's refusal, "25006" read-only), else None.
        self.sqlstate = sqlstate


@dataclass(frozen=True)
class LedgerState:
    """For status and alerts: is the ledger answering, since when not, and why."""

    up: bool
    since: float | None = None  # the clock when the current outage began (None: up)
    last_error: str | None = None
    last_ok: float | None = None  # the clock at the last answered call
    breaker_open: bool = False


def describe_dsn(dsn: str) -> str:
    """``postgresql://host:port/db`` for ``dsn``: no user, no password, no options."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "postgresql://(invalid DSN)"
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or 5432)
    db = str(params.get("dbname") or params.get("user") or "")
    return f"postgresql://{host}:{port}/{db}"


def _detail(exc: BaseException) -> str:
    """One printable line about ``exc`` (libpq's messages never hold the password)."""
    if isinstance(exc, TimeoutError):
        return "no answer within the timeout"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text[:_DETAIL_CHARS]


def _sever(conn: Conn) -> None:
    """Shut the connection's socket down (both ways) without closing its descriptor, so
    whatever waits on it sees the end at once and psycopg has no query to cancel."""
    with contextlib.suppress(Exception):
        fd = conn.pgconn.socket
        with socket.socket(fileno=socket.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)


def _looks_alive(conn: Conn) -> bool:
    """An idle connection is dead when the server said something (its goodbye) or hung up."""
    if conn.closed or conn.broken:
        return False
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return False
    return not readable


class Ledger:
    """The node's handle on the ledger. ``run`` is the only way to query it."""

    def __init__(
        self,
        config: FleetConfig,
        *,
        pool_size: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.timeout = config.timeout
        self._clock = clock
        self._pool_size = pool_size
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[Conn] = []
        self._failures = 0
        self._open_breaker = False
        self._down_since: float | None = None
        self._last_error: str | None = None
        self._last_ok: float | None = None
        self._probe: asyncio.Task[None] | None = None
        self._stray: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._description = describe_dsn(config.postgres)

    def describe(self) -> str:
        """``postgresql://host:port/db``: the ledger, without secrets."""
        return self._description

    @property
    def state(self) -> LedgerState:
        return LedgerState(
            up=self._down_since is None,
            since=self._down_since,
            last_error=self._last_error,
            last_ok=self._last_ok,
            breaker_open=self._open_breaker,
        )

    async def open(self) -> None:
        """Ready to run calls. Connects lazily, so never raises for a down ledger."""
        self._closed = False
        if self._open_breaker and self._probe is None:
            self._probe = asyncio.get_running_loop().create_task(self._probing())

    async def close(self) -> None:
        """Stop the probe and close every idle connection."""
        self._closed = True
        tasks = [t for t in (self._probe, *self._stray) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._probe = None
        self._stray.clear()
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._discard(conn)

    async def run(
        self,
        fn: Callable[[Conn], Awaitable[T]],
        *,
        what: str,
        bound: float | None = None,
        transaction: bool = True,
    ) -> T:
        """``fn(conn)`` in one transaction, with everything done within ``bound`` seconds
        (default ``fleet.timeout``; an auditor's long read may ask for more, and the
        server's statement_timeout follows it for that transaction).

        With ``transaction=False`` each statement of ``fn`` commits on its own: a single
        statement is then one round trip, committed by the server even if its reply is
        lost (spending a code relies on that; a ``BEGIN`` would be a round trip more).

        Raises LedgerUnreachable for any failure of the ledger (and at once, without
        calling it, while the breaker is open). An exception of the caller's own that
        ``fn`` raises propagates unchanged and does not count as a failure.
        """
        if self._closed:
            raise LedgerUnreachable(self._description, f"{what}: the ledger handle is closed")
        if self._open_breaker:
            raise LedgerUnreachable(
                self._description,
                f"{what}: not tried, the ledger failed {BREAKER_FAILURES} times in a row"
                f" (last: {self._last_error}); retried when a probe gets an answer",
            )
        try:
            result = await self._bounded(fn, self.timeout if bound is None else bound, transaction)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            detail = _detail(exc)
            if isinstance(exc, TimeoutError) and self._slots.locked():
                detail = f"no connection free within the timeout ({self._pool_size} in use)"
            self._failed(detail)
            sqlstate = exc.sqlstate if isinstance(exc, psycopg.Error) else None
            raise LedgerUnreachable(
                self._description, f"{what}: {detail}", sqlstate=sqlstate
            ) from None
        self._answered()
        return result

    async def _bounded(
        self, fn: Callable[[Conn], Awaitable[T]], bound: float, transaction: bool = True
    ) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound
        async with asyncio.timeout_at(deadline):
            await self._slots.acquire()
        try:
            async with asyncio.timeout_at(deadline):
                conn = await self._connection()
            local = None if bound == self.timeout else _milliseconds(bound)
            return await self._call(conn, fn, deadline, local, transaction)
        finally:
            self._slots.release()

    async def _call(
        self,
        conn: Conn,
        fn: Callable[[Conn], Awaitable[T]],
        deadline: float,
        statement_timeout: str | None,
        transaction: bool = True,
    ) -> T:
        """Run ``fn`` on ``conn`` until ``deadline``; past it, cut the connection off.

        Not ``asyncio.timeout`` around psycopg: cancelled mid-query, psycopg sends a
        cancel request over a new connection and waits for it, up to 10 s, to the very
        server that hangs.
        """

        async def transact() -> T:
            if not transaction:
                return await fn(conn)
            async with conn.transaction():
                if statement_timeout is not None:
                    await conn.execute(
                        "SELECT set_config('statement_timeout', %s, true),"
                        " set_config('lock_timeout', %s, true),"
                        " set_config('idle_in_transaction_session_timeout', %s, true)",
                        (statement_timeout,) * 3,
                    )
                return await fn(conn)

        loop = asyncio.get_running_loop()
        task = asyncio.create_task(transact())
        try:
            done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
        except asyncio.CancelledError:
            await self._abandon(conn, task)
            raise
        if not done:
            await self._abandon(conn, task)
            raise TimeoutError
        try:
            result = task.result()
        except BaseException:
            await self._discard(conn)
            raise
        self._idle.append(conn)
        return result

    async def _abandon(self, conn: Conn, task: asyncio.Task[Any]) -> None:
        """Cut ``conn`` off under a running ``task`` and let the task end on its own."""
        _sever(conn)
        done, _ = await asyncio.wait({task}, timeout=_SEVER_GRACE)
        if not done:  # still stuck: cancel it, never wait for it
            task.cancel()
            self._stray.add(task)
            task.add_done_callback(self._stray.discard)
        elif not task.cancelled():
            task.exception()  # retrieved: it is the hang's consequence, reported as such
        await self._discard(conn)

    async def _connection(self) -> Conn:
        while self._idle:
            conn = self._idle.pop()
            if _looks_alive(conn):
                return conn
            await self._discard(conn)
        return await self._connect()

    async def _connect(self) -> Conn:
        """A new connection (bounded by the caller's deadline, and by libpq's own
        connect_timeout in case it is not)."""
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "target_session_attrs": "read-write",
            "application_name": f"breakglass/{self.config.node}",
            "connect_timeout": max(2, math.ceil(self.timeout)),
        }
        if self.config.password_file is not None:
            kwargs["passfile"] = str(self.config.password_file)
        conn = await psycopg.AsyncConnection.connect(self.config.postgres, **kwargs)
        try:
            # The server's own bounds too: a statement or a lock wait that outlives the
            # call is stopped there, not left running after the node gave up.
            ms = _milliseconds(self.timeout)
            await conn.execute(
                "SELECT set_config('statement_timeout', %s, false),"
                " set_config('lock_timeout', %s, false),"
                " set_config('idle_in_transaction_session_timeout', %s, false)",
                (ms, ms, ms),
            )
        except BaseException:
            await self._discard(conn)
            raise
        return conn

    async def _discard(self, conn: Conn) -> None:
        """Close ``conn`` (a hung one was severed first: closing never waits on it)."""
        with contextlib.suppress(Exception):
            await conn.close()

    def _failed(self, detail: str) -> None:
        self._failures += 1
        self._last_error = detail
        if self._down_since is None:
            self._down_since = self._clock()
        if self._failures >= BREAKER_FAILURES and not self._open_breaker:
            self._open_breaker = True
            log.warning(
                "fleet ledger %s unreachable %d times in a row (%s): calls stopped, probing"
                " every %gs",
                self._description,
                self._failures,
                detail,
                PROBE_INTERVAL,
            )
            idle, self._idle = self._idle, []
            for conn in idle:
                _sever(conn)
                with contextlib.suppress(Exception):
                    conn.pgconn.finish()
            if not self._closed:
                self._probe = asyncio.get_running_loop().create_task(self._probing())

    def _answered(self) -> None:
        if self._open_breaker:
            log.info("fleet ledger %s answers again: calls resumed", self._description)
        self._failures = 0
        self._open_breaker = False
        self._down_since = None
        self._last_ok = self._clock()

    async def _probing(self) -> None:
        """While the breaker is open: one bounded connect + ``SELECT 1`` per interval."""
        while self._open_breaker and not self._closed:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                await self._bounded(_select_one, self.timeout)
            except Exception as exc:  # whatever it is, the probe must live on
                self._last_error = _detail(exc)
                continue
            self._answered()
        self._probe = None


def _milliseconds(seconds: float) -> str:
    return str(max(1, int(seconds * 1000)))


async def _select_one(conn: Conn) -> None:
    await conn.execute("SELECT 1")
