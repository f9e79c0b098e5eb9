"""A stranger cannot lock anyone out (issue 15): the store's growth under a flood of
wrong codes and 200 KB justifications is bounded, silent connections lose their slot at
the short pre-auth timeout, the heaviest source makes room for a newcomer, a fresh
source logs in at its first try during all of it, and no typed secret (or a hash of
one) reaches the store.

Real SSH clients (asyncssh, scripted) from many loopback addresses; counts are
asserted, and deadlines are ten times what the fix needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from proxy.core.anomaly import SUMMARY_EVENT
from proxy.core.failsummary import SummaryLimits
from proxy.core.preauth import REDACTED
from tests.integration.conftest import TARGET, standard_targets
from tests.integration.harness import GOOD_JUSTIFICATION, SshdTarget, new_person
from tests.integration.inproc import InProcessProxy, Step, close, in_process_proxy, login
from tests.waiting import eventually_async

WRONG = "BG-ZZZZZZ-0000-0000-0000-0000-0000-0000"
BIG = "INC-1 " + "x" * 200_000  # over the 2 KiB policy maximum, under the packet limit
ATTACKERS = 20
ANSWERS = 6  # answers each attacker gives (asked again for the justification, then anew)
PREAUTH = 1.0


def store_bytes(database: Path) -> bytes:
    wal = Path(f"{database}-wal")
    return database.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def db_bytes(proxy: InProcessProxy) -> int:
    """The store on disk: the database and its write-ahead log."""
    wal = Path(f"{proxy.database}-wal")
    return proxy.database.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


@pytest.fixture
async def proxy(
    tmp_path: Path, target: SshdTarget, other_target: SshdTarget
) -> AsyncIterator[InProcessProxy]:
    async with in_process_proxy(
        tmp_path / "proxy",
        standard_targets(target, other_target),
        failure_limits=SummaryLimits(),  # the product's limits
        policy={"preauth_timeout": f"{PREAUTH:g}s", "login_timeout": "60s"},
    ) as p:
        yield p


async def attack(port: int, source: str, person: str) -> None:
    """One attacker: a wrong code and a 200 KB justification to every prompt."""
    steps = [Step(f"{person}@{TARGET}", WRONG, BIG)] * ANSWERS
    _, result = await login(port, steps, within=120, local_addr=source)
    assert isinstance(result, asyncssh.Error | OSError), result


async def silent(source: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed_within(reader: asyncio.StreamReader, within: float) -> bool:
    """True if the proxy closes the connection within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            with contextlib.suppress(ConnectionResetError):
                while await reader.read(65536):
                    pass
    except TimeoutError:
        return False
    return True


@pytest.mark.slow
async def test_a_flood_of_wrong_codes_and_huge_justifications_barely_grows_the_store(
    proxy: InProcessProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="breakglass")
    person = new_person("victim")
    before = db_bytes(proxy)
    await asyncio.gather(
        *(attack(proxy.port, f"127.0.20.{i}", person) for i in range(1, ATTACKERS + 1))
    )
    # Single events are being written; summaries are written when their minute ends:
    # end it now.
    await eventually_async(lambda: proxy.app.failure_log.in_flight == 0, within=30, what="writes")
    await proxy.app.failure_log.flush(time.time() + 120)
    singles = [e for e in proxy.events("login_failed") if e.data.get("person") == person]
    summaries = proxy.events(SUMMARY_EVENT)
    # (Summaries also count the connections cut at the end: reason login_aborted.)
    summarised = sum(s.data["reasons"].get("justification_too_long", 0) for s in summaries)
    # Without the cut and the summaries: 120 x 200 KB = 24 MB.
    assert db_bytes(proxy) - before < 1 << 20
    # Every answer is accounted for, single or summarised, and nothing is lost.
    assert len(singles) + summarised == ATTACKERS * ANSWERS
    assert summarised > 0
    for event in singles:
        assert len(event.data["justification"].encode()) <= 2048
        assert event.data["justification_length"] == len(BIG)
    for summary in summaries:
        assert summary.data["network"] == "127.0.20.0/24"
        assert summary.data["persons"][0][0] == person
    # The proxy's own log is bounded too: a failure counted into a summary is logged
    # with the summary, and each kind of line a stranger causes is capped a minute
    # (proxy.logs.LineBudget); without that, one line per answer (120 here).
    lines = [r.getMessage() for r in caplog.records if r.name == "breakglass"]
    failed_lines = [m for m in lines if m.startswith("login failed:")]
    assert len(failed_lines) <= min(len(singles), 20)
    assert sum(m.startswith("throttling a login attempt") for m in lines) <= 20
    assert any(m.startswith("failed logins summarised: network=127.0.20.0/24") for m in lines)
    assert all(len(m) < 1000 for m in lines)  # no 200 KB justification in a line


@pytest.mark.slow
async def test_a_fresh_source_logs_in_at_its_first_try_during_a_flood_and_beside_silent_ones(
    tmp_path: Path, target: SshdTarget, other_target: SshdTarget
) -> None:
    slots = 40
    async with in_process_proxy(
        tmp_path / "proxy",
        standard_targets(target, other_target),
        failure_limits=SummaryLimits(),
        policy={"max_unauthenticated": slots, "login_timeout": "60s"},
    ) as proxy:
        engineer = new_person("engineer")
        code = await proxy.quick_code(engineer)
        # Every slot held by silent connections from 5 addresses (they would keep them
        # for the whole login timeout), and a flood of wrong codes beside them.
        holders = [await silent(f"127.0.21.{1 + i % 5}", proxy.port) for i in range(slots)]
        flood = [
            asyncio.ensure_future(attack(proxy.port, f"127.0.22.{i}", new_person("x")))
            for i in range(1, ATTACKERS + 1)
        ]
        try:
            started = time.monotonic()
            _, conn = await login(
                proxy.port,
                [Step(f"{engineer}@{TARGET}", code, GOOD_JUSTIFICATION)],
                within=150,
                local_addr="127.0.23.1",
            )
            took = time.monotonic() - started
            assert not isinstance(conn, Exception), conn  # the first try
            await close(conn)
            assert took < 150
        finally:
            for _, writer in holders:
                writer.close()
            await asyncio.gather(*flood, return_exceptions=True)
        assert proxy.app.slots.dropped >= 1  # room was made, not found
        [session] = await proxy.sessions()
        assert session.person == engineer


async def test_a_silent_connection_is_cut_at_the_short_preauth_timeout(
    proxy: InProcessProxy,
) -> None:
    started = time.monotonic()
    reader, writer = await silent("127.0.24.1", proxy.port)
    versioned_reader, versioned = await silent("127.0.24.2", proxy.port)
    versioned.write(b"SSH-2.0-slow\r\n")
    try:
        # login_timeout is 60 s: only the pre-auth timeout (1 s) can close them this soon.
        assert await closed_within(reader, 10 * PREAUTH)
        assert await closed_within(versioned_reader, 10 * PREAUTH)
        assert time.monotonic() - started < 10 * PREAUTH
    finally:
        writer.close()
        versioned.close()
    # A person at the prompts has the long timeout: a login taking longer still works.
    person = new_person()
    code = await proxy.quick_code(person)
    _, conn = await login(proxy.port, [Step(f"{person}@{TARGET}", code, GOOD_JUSTIFICATION)])
    assert not isinstance(conn, Exception), conn
    await close(conn)


async def test_when_slots_are_full_the_heaviest_sources_oldest_connection_is_dropped(
    tmp_path: Path, target: SshdTarget, other_target: SshdTarget
) -> None:
    async with in_process_proxy(
        tmp_path / "proxy",
        standard_targets(target, other_target),
        policy={"max_unauthenticated": 6, "preauth_timeout": "60s"},
    ) as proxy:
        heavy = [await silent("127.0.25.1", proxy.port) for _ in range(4)]
        await asyncio.sleep(0.2)  # light's connections are younger than heavy's first
        light = [await silent("127.0.25.2", proxy.port) for _ in range(2)]
        await asyncio.sleep(0.2)
        person = new_person()
        code = await proxy.quick_code(person)
        try:
            _, conn = await login(
                proxy.port,
                [Step(f"{person}@{TARGET}", code, GOOD_JUSTIFICATION)],
                local_addr="127.0.25.3",
            )
            assert not isinstance(conn, Exception), conn
            await close(conn)
            assert await closed_within(heavy[0][0], 10)
            # Nobody else lost their slot: still open, a second later.
            for reader, _ in heavy[1:] + light:
                assert not await closed_within(reader, 0.2)
            assert proxy.app.slots.dropped == 1
        finally:
            for _, writer in heavy + light:
                writer.close()
        # One login_slots_full event for the minute, written when it ends.
        proxy.app.slots._flush_full(time.time() + 120)
        [full] = await proxy.wait_events("login_slots_full")
        assert (full.data["dropped"], full.data["refused"]) == (1, 0)
        with sqlite3.connect(f"file:{proxy.database}?mode=ro", uri=True) as db:
            rules = [r for (r,) in db.execute("SELECT rule FROM alerts")]
        assert rules.count("at_capacity") == 1


async def test_no_typed_secret_or_hash_of_it_ever_reaches_the_store(
    proxy: InProcessProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="breakglass")
    person = new_person()
    code = await proxy.quick_code(person)
    secret = code.replace("-", "")[8:]
    attempts = [
        # The prompts answered the wrong way round: the code as the justification.
        Step(f"{person}@{TARGET}", GOOD_JUSTIFICATION, code),
        # The right code with a misspelled target.
        Step(f"{person}@{TARGET}x", code, GOOD_JUSTIFICATION),
        # The code pasted into the justification too, with a wrong code.
        Step(f"{person}@{TARGET}", WRONG, f"INC-1 locked out, code {code.lower()}"),
        # The code typed into the username.
        Step(f"{person}@{code}@{TARGET}", WRONG, GOOD_JUSTIFICATION),
    ]
    # One source each: these must be written singly, under the per-source rate.
    for i, step in enumerate(attempts, 1):
        _, result = await login(proxy.port, [step], local_addr=f"127.0.26.{i}")
        assert isinstance(result, asyncssh.Error), result
    failures = await proxy.wait_events(
        "login_failed", lambda e: e.data.get("person") == person, count=len(attempts)
    )
    # Every byte the store holds, the write-ahead log included.
    stored = await asyncio.to_thread(store_bytes, proxy.database)
    forms = {secret, secret.lower(), code, code.lower(), code.replace("-", "")}
    for form in list(forms):
        forms.add(hashlib.sha256(form.encode()).hexdigest())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for form in forms:
        assert form.encode() not in stored, form
        assert form not in logged, form  # nor in the proxy's log
    assert any(REDACTED in (f.data.get("justification") or "") for f in failures)


async def test_inside_the_reserve_failures_are_counted_in_memory_and_sessions_still_start(
    proxy: InProcessProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = proxy.app.config.storage
    # Free space between min_free and min_free + failure_reserve: room for sessions only.
    inside = storage.min_free + storage.failure_reserve // 2
    monkeypatch.setattr(proxy.app, "free_space", lambda: inside)
    victim = new_person("victim")
    await asyncio.gather(*(attack(proxy.port, f"127.0.27.{i}", victim) for i in range(1, 6)))
    # A real session still starts.
    engineer = new_person("engineer")
    code = await proxy.quick_code(engineer)
    _, conn = await login(proxy.port, [Step(f"{engineer}@{TARGET}", code, GOOD_JUSTIFICATION)])
    assert not isinstance(conn, Exception), conn
    await close(conn)
    await proxy.app.failure_log.flush(time.time() + 120)  # still no room: held
    assert [e for e in proxy.events("login_failed") if e.data.get("person") == victim] == []
    assert proxy.events(SUMMARY_EVENT) == []
    [held] = await proxy.wait_events("login_failures_held")
    assert held.data["free_bytes"] == inside
    # Space is back: one summary holds every attempt.
    monkeypatch.setattr(proxy.app, "free_space", lambda: storage.min_free * 100)
    await proxy.app.failure_log.flush(time.time() + 240)
    [summary] = proxy.events(SUMMARY_EVENT)
    assert summary.data["degraded"] is True
    assert summary.data["reasons"]["justification_too_long"] == 5 * ANSWERS
    with sqlite3.connect(f"file:{proxy.database}?mode=ro", uri=True) as db:
        rules = [r for (r,) in db.execute("SELECT rule FROM alerts")]
    assert "disk_space" in rules
