"""``Ledger`` against a real PostgreSQL: every call bounded, every failure "unreachable",
the breaker answering without the network, and recovery on its own."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from proxy.config.model import FleetConfig
from proxy.fleet import ledger as ledger_mod
from proxy.fleet.ledger import BREAKER_FAILURES, Ledger, LedgerUnreachable
from tests.pgserver import HangRelay, PgServer
from tests.waiting import eventually_async

TIMEOUT = 0.5  # seconds: the bound under test


def _config(dsn: str, timeout: float = TIMEOUT) -> FleetConfig:
    return FleetConfig(
        node="bg-a", postgres=dsn, peers={"bg-a": "ed25519 " + "0" * 64}, timeout=timeout
    )


async def _one(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT 1")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def relay(pg_server: PgServer) -> Iterator[HangRelay]:
    with HangRelay(pg_server.port) as r:
        yield r


def _via(relay: HangRelay, ledger_dsn: str) -> str:
    host_db = ledger_dsn.rsplit("@", 1)[1]
    db = host_db.split("/", 1)[1]
    return f"postgresql://postgres@127.0.0.1:{relay.port}/{db}"


async def test_a_hung_ledger_is_unreachable_within_the_bound_then_the_breaker_answers(
    ledger_dsn: str, relay: HangRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_mod, "PROBE_INTERVAL", 0.2)
    led = Ledger(_config(_via(relay, ledger_dsn)))
    await led.open()
    try:
        assert await led.run(_one, what="probe") == 1
        assert led.state.up
        connections = relay.connections
        relay.hang()
        for i in range(BREAKER_FAILURES):
            started = time.monotonic()
            with pytest.raises(LedgerUnreachable) as caught:
                await led.run(_one, what="ship")
            took = time.monotonic() - started
            # The bound plus the severed call's grace, with a 10x margin.
            assert took < 10 * TIMEOUT + ledger_mod._SEVER_GRACE, (i, took)
            assert "127.0.0.1" in caught.value.message
            assert "postgres@" not in caught.value.message
        state = led.state
        assert not state.up
        assert state.breaker_open
        assert state.last_error
        # Open breaker: answered at once, and nothing is dialled.
        probes_before = relay.connections
        started = time.monotonic()
        for _ in range(20):
            with pytest.raises(LedgerUnreachable, match="not tried"):
                await led.run(_one, what="ship")
        assert time.monotonic() - started < TIMEOUT
        # Only the background probe dials (one connection per interval at most).
        assert relay.connections - probes_before <= 3
        assert connections >= 1
        relay.resume()
        await eventually_async(
            lambda: led.state.up, within=10 * (TIMEOUT + 0.2), what="the probe to close the breaker"
        )
        assert await led.run(_one, what="ship") == 1
    finally:
        await led.close()


async def test_a_dropped_reply_is_a_timeout_and_the_connection_is_not_reused(
    ledger_dsn: str, relay: HangRelay
) -> None:
    led = Ledger(_config(_via(relay, ledger_dsn)))
    try:
        assert await led.run(_one, what="probe") == 1
        relay.drop_replies()
        started = time.monotonic()
        # Our bound, or the server's (idle in transaction) ending the session first.
        with pytest.raises(LedgerUnreachable, match=r"within the timeout|closed the connection"):
            await led.run(_one, what="ship")
        assert time.monotonic() - started < 10 * TIMEOUT
        relay.resume()
        before = relay.connections
        assert await led.run(_one, what="ship") == 1
        assert relay.connections == before + 1  # a new connection, not the poisoned one
    finally:
        await led.close()


async def test_a_read_only_server_is_unreachable(pg_server: PgServer, ledger_dsn: str) -> None:
    db = ledger_dsn.rsplit("/", 1)[1]
    led = Ledger(_config(ledger_dsn))
    try:
        assert await led.run(_one, what="probe") == 1
        # What a standby or a failed-over old primary answers: read-only sessions.
        pg_server.psql(f'ALTER DATABASE "{db}" SET default_transaction_read_only = on')
        await led.close()
        led = Ledger(_config(ledger_dsn))
        with pytest.raises(LedgerUnreachable, match=r"read-only|read only"):
            await led.run(_one, what="ship")
        assert not led.state.up
    finally:
        await led.close()
        pg_server.psql(f'ALTER DATABASE "{db}" SET default_transaction_read_only = off')


async def test_a_stopped_server_is_unreachable_and_comes_back() -> None:
    server = PgServer()
    try:
        server.start()
        dsn = server.create_db("ledger")
        led = Ledger(_config(dsn))
        assert await led.run(_one, what="probe") == 1
        server.stop("immediate")
        started = time.monotonic()
        with pytest.raises(LedgerUnreachable) as caught:
            await led.run(_one, what="ship")
        assert time.monotonic() - started < 10 * TIMEOUT
        assert f"postgresql://127.0.0.1:{server.port}/ledger" in caught.value.message
        server.start()
        # The idle connection the crash killed is dropped, not tried: the next call works.
        assert await led.run(_one, what="ship") == 1
        assert led.state.up
        await led.close()
    finally:
        server.close()


async def test_refused_connection_and_unknown_table_are_unreachable(
    pg_server: PgServer, ledger_dsn: str
) -> None:
    led = Ledger(_config(pg_server.dsn("ledger", port=1)))
    try:
        with pytest.raises(LedgerUnreachable, match=re.escape("postgresql://127.0.0.1:1/ledger")):
            await led.run(_one, what="ship")
    finally:
        await led.close()

    async def missing(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute("SELECT * FROM no_such_table")

    led = Ledger(_config(ledger_dsn))
    try:
        with pytest.raises(LedgerUnreachable) as caught:
            await led.run(missing, what="read")
        assert caught.value.sqlstate == "42P01"
    finally:
        await led.close()


async def test_an_exhausted_pool_is_unreachable(ledger_dsn: str) -> None:
    led = Ledger(_config(ledger_dsn), pool_size=1)
    release = asyncio.Event()

    async def hold(conn: psycopg.AsyncConnection[Any]) -> None:
        await release.wait()

    try:
        holder = asyncio.create_task(led.run(hold, what="hold"))
        await asyncio.sleep(0)
        with pytest.raises(LedgerUnreachable, match="no connection free"):
            await led.run(_one, what="ship")
        release.set()
        with pytest.raises(LedgerUnreachable):
            await holder  # it overran the bound too
    finally:
        await led.close()


async def test_a_call_may_ask_for_a_longer_bound_and_the_server_follows_it(
    ledger_dsn: str,
) -> None:
    async def slow(conn: psycopg.AsyncConnection[Any]) -> str:
        await conn.execute("SELECT pg_sleep(%s)", (TIMEOUT * 2,))
        cur = await conn.execute("SHOW statement_timeout")
        row = await cur.fetchone()
        assert row is not None
        return str(row[0])

    led = Ledger(_config(ledger_dsn))
    try:
        with pytest.raises(LedgerUnreachable):
            await led.run(slow, what="read")
        assert await led.run(slow, what="read", bound=TIMEOUT * 10) == "5s"
        # The longer bound was this transaction's only.
        assert await led.run(_show_statement_timeout, what="read") == "500ms"
    finally:
        await led.close()


async def _show_statement_timeout(conn: psycopg.AsyncConnection[Any]) -> str:
    cur = await conn.execute("SHOW statement_timeout")
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])
