"""One contract per store Protocol (``proxy.store.base``), run against every
implementation: SQLite (on a real file) and the in-memory store. Another store joins by
adding one entry to ``IMPLEMENTATIONS`` (and one to ``ROW_EDITS``, the edit behind the
log's back that ``projection_differences`` must find).

The auditor's reads (``SessionReads``, ``ChainReads``, ``CredentialReads``, the event
page, ``ReportReads``) also run against the fleet's ledger (``proxy.fleet.reads``, on a
real PostgreSQL): the same writes go to a node's SQLite store, its chain is copied into
the ledger as node ``n1``'s events, and the ledger must answer as the store does
(``tests/integration/ledgerkit.LedgerMirror``; ids come back as ``n1/...``)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import pytest

from proxy.core import chain, events
from proxy.core.chaincheck import ChainRow
from proxy.core.credentials import Credential, UseDecision
from proxy.core.errors import StoreError
from proxy.store.base import (
    AlertOutboxStore,
    AuditStore,
    ChainReads,
    CredentialAdmin,
    CredentialReads,
    EventLog,
    FeedStore,
    GroupTotals,
    LoginStore,
    NewAlert,
    NewEvent,
    OverrideReads,
    PeriodSummary,
    ReportReads,
    SessionFilter,
    SessionReads,
    Store,
)
from proxy.store.factory import CREATE, open_store_at
from proxy.store.memory import MemoryStore
from tests.integration.ledgerkit import LedgerMirror, open_ledger

T0 = 1_800_000_000.0


class ContractStore(
    LoginStore,
    AlertOutboxStore,
    OverrideReads,
    FeedStore,
    AuditStore,
    CredentialAdmin,
    Protocol,
):
    """What every implementation under contract here offers."""

    async def close(self) -> None: ...


async def _sqlite(tmp: Path) -> ContractStore:
    return await open_store_at(tmp / "audit.db", CREATE)


async def _memory(tmp: Path) -> ContractStore:
    whole: Store = MemoryStore()  # mypy checks that it is the whole Store
    return whole


IMPLEMENTATIONS: dict[str, Callable[[Path], Awaitable[ContractStore]]] = {
    "sqlite": _sqlite,
    "memory": _memory,
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ContractStore]:
    s = await IMPLEMENTATIONS[request.param](tmp_path)
    try:
        yield s
    finally:
        await s.close()


class ReadContract(EventLog, SessionReads, ChainReads, CredentialReads, ReportReads, Protocol):
    """What the read contract writes (as a node does) and reads back."""

    async def append_with_alerts(
        self, events: Sequence[NewEvent], alerts: Sequence[NewAlert]
    ) -> None: ...

    async def issue_credential(self, cred: Credential, code_hash: str, event: NewEvent) -> None: ...

    async def start_session(
        self,
        cred_id: str,
        person: str,
        target: str,
        now: float,
        start: NewEvent,
        alerts: Sequence[NewAlert] = (),
    ) -> UseDecision: ...

    async def revoke_credential(
        self, cred_id: str, reason: str, actor: str, now: float
    ) -> Credential | None: ...

    async def event_page(
        self, after_seq: int, limit: int, since: float | None = None, until: float | None = None
    ) -> list[ChainRow]: ...

    async def close(self) -> None: ...


async def _ledger(tmp: Path, dsn: str | None) -> ReadContract:
    assert dsn is not None
    local = await open_store_at(tmp / "audit.db", CREATE)
    return LedgerMirror(local, await open_ledger(dsn), dsn, "n1")


READERS: dict[str, Callable[[Path, str | None], Awaitable[ReadContract]]] = {
    "sqlite": lambda tmp, _: _sqlite(tmp),
    "memory": lambda tmp, _: _memory(tmp),
    "ledger": _ledger,
}


@pytest.fixture
def ledger_if_asked(request: pytest.FixtureRequest) -> str | None:
    """A fresh ledger's DSN for a test run against the ledger (set up outside the
    event loop, as the ledger fixture must be), else None: no PostgreSQL needed."""
    if request.node.callspec.params.get("reads") != "ledger":
        return None
    dsn: str = request.getfixturevalue("ledger_dsn")
    return dsn


@pytest.fixture(params=sorted(READERS))
async def reads(
    request: pytest.FixtureRequest, tmp_path: Path, ledger_if_asked: str | None
) -> AsyncIterator[ReadContract]:
    """Each store, and the ledger holding a node's copy of it."""
    s = await READERS[request.param](tmp_path, ledger_if_asked)
    try:
        yield s
    finally:
        await s.close()


def cred(cred_id: str = "AAAAAA", **kw: object) -> Credential:
    base: dict[str, object] = dict(
        cred_id=cred_id,
        person="alice",
        issued_by="root",
        issued_at=T0,
        valid_until=T0 + 86400,
        window=3600.0,
        max_uses=0,
        uses=0,
        targets=("*",),
        max_session=None,
        activated_at=None,
        revoked_at=None,
        revoke_reason=None,
    )
    base.update(kw)
    return Credential(**base)  # type: ignore[arg-type]


def issued(cred_id: str = "AAAAAA", t: float = T0) -> NewEvent:
    return NewEvent.of(events.CredIssued(person="alice", credential_id=cred_id), t)


def start(sid: str, t: float = T0 + 10, person: str = "alice", target: str = "db01") -> NewEvent:
    d = events.SessionStart(
        person, "AAAAAA", "127.0.0.1", "SSH-2.0-t", target, "root", "INC-1", t + 60
    )
    return NewEvent.of(d, t, sid)


def end(sid: str, t: float, reason: str = "client_closed") -> NewEvent:
    return NewEvent.of(events.SessionEnd(reason, "bye"), t, sid)


def alert(
    alert_id: str,
    sid: str | None,
    *,
    flag: bool = False,
    t: float = T0 + 11,
    subject: str = "alice",
) -> NewAlert:
    payload = events.Alert(
        alert_id,
        1,
        "rule_x",
        "2027-01-15T08:00:00Z",
        sid,
        "alice",
        None,
        "db01",
        None,
        None,
        None,
        "why",
        "proxy1",
    ).data()
    return NewAlert(alert_id, t, "rule_x", payload, sid, subject, flag)


async def sessions_of(store: SessionReads, flt: SessionFilter) -> list[str]:
    return [s.id for s in await store.list_sessions(flt)]


# -- EventLog and ChainReads ------------------------------------------------------------


async def test_an_empty_log_has_the_genesis_head(reads: ReadContract) -> None:
    assert await reads.head() == (0, chain.GENESIS)
    assert await reads.chain_rows(0, 10) == []


async def test_appends_are_hash_chained_in_order(reads: ReadContract) -> None:
    await reads.append([NewEvent("note", T0 + i, None, None, {"i": i}) for i in range(3)])
    await reads.append([NewEvent("note", T0 + 3, "s1", 2, {"i": 3})])
    rows = await reads.chain_rows(0, 100)
    assert [r.seq for r in rows] == [1, 2, 3, 4]
    prev = chain.GENESIS
    for r in rows:
        assert r.prev_hash == prev
        assert r.hash == chain.link(
            prev, r.seq, r.time, r.type, r.session_id, r.channel, r.data_json
        )
        prev = r.hash
    assert await reads.head() == (4, prev)
    assert [r.seq for r in await reads.chain_rows(1, 2)] == [2, 3]
    assert (rows[3].session_id, rows[3].channel) == ("s1", 2)


async def test_an_oversized_event_is_bounded_before_it_is_chained(reads: ReadContract) -> None:
    await reads.append([NewEvent("note", T0, "s1", None, {"text": "x" * 100_000})])
    (row,) = await reads.chain_rows(0, 10)
    assert len(row.data_json) <= 16 * 1024
    (ev,) = await reads.session_events("s1")
    assert "truncated" in ev.data


async def test_a_failed_append_leaves_nothing(reads: ReadContract) -> None:
    await reads.append([start("s1")])
    head = await reads.head()
    with pytest.raises(StoreError):
        await reads.append([NewEvent("note", T0 + 20, "s1", None, {}), start("s1", T0 + 21)])
    assert await reads.head() == head
    assert [e.type for e in await reads.session_events("s1")] == ["session_start"]


async def test_the_same_events_give_the_same_chain_in_every_store(tmp_path: Path) -> None:
    """Implementations are interchangeable: the hashes do not depend on the store."""
    chains = []
    for name, make in sorted(IMPLEMENTATIONS.items()):
        (tmp_path / name).mkdir()
        s = await make(tmp_path / name)
        try:
            await s.issue_credential(cred(), "hash", issued())
            await s.start_session(
                "AAAAAA", "alice", "db01", T0 + 10, start("s1"), [alert("a1", "s1", flag=True)]
            )
            await s.append([end("s1", T0 + 30)])
            chains.append(await s.chain_rows(0, 100))
        finally:
            await s.close()
    assert len(chains[0]) == 7
    assert chains[0] == chains[1]


# -- LoginStore ---------------------------------------------------------------------------


async def test_a_login_reads_the_code_and_its_row_agrees(store: ContractStore) -> None:
    assert await store.get_credential("AAAAAA") is None
    await store.issue_credential(cred(), "argon-hash", issued())
    found = await store.get_credential("AAAAAA")
    assert found is not None
    assert (found.cred, found.hash, found.mismatch) == (cred(), "argon-hash", None)


async def test_a_login_commits_one_use_with_its_start(store: ContractStore) -> None:
    await store.issue_credential(cred(max_uses=2), "hash", issued())
    decision = await store.start_session("AAAAAA", "alice", "db01", T0 + 10, start("s1"))
    assert (decision.ok, decision.reason) == (True, "ok")
    found = await store.get_credential("AAAAAA")
    assert found is not None
    assert (found.cred.uses, found.cred.activated_at, found.mismatch) == (1, T0 + 10, None)
    types = [e.type for e in await store.session_events("s1")]
    assert types == ["cred_activated", "cred_used", "session_start"]
    await store.start_session("AAAAAA", "alice", "db01", T0 + 20, start("s2", T0 + 20))
    found = await store.get_credential("AAAAAA")
    assert found is not None
    assert found.cred.uses == 2
    assert [e.type for e in await store.session_events("s2")] == ["cred_used", "session_start"]


async def test_a_refused_login_commits_nothing(store: ContractStore) -> None:
    await store.issue_credential(cred(max_uses=1, person="alice"), "hash", issued())
    head = await store.head()
    for cred_id, person, target in (("BBBBBB", "alice", "db01"), ("AAAAAA", "bob", "db01")):
        decision = await store.start_session(cred_id, person, target, T0 + 10, start("s1"))
        assert not decision.ok
    assert await store.head() == head
    assert await store.get_session("s1") is None
    first = await store.start_session("AAAAAA", "alice", "db01", T0 + 10, start("s1"))
    assert first.ok
    spent = await store.start_session("AAAAAA", "alice", "db01", T0 + 11, start("s2", T0 + 11))
    assert (spent.ok, spent.reason) == (False, "spent")
    assert await store.get_session("s2") is None


async def test_logins_racing_for_the_last_use_let_one_win(store: ContractStore) -> None:
    await store.issue_credential(cred(max_uses=1), "hash", issued())
    results = await asyncio.gather(
        *(store.start_session("AAAAAA", "alice", "db01", T0 + 10, start(f"s{i}")) for i in range(4))
    )
    assert sorted(r.reason for r in results) == ["ok", "spent", "spent", "spent"]
    assert len(await store.list_sessions(SessionFilter())) == 1


async def test_a_login_commits_its_alerts_with_it(store: ContractStore) -> None:
    await store.issue_credential(cred(), "hash", issued())
    await store.start_session(
        "AAAAAA", "alice", "db01", T0 + 10, start("s1"), [alert("a1", "s1", flag=True)]
    )
    types = [e.type for e in await store.session_events("s1")]
    assert types == ["cred_activated", "cred_used", "session_start", "alert", "flag"]


# -- SessionJournal -------------------------------------------------------------------------


async def test_the_journal_appends_events_then_their_alerts(reads: ReadContract) -> None:
    await reads.append([start("s1")])
    await reads.append_with_alerts(
        [NewEvent("note", T0 + 11, "s1", None, {})],
        [alert("a1", "s1"), alert("a2", "s1", flag=True)],
    )
    evs = await reads.session_events("s1")
    assert [e.type for e in evs] == ["session_start", "note", "alert", "alert", "flag"]
    assert [e.data.get("alert_id") for e in evs[2:]] == ["a1", "a2", "a2"]
    assert await sessions_of(reads, SessionFilter(flagged=True)) == ["s1"]


async def test_an_alert_raised_twice_fails_the_whole_write(store: ContractStore) -> None:
    await store.append_with_alerts([start("s1")], [alert("a1", "s1")])
    head = await store.head()
    with pytest.raises(StoreError):
        await store.append_with_alerts(
            [NewEvent("note", T0 + 12, "s1", None, {})], [alert("a1", "s1")]
        )
    assert await store.head() == head


# -- SessionReads ----------------------------------------------------------------------------


async def _three_sessions(store: EventLog) -> None:
    await store.append(
        [
            start("s1", T0 + 10),
            start("s2", T0 + 20, person="bob"),
            start("s3", T0 + 30, target="web"),
        ]
    )
    await store.append(
        [
            NewEvent.of(
                events.ChannelStart("session", True, "s1/1.cast", term="xterm"), T0 + 11, "s1", 1
            ),
            NewEvent.of(
                events.ChannelStart("exec", False, None, command="systemctl restart db"),
                T0 + 12,
                "s1",
                0,
            ),
            NewEvent.of(
                events.ChannelEnd(
                    0, recording_sha256="ab", recording_bytes=5, bytes_up=3, bytes_down=4
                ),
                T0 + 13,
                "s1",
                0,
            ),
            NewEvent.of(events.Command("pty", 1.0, "rm -rf /tmp/x"), T0 + 21, "s2", 1),
            NewEvent.of(events.FileWrite("/etc/hosts", "sftp", 2.0), T0 + 31, "s3", 2),
            NewEvent.of(events.DeadlineChanged(T0 + 999, 100, "op", "why"), T0 + 32, "s3"),
            end("s1", T0 + 40),
            end("s1", T0 + 41, "second_end_ignored"),
            end("s2", T0 + 42, "deadline"),
        ]
    )


async def test_sessions_are_projected_from_their_events(reads: ReadContract) -> None:
    await _three_sessions(reads)
    s1 = await reads.get_session("s1")
    assert s1 is not None
    assert (s1.ended_at, s1.end_reason, s1.end_detail) == (T0 + 40, "client_closed", "bye")
    assert [(c.n, c.kind, c.command, c.pty, c.term) for c in s1.channels] == [
        (0, "exec", "systemctl restart db", False, None),
        (1, "session", None, True, "xterm"),
    ]
    c0 = s1.channels[0]
    assert (c0.ended_at, c0.exit_status, c0.recording_sha256, c0.recording_bytes) == (
        T0 + 13,
        0,
        "ab",
        5,
    )
    assert (c0.bytes_up, c0.bytes_down, s1.channels[1].ended_at) == (3, 4, None)
    s3 = await reads.get_session("s3")
    assert s3 is not None
    assert s3.deadline == T0 + 999
    assert s3.ended_at is None
    assert [s.id for s in await reads.unfinished_sessions()] == ["s3"]
    assert await reads.get_session("nope") is None
    listed = await reads.list_sessions(SessionFilter(), channels=False)
    assert [(s.id, s.channels) for s in listed] == [("s1", ()), ("s2", ()), ("s3", ())]


async def test_the_session_filters(reads: ReadContract) -> None:
    await _three_sessions(reads)
    cases = {
        SessionFilter(): ["s1", "s2", "s3"],
        SessionFilter(person="bob"): ["s2"],
        SessionFilter(target="web"): ["s3"],
        SessionFilter(live=True): ["s3"],
        SessionFilter(live=False): ["s1", "s2"],
        SessionFilter(end_reason="deadline"): ["s2"],
        SessionFilter(since=T0 + 20): ["s2", "s3"],
        SessionFilter(until=T0 + 20): ["s1"],
        SessionFilter(limit=2): ["s1", "s2"],
        SessionFilter(command="systemctl *"): ["s1"],
        SessionFilter(command="rm -rf*"): ["s2"],
        SessionFilter(command="RM*"): [],
        SessionFilter(command="[rs]*"): ["s1", "s2"],
        SessionFilter(path="/etc/h?sts"): ["s3"],
        SessionFilter(path="/etc"): [],
        SessionFilter(flagged=True): [],
        SessionFilter(flagged=False): ["s1", "s2", "s3"],
    }
    for flt, want in cases.items():
        assert await sessions_of(reads, flt) == want, flt


async def test_the_event_reads(reads: ReadContract) -> None:
    await _three_sessions(reads)
    s1 = await reads.session_events("s1")
    assert [e.seq for e in s1] == sorted(e.seq for e in s1)
    assert [e.type for e in s1][-1] == "session_end"
    both = await reads.events_for_sessions(["s3", "s2"])
    assert {e.session_id for e in both} == {"s2", "s3"}
    assert [e.seq for e in both] == sorted(e.seq for e in both)
    files = await reads.events_for_sessions(["s1", "s2", "s3"], {"file_*"})
    assert [(e.type, e.data["path"]) for e in files] == [("file_write", "/etc/hosts")]
    assert await reads.events_for_sessions(["s1"], set()) == []
    ends = await reads.events_between({"session_end"}, T0 + 41, T0 + 42)
    assert [e.data["reason"] for e in ends] == ["second_end_ignored"]
    starts = await reads.events_between({"session_*"}, None, T0 + 25)
    assert [e.session_id for e in starts] == ["s1", "s2"]


# -- CredentialAdmin ------------------------------------------------------------------------


async def test_codes_are_issued_once_and_listed_by_issue_time(reads: ReadContract) -> None:
    await reads.issue_credential(cred("BBBBBB", issued_at=T0 + 5), "h2", issued("BBBBBB"))
    await reads.issue_credential(cred("AAAAAA"), "h1", issued())
    with pytest.raises(StoreError):
        await reads.issue_credential(cred("AAAAAA"), "h3", issued())
    assert [c.cred_id for c in await reads.list_credentials()] == ["AAAAAA", "BBBBBB"]
    (first, _) = await reads.chain_rows(0, 10)
    ev = await reads.events_between({"cred_issued"}, None, None)
    assert first.type == "cred_issued"
    assert ev[0].data["credential_id"] == "BBBBBB"
    assert ev[0].data["state"]["person"] == "alice"


async def test_a_revoke_is_recorded_once_and_ends_the_code(reads: ReadContract) -> None:
    assert await reads.revoke_credential("AAAAAA", "lost", "root", T0 + 1) is None
    await reads.issue_credential(cred(), "hash", issued())
    revoked = await reads.revoke_credential("AAAAAA", "lost", "root", T0 + 1)
    assert revoked is not None
    assert (revoked.revoked_at, revoked.revoke_reason) == (T0 + 1, "lost")
    again = await reads.revoke_credential("AAAAAA", "other", "root", T0 + 2)
    assert again == revoked
    assert len(await reads.events_between({"cred_revoked"}, None, None)) == 1
    found = await reads.get_credential("AAAAAA")
    assert found is not None
    assert found.mismatch is None
    refused = await reads.start_session("AAAAAA", "alice", "db01", T0 + 10, start("s1"))
    assert not refused.ok


# -- AlertOutboxStore -----------------------------------------------------------------------


async def test_an_alert_is_pending_for_each_sink_until_it_takes_it(store: ContractStore) -> None:
    sinks = ["syslog", "web"]
    a1, a2 = alert("a1", "s1"), alert("a2", None, t=T0 + 12)
    await store.append_with_alerts([start("s1")], [a2, a1])
    pending = await store.pending_alerts("web")
    assert [(p.alert_id, p.attempts, p.last_attempt) for p in pending] == [
        ("a1", 0, None),
        ("a2", 0, None),
    ]
    assert (pending[0].created, pending[0].rule, pending[0].session_id) == (T0 + 11, "rule_x", "s1")
    assert pending[0].payload_json == chain.canonical(a1.payload)
    assert [p.alert_id for p in await store.pending_alerts("web", limit=1)] == ["a1"]
    assert await store.record_delivery("a1", "web", T0 + 20, False, "503", sinks) == 1
    (again, _) = await store.pending_alerts("web")
    assert (again.alert_id, again.attempts, again.last_attempt) == ("a1", 1, T0 + 20)
    head = await store.head()
    assert await store.record_delivery("a1", "web", T0 + 21, True, "ok", sinks) == 2
    (delivered,) = await store.chain_rows(head[0], 10)
    assert (delivered.type, delivered.session_id) == ("alert_delivered", "s1")
    assert [p.alert_id for p in await store.pending_alerts("web")] == ["a2"]
    assert [p.alert_id for p in await store.pending_alerts("syslog")] == ["a1", "a2"]
    assert await store.record_delivery("a1", "syslog", T0 + 22, True, "ok", sinks) == 1
    assert [p.alert_id for p in await store.pending_alerts("syslog")] == ["a2"]
    # Taken by every sink, it is done: a sink added later does not get it.
    assert [p.alert_id for p in await store.pending_alerts("mail")] == ["a2"]


async def test_recent_activity_is_what_the_rate_rules_count(store: ContractStore) -> None:
    failed = events.LoginFailed(
        "bad_code", "alice@db01", "alice", "db01", "root", "AAAAAA", "10.0.0.9", None, None
    )
    await store.append_with_alerts(
        [start("s0", T0 - 100)], [alert("a0", "s0", t=T0 - 99, subject="old")]
    )
    await store.append_with_alerts(
        [start("s1", T0 + 10), NewEvent.of(failed, T0 + 11), NewEvent.of(failed, T0 - 50)],
        [alert("a1", "s1", t=T0 + 12), alert("a2", None, t=T0 + 13)],
    )
    activity = await store.recent_activity(T0)
    assert activity.session_starts == ((T0 + 10, "alice"),)
    assert activity.failures == ((T0 + 11, "10.0.0.9", "alice", "bad_code", 1),)
    assert activity.fired == (("rule_x", "alice", T0 + 13),)


# -- OverrideReads and FeedStore -----------------------------------------------------------------


async def test_the_override_watch_reads_events_after_a_seq(store: ContractStore) -> None:
    assert await store.last_seq() == 0
    await store.append([NewEvent(t, T0 + i, None, None, {}) for i, t in enumerate("abab")])
    assert await store.last_seq() == 4
    assert [e.seq for e in await store.events_after(0, ["b"])] == [2, 4]
    assert [e.seq for e in await store.events_after(2, ["a", "b"])] == [3, 4]
    assert [e.seq for e in await store.events_after(0, ["a", "b"], limit=3)] == [1, 2, 3]
    assert await store.events_after(4, ["a"]) == []


async def test_the_feed_pages_by_seq(reads: ReadContract) -> None:
    await reads.append([NewEvent("note", T0 + i, None, None, {"i": i}) for i in range(5)])
    assert [r.seq for r in await reads.event_page(1, 2)] == [2, 3]
    assert [r.seq for r in await reads.event_page(0, 10, T0 + 1, T0 + 3)] == [2, 3]
    assert await reads.event_page(0, 10) == await reads.chain_rows(0, 10)


async def test_the_feed_keeps_cursors(store: ContractStore) -> None:
    assert await store.feed_cursor("syslog:a") == 0
    await store.save_feed_cursor("syslog:a", 3, T0)
    assert await store.feed_cursor("syslog:a") == 3
    await store.save_feed_cursor("syslog:a", 5, T0 + 1)
    assert (await store.feed_cursor("syslog:a"), await store.feed_cursor("b")) == (5, 0)


# -- ReportReads ------------------------------------------------------------------------------


async def _report_period(store: ReadContract) -> int:
    """``_three_sessions``, then a short session s4 with a recording, a flag on s1, a
    plain alert and a review on s2, and two prunes of s1's cast. Returns the seq of the
    later prune."""
    await _three_sessions(store)
    s4 = start("s4", T0 + 35, target="web")
    cast = NewEvent.of(events.ChannelStart("session", True, "s4/0.cast"), T0 + 35, "s4", 0)
    await store.append([s4, cast, end("s4", T0 + 36, "idle")])
    await store.append_with_alerts([], [alert("f1", "s1", flag=True), alert("a2", "s2")])
    pruned = events.RecordingPruned("s1/1.cast", None, None, T0 + 40, 86400.0, "retention")
    review = events.Review("auditor", "looked at it")
    await store.append(
        [
            NewEvent.of(pruned, T0 + 90, "s1", 1),
            NewEvent.of(review, T0 + 91, "s2"),
            NewEvent.of(pruned, T0 + 92, "s1", None),
            NewEvent.of(pruned, T0 + 93, "s1", 1),
        ]
    )
    return (await store.head())[0]


async def test_the_report_sums_up_a_period(reads: ReadContract) -> None:
    await _report_period(reads)
    alice, bob = GroupTotals(3, 31.0, 30.0), GroupTotals(1, 22.0, 22.0)
    everything = PeriodSummary(
        sessions=4,
        by_person={"alice": alice, "bob": bob},
        by_target={"db01": GroupTotals(2, 52.0, 30.0), "web": GroupTotals(2, 1.0, 1.0)},
        ended=3,
        total_seconds=53.0,
        mean=53.0 / 3,
        median=22.0,
        longest=30.0,
        end_reasons={"client_closed": 1, "deadline": 1, "idle": 1, "live": 1},
        flagged=1,
        reviewed=1,
    )
    assert await reads.period_summary(None, None) == everything
    early = await reads.period_summary(T0, T0 + 25)
    assert (early.sessions, early.ended, early.total_seconds) == (2, 2, 52.0)
    assert (early.mean, early.median, early.longest) == (26.0, 26.0, 30.0)
    assert (early.flagged, early.reviewed) == (1, 1)
    assert dict(early.by_person) == {
        "alice": GroupTotals(1, 30.0, 30.0),
        "bob": GroupTotals(1, 22.0, 22.0),
    }
    late = await reads.period_summary(T0 + 25, None)
    assert (late.sessions, late.ended, late.median, late.flagged, late.reviewed) == (
        2,
        1,
        1.0,
        0,
        0,
    )
    assert dict(late.by_person) == {"alice": GroupTotals(2, 1.0, 1.0)}
    assert dict(late.end_reasons) == {"idle": 1, "live": 1}
    # Only a live session: no duration, and the longest per person starts at 0.0.
    live = await reads.period_summary(T0 + 30, T0 + 31)
    assert (live.sessions, live.ended, live.total_seconds) == (1, 0, 0.0)
    assert (live.mean, live.median, live.longest) == (None, None, None)
    assert dict(live.by_target) == {"web": GroupTotals(1, 0.0, 0.0)}
    empty = await reads.period_summary(T0 + 100, None)
    assert (empty.sessions, dict(empty.by_person), dict(empty.end_reasons)) == (0, {}, {})


async def test_a_clock_that_went_back_gives_no_negative_longest(reads: ReadContract) -> None:
    await reads.append([start("s1", T0 + 60, person="carol"), end("s1", T0 + 59)])
    summary = await reads.period_summary(None, None)
    assert (summary.ended, summary.total_seconds, summary.longest) == (1, -1.0, -1.0)
    assert dict(summary.by_person) == {"carol": GroupTotals(1, -1.0, 0.0)}


async def test_the_report_streams_a_period_in_batches(reads: ReadContract) -> None:
    await _report_period(reads)
    batches = [b async for b in reads.period_sessions(None, None, {"file_*", "review"}, 3)]
    assert [
        [(s.id, [c.n for c in s.channels], [e[2] for e in evs]) for s, evs in b] for b in batches
    ] == [
        [("s1", [0, 1], []), ("s2", [], ["review"]), ("s3", [], ["file_write"])],
        [("s4", [0], [])],
    ]
    # Each event exactly as stored, and each session with its channels' rows.
    ((s3, (file_write,)),) = [p for p in batches[0] if p[0].id == "s3"]
    (row,) = [r for r in await reads.chain_rows(0, 100) if r.seq == file_write[0]]
    assert file_write == (
        row.seq,
        row.time,
        row.type,
        row.session_id,
        row.channel,
        row.data_json,
        row.prev_hash,
        row.hash,
    )
    assert json.loads(file_write[5])["path"] == "/etc/hosts"
    s1 = await reads.get_session("s1")
    assert batches[0][0][0] == s1
    assert s3 == await reads.get_session("s3")
    (early,) = [b async for b in reads.period_sessions(T0, T0 + 15, {"session_*", "flag"})]
    assert [(s.id, [e[2] for e in evs]) for s, evs in early] == [
        ("s1", ["session_start", "session_end", "session_end", "flag"])
    ]
    (untyped,) = [b async for b in reads.period_sessions(T0 + 25, T0 + 36, set(), batch=1000)]
    assert [(s.id, evs) for s, evs in untyped] == [("s3", []), ("s4", [])]
    assert [b async for b in reads.period_sessions(T0 + 100, None, {"*"})] == []


async def test_the_report_finds_the_period_recordings(reads: ReadContract) -> None:
    last_prune = await _report_period(reads)
    found = await reads.period_recordings(None, None)
    assert [(c.session_id, c.n, c.recording, c.recording_sha256, p) for c, p in found] == [
        ("s1", 0, None, "ab", None),
        ("s1", 1, "s1/1.cast", None, last_prune),
        ("s4", 0, "s4/0.cast", None, None),
    ]
    s1 = await reads.get_session("s1")
    assert s1 is not None
    assert [c for c, _ in found[:2]] == list(s1.channels)
    late = await reads.period_recordings(T0 + 25, None)
    assert [(c.session_id, c.n) for c, _ in late] == [("s4", 0)]
    assert await reads.period_recordings(T0 + 100, None) == []


# -- projection_differences ---------------------------------------------------------------


async def test_the_projections_agree_with_the_log(store: ContractStore) -> None:
    await store.issue_credential(cred(), "hash", issued())
    await store.start_session("AAAAAA", "alice", "db01", T0 + 10, start("s9"))
    await _report_period(store)
    await store.revoke_credential("AAAAAA", "lost", "root", T0 + 100)
    assert await store.projection_differences() == []


async def _edit_sqlite(store: ContractStore, tmp: Path) -> None:
    con = sqlite3.connect(tmp / "audit.db")
    try:
        con.execute("UPDATE sessions SET justification = 'nothing to see' WHERE id = 's1'")
        con.execute("DELETE FROM sessions WHERE id = 's2'")
        con.execute("UPDATE channels SET bytes_up = 9 WHERE session_id = 's1' AND n = 0")
        con.execute(
            "INSERT INTO channels (session_id, n, kind, pty, started_at)"
            " VALUES ('s7', 3, 'exec', 0, 1.0)"
        )
        con.execute("UPDATE credentials SET uses = uses + 5 WHERE id = 'AAAAAA'")
        con.commit()
    finally:
        con.close()


async def _edit_memory(store: ContractStore, tmp: Path) -> None:
    assert isinstance(store, MemoryStore)
    sessions, channels, creds = store._sessions, store._channels, store._creds
    sessions["s1"] = replace(sessions["s1"], justification="nothing to see")
    del sessions["s2"]
    channels[("s1", 0)] = replace(channels[("s1", 0)], bytes_up=9)
    channels[("s7", 3)] = replace(channels[("s1", 0)], session_id="s7", n=3)
    code, code_hash = creds["AAAAAA"]
    creds["AAAAAA"] = (replace(code, uses=code.uses + 5), code_hash)


# Each implementation's way of changing its stored rows behind the log's back, as an
# attacker with write access to the database would.
ROW_EDITS: dict[str, Callable[[ContractStore, Path], Awaitable[None]]] = {
    "sqlite": _edit_sqlite,
    "memory": _edit_memory,
}


def test_every_implementation_can_have_its_rows_edited() -> None:
    assert sorted(ROW_EDITS) == sorted(IMPLEMENTATIONS)


@pytest.mark.parametrize("name", sorted(ROW_EDITS))
async def test_rows_edited_behind_the_log_are_named(name: str, tmp_path: Path) -> None:
    store = await IMPLEMENTATIONS[name](tmp_path)
    try:
        await store.issue_credential(cred(), "hash", issued())
        await store.start_session("AAAAAA", "alice", "db01", T0 + 5, start("s9", T0 + 5))
        await _three_sessions(store)
        await ROW_EDITS[name](store, tmp_path)
        assert await store.projection_differences() == [
            "sessions row s1 differs from the log in: justification",
            "sessions row s2 is missing, though the log has it",
            "channels row s1/0 differs from the log in: bytes_up",
            "channels row s7/3 has no events in the log behind it",
            "credentials row AAAAAA differs from the log in: uses",
        ]
    finally:
        await store.close()
