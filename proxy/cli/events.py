"""``breakglass events``: every audit event, in order, one line each, for a person or
a SIEM's shipper.

Owns the reading loop: pages of events after a cursor (``--after``; ``--cursor-file``
keeps it between runs), optionally within ``--since``/``--until``, and with ``--follow``
new events as they are committed (the store is polled every ``POLL`` seconds). Each
page is written and flushed whole before the cursor moves, so a reader restarted with
the last cursor it printed (or the cursor file) loses and repeats nothing. SIGTERM and
SIGINT end it between pages. ``--json`` prints proxy.audit.feed's JSON lines; without
it a readable line with every untrusted string escaped.

Listed in ``COMMANDS`` (proxy.cli.registry).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from proxy.audit.feed import event_line, event_text
from proxy.cli.registry import Command, Group, when
from proxy.cli.util import READ, open_store
from proxy.config import Config
from proxy.core.cursor import Cursor
from proxy.store.base import FeedStore

POLL = 0.2  # seconds between looks at the store with --follow: "within a second"
PAGE = 500


def _cursor(text: str) -> Cursor:
    try:
        return Cursor.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _events_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=when, help="e.g. 7d (ago) or 2026-01-31")
    p.add_argument("--until", type=when, help="e.g. 1d (ago) or 2026-02-01T12:00Z")
    p.add_argument("--after", type=_cursor, metavar="CURSOR", help="only events after this cursor")
    p.add_argument(
        "--cursor-file",
        type=Path,
        metavar="FILE",
        help="start after the cursor kept in FILE (unless --after) and keep the last one there",
    )
    p.add_argument("--follow", action="store_true", help="then print new events as committed")
    p.add_argument("--json", action="store_true", help="one JSON object per line")


def read_cursor_file(path: Path) -> Cursor:
    try:
        return Cursor.parse(path.read_text())
    except FileNotFoundError:
        return Cursor()


def write_cursor_file(path: Path, cursor: Cursor) -> None:
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
    while not stop.is_set():
        rows = await store.event_page(cursor.seq, PAGE, since, until)
        if rows:
            out.write("".join(render(r) + "\n" for r in rows))
            out.flush()
            cursor = cursor.after(rows[-1].seq)
            on_page(cursor)
        if len(rows) == PAGE:
            continue
        if not follow:
            break
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL):
                await stop.wait()
    return cursor


async def _run(args: argparse.Namespace, config: Config) -> int:
    cursor = args.after
    if cursor is None:
        cursor = read_cursor_file(args.cursor_file) if args.cursor_file else Cursor()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Read-only, like every auditor command: following the trail never creates it.
    store = await open_store(config, READ)
    try:
        keep = args.cursor_file
        await stream(
            store,
            sys.stdout,
            cursor,
            since=args.since,
            until=args.until,
            follow=args.follow,
            as_json=args.json,
            stop=stop,
            on_page=(lambda c: write_cursor_file(keep, c)) if keep else (lambda _: None),
        )
    finally:
        await store.close()
    return 0


def cmd_events(args: argparse.Namespace, config: Config) -> int:
    if args.follow and args.until is not None:
        print("breakglass: error: --until cannot be used with --follow", file=sys.stderr)
        return 2
    if args.cursor_file is not None and args.after is None:
        try:
            read_cursor_file(args.cursor_file)
        except (OSError, ValueError) as exc:
            print(f"breakglass: the cursor file {args.cursor_file}: {exc}", file=sys.stderr)
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
