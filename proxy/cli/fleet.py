"""``breakglass fleet ...``: the commands that act on the fleet's ledger as a whole.

``fleet migrate [--dsn DSN] [--grant ROLE]`` brings the ledger's schema to the version
this breakglass writes (proxy.fleet.schema: expand-only steps, under an advisory lock,
so running it twice or from two hosts at once is safe). It is the only thing that
migrates the ledger: a node never does on its own start. It connects as the schema's
owner: ``fleet.postgres`` (with ``fleet.password_file``) unless ``--dsn`` is given;
``--grant ROLE`` then gives the nodes' role its rights (read everything, append
events, chunks and claims, upsert its status row). psycopg is imported only here, when
such a command runs.

``fleet status`` shows every node as the ledger last heard from it
(``proxy.fleet.status``); ``verify`` without ``--local`` checks every node's journal in
the ledger (``proxy.fleet.verify``, called from ``cmd_verify``). A ledger that cannot be
reached ends either with exit 1 and a message naming it; nothing is read from this
node's journal in its place.

Listed in ``COMMANDS`` (proxy.cli.registry).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from proxy.cli.registry import Command, Group, json_only
from proxy.cli.util import print_json
from proxy.config import Config
from proxy.core.chaincheck import Checkpoint
from proxy.core.errors import BreakglassError, UsageError
from proxy.core.text import escape

if TYPE_CHECKING:
    from proxy.config import FleetConfig
    from proxy.fleet.ledger import Ledger

T = TypeVar("T")

# Migrating may wait for another migrate's lock and then create the schema: far more
# than a node's call, still bounded.
MIGRATE_TIMEOUT = 120.0


def _migrate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dsn",
        metavar="DSN",
        help="connect as the schema's owner with this libpq URI/DSN (no password in it:"
        " use $PGPASSFILE) instead of fleet.postgres",
    )
    p.add_argument(
        "--grant",
        metavar="ROLE",
        help="grant the nodes' role ROLE its rights on the ledger",
    )


def cmd_fleet_migrate(args: argparse.Namespace, config: Config) -> int:
    from proxy.config.fleet import dsn_has_password
    from proxy.fleet.ledger import describe_dsn

    if args.dsn is not None:
        dsn = str(args.dsn)
    elif config.fleet is not None:
        dsn = config.fleet.postgres
    else:
        raise UsageError("the config has no fleet: section; give the ledger with --dsn DSN")
    try:
        has_password = dsn_has_password(dsn)
    except ValueError as exc:
        raise UsageError(f"--dsn: {exc}") from None
    if has_password:
        raise UsageError("--dsn must not contain a password: put it in $PGPASSFILE")
    passfile = None
    if args.dsn is None and config.fleet is not None and config.fleet.password_file:
        passfile = str(config.fleet.password_file)
    where = describe_dsn(dsn)
    migrated = asyncio.run(_migrate(dsn, passfile, args.grant, where))
    if migrated.applied:
        steps = ", ".join(str(v) for v in migrated.applied)
        print(
            f"ledger {where}: schema version {migrated.before} -> {migrated.after}"
            f" (applied step {steps})"
        )
    else:
        print(f"ledger {where}: schema already at version {migrated.after}")
    if args.grant:
        print(f"granted the nodes' rights to role {escape(args.grant)}")
    return 0


async def _migrate(dsn: str, passfile: str | None, role: str | None, where: str) -> Any:
    import psycopg

    from proxy.fleet import schema
    from proxy.fleet.ledger import LedgerUnreachable

    kwargs: dict[str, Any] = {
        "autocommit": True,
        "target_session_attrs": "read-write",
        "application_name": "breakglass/fleet-migrate",
        "connect_timeout": 10,
    }
    if passfile is not None:
        kwargs["passfile"] = passfile
    try:
        async with asyncio.timeout(MIGRATE_TIMEOUT):
            conn = await psycopg.AsyncConnection.connect(dsn, **kwargs)
            async with conn:
                return await schema.migrate(conn, grant_to=role)
    except TimeoutError:
        raise LedgerUnreachable(where, f"no answer within {MIGRATE_TIMEOUT:g}s") from None
    except psycopg.Error as exc:
        # The server's own first line (no password: libpq never echoes it).
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise BreakglassError(f"fleet migrate on {where} failed: {escape(lines[0])}") from None


async def with_ledger(fleet: FleetConfig, fn: Callable[[Ledger], Awaitable[T]]) -> T:
    from proxy.fleet.ledger import Ledger

    ledger = Ledger(fleet)
    await ledger.open()
    try:
        return await fn(ledger)
    finally:
        await ledger.close()


def _unreachable(what: str, message: str, local: str) -> None:
    print(
        f"breakglass: {what}: the fleet's ledger cannot be reached: {message}.{local}",
        file=sys.stderr,
    )


def verify_fleet_command(fleet: FleetConfig, external: Sequence[Checkpoint], as_json: bool) -> int:
    """``verify`` across the fleet: 0 when every node checks out, 1 otherwise."""
    from proxy.fleet.ledger import LedgerUnreachable
    from proxy.fleet.verify import fleet_verify_json, fleet_verify_text, verify_fleet

    try:
        result = asyncio.run(
            with_ledger(
                fleet,
                lambda ledger: verify_fleet(ledger, fleet.peers, time.time(), external=external),
            )
        )
    except LedgerUnreachable as exc:
        _unreachable(
            "verify",
            exc.message,
            " Nothing was checked; `breakglass verify --local` checks this node's own journal",
        )
        print("verify: FAILED")
        return 1
    if as_json:
        print_json(fleet_verify_json(result))
    else:
        print(fleet_verify_text(result))
    return 0 if result.ok else 1


def cmd_fleet_status(args: argparse.Namespace, config: Config) -> int:
    from proxy.fleet.ledger import LedgerUnreachable
    from proxy.fleet.status import fleet_status, status_json, status_text

    fleet = config.fleet
    if fleet is None:
        print("breakglass: fleet status: the configuration has no fleet: section", file=sys.stderr)
        return 1
    try:
        status = asyncio.run(with_ledger(fleet, lambda ledger: fleet_status(ledger, fleet.peers)))
    except LedgerUnreachable as exc:
        _unreachable("fleet status", exc.message, "")
        return 1
    if args.json:
        print_json(status_json(status))
    else:
        print(status_text(status))
    return 0


COMMANDS: tuple[Group | Command, ...] = (
    Group(name="fleet", help="the fleet's shared ledger"),
    Command(
        path=("fleet", "migrate"),
        help="create or upgrade the ledger's schema (the only thing that does)",
        arguments=_migrate_arguments,
        run=cmd_fleet_migrate,
    ),
    Command(
        path=("fleet", "status"),
        help="every node: last heartbeat, what it has not shipped, its clock",
        arguments=json_only,
        run=cmd_fleet_status,
    ),
)
