"""How fast the auditor's commands answer from the fleet's ledger (PostgreSQL).

Builds the sessions and events ``audit_queries.py`` builds (two years of them), spread
over ``--nodes`` nodes, each node's share one valid hash chain (``chain.link``), and
copies them into a fresh migrated ledger (COPY, as many rows as the shipper would have
sent). Then times ``sessions`` (with filters, and every session), ``show`` and
``report`` (30 and 365 days) as the real command configured with ``fleet:`` (a new
process each run, as an auditor runs it); median of ``--runs``.

    .venv/bin/python benchmarks/fleet_reads.py [--sessions 20000] [--nodes 2] [--runs 3]
        [--dsn postgresql://...]   # default: a throwaway server (tests/pgserver.py)

Prints a table; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from benchmarks.audit_queries import events_for  # noqa: E402
from proxy.core import chain  # noqa: E402
from proxy.store.base import NewEvent  # noqa: E402

KEY = "ed25519 " + "ab" * 32


def chains(events: list[NewEvent], nodes: list[str]) -> dict[str, list[tuple[object, ...]]]:
    """Each node's rows (node, seq, time, type, session, channel, data, prev, hash): a
    session's events go to one node, the codes' issues to every node."""
    where: dict[str | None, str] = {}
    out: dict[str, list[tuple[object, ...]]] = {n: [] for n in nodes}
    heads = dict.fromkeys(nodes, chain.GENESIS)
    for ev in events:
        if ev.session_id is None:
            targets = nodes
        else:
            node = where.setdefault(ev.session_id, nodes[len(where) % len(nodes)])
            targets = [node]
        data = chain.canonical(ev.data)
        for node in targets:
            seq = len(out[node]) + 1
            digest = chain.link(heads[node], seq, ev.time, ev.type, ev.session_id, ev.channel, data)
            out[node].append(
                (node, seq, ev.time, ev.type, ev.session_id, ev.channel, data, heads[node], digest)
            )
            heads[node] = digest
    return out


def as_command(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU time (user + system) of the command in a new process; a failing
    command stops the benchmark (its time would mean nothing)."""
    exe = str(Path(sys.executable).parent / "breakglass")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run(
        [exe, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)}: exit {done.returncode}: {done.stderr.decode()}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def load(dsn: str, rows: dict[str, list[tuple[object, ...]]]) -> None:
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY events (node, seq, time, type, session_id, channel, data, prev_hash, hash)"
            " FROM STDIN"
        ) as copy:
            for node_rows in rows.values():
                for r in node_rows:
                    copy.write_row(r)
        cur.execute("ANALYZE")


@contextlib.contextmanager
def ledger(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    from tests.pgserver import PgServer

    server = PgServer()
    server.start()
    try:
        yield server.create_db("bench")
    finally:
        server.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=20_000)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dsn", help="a migrated, empty ledger (default: a throwaway server)")
    ap.add_argument("--only", help="only the cases whose command line contains this")
    args = ap.parse_args()
    nodes = [f"bg-n{i}" for i in range(1, args.nodes + 1)]
    with tempfile.TemporaryDirectory(prefix="bg-fleet-bench-") as tmpname, ledger(args.dsn) as dsn:
        base = Path(tmpname)
        root = base / "recordings"
        root.mkdir(mode=0o700)
        t0 = time.perf_counter()
        if not args.dsn:
            asyncio.run(_migrate(dsn))
        with psycopg.connect(dsn) as conn:
            found = conn.execute("SELECT count(*), max(session_id) FROM events").fetchone()
        if found and found[0]:
            n_events, recent = int(found[0]), str(found[1])
            print(f"reusing the ledger's {n_events} events (as old as when they were loaded)")
        else:
            events, ids = events_for(args.sessions, time.time(), root)
            rows = chains(events, nodes)
            load(dsn, rows)
            n_events, recent = sum(len(r) for r in rows.values()), ids[-1]
            print(
                f"ledger: {len(ids)} sessions on {len(nodes)} nodes, {n_events} events;"
                f" built in {time.perf_counter() - t0:.1f} s"
            )
        cfg = base / "proxy.yaml"
        peers = ", ".join(f'{n}: "{KEY}"' for n in nodes)
        cfg.write_text(
            "listen: {host: 127.0.0.1, port: 2222, host_key: recordings/k}\n"
            "storage: {database: recordings/audit.db, recordings: recordings}\n"
            "targets: {}\n"
            f"fleet: {{node: {nodes[0]}, postgres: '{dsn}', peers: {{{peers}}}, timeout: 30}}\n"
        )
        cases = [
            ["sessions", "--since", "7d"],
            ["sessions", "--person", "p042"],
            ["sessions", "--flagged", "--since", "30d"],
            ["sessions", "--command", "*svc042*", "--since", "30d"],
            ["sessions", "--since", "365d"],
            ["sessions"],
            ["show", recent],
            ["report"],
            ["report", "--since", "365d"],
        ]
        print(f"{'command':40} {'wall':>8} {'(cpu)':>8} {'(min)':>8}  (median of {args.runs})")
        for argv in cases:
            label = shlex.join(argv).replace(recent, "SESSION")
            if args.only and args.only not in label:
                continue
            timed = [as_command(["-c", str(cfg), *argv]) for _ in range(max(1, args.runs))]
            wall = statistics.median(w for w, _ in timed)
            cpu = statistics.median(u for _, u in timed)
            print(f"{label:40} {wall:>7.3f}s {cpu:>7.3f}s {min(w for w, _ in timed):>7.3f}s")
    return 0


async def _migrate(dsn: str) -> None:
    from proxy.fleet.schema import migrate

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await migrate(conn)


if __name__ == "__main__":
    raise SystemExit(main())
