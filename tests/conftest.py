"""Fixtures every test folder may use: a real PostgreSQL server for the fleet ledger.

``pg_server`` is one cluster for the whole run, started on first use (tests that do
not ask for it never start it); ``ledger_dsn`` is a fresh database migrated to the
current ledger schema, one per test, dropped after it. A machine without PostgreSQL's
server binaries fails these tests with the package to install, never skips them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest

from tests.pgserver import PgMissing, PgServer

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        server = PgServer()
    except PgMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.close()


async def _migrate(dsn: str) -> None:
    # Imported here: a venv not yet bootstrapped with psycopg still runs every other test.
    import psycopg

    from proxy.fleet import schema

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await schema.migrate(conn)


@pytest.fixture
def ledger_dsn(pg_server: PgServer) -> Iterator[str]:
    """A new database with the ledger schema; the superuser's DSN to it."""
    name = f"ledger_{next(_databases)}"
    dsn = pg_server.create_db(name)
    asyncio.run(_migrate(dsn))
    yield dsn
    pg_server.drop_db(name)
