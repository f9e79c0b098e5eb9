"""The fleet's reads over a real PostgreSQL ledger holding two nodes' chains: ids name
their node, a bare id is taken when one node has it and refused when two do, every
node's events reach the fleet's feed exactly once in each node's order, and casts come
back byte for byte from their chunks. (The single-node contract is in
test_store_contract.py.)"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from proxy.core import events
from proxy.core.chaincheck import ChainRow
from proxy.core.cursor import FleetCursor
from proxy.fleet.reads import AmbiguousId, LedgerReads, glob_regex
from proxy.store.base import NewEvent, SessionFilter
from tests.integration.ledgerkit import ChainBuilder, open_ledger, ship_cast, ship_rows

T0 = 1_800_000_000.0
SHARED = "0123456789ab"  # a session id both nodes have (ids are random per node)


def start(sid: str, t: float, person: str = "alice") -> NewEvent:
    d = events.SessionStart(
        person, "AAAAAA", "10.0.0.1", "SSH-2.0-t", "db01", "root", "INC", t + 60
    )
    return NewEvent.of(d, t, sid)


def end(sid: str, t: float) -> NewEvent:
    return NewEvent.of(events.SessionEnd("client_closed", None), t, sid)


def node_chain(sessions: list[tuple[str, float]], person: str) -> ChainBuilder:
    b = ChainBuilder()
    for sid, t in sessions:
        b.add(start(sid, t, person))
        b.add(NewEvent.of(events.ChannelStart("session", True, f"{sid}/0.cast"), t + 1, sid, 0))
    for sid, t in sessions:
        b.add(end(sid, t + 30))
    return b


@pytest.fixture
async def fleet(ledger_dsn: str) -> AsyncIterator[tuple[LedgerReads, str]]:
    a = node_chain([("aaaaaaaaaaa1", T0 + 10), (SHARED, T0 + 20)], "alice")
    b = node_chain([("bbbbbbbbbbb1", T0 + 15), (SHARED, T0 + 25)], "bob")
    await ship_rows(ledger_dsn, "bg-eu1", a.rows)
    await ship_rows(ledger_dsn, "bg-us1", b.rows)
    ledger = await open_ledger(ledger_dsn)
    try:
        yield LedgerReads(ledger), ledger_dsn
    finally:
        await ledger.close()


async def test_every_node_s_sessions_are_listed_by_node_and_id(
    fleet: tuple[LedgerReads, str],
) -> None:
    reads, _ = fleet
    assert await reads.nodes() == ["bg-eu1", "bg-us1"]
    listed = await reads.list_sessions(SessionFilter())
    assert [s.id for s in listed] == [
        "bg-eu1/0123456789ab",
        "bg-us1/0123456789ab",
        "bg-eu1/aaaaaaaaaaa1",
        "bg-us1/bbbbbbbbbbb1",
    ]
    assert [c.session_id for s in listed for c in s.channels] == [s.id for s in listed]
    assert [s.id for s in await reads.list_sessions(SessionFilter(person="bob"))] == [
        "bg-us1/0123456789ab",
        "bg-us1/bbbbbbbbbbb1",
    ]
    summary = await reads.period_summary(None, None)
    assert (summary.sessions, dict(summary.end_reasons)) == (4, {"client_closed": 4})
    assert {p: g.sessions for p, g in summary.by_person.items()} == {"alice": 2, "bob": 2}


async def test_a_bare_id_is_taken_when_one_node_has_it(fleet: tuple[LedgerReads, str]) -> None:
    reads, _ = fleet
    row = await reads.get_session("aaaaaaaaaaa1")
    assert row is not None
    assert (row.id, row.person) == ("bg-eu1/aaaaaaaaaaa1", "alice")
    evs = await reads.session_events("bbbbbbbbbbb1")
    assert [(e.session_id, e.type) for e in evs] == [
        ("bg-us1/bbbbbbbbbbb1", "session_start"),
        ("bg-us1/bbbbbbbbbbb1", "channel_start"),
        ("bg-us1/bbbbbbbbbbb1", "session_end"),
    ]
    with pytest.raises(AmbiguousId, match=r"on 2 nodes \(bg-eu1, bg-us1\).*NODE/0123456789ab"):
        await reads.get_session(SHARED)
    named = await reads.get_session(f"bg-us1/{SHARED}")
    assert named is not None
    assert named.person == "bob"
    assert await reads.get_session("bg-xx1/aaaaaaaaaaa1") is None
    assert await reads.get_session("zzzzzzzzzzzz") is None


async def test_the_fleet_feed_gives_each_event_once_in_each_node_s_order(
    fleet: tuple[LedgerReads, str],
) -> None:
    reads, dsn = fleet
    seen: list[tuple[str, int]] = []
    cursor = FleetCursor()
    for _ in range(20):
        page = await reads.fleet_page(cursor.as_dict(), 3)
        if not page:
            break
        for node, row in page:
            seen.append((node, row.seq))
            cursor = cursor.after(node, row.seq)
    assert sorted(seen) == [(n, s) for n in ("bg-eu1", "bg-us1") for s in range(1, 7)]
    for node in ("bg-eu1", "bg-us1"):
        assert [s for n, s in seen if n == node] == list(range(1, 7))
    assert str(cursor) == "bg-eu1:6,bg-us1:6"
    # A node that ships late (its events older than the others') is not skipped.
    late = ChainBuilder()
    late.add(start("ccccccccccc1", T0 - 1000))
    await ship_rows(dsn, "bg-ap1", late.rows)
    (only,) = await reads.fleet_page(cursor.as_dict(), 10)
    assert (only[0], only[1].seq, only[1].session_id) == ("bg-ap1", 1, "ccccccccccc1")
    # Rows come back exactly as hashed.
    assert only[1] == late.rows[0]


async def test_a_cast_comes_back_byte_for_byte_in_offset_order(
    fleet: tuple[LedgerReads, str],
) -> None:
    reads, dsn = fleet
    data = bytes(range(256)) * 41 + b"tail"
    await ship_cast(dsn, "bg-eu1", "aaaaaaaaaaa1", 0, data, chunk=100)
    await ship_cast(dsn, "bg-us1", SHARED, 0, b"other node", chunk=4)
    got = b"".join([c async for c in reads.cast_chunks("bg-eu1/aaaaaaaaaaa1", 0)])
    assert got == data
    assert b"".join([c async for c in reads.cast_chunks(f"bg-us1/{SHARED}", 0)]) == b"other node"
    assert [c async for c in reads.cast_chunks(f"bg-eu1/{SHARED}", 0)] == []
    row = await reads.get_session("bg-eu1/aaaaaaaaaaa1")
    other = await reads.get_session(f"bg-eu1/{SHARED}")
    assert row is not None
    assert other is not None
    digests = await reads.cast_digests([*row.channels, *other.channels])
    assert digests == {("bg-eu1/aaaaaaaaaaa1", 0): (hashlib.sha256(data).hexdigest(), len(data))}


async def test_a_hostile_node_name_reaches_no_terminal_raw(ledger_dsn: str) -> None:
    b = ChainBuilder()
    b.add(start("aaaaaaaaaaa1", T0))
    await ship_rows(ledger_dsn, "evil\x1b]0;owned\x07", b.rows)
    ledger = await open_ledger(ledger_dsn)
    try:
        (row,) = await LedgerReads(ledger).list_sessions(SessionFilter())
    finally:
        await ledger.close()
    assert row.id == "evil\\x1b]0;owned\\x07/aaaaaaaaaaa1"


@pytest.mark.parametrize(
    ("glob", "matches", "misses"),
    [
        ("systemctl *", ["systemctl restart db", "systemctl "], ["sudo systemctl x", "Systemctl"]),
        ("/etc/h?sts", ["/etc/hosts"], ["/etc/hoosts", "/etc/hosts2"]),
        ("[rs]*", ["rm", "sudo"], ["tm"]),
        ("[^r]*", ["sudo"], ["rm"]),
        ("a.b+c(d)", ["a.b+c(d)"], ["aXb+c(d)", "a.bbc(d)"]),
        ("*\\", ["x\\"], ["x\\y"]),
        ("[]x]", ["]", "x"], ["y"]),
        ("[", [], ["[", "x"]),
        ("a[b", [], ["a[b"]),
        ("*\n*", ["a\nb"], ["ab"]),
    ],
)
async def test_globs_match_as_sqlite_globs_do(
    ledger_dsn: str, glob: str, matches: list[str], misses: list[str]
) -> None:
    import sqlite3

    import psycopg

    lite = sqlite3.connect(":memory:")
    async with await psycopg.AsyncConnection.connect(ledger_dsn) as conn:
        for text in [*matches, *misses]:
            want = bool(lite.execute("SELECT ? GLOB ?", (text, glob)).fetchone()[0])
            cur = await conn.execute("SELECT %s ~ %s", (text, glob_regex(glob)))
            row = await cur.fetchone()
            assert row is not None
            assert (row[0], want) == (text in matches, text in matches), (glob, text)


def test_chain_rows_stay_as_stored() -> None:
    # The feed's rows are ChainRows: bare session ids, the stored data text.
    b = ChainBuilder()
    row = b.add(start("aaaaaaaaaaa1", T0))
    assert isinstance(row, ChainRow)
    assert row.session_id == "aaaaaaaaaaa1"


async def test_pages_of_one_session_give_the_same_listing(
    fleet: tuple[LedgerReads, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reads, dsn = fleet
    hostile = ChainBuilder()
    hostile.add(start("aaaaaaaaaaa1", T0 + 99))
    await ship_rows(dsn, "evil\x1b[2J", hostile.rows)
    whole = await reads.list_sessions(SessionFilter())
    assert len(whole) == 5
    monkeypatch.setattr("proxy.fleet.reads.PAGE", 1)
    assert await reads.list_sessions(SessionFilter()) == whole
    assert await reads.list_sessions(SessionFilter(limit=3)) == whole[:3]
    paged = [b async for b in reads.period_sessions(None, None, {"session_end"}, batch=1)]
    assert [len(b) for b in paged] == [1] * 5
    assert [s for b in paged for s, _ in b] == whole
    ends = [[e[2] for e in evs] for b in paged for _, evs in b]
    assert ends == [["session_end"] if s.ended_at else [] for s in whole]
    assert whole[3].id == "evil\\x1b[2J/aaaaaaaaaaa1"  # shown escaped, paged as stored
