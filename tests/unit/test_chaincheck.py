"""The verification rules over chain rows: each kind of tampering gives one precise finding."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from proxy.core import chain
from proxy.core.chaincheck import (
    ChainChecker,
    ChainRow,
    Checkpoint,
    RecordingClaim,
    check_external,
    checkpoint_from_data,
    checkpoint_message,
    recording_problem,
)
from tests.eventdata import fill

T0 = 1_800_000_000.0


def build(specs: list[tuple[str, str | None, int | None, dict[str, Any]]]) -> list[ChainRow]:
    rows: list[ChainRow] = []
    prev = chain.GENESIS
    for i, (type_, sid, ch, data) in enumerate(specs, start=1):
        # A checkpoint's data is the test's subject; every other event is made complete.
        data_json = chain.canonical(data if type_ == "checkpoint" else fill(type_, data))
        t = T0 + i
        digest = chain.link(prev, i, t, type_, sid, ch, data_json)
        rows.append(ChainRow(i, t, type_, sid, ch, data_json, prev, digest))
        prev = digest
    return rows


def rehash(rows: list[ChainRow], start: int) -> list[ChainRow]:
    """What an attacker who knows the rule does: recompute every hash from ``start``."""
    out = list(rows[:start])
    prev = out[-1].hash if out else chain.GENESIS
    for r in rows[start:]:
        digest = chain.link(prev, r.seq, r.time, r.type, r.session_id, r.channel, r.data_json)
        out.append(dataclasses.replace(r, prev_hash=prev, hash=digest))
        prev = digest
    return out


def session_rows(n: int = 20) -> list[ChainRow]:
    specs: list[tuple[str, str | None, int | None, dict[str, Any]]] = []
    for i in range(n):
        sid = f"s{i:03d}"
        specs.append(("session_start", sid, None, {"person": "alice", "deadline": T0 + 3600}))
        specs.append(("channel_start", sid, 1, {"kind": "exec", "recording": f"/r/{sid}/1"}))
        specs.append(
            ("channel_end", sid, 1, {"recording_sha256": "ab" * 32, "recording_bytes": 10})
        )
        specs.append(("session_end", sid, None, {"reason": "client_exit"}))
    return build(specs)


def check(rows: list[ChainRow], now: float = T0 + 100) -> ChainChecker:
    c = ChainChecker()
    for r in rows:
        c.feed(r)
    c.finish(now)
    return c


def kinds(c: ChainChecker) -> list[str]:
    return [p.kind for p in c.problems]


def test_untouched_chain_has_no_problems() -> None:
    rows = session_rows()
    c = check(rows)
    assert c.problems == []
    assert c.count == len(rows)
    assert c.head == rows[-1].hash
    assert len(c.sessions) == 20
    assert len(c.recordings) == 20


def test_changed_data_is_found_at_its_event() -> None:
    rows = session_rows()
    rows[8] = dataclasses.replace(rows[8], data_json=rows[8].data_json.replace("alice", "bob"))
    c = check(rows)
    assert kinds(c) == ["event_changed"]
    assert c.problems[0].seq == 9
    assert "event 9 changed" in c.problems[0].message
    assert "session s002" in c.problems[0].message


def test_changed_time_or_type_is_found() -> None:
    variants = [
        dataclasses.replace(session_rows()[5], time=T0 + 999),
        dataclasses.replace(session_rows()[5], type="session_warning"),
        dataclasses.replace(session_rows()[5], channel=2),
    ]
    for variant in variants:
        rows = session_rows()
        rows[5] = variant
        assert kinds(check(rows))[:1] == ["event_changed"], variant


def test_rewrite_with_recomputed_hash_breaks_the_next_link() -> None:
    rows = session_rows()
    forged = dataclasses.replace(rows[8], data_json=rows[8].data_json.replace("alice", "bob"))
    rows[8] = rehash([*rows[:8], forged], 8)[8]
    c = check(rows)
    assert kinds(c) == ["chain_broken"]
    assert c.problems[0].seq == 10
    assert "event 10 does not follow event 9" in c.problems[0].message


def test_deleted_events_are_named_as_a_range() -> None:
    rows = session_rows()
    del rows[5:8]  # events 6, 7, 8
    c = check(rows)
    assert kinds(c) == ["events_missing"]
    assert "events 6..8 are missing" in c.problems[0].message
    one = session_rows()
    del one[5]
    assert "event 6 is missing" in check(one).problems[0].message


def test_deleted_first_event_is_found() -> None:
    rows = session_rows()[1:]
    c = check(rows)
    assert "event 1 is missing" in c.problems[0].message
    assert "at the start" in c.problems[0].message


def test_swapped_events_are_reported_as_reordered() -> None:
    rows = session_rows()
    a, b = rows[4], rows[5]
    rows[4] = dataclasses.replace(b, seq=5)
    rows[5] = dataclasses.replace(a, seq=6)
    c = check(rows)
    assert kinds(c) == ["event_moved"]
    assert "events 5..6" in c.problems[0].message
    assert "reordered" in c.problems[0].message


def test_renumbered_tail_after_a_deletion_is_one_finding() -> None:
    rows = session_rows()
    del rows[3]
    rows = [dataclasses.replace(r, seq=i) for i, r in enumerate(rows, start=1)]
    c = check(rows)
    assert kinds(c) == ["event_moved"]
    assert f"events 4..{len(rows)}" in c.problems[0].message


def test_session_without_end_past_its_deadline_is_a_problem_but_live_is_not() -> None:
    rows = session_rows(3)[:-1]  # the last session's end is gone
    assert kinds(check(rows, now=T0 + 100)) == []
    live = check(rows, now=T0 + 100)
    assert live.live_sessions(T0 + 100) == ["s002"]
    late = check(rows, now=T0 + 7200)
    assert kinds(late) == ["session_without_end"]
    assert "session s002 has no end" in late.problems[0].message


def test_channel_without_end_in_an_ended_session() -> None:
    specs: list[tuple[str, str | None, int | None, dict[str, Any]]] = [
        ("session_start", "s1", None, {"deadline": T0 + 10}),
        ("channel_start", "s1", 1, {"kind": "shell", "recording": "/r/1"}),
        ("session_end", "s1", None, {"reason": "client_exit"}),
    ]
    assert kinds(check(build(specs))) == ["channel_without_end"]


def checkpoint_rows(sig: str = "00" * 64) -> list[ChainRow]:
    rows = session_rows(2)
    head = rows[-1]
    data = {"seq": head.seq, "head": head.hash, "time": T0, "signature": sig, "key": "SHA256:x"}
    row = ChainRow(head.seq + 1, T0 + 99, "checkpoint", None, None, chain.canonical(data), "", "")
    return rehash([*rows, row], len(rows))


def test_checkpoints_are_collected_and_their_head_checked() -> None:
    rows = checkpoint_rows()
    c = check(rows)
    assert c.problems == []
    assert len(c.checkpoints) == 1
    assert c.checkpoints[0].at == len(rows)
    assert c.checkpoints[0].seq == len(rows) - 1


def test_checkpoint_head_mismatch_after_a_full_rewrite() -> None:
    rows = checkpoint_rows()
    # Rewrite event 2 and rehash everything after it, checkpoint row included: the
    # checkpoint's signed head no longer matches.
    rows[1] = dataclasses.replace(rows[1], data_json=rows[1].data_json.replace("/r/", "/x/"))
    rows = rehash(rows, 1)
    c = check(rows)
    assert kinds(c) == ["checkpoint_head_mismatch"]
    assert "history up to event 8 was rewritten" in c.problems[0].message


def test_external_checkpoint_detects_truncation() -> None:
    cp = Checkpoint(50, "ab" * 32, T0, "00", "SHA256:x")
    problem = check_external(cp, last_seq=40, hash_at=None)
    assert problem is not None
    assert problem.kind == "events_truncated"
    assert "events 41..50 are missing" in problem.message
    assert check_external(cp, last_seq=60, hash_at="ab" * 32) is None
    mismatch = check_external(cp, last_seq=60, hash_at="cd" * 32)
    assert mismatch is not None
    assert mismatch.kind == "checkpoint_head_mismatch"


def test_checkpoint_message_binds_every_field() -> None:
    base = checkpoint_message(5, "ab" * 32, T0)
    assert base != checkpoint_message(6, "ab" * 32, T0)
    assert base != checkpoint_message(5, "cd" * 32, T0)
    assert base != checkpoint_message(5, "ab" * 32, T0 + 1)
    assert base.startswith(b"breakglass checkpoint v1\n")


def test_checkpoint_from_data_refuses_bad_shapes() -> None:
    good = {"seq": 3, "head": "a", "time": 1.0, "signature": "00", "key": "k"}
    assert checkpoint_from_data(good) is not None
    for key, bad in (("seq", "3"), ("seq", True), ("time", "now"), ("head", None)):
        assert checkpoint_from_data({**good, key: bad}) is None
    assert checkpoint_from_data({"seq": 1}) is None
    assert checkpoint_from_data(json.loads("[]")) is None


def test_recording_problem_statuses() -> None:
    claim = RecordingClaim("s1", 1, "/r/1.cast", "ab" * 32, 10, True, 7)
    assert recording_problem(claim, ("ab" * 32, 10), "/r/1.cast") == ("ok", None)
    status, p = recording_problem(claim, ("cd" * 32, 10), "/r/1.cast")
    assert status == "MISMATCH"
    assert p is not None
    assert "was altered" in p.message
    status, p = recording_problem(claim, ("ab" * 32, 11), "/r/1.cast")
    assert status == "MISMATCH"
    status, p = recording_problem(claim, None, "/r/1.cast")
    assert status == "missing"
    assert p is not None
    assert "/r/1.cast" in p.message
