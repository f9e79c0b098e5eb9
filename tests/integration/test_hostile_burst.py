"""A burst of logins does not stall live sessions (issue 4, point 7): argon2 runs off the
event loop, one check at a time, so 50 simultaneous logins queue for the hasher while a
live PTY session's keystrokes keep being echoed. Every login gets its answer. No latency
is asserted: only that echoes keep arriving while most of the burst is still waiting.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from tests.integration.conftest import TARGET, standard_targets
from tests.integration.harness import GOOD_JUSTIFICATION, SshdTarget, new_person
from tests.integration.inproc import (
    InProcessProxy,
    ScriptedClient,
    Step,
    close,
    connect,
    in_process_proxy,
    login,
)

BURST = 50
RIGHT = 2  # of the burst, this many log in with a right code; the rest are refused
WRONG = "BG-ZZZZZZ-0000-0000-0000-0000-0000-0000"


@pytest.fixture
async def proxy(
    tmp_path: Path, target: SshdTarget, other_target: SshdTarget
) -> AsyncIterator[InProcessProxy]:
    async with in_process_proxy(tmp_path / "proxy", standard_targets(target, other_target)) as p:
        yield p


async def echo(process: asyncssh.SSHClientProcess[str], token: str) -> None:
    """Type ``token`` at the PTY and wait (bounded) until the terminal echoes it."""
    process.stdin.write(token + "\n")
    seen = ""
    async with asyncio.timeout(60):
        while token not in seen:
            seen += await process.stdout.read(4096)


@pytest.mark.slow
async def test_fifty_simultaneous_logins_all_answered_while_a_pty_session_echoes(
    proxy: InProcessProxy,
) -> None:
    live_person, burst_person = new_person("live"), new_person("burst")
    live_code = await proxy.quick_code(live_person)
    burst_code = await proxy.quick_code(burst_person)
    live = await connect(
        proxy.port, ScriptedClient([Step(f"{live_person}@{TARGET}", live_code, GOOD_JUSTIFICATION)])
    )
    try:
        async with asyncio.timeout(30):
            process = await live.create_process("cat", term_type="xterm", encoding="utf-8")
        await echo(process, "before-the-burst")

        # Each from its own loopback address (the per-source cap is 16).
        steps = [
            Step(f"{burst_person}@{TARGET}", burst_code if i < RIGHT else WRONG, GOOD_JUSTIFICATION)
            for i in range(BURST)
        ]
        burst = [
            asyncio.ensure_future(login(proxy.port, [step], within=180, local_addr=f"127.0.1.{i}"))
            for i, step in enumerate(steps, start=1)
        ]
        pending_at_echo: list[int] = []
        n = 0
        while not all(task.done() for task in burst):
            n += 1
            await echo(process, f"keystroke-{n}")
            pending_at_echo.append(sum(not task.done() for task in burst))
        results = [task.result()[1] for task in burst]

        # The live session kept working, also while most of the burst was waiting.
        assert max(pending_at_echo) >= BURST // 2, pending_at_echo
        await echo(process, "after-the-burst")
        process.stdin.write_eof()
        process.close()
    finally:
        await close(live)

    logged_in = [r for r in results if isinstance(r, asyncssh.SSHClientConnection)]
    refused = [r for r in results if isinstance(r, asyncssh.PermissionDenied)]
    assert len(logged_in) == RIGHT, results
    assert len(refused) == BURST - RIGHT, [r for r in results if r not in refused]
    for conn in logged_in:
        await close(conn)
    failures = await proxy.wait_events(
        "login_failed", lambda e: e.data.get("person") == burst_person, count=BURST - RIGHT
    )
    assert len(failures) == BURST - RIGHT
    with sqlite3.connect(f"file:{proxy.database}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
