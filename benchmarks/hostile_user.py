"""What a hostile logged-in user can make the proxy spend (issue 16), measured.

A throwaway sshd on 127.0.0.1 and the real ``breakglass serve`` in front of it (default
settings, its own store and casts). A probe session types a key every 50 ms at a PTY
(tests/integration/hostile.py ``Probe``) while another session, in a process of its own
(its client-side work must not delay the probe's keys), runs one attack. Per attack and
run: the probe's worst echo stall (from when the key was due to its echo), the proxy's
peak RSS growth over the attack (sampled every 20 ms) and CPU seconds, and how much the
audit store (its logical size, pages x page size, WAL included) and the recordings
folder grew for the attacker's session, measured once that session's end is written.

    .venv/bin/python benchmarks/hostile_user.py [--runs 3] [--only huge_columns,...]

Bars (issue 16): worst stall <= 100 ms, RSS growth <= 64 MiB, store growth <= 1 MiB per
session. Prints medians over the runs and PASS/FAIL per bar; asserts nothing (tests
never time). Loopback only; every attack and wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncssh  # noqa: E402

from benchmarks.rig import cpu_seconds, rss_kib  # noqa: E402
from tests.integration import hostile  # noqa: E402
from tests.integration.harness import (  # noqa: E402
    ProxyProcess,
    SshdTarget,
    free_port,
    issue_code,
    write_proxy_config,
)
from tests.integration.inproc import close  # noqa: E402

TARGET = "bench01"
STALL_BAR = 0.100
RSS_BAR = 64 * 1024  # KiB
STORE_BAR = 1024 * 1024  # bytes per session


async def baseline(conn: asyncssh.SSHClientConnection) -> None:
    """No attack: a session that logs in and idles 2 s (the machine's noise floor)."""
    await asyncio.sleep(2)


ATTACKS: dict[str, hostile.Attack] = {
    "baseline": baseline,
    "huge_columns": hostile.huge_columns,
    "huge_lines": hostile.huge_lines,
    "resize_flood": functools.partial(hostile.resize_flood, count=10_000),
    "channel_flood": functools.partial(hostile.channel_flood, count=1000),
    "channel_churn": functools.partial(hostile.channel_churn, count=1000),
    "env_flood": functools.partial(hostile.env_flood, count=10_000),
    "refused_flood": functools.partial(hostile.refused_flood, count=1000),
    "long_exec": functools.partial(hostile.long_exec, size=200_000),
    "signal_flood": functools.partial(hostile.signal_flood, count=10_000),
    "paste_flood": functools.partial(hostile.paste_flood, lines=16_000),
}


@dataclass
class Result:
    stall: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    store: list[int] = field(default_factory=list)
    casts: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def store_bytes(database: Path) -> int:
    """The store's logical size: a reader sees the pages the WAL holds too."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        (size,) = db.execute("PRAGMA page_size").fetchone()
    return int(pages) * int(size)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def session_ends(database: Path) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as db:
        (n,) = db.execute("SELECT count(*) FROM events WHERE type = 'session_end'").fetchone()
    return int(n)


async def sample_rss(pid: int, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_kib(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)


async def one_attack(
    proxy: ProxyProcess,
    probe_conn: asyncssh.SSHClientConnection,
    code: str,
    name: str,
    result: Result,
) -> None:
    pid = proxy.process.pid
    ends = session_ends(proxy.database)
    store0, casts0 = store_bytes(proxy.database), folder_bytes(proxy.recordings)
    base = rss_kib(pid)
    cpu0 = cpu_seconds(pid)
    peak = [base]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, stop, peak))
    started = time.monotonic()
    try:
        async with hostile.probing(probe_conn) as probe:
            child = multiprocessing.get_context("spawn").Process(
                target=attack_in_child, args=(proxy.port, code, name)
            )
            child.start()
            await asyncio.to_thread(child.join, 240)
            if child.exitcode != 0:
                child.kill()
                raise RuntimeError(f"attack {name} failed (exit {child.exitcode})")
            await asyncio.sleep(0.2)  # keys typed while the session ends
    finally:
        stop.set()
        await sampler
    deadline = time.monotonic() + 60
    while session_ends(proxy.database) <= ends and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # another process's store: polled
    result.seconds.append(time.monotonic() - started)
    result.cpu.append(cpu_seconds(pid) - cpu0)
    result.stall.append(probe.worst)
    result.rss_kib.append(peak[0] - base)
    result.store.append(store_bytes(proxy.database) - store0)
    result.casts.append(folder_bytes(proxy.recordings) - casts0)


def attack_in_child(port: int, code: str, name: str) -> None:
    """One attack in its own session, in this (child) process."""

    async def attack() -> None:
        conn = await hostile.log_in(port, "attacker", code, TARGET)
        try:
            async with asyncio.timeout(180):
                await ATTACKS[name](conn)
        finally:
            await close(conn)

    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    asyncio.run(attack())


async def run(
    proxy: ProxyProcess, codes: tuple[str, str], names: list[str], runs: int
) -> dict[str, Result]:
    results = {name: Result() for name in names}
    probe_conn = await hostile.log_in(proxy.port, "probe", codes[0], TARGET)
    try:
        for i in range(runs):
            for name in names:
                await one_attack(proxy, probe_conn, codes[1], name, results[name])
                print(
                    f"  run {i + 1} {name}: stall {results[name].stall[-1] * 1000:.0f} ms",
                    flush=True,
                )
    finally:
        await close(probe_conn)
    return results


def report(results: dict[str, Result], runs: int) -> None:
    print(f"\nmedians of {runs} run(s); the machine is shared (other engineers' tests run on it)")
    head = ("attack", "stall ms", "RSS MiB", "store KiB", "casts KiB", "CPU s", "secs")
    print(
        f"{head[0]:<15}{head[1]:>9}{head[2]:>9}{head[3]:>10}{head[4]:>10}{head[5]:>7}"
        f"{head[6]:>6}  bars"
    )
    for name, r in results.items():
        stall = statistics.median(r.stall)
        rss = statistics.median(r.rss_kib)
        store = statistics.median(r.store)
        bars = [
            "stall " + ("PASS" if stall <= STALL_BAR else "FAIL"),
            "rss " + ("PASS" if rss <= RSS_BAR else "FAIL"),
            "store " + ("PASS" if store <= STORE_BAR else "FAIL"),
        ]
        print(
            f"{name:<15}{stall * 1000:>9.0f}{rss / 1024:>9.1f}{store / 1024:>10.0f}"
            f"{statistics.median(r.casts) / 1024:>10.0f}{statistics.median(r.cpu):>7.2f}"
            f"{statistics.median(r.seconds):>6.1f}  " + " ".join(bars)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default=",".join(ATTACKS))
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(ATTACKS)
    if unknown:
        parser.error(f"unknown attacks: {', '.join(sorted(unknown))}")
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bg-hostile-") as tmp:
        directory = Path(tmp)
        target = SshdTarget.start(directory / "target")
        try:
            config = write_proxy_config(
                directory / "proxy", free_port(), {TARGET: target.target_entry()}
            )
            proxy = ProxyProcess.start(config)
            try:
                codes = (
                    issue_code(config, "probe", uses=0),
                    issue_code(config, "attacker", uses=0),
                )
                results = asyncio.run(run(proxy, codes, names, args.runs))
            finally:
                proxy.stop()
        finally:
            target.stop()
    report(results, args.runs)
    print(f"(commit {os.popen('git -C ' + str(ROOT) + ' rev-parse --short HEAD').read().strip()})")


if __name__ == "__main__":
    main()
