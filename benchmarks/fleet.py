"""What a fleet costs a node: login time, bulk throughput and ship lag, with and without
``fleet:`` (issue 21).

Two real ``breakglass serve`` proxies in front of one throwaway sshd, all on 127.0.0.1:
``plain`` (no ``fleet:`` section) and ``fleet`` (shipping to a throwaway PostgreSQL
cluster, ``tests/pgserver.py``, migrated with ``breakglass fleet migrate``). Both record,
with default settings otherwise.
- login: wall time of ``ssh HOST true`` (code, justification, argon2, upstream connect),
  plain and fleet interleaved;
- bulk: ``head -c SIZE /dev/zero`` through each, first byte to EOF, interleaved;
- ship lag: ``--sessions`` sessions on the fleet node at once, each printing a line every
  50 ms for ``--busy`` seconds (so every channel records and its cast grows). The ledger's
  last event of the node is sampled every 0.1 s; afterwards, each sample's lag is how old
  the oldest event in the node's journal not yet in the ledger was (0 when none), and
  the cast bytes on disk not yet in the ledger are sampled alongside.

    .venv/bin/python benchmarks/fleet.py [--runs 3] [--logins 10] [--size 100M]
        [--sessions 50] [--busy 10]

Prints medians and ratios (fleet / plain) against the issue's goals; asserts nothing.
Every client has a deadline; the whole run is bounded (about 2 minutes by default).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from benchmarks import transfer  # noqa: E402
from benchmarks.rig import PROXY_OPTIONS, raise_nofile  # noqa: E402
from proxy.audit.checkpoint import key_path, load_or_generate, public_hex  # noqa: E402
from tests.integration.harness import (  # noqa: E402
    GOOD_JUSTIFICATION,
    LOOPBACK,
    SSH,
    ProxyProcess,
    SshdTarget,
    free_port,
    issue_code,
    run_cli,
    write_proxy_config,
)
from tests.pgserver import PgServer  # noqa: E402

TARGET = "bench01"
PERSON = "bencher"
NODE = "bench-a"
PATHS = ("plain", "fleet")
OPEN_AT_ONCE = 8  # sessions being opened at the same time (sshd's MaxStartups is 10)
OPEN_PER_S = 10.0  # under the proxy's 120 new connections per 10 s from one address
SAMPLE_EVERY = 0.1
DRAIN_WITHIN = 60.0

_ASKPASS = """#!/bin/sh
case "$1" in
  *[Jj]ustif*) cat "$(dirname "$0")/justification" ;;
  *[Cc]ode*)   cat "$(dirname "$0")/code" ;;
  *) exit 1 ;;
esac
"""


@dataclass
class Node:
    name: str
    config: Path
    proxy: ProxyProcess
    askpass: Path
    database: Path
    recordings: Path

    def ssh(self, command: str) -> list[str]:
        options = [a for o in PROXY_OPTIONS for a in ("-o", o)]
        return [
            SSH,
            "-F",
            "none",
            "-p",
            str(self.proxy.port),
            *options,
            f"{PERSON}@{TARGET}@{LOOPBACK}",
            command,
        ]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "DISPLAY")}
        env.update({"SSH_ASKPASS": str(self.askpass), "SSH_ASKPASS_REQUIRE": "force"})
        return env


def start_node(
    directory: Path, target: SshdTarget, fleet: dict[str, object] | None, name: str
) -> Node:
    recordings = directory / "recordings"
    recordings.mkdir(mode=0o700, parents=True, exist_ok=True)
    config = write_proxy_config(
        directory,
        free_port(),
        {TARGET: target.target_entry()},
        policy={"max_live_sessions": 500},
        fleet=fleet,
    )
    if fleet is not None:
        done = run_cli(config, "fleet", "migrate", timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"fleet migrate failed: {done.stderr}")
    proxy = ProxyProcess.start(config)
    askpass = directory / "askpass"
    askpass.mkdir(mode=0o700)
    (askpass / "code").write_text(issue_code(config, PERSON, uses=0) + "\n")
    (askpass / "justification").write_text(GOOD_JUSTIFICATION + "\n")
    script = askpass / "askpass.sh"
    script.write_text(_ASKPASS)
    script.chmod(0o700)
    return Node(name, config, proxy, script, directory / "audit.db", recordings)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def measure_logins(nodes: dict[str, Node], runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {p: [] for p in PATHS}
    for i in range(runs):
        for path in PATHS if i % 2 == 0 else reversed(PATHS):
            node = nodes[path]
            out[path].append(transfer.timed_run(node.ssh("true"), node.env(), timeout=60) * 1000)
    return out


def measure_bulk(nodes: dict[str, Node], runs: int, size: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {p: [] for p in PATHS}
    for i in range(runs):
        for path in PATHS if i % 2 == 0 else reversed(PATHS):
            node = nodes[path]
            sample = transfer.read_stream(
                node.ssh(f"head -c {size} /dev/zero"),
                node.env(),
                pid=None,
                timeout=transfer.rig_timeout(size),
                tty=False,
            )
            out[path].append(sample.mb_per_s)
    return out


@dataclass
class LagResult:
    sessions: int
    failed: int
    events: int
    lags: list[float]  # seconds, one per sample while the sessions were busy
    cast_lag: list[int]  # bytes on disk not yet in the ledger, per sample
    drained: float  # seconds from the last session's end to everything in the ledger


def _cast_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".cast"):
                with contextlib.suppress(OSError):  # a cast removed meanwhile
                    total += (Path(folder) / name).stat().st_size
    return total


def _journal(database: Path) -> list[tuple[int, float]]:
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        return [(int(s), float(t)) for s, t in db.execute("SELECT seq, time FROM events")]
    finally:
        db.close()


def measure_lag(node: Node, dsn: str, sessions: int, busy: float) -> LagResult:
    lines = max(int(busy / 0.05), 1)
    command = f"i=0; while [ $i -lt {lines} ]; do echo line $i; i=$((i+1)); sleep 0.05; done"
    samples: list[tuple[float, int, int, int]] = []  # (time, ledger seq, ledger bytes, disk)
    procs: list[subprocess.Popen[bytes]] = []
    deadline = time.monotonic() + busy + sessions / OPEN_PER_S + 120
    with psycopg.connect(dsn, autocommit=True) as conn:

        def sample() -> None:
            row = conn.execute(
                "SELECT (SELECT coalesce(max(seq), 0) FROM events WHERE node = %s),"
                " (SELECT coalesce(sum(length(data)), 0) FROM cast_chunks WHERE node = %s)",
                (node.name, node.name),
            ).fetchone()
            assert row is not None
            samples.append((time.time(), int(row[0]), int(row[1]), _cast_bytes(node.recordings)))

        next_open = time.monotonic()
        while len(procs) < sessions or any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                break
            opening = sum(1 for p in procs[-OPEN_AT_ONCE:] if p.poll() is None)
            if len(procs) < sessions and time.monotonic() >= next_open and opening < OPEN_AT_ONCE:
                procs.append(
                    subprocess.Popen(
                        node.ssh(command),
                        env=node.env(),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                next_open = time.monotonic() + 1 / OPEN_PER_S
                continue
            sample()
            time.sleep(SAMPLE_EVERY)
        ended = time.time()
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        journal = _journal(node.database)
        head = max((s for s, _ in journal), default=0)
        drain_deadline = time.monotonic() + DRAIN_WITHIN
        while time.monotonic() < drain_deadline:
            sample()
            if samples[-1][1] >= head and samples[-1][2] >= samples[-1][3]:
                break
            time.sleep(SAMPLE_EVERY)
    drained = samples[-1][0] - ended
    journal.sort()
    lags: list[float] = []
    cast_lag: list[int] = []
    for t, shipped, ledger_bytes, disk in samples:
        if t > ended:
            break
        waiting = [when for seq, when in journal if seq > shipped and when <= t]
        lags.append(t - min(waiting) if waiting else 0.0)
        cast_lag.append(max(disk - ledger_bytes, 0))
    failed = sum(1 for p in procs if p.returncode != 0)
    return LagResult(len(procs), failed, len(journal), lags, cast_lag, drained)


def quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="bulk transfers per path (3)")
    parser.add_argument("--logins", type=int, default=10, help="logins per path (10)")
    parser.add_argument("--size", type=parse_size, default=parse_size("100M"))
    parser.add_argument("--sessions", type=int, default=50, help="busy sessions (50)")
    parser.add_argument("--busy", type=float, default=10.0, help="seconds each is busy (10)")
    args = parser.parse_args(argv)
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="bg-bench-fleet-") as tmp:
        directory = Path(tmp)
        pg = PgServer()
        target: SshdTarget | None = None
        nodes: dict[str, Node] = {}
        try:
            pg.start()
            dsn = pg.create_db("ledger")
            target = SshdTarget.start(directory / "target")
            key = load_or_generate(key_path(directory / "fleet" / "recordings"))
            pin = f"ed25519 {public_hex(key.public_key())}"
            fleet: dict[str, object] = {"node": NODE, "postgres": dsn, "peers": {NODE: pin}}
            nodes["plain"] = start_node(directory / "plain", target, None, "plain")
            nodes["fleet"] = start_node(directory / "fleet", target, fleet, NODE)
            print(f"# fleet benchmark, commit {_commit()}, load {os.getloadavg()[0]:.1f}")
            # Lag first: the bulk transfers' casts (tens of MB) would still be shipping.
            lag = measure_lag(nodes["fleet"], dsn, args.sessions, args.busy)
            logins = measure_logins(nodes, args.logins)
            bulk = measure_bulk(nodes, args.runs, args.size)
        finally:
            for node in nodes.values():
                node.proxy.stop()
            if target is not None:
                target.stop()
            pg.close()
    print(_table(logins, bulk, args.size))
    print(
        f"ship lag, {lag.sessions} busy sessions ({lag.failed} failed), {lag.events} events:"
        f" p50 {quantile(lag.lags, 0.5):.2f} s, p95 {quantile(lag.lags, 0.95):.2f} s,"
        f" max {max(lag.lags, default=float('nan')):.2f} s (goal: under 1 s);"
        f" cast bytes not yet in the ledger p50 {quantile(lag.cast_lag, 0.5) / 1024:.0f} KiB,"
        f" max {max(lag.cast_lag, default=0) / 1024:.0f} KiB;"
        f" all in the ledger {lag.drained:.2f} s after the last session ended"
    )
    return 0


def _table(logins: dict[str, list[float]], bulk: dict[str, list[float]], size: int) -> str:
    # (label, values, goal, whether lower is better, the bound on fleet / plain)
    rows = [
        ("login (ssh true), ms", logins, "<= 1.10", True, 1.10),
        (f"exec download {size >> 20} MiB, MB/s", bulk, ">= 0.95", False, 0.95),
    ]
    out = [f"{'metric':34}  {'plain':>8}  {'fleet':>8}  {'ratio':>6}  goal"]
    for label, values, goal, lower, bound in rows:
        plain, fleet = median(values["plain"]), median(values["fleet"])
        ratio = fleet / plain if plain else float("nan")
        verdict = "PASS" if (ratio <= bound if lower else ratio >= bound) else "FAIL"
        out.append(
            f"{label:34}  {plain:8.1f}  {fleet:8.1f}  {ratio:6.2f}  {goal} {verdict}"
            f"  (runs {', '.join(f'{v:.0f}' for v in values['fleet'])})"
        )
    return "\n".join(out)


def _commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "?"


if __name__ == "__main__":
    sys.exit(main())
