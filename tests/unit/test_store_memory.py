"""Consumers typed against their narrow store Protocols run on the in-memory store: the
checkpoint writer (``CheckpointStore``), crash recovery (``SessionLog``) and the chain
checker ``verify`` uses, with no database file."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proxy.audit.checkpoint import signature_ok, write_checkpoint
from proxy.core import events
from proxy.core.chaincheck import ChainChecker, checkpoint_from_data
from proxy.recovery import recover_unfinished
from proxy.store.base import NewEvent
from proxy.store.memory import MemoryStore

T0 = 1_800_000_000.0


def start(sid: str, t: float) -> NewEvent:
    d = events.SessionStart(
        "alice", "AAAAAA", "127.0.0.1", "SSH-2.0-t", "db01", "root", "x", t + 60
    )
    return NewEvent.of(d, t, sid)


async def test_a_checkpoint_signs_the_head_once_per_change() -> None:
    store, key = MemoryStore(), Ed25519PrivateKey.generate()
    await write_checkpoint(store, key, T0)
    assert await store.chain_rows(0, 10) == []  # an empty log is not checkpointed
    await store.append([start("s1", T0)])
    seq, head = await store.head()
    await write_checkpoint(store, key, T0 + 1)
    await write_checkpoint(store, key, T0 + 2)  # nothing new since: skipped
    rows = await store.chain_rows(0, 10)
    assert [r.type for r in rows] == ["session_start", "checkpoint"]
    (cp_event,) = await store.events_between({"checkpoint"}, None, None)
    cp = checkpoint_from_data(cp_event.data)
    assert cp is not None
    assert (cp.seq, cp.head) == (seq, head)
    assert signature_ok(key.public_key(), cp)


async def test_recovery_ends_what_a_crash_left_open(tmp_path: Path) -> None:
    store = MemoryStore()
    opened = events.ChannelStart("exec", False, None, command="true")
    await store.append([start("s1", T0), NewEvent.of(opened, T0 + 1, "s1", 0), start("s2", T0)])
    await store.append([NewEvent.of(events.SessionEnd("client_closed"), T0 + 2, "s2")])
    assert await recover_unfinished(store, tmp_path, T0 + 100) == 1
    assert await recover_unfinished(store, tmp_path, T0 + 101) == 0
    s1 = await store.get_session("s1")
    assert s1 is not None
    assert (s1.ended_at, s1.end_reason) == (T0 + 100, "interrupted")
    assert [c.ended_at for c in s1.channels] == [T0 + 100]
    ended = [e for e in await store.session_events("s1") if e.type == "channel_end"]
    assert [e.data.get("recovered") for e in ended] == [True]


async def test_the_chain_checker_finds_the_in_memory_chain_intact() -> None:
    store = MemoryStore()
    await store.append([start(f"s{i}", T0 + i) for i in range(5)])
    await store.append(
        [NewEvent.of(events.SessionEnd("client_closed"), T0 + 9, f"s{i}") for i in range(5)]
    )
    checker = ChainChecker()
    for row in await store.chain_rows(0, 100):
        checker.feed(row)
    checker.finish(T0 + 10)
    assert (checker.count, checker.problems, checker.head) == (10, [], (await store.head())[1])
