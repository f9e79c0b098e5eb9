"""A stranger's flood against the real proxy: what it costs the store, the memory, and
the rightful engineer (issue 15's bars).

Starts a throwaway sshd and the real ``breakglass serve`` (default settings), then for
``--duration`` seconds (bounded: at most 600):

- ``--attackers`` loopback addresses (127.0.40.1 ...) each keep one asyncssh client
  answering every prompt with a wrong code and a 200 KB justification, reconnecting as
  soon as the proxy cuts it;
- ``--silent`` TCP connections from 5 addresses (127.0.41.1-5) that never send a byte,
  opened again whenever the proxy closes one;
- every ``--every`` seconds a fresh source (127.0.42.N) logs in with the real OpenSSH
  client (code + justification by SSH_ASKPASS) and runs ``true``: its time to a
  finished login, and whether its first try got in.

Prints the store's growth (database + WAL), the proxy's RSS growth (VmRSS of the serve
process, peak over the flood minus before), the attack rate (answers sent per second),
and each fresh login's time, plus the straight-line extrapolation of store growth to 10
minutes. Loopback only; every loop is bounded by the duration.

    .venv/bin/python benchmarks/preauth_flood.py [--duration 60] [--attackers 60] [--silent 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import resource
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

from tests.integration.harness import (  # noqa: E402
    GOOD_JUSTIFICATION,
    ProxyProcess,
    SshdTarget,
    free_port,
    issue_code,
    ssh,
    write_proxy_config,
)
from tests.integration.inproc import ScriptedClient, Step, connect  # noqa: E402

TARGET = "db01"
WRONG = "BG-ZZZZZZ-0000-0000-0000-0000-0000-0000"
BIG = "INC-1 " + "x" * 200_000
MAX_DURATION = 600.0


@dataclass
class Tally:
    answers: int = 0
    connections: int = 0
    silent_opened: int = 0
    fresh: list[tuple[float, bool]] = field(default_factory=list)  # (seconds, first try ok)
    rss_peak: int = 0


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def what_grew(database: Path) -> list[tuple[str, int, int]]:
    """(event type or table, rows, bytes of data) for what the store holds."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT type, COUNT(*), SUM(LENGTH(data)) FROM events GROUP BY type ORDER BY 3 DESC"
        ).fetchall()
        rows += db.execute(
            "SELECT 'alerts (outbox)', COUNT(*), SUM(LENGTH(payload)) FROM alerts"
        ).fetchall()
    return [(str(t), int(n), int(b or 0)) for t, n, b in rows]


def store_size(database: Path) -> int:
    wal = Path(f"{database}-wal")
    return database.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


async def attacker(port: int, source: str, until: float, tally: Tally) -> None:
    while time.monotonic() < until:
        client = ScriptedClient([Step(f"victim@{TARGET}", WRONG, BIG)] * 1000)
        tally.connections += 1
        with contextlib.suppress(OSError, asyncssh.Error, TimeoutError):
            conn = await connect(
                port, client, within=max(1.0, until - time.monotonic()), local_addr=source
            )
            conn.close()
        tally.answers += len(client.answered_at)
        await asyncio.sleep(0.05)


async def silent_holder(port: int, source: str, until: float, tally: Tally) -> None:
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
        except OSError:
            await asyncio.sleep(0.5)
            continue
        tally.silent_opened += 1
        try:
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(max(0.1, until - time.monotonic())):
                    while await reader.read(65536):
                        pass
        finally:
            writer.close()
        await asyncio.sleep(0.2)


async def fresh_logins(port: int, code: str, until: float, every: float, tally: Tally) -> None:
    n = 0
    await asyncio.sleep(min(every, 10.0))  # let the flood and the silent ones settle in
    while time.monotonic() < until:
        n += 1
        started = time.monotonic()
        result = await asyncio.to_thread(
            ssh,
            port,
            f"engineer@{TARGET}",
            code,
            "true",
            args=["-b", f"127.0.42.{n}"],
            justifications=[GOOD_JUSTIFICATION],
            timeout=60,
        )
        tally.fresh.append((time.monotonic() - started, result.returncode == 0))
        await asyncio.sleep(max(0.0, every - (time.monotonic() - started)))


async def sample_rss(pid: int, until: float, tally: Tally) -> None:
    while time.monotonic() < until:
        tally.rss_peak = max(tally.rss_peak, rss(pid))
        await asyncio.sleep(0.5)


async def flood(args: argparse.Namespace, proxy: ProxyProcess, code: str) -> Tally:
    tally = Tally()
    until = time.monotonic() + args.duration
    pid = proxy.process.pid
    tasks = [asyncio.ensure_future(sample_rss(pid, until, tally))]
    for i in range(args.silent):
        tasks.append(
            asyncio.ensure_future(silent_holder(proxy.port, f"127.0.41.{1 + i % 5}", until, tally))
        )
    for i in range(1, args.attackers + 1):
        tasks.append(asyncio.ensure_future(attacker(proxy.port, f"127.0.40.{i}", until, tally)))
    tasks.append(asyncio.ensure_future(fresh_logins(proxy.port, code, until, args.every, tally)))
    async with asyncio.timeout(args.duration + 120):
        await asyncio.gather(*tasks)
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--attackers", type=int, default=60)
    parser.add_argument("--silent", type=int, default=300)
    parser.add_argument("--every", type=float, default=15.0, help="seconds between fresh logins")
    args = parser.parse_args()
    args.duration = min(args.duration, MAX_DURATION)
    logging.basicConfig(level=logging.ERROR)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))

    with tempfile.TemporaryDirectory(prefix="bg-flood-") as tmp:
        directory = Path(tmp)
        target = SshdTarget.start(directory / "target")
        try:
            config = write_proxy_config(
                directory / "proxy", free_port(), {TARGET: target.target_entry()}
            )
            proxy = ProxyProcess.start(config)
            try:
                code = issue_code(config, "engineer", uses=0)
                time.sleep(1.0)
                store0, rss0 = store_size(proxy.database), rss(proxy.process.pid)
                started = time.monotonic()
                tally = asyncio.run(flood(args, proxy, code))
                elapsed = time.monotonic() - started
                time.sleep(2.0)  # the last writes land
                during = store_size(proxy.database)
            finally:
                proxy.stop()
            # Stopped: the WAL is checkpointed into the database and removed, so what is
            # left is what the flood made the store keep (the summaries of the last minute
            # included: they are written at stop).
            store1 = store_size(proxy.database)
            kinds = what_grew(proxy.database)
        finally:
            target.stop()

    growth = store1 - store0
    wal = during - store0
    print(f"flood: {elapsed:.0f} s, {args.attackers} attackers, {args.silent} silent connections")
    print(
        f"  attack: {tally.answers} answers of 200 KB ({tally.answers / elapsed:.1f}/s), "
        f"{tally.connections} connections; silent connections opened: {tally.silent_opened}"
    )
    print(
        f"  store growth: {growth / 2**20:.2f} MiB kept after stop "
        f"(extrapolated to 10 minutes: {growth * 600 / elapsed / 2**20:.2f} MiB; bar 5 MiB); "
        f"database + WAL at the end of the flood: +{wal / 2**20:.2f} MiB"
    )
    print(
        f"  proxy RSS: {rss0 / 2**20:.0f} MiB before, peak {tally.rss_peak / 2**20:.0f} MiB, "
        f"growth {(tally.rss_peak - rss0) / 2**20:.0f} MiB (bar 64 MiB)"
    )
    print(
        "  what the store holds: " + ", ".join(f"{t} {n} ({b / 1024:.0f} KiB)" for t, n, b in kinds)
    )
    times = [t for t, _ in tally.fresh]
    ok = sum(1 for _, first in tally.fresh if first)
    if times:
        print(
            f"  fresh logins (OpenSSH, first try): {ok}/{len(times)} got in; "
            f"median {statistics.median(times):.1f} s, max {max(times):.1f} s (bar 15 s)"
        )


if __name__ == "__main__":
    main()
