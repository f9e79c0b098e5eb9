"""Where an auditor command reads: this node's journal (its SQLite store and cast
files) or, with a ``fleet:`` section, the fleet's ledger (every node's events and the
casts they shipped).

Owns the one rule for choosing (``with_source``): the ledger when ``fleet:`` is
configured, unless the command was given ``--local``; never this node's journal because
the ledger failed. An unreachable ledger ends the command (exit 1) with a message that
names the ledger and says how to read the local journal instead.

And what ``show``, ``replay``, ``export`` and ``report`` need besides the reads
(``Source``): the chain a session's events are in, the recordings' hash checks, and a
folder holding a session's casts. From the ledger, the casts are written from their
shipped chunks (in offset order) into a private temporary folder the command owns.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from proxy.audit.verify import (
    RecordingChecks,
    digest_check,
    file_checks,
    resolve_recording,
    with_resolved_paths,
)
from proxy.cli.util import READ, open_store
from proxy.config import Config
from proxy.core.errors import BreakglassError
from proxy.store.base import AuditorReads, ChainReads, ChannelRow, SessionRow, Store

if TYPE_CHECKING:
    from proxy.fleet.reads import LedgerReads

T = TypeVar("T")


def local_argument(parser: argparse.ArgumentParser) -> None:
    """``--local``, for every command that reads the fleet's ledger when there is one."""
    parser.add_argument(
        "--local",
        action="store_true",
        help="read only this node's own journal, not the fleet's ledger",
    )


class Source(Protocol):
    """One place the auditor reads from (this node, or the fleet)."""

    @property
    def reads(self) -> AuditorReads: ...

    def chain_of(self, session_id: str) -> ChainReads:
        """The chain holding this session's events (its node's)."""

    async def checks(
        self, channels: Sequence[tuple[ChannelRow, int | None]]
    ) -> dict[tuple[str, int], str]:
        """The hash check of each channel's recording (``RecordingChecks``)."""

    def shown(self, row: SessionRow) -> SessionRow:
        """``row`` as listings show it (recordings where they are)."""

    async def casts(self, row: SessionRow, folder: Path) -> Path:
        """A folder holding ``row``'s casts where its channels name them: this node's
        recordings folder, or ``folder`` (private, the caller's to remove) with the
        casts written into it."""


class LocalSource:
    """This node's journal: its store and the casts under its recordings folder."""

    def __init__(self, store: Store, recordings: Path) -> None:
        self.store = store
        self.recordings = recordings
        self._files: RecordingChecks = file_checks(recordings)

    @property
    def reads(self) -> AuditorReads:
        return self.store

    def chain_of(self, session_id: str) -> ChainReads:
        return self.store

    async def checks(
        self, channels: Sequence[tuple[ChannelRow, int | None]]
    ) -> dict[tuple[str, int], str]:
        return await self._files(channels)

    def shown(self, row: SessionRow) -> SessionRow:
        return with_resolved_paths(row, self.recordings)

    async def casts(self, row: SessionRow, folder: Path) -> Path:
        return self.recordings


# A shipped cast shorter than its channel end records: the rest is still on its node.
INCOMPLETE = "incomplete"
MISMATCH = "MISMATCH"


class LedgerSource:
    """The fleet's ledger: every node's sessions, chains and shipped casts."""

    def __init__(self, reads: LedgerReads) -> None:
        self.ledger_reads = reads

    @property
    def reads(self) -> AuditorReads:
        return self.ledger_reads

    def chain_of(self, session_id: str) -> ChainReads:
        from proxy.fleet.reads import split_id

        node, _ = split_id(session_id)
        return self.ledger_reads.chain(node or "")

    def shown(self, row: SessionRow) -> SessionRow:
        return row  # a recording is named as its node names it, relative to its folder

    async def checks(
        self, channels: Sequence[tuple[ChannelRow, int | None]]
    ) -> dict[tuple[str, int], str]:
        """Each cast as shipped, hashed by the ledger, against its channel's end."""
        found = await self.ledger_reads.cast_digests([c for c, _ in channels])
        out = {}
        for c, pruned in channels:
            got = found.get((c.session_id, c.n))
            status = digest_check(c, got, f"{c.session_id}/{c.n} in the ledger", pruned)
            if status == MISMATCH and got and c.recording_bytes and got[1] < c.recording_bytes:
                # Shorter than its end says: its node has not shipped all of it (yet).
                status = INCOMPLETE
            out[(c.session_id, c.n)] = status
        return out

    async def casts(self, row: SessionRow, folder: Path) -> Path:
        for c in row.channels:
            await self._write_cast(c, folder)
        return folder

    async def _write_cast(self, c: ChannelRow, folder: Path) -> None:
        """The channel's shipped chunks, in offset order, where its row names the cast
        under ``folder``; no file when nothing was shipped (the cast is missing)."""
        path = resolve_recording(c.recording, folder, c.session_id, c.n)
        if path is None:
            return
        out: int | None = None
        try:
            async for chunk in self.ledger_reads.cast_chunks(c.session_id, c.n):
                if out is None:
                    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(out, chunk)
        finally:
            if out is not None:
                os.close(out)


READ_BOUND = 30.0  # seconds, at least, for each of an auditor command's ledger calls


class LedgerReadError(BreakglassError):
    reason = "ledger_unreachable"


async def with_source(config: Config, local: bool, fn: Callable[[Source], Awaitable[T]]) -> T:
    """Run ``fn`` on the fleet's ledger (``fleet:`` configured and not ``local``) or on
    this node's journal, read-only. A ledger that cannot be read is an error naming it;
    the journal is never read in its place."""
    if config.fleet is None or local:
        store = await open_store(config, READ)
        try:
            return await fn(LocalSource(store, config.storage.recordings))
        finally:
            await store.close()
    from proxy.fleet.ledger import Ledger, LedgerUnreachable
    from proxy.fleet.reads import LedgerReads

    # An auditor's read may sum up a year of the fleet: each call gets at least
    # READ_BOUND (the nodes' own calls keep fleet.timeout), and is still bounded.
    ledger = Ledger(replace(config.fleet, timeout=max(config.fleet.timeout, READ_BOUND)))
    await ledger.open()
    try:
        return await fn(LedgerSource(LedgerReads(ledger)))
    except LedgerUnreachable as exc:
        raise LedgerReadError(
            f"{exc.message}. Nothing was read from this node's journal in its place;"
            " add --local to read only this node's own journal"
        ) from exc
    finally:
        await ledger.close()
