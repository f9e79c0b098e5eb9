"""Events written by earlier code read through the catalogue, byte for byte.

``data/events_<code>.jsonl`` hold events exactly as the proxy itself stored them (type,
session, channel, the data column's text) while the test suite of that code ran, one of
each shape (same keys, same JSON types):

- ``events_6414827.jsonl``: the first release (its store schema is ``store_v0.sql``);
- ``events_0f4e98b.jsonl``: the code just before the catalogue, i.e. today's encoding;
- ``events_beed949.jsonl``: main when the catalogue was rebased onto it (issues 15 and
  16: failure summaries, slot floods, refusal counts, bounded event data).

They were captured by hooking ``chain.link`` (every append goes through it) while each
release's integration tests ran, skipping appends made from a test's own frames; what a
test's helper still wrote that way (``care_test_*`` padding, a ``cred_issued`` with
``{}``) was removed by hand, so only the proxy's and the CLI's own emitters are in them.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from proxy.core import chain, events
from proxy.core.chaincheck import ChainChecker
from proxy.store.base import NewEvent
from proxy.store.projection import apply_event
from proxy.store.sqlite import SQLiteStore

DATA = Path(__file__).parent / "data"
FIRST_RELEASE = "6414827"
TODAY = "0f4e98b"
REBASED = "beed949"
T0 = 1_700_000_000.0

Recorded = tuple[str, str | None, int | None, str]


def recorded(code: str) -> list[Recorded]:
    lines = (DATA / f"events_{code}.jsonl").read_text().splitlines()
    out: list[Recorded] = []
    for line in lines:
        type_, sid, ch, data_json = json.loads(line)
        out.append((type_, sid, ch, data_json))
    return out


@pytest.mark.parametrize("code", [FIRST_RELEASE, TODAY, REBASED])
def test_every_recorded_event_decodes_and_encodes_to_its_stored_bytes(code: str) -> None:
    rows = recorded(code)
    assert len(rows) >= 20
    for type_, _sid, _ch, data_json in rows:
        ev = events.decode(type_, json.loads(data_json))
        assert type_ == ev.TYPE
        assert chain.canonical(ev.data()) == data_json, type_


def test_todays_recording_covers_the_proxys_common_events() -> None:
    seen = {r[0] for r in recorded(TODAY)}
    assert {
        "session_start",
        "session_end",
        "channel_start",
        "channel_end",
        "command",
        "file_open",
        "file_close",
        "login_failed",
        "cred_issued",
        "cred_used",
        "alert",
        "checkpoint",
    } <= seen


def _write_chain(db: sqlite3.Connection, rows: list[Recorded]) -> None:
    """Hash-chain the recorded events into ``db`` as the store writes them."""
    prev = chain.GENESIS
    for seq, (type_, sid, ch, data_json) in enumerate(rows, 1):
        t = T0 + seq
        digest = chain.link(prev, seq, t, type_, sid, ch, data_json)
        db.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, t, type_, sid, ch, data_json, prev, digest),
        )
        for sql, params in apply_event(NewEvent(type_, t, sid, ch, json.loads(data_json))):
            db.execute(sql, params)
        prev = digest


def _read_back(path: Path, rows: list[Recorded]) -> None:
    """Open the store (migrating it), and read every event through the readers that
    decode it: verify's chain check, the SQL projection's rebuild, the typed events."""

    async def go() -> None:
        store = await SQLiteStore.open(path)
        try:
            checker = ChainChecker()
            for row in await store.chain_rows(0, len(rows) + 10):
                checker.feed(row)
            assert checker.count == len(rows)
            bad = [p for p in checker.problems if p.kind in ("event_malformed", "event_changed")]
            assert bad == []
            # One of each shape, not whole histories: a code's later events without its
            # issue differ from the credential rows; no event may fail to replay.
            differences = await store.projection_differences()
            assert [d for d in differences if "cannot be replayed" in d] == []
            stored = await store.events_between(set(events.CATALOGUE), None, None)
            assert len(stored) == len(rows)
            for e in stored:
                assert chain.canonical(e.typed().data()) == chain.canonical(e.data)
        finally:
            await store.close()

    asyncio.run(go())


def test_a_store_made_by_the_first_release_reads_through_the_catalogue(tmp_path: Path) -> None:
    rows = recorded(FIRST_RELEASE)
    path = tmp_path / "audit.db"
    db = sqlite3.connect(path)
    db.executescript((DATA / "store_v0.sql").read_text())
    _write_chain(db, rows)
    db.commit()
    db.close()
    _read_back(path, rows)


@pytest.mark.parametrize("code", [TODAY, REBASED])
def test_a_store_made_by_todays_code_reads_through_the_catalogue(tmp_path: Path, code: str) -> None:
    rows = recorded(code)
    path = tmp_path / "audit.db"

    async def create() -> None:
        await (await SQLiteStore.open(path)).close()

    asyncio.run(create())
    db = sqlite3.connect(path)
    _write_chain(db, rows)
    db.commit()
    db.close()
    _read_back(path, rows)
