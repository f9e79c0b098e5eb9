"""``breakglass events``: every audit event, in order, one line each, for a person or
a SIEM's shipper.

Owns the reading loop: pages of events after a cursor (``--after``; ``--cursor-file``
keeps it between runs), optionally within ``--since``/``--until``, and with ``--follow``
new events as they are committed (the store is polled every ``POLL`` seconds). Each
page is written and flushed whole before the cursor moves, so a reader restarted with
the last cursor it printed (or the cursor file) loses and repeats nothing. SIGTERM and
SIGINT end it between pages. ``--json`` prints proxy.audit.feed's JSON lines; without
it a readable line with every untrusted string escaped.

With a ``fleet:`` section (and without ``--local``) it reads every node's events from
the fleet's ledger, and the cursor is the fleet's (``NODE:SEQ,...``, one position per
node; ``proxy.core.cursor.FleetCursor``). An unreachable ledger is an error, never a
reason to read this node's journal instead.

Listed in ``COMMANDS`` (proxy.cli.registry).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar

from proxy.audit.feed import event_line, event_text, fleet_event_line, fleet_event_text
from proxy.cli.registry import Command, Group, when
from proxy.cli.source import LedgerSource, LocalSource, Source, local_argument, with_source
from proxy.config import Config
from proxy.core.cursor import Cursor, FleetCursor
from proxy.store.base import FeedStore

if TYPE_CHECKING:
    from proxy.fleet.reads import LedgerReads

POLL = 0.2  # seconds between looks at the store with --follow: "within a second"
PAGE = 500


def _events_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=when, help="e.g. 7d (ago) or 2026-01-31")
    p.add_argument("--until", type=when, help="e.g. 1d (ago) or 2026-02-01T12:00Z")
    p.add_argument("--after", metavar="CURSOR", help="only events after this cursor")
    p.add_argument(
        "--cursor-file",
        type=Path,
        metavar="FILE",
        help="start after the cursor kept in FILE (unless --after) and keep the last one there",
    )
    p.add_argument("--follow", action="store_true", help="then print new events as committed")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    local_argument(p)


C = TypeVar("C", Cursor, FleetCursor)


def read_cursor_file(path: Path, kind: type[C]) -> C:
    try:
        return kind.parse(path.read_text())
    except FileNotFoundError:
        return kind()


def write_cursor_file(path: Path, cursor: Cursor | FleetCursor) -> None:
    """Atomically (a crash leaves the old cursor or the new), 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{cursor}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


async def stream(
    store: FeedStore,
    out: TextIO,
    cursor: Cursor,
    *,
    since: float | None,
    until: float | None,
    follow: bool,
    as_json: bool,
    stop: asyncio.Event,
    on_page: Callable[[Cursor], None] = lambda _: None,
) -> Cursor:
    """Print the events after ``cursor``; with ``follow``, until ``stop``. Returns the
    cursor of the last event printed."""
    render = event_line if as_json else event_text

    async def page(at: Cursor) -> tuple[int, str, Cursor]:
        rows = await store.event_page(at.seq, PAGE, since, until)
        text = "".join(render(r) + "\n" for r in rows)
        return len(rows), text, at.after(rows[-1].seq) if rows else at

    return await _pump(page, out, cursor, follow=follow, stop=stop, on_page=on_page)


async def stream_fleet(
    reads: LedgerReads,
    out: TextIO,
    cursor: FleetCursor,
    *,
    since: float | None,
    until: float | None,
    follow: bool,
    as_json: bool,
    stop: asyncio.Event,
    on_page: Callable[[FleetCursor], None] = lambda _: None,
) -> FleetCursor:
    """``stream`` over every node's events in the fleet's ledger; each JSON line
    carries the fleet's cursor after it."""

    async def page(at: FleetCursor) -> tuple[int, str, FleetCursor]:
        rows = await reads.fleet_page(at.as_dict(), PAGE, since, until)
        lines = []
        for node, r in rows:
            at = at.after(node, r.seq)
            lines.append(fleet_event_line(node, r, at) if as_json else fleet_event_text(node, r))
        return len(rows), "".join(line + "\n" for line in lines), at

    return await _pump(page, out, cursor, follow=follow, stop=stop, on_page=on_page)


async def _pump(
    page: Callable[[C], Awaitable[tuple[int, str, C]]],
    out: TextIO,
    cursor: C,
    *,
    follow: bool,
    stop: asyncio.Event,
    on_page: Callable[[C], None],
) -> C:
    """Write page after page, each whole and flushed before the cursor moves."""
    while not stop.is_set():
        count, text, after = await page(cursor)
        if count:
            out.write(text)
            out.flush()
            cursor = after
            on_page(cursor)
        if count == PAGE:
            continue
        if not follow:
            break
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL):
                await stop.wait()
    return cursor


def _start(args: argparse.Namespace, kind: type[C]) -> C:
    """Where reading starts: ``--after``, else the cursor file, else the beginning
    (ValueError or OSError saying what is wrong)."""
    if args.after is not None:
        return kind.parse(args.after)
    return read_cursor_file(args.cursor_file, kind) if args.cursor_file else kind()


async def _run(args: argparse.Namespace, config: Config) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    keep = args.cursor_file

    def on_page(c: Cursor | FleetCursor) -> None:
        if keep:
            write_cursor_file(keep, c)

    async def read(src: Source) -> None:
        if isinstance(src, LedgerSource):
            await stream_fleet(
                src.ledger_reads,
                sys.stdout,
                _start(args, FleetCursor),
                since=args.since,
                until=args.until,
                follow=args.follow,
                as_json=args.json,
                stop=stop,
                on_page=on_page,
            )
            return
        assert isinstance(src, LocalSource)
        await stream(
            src.store,
            sys.stdout,
            _start(args, Cursor),
            since=args.since,
            until=args.until,
            follow=args.follow,
            as_json=args.json,
            stop=stop,
            on_page=on_page,
        )

    # Read-only, like every auditor command: following the trail never creates it.
    await with_source(config, args.local, read)
    return 0


def cmd_events(args: argparse.Namespace, config: Config) -> int:
    if args.follow and args.until is not None:
        print("breakglass: error: --until cannot be used with --follow", file=sys.stderr)
        return 2
    try:
        if config.fleet is not None and not args.local:
            _start(args, FleetCursor)
        else:
            _start(args, Cursor)
    except (OSError, ValueError) as exc:
        where = "--after" if args.after is not None else f"the cursor file {args.cursor_file}"
        print(f"breakglass: {where}: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, config))
    except BrokenPipeError:
        # The reader went away (a shipper restarting): what it took is what it got.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        print(f"breakglass: events: {exc}", file=sys.stderr)
        return 1


COMMANDS: tuple[Group | Command, ...] = (
    Command(
        path=("events",),
        help="every audit event, one line each",
        arguments=_events_arguments,
        run=cmd_events,
    ),
)
