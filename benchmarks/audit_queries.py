"""How fast the auditor's commands answer over a big audit store.

Fills a temporary SQLite store (the real schema and indexes, ``SQLiteStore.open``) with
100,000 sessions and 1,000,000 events spread over two years, as one valid hash chain
(``chain.link``) with the projections written by the store's own statements
(``apply_event``), plus real casts for the last 30 days. Then times ``sessions`` (with
each filter, and every session as a table and as JSON), ``show``, ``report`` (Markdown,
JSON and CSV over 30 and 365 days) and ``verify``: once in-process (query + rendering,
output discarded) and ``--runs`` times as the real command (a new process, as an
auditor runs it), of which the median wall and CPU time are shown.

    .venv/bin/python benchmarks/audit_queries.py [--sessions 100000] [--runs 3]
        [--keep DIR] [--skip-verify] [--only TEXT]

Prints a table; asserts nothing about time (tests never do). Issue 6 asks for every
``sessions``, ``show`` and ``report`` case under a second: the last column says which
is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import random
import resource
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.cli import main as cli_main  # noqa: E402
from proxy.core import chain, events  # noqa: E402
from proxy.core.ids import session_id  # noqa: E402
from proxy.core.recording import CastEncoder  # noqa: E402
from proxy.recorder import recording_path  # noqa: E402
from proxy.store.base import NewEvent  # noqa: E402
from proxy.store.projection import apply_event  # noqa: E402
from proxy.store.sqlite import SQLiteStore  # noqa: E402

DAY = 86400.0
# Varied like real work: a search for one service or file hits well under 1% of sessions.
VERBS = [
    "systemctl status {}",
    "systemctl restart {}",
    "journalctl -u {} --since today",
    "tail -n 200 /var/log/{}.log",
    "kill -HUP $(pidof {})",
    "du -sh /var/lib/{}",
    "df -h",
    "free -m",
]
SERVICES = [f"svc{i:03d}" for i in range(300)]
PATHS = [f"/srv/{svc}/config.yml" for svc in SERVICES] + ["/etc/passwd", "/etc/hosts"]


def command_line(rng: random.Random) -> str:
    return rng.choice(VERBS).format(rng.choice(SERVICES))


def events_for(n_sessions: int, now: float, root: Path) -> tuple[list[NewEvent], list[str]]:
    rng = random.Random(6)
    people = [f"p{i:03d}" for i in range(200)]
    targets = [f"db{i:02d}" for i in range(40)] + [f"web{i:02d}" for i in range(40)]
    start = now - 730 * DAY
    step = (730 * DAY - 3600) / n_sessions
    out: list[NewEvent] = []
    for i, person in enumerate(people):
        out.append(
            NewEvent(
                "cred_issued",
                start - 1000 + i,
                data={"id": f"C{i:05d}", "person": person, "issued_by": "root"},
            )
        )
    ids: list[str] = []
    for k in range(n_sessions):
        t = start + k * step
        sid = session_id(t, k.to_bytes(4, "big"))
        ids.append(sid)
        p = rng.randrange(len(people))
        person = people[p]
        cred = f"C{p:05d}"
        target = rng.choice(targets)
        duration = rng.uniform(30, 3000)
        recent = t > now - 30 * DAY
        path = recording_path(root, sid, 1)
        cmds = [command_line(rng) for _ in range(4)]
        base = {"credential_id": cred, "person": person}
        out.append(NewEvent("cred_used", t, sid, data={**base, "use": k}))
        out.append(
            NewEvent(
                "session_start",
                t,
                sid,
                None,
                {
                    **base,
                    "source": f"127.0.0.{1 + p % 200}",
                    "client_version": "SSH-2.0-OpenSSH_9.2p1",
                    "target": target,
                    "login": "root",
                    "justification": f"INC-{10000 + k} investigating {target} on call",
                    "deadline": t + 3600,
                },
            )
        )
        out.append(
            NewEvent(
                "channel_start",
                t + 1,
                sid,
                1,
                {
                    "kind": "shell",
                    "command": None,
                    "pty": True,
                    "term": "xterm",
                    "recording": str(path) if recent else None,
                },
            )
        )
        for j, cmd in enumerate(cmds):
            out.append(
                NewEvent(
                    "command",
                    t + 2 + j,
                    sid,
                    1,
                    {"text": cmd, "offset": 1.0 + j, "source": "pty"},
                )
            )
        out.append(
            NewEvent(
                "file_open",
                t + 9,
                sid,
                1,
                {"path": rng.choice(PATHS), "flags": ["read"], "source": "sftp", "offset": 8.0},
            )
        )
        end: dict[str, Any] = {"exit_status": 0, "exit_signal": None}
        if recent:
            sha, size = write_cast(path, root, cmds, int(t))
            end.update(recording_sha256=sha, recording_bytes=size)
        out.append(NewEvent("channel_end", t + duration - 1, sid, 1, end))
        if k % 20 == 0:
            alert = events.Alert(
                alert_id=f"A{k:017d}",
                v=1,
                rule="max_sessions_per_person",
                time="",
                session_id=sid,
                person=person,
                source=None,
                target=target,
                login="root",
                justification=None,
                credential_id=cred,
                detail="more sessions than allowed",
                proxy="bench",
            )
            out.append(NewEvent.of(alert, t, sid))
        elif k % 50 == 1:
            out.append(NewEvent.of(events.Flag("quiet_hours", f"A{k:017d}", None), t, sid))
        reason = "client_exit" if k % 13 else "time_limit"
        out.append(NewEvent("session_end", t + duration, sid, None, {"reason": reason}))
    return out, ids


def write_cast(path: Path, root: Path, cmds: list[str], ts: int) -> tuple[str, int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    enc = CastEncoder(width=80, height=24, timestamp=ts, max_bytes=1 << 20)
    data = enc.header()
    for j, cmd in enumerate(cmds):
        data += enc.output(1.0 + j, f"$ {cmd}\r\nok\r\n".encode())
        data += enc.marker(1.0 + j, f"command: {cmd}")
    data += enc.finish(5.0)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), len(data)


def fill(db: Path, events: list[NewEvent]) -> None:
    """One transaction: the chain rows, then the projections by the store's statements."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")  # filling a throwaway file, not the audit path
    rows = []
    prev = chain.GENESIS
    statements: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for seq, ev in enumerate(events, start=1):
        data_json = chain.canonical(ev.data)
        digest = chain.link(prev, seq, ev.time, ev.type, ev.session_id, ev.channel, data_json)
        rows.append((seq, ev.time, ev.type, ev.session_id, ev.channel, data_json, prev, digest))
        prev = digest
        for sql, params in apply_event(ev):
            statements[sql].append(params)
    con.execute("BEGIN")
    con.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    # INSERTs before UPDATEs: each UPDATE only needs its own row to exist.
    for sql in sorted(statements, key=lambda s: not s.startswith("INSERT")):
        con.executemany(sql, statements[sql])
    creds = sorted(
        {(e.data["credential_id"], e.data["person"]) for e in events if e.type == "cred_used"}
    )
    con.executemany(
        "INSERT INTO credentials (id, person, issued_by, issued_at, valid_until, window,"
        " max_uses, targets, hash) VALUES (?, ?, 'root', 0, 1e12, 1e9, 0, '[\"*\"]', 'x')",
        creds,
    )
    con.execute("COMMIT")
    con.execute("ANALYZE")
    con.close()


def in_process(argv: list[str]) -> tuple[float, int, int]:
    out = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = cli_main(argv)
    return time.perf_counter() - t, rc, out.getvalue().count("\n")


def as_command(argv: list[str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of the command in a new process. CPU time
    is what to compare on a busy machine: it does not count waiting for a core."""
    exe = str(Path(sys.executable).parent / "breakglass")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([exe, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument(
        "--keep", type=Path, help="build in this folder and keep it (reused if already built)"
    )
    ap.add_argument("--skip-verify", action="store_true")
    ap.add_argument("--runs", type=int, default=3, help="runs of each command (median shown)")
    ap.add_argument("--only", help="only the cases whose command line contains this")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bg-bench-") as tmpname:
        base = args.keep or Path(tmpname)
        base.mkdir(parents=True, exist_ok=True)
        root = base / "recordings"
        root.mkdir(mode=0o700, exist_ok=True)
        db = root / "audit.db"
        now = time.time()
        t0 = time.perf_counter()
        if args.keep and db.exists():
            ids = [r[0] for r in sqlite3.connect(db).execute("SELECT id FROM sessions ORDER BY id")]
            n_events = sqlite3.connect(db).execute("SELECT max(seq) FROM events").fetchone()[0]
            print(f"reusing {db} (its sessions are as old as when it was built)")
        else:
            asyncio.run(_create(db))
            events, ids = events_for(args.sessions, now, root)
            fill(db, events)
            n_events = len(events)
        built = time.perf_counter() - t0
        cfg = base / "proxy.yaml"
        cfg.write_text(
            "listen: {host: 127.0.0.1, port: 2222, host_key: recordings/k}\n"
            "storage: {database: recordings/audit.db, recordings: recordings}\n"
            "targets: {}\n"
        )
        size = sum(p.stat().st_size for p in root.glob("audit.db*"))
        print(
            f"store: {len(ids)} sessions, {n_events} events, {size / 1e6:.0f} MB;"
            f" built in {built:.1f} s"
        )
        recent = ids[-1]
        c = ["-c", str(cfg)]
        cases: list[list[str]] = [
            ["sessions", "--since", "7d"],
            ["sessions", "--since", "30d", "--json"],
            ["sessions", "--person", "p042"],
            ["sessions", "--target", "db07", "--since", "90d"],
            ["sessions", "--end-reason", "time_limit", "--since", "30d"],
            ["sessions", "--flagged", "--since", "30d"],
            ["sessions", "--command", "*restart svc042*", "--since", "30d"],
            ["sessions", "--command", "systemctl restart svc042"],
            ["sessions", "--command", "*svc042*"],
            ["sessions", "--path", "/srv/svc042/*"],
            ["sessions", "--path", "/etc/passwd"],
            ["sessions", "--since", "365d"],
            ["sessions"],
            ["sessions", "--json"],
            ["show", recent],
            ["show", recent, "--json"],
            ["report"],
            ["report", "--format", "json"],
            ["report", "--format", "csv"],
            ["report", "--since", "365d"],
            ["report", "--since", "365d", "--format", "json"],
            ["report", "--since", "365d", "--format", "csv"],
        ]
        if not args.skip_verify:
            cases.append(["verify"])
        runs = max(1, args.runs)
        print(
            f"{'command':48} {'in-process':>11} {'command':>9} {'(cpu)':>8} {'(min)':>8}"
            f"  {'lines out':>9}  under 1 s  (command: median of {runs})"
        )
        for argv in cases:
            label = shlex.join(argv).replace(recent, "SESSION")
            if args.only and args.only not in label:
                continue
            inner, rc, lines = in_process([*c, *argv])
            timed = [as_command([*c, *argv]) for _ in range(runs)]
            outer = statistics.median(w for w, _ in timed)
            cpu = statistics.median(u for _, u in timed)
            fastest = min(w for w, _ in timed)
            note = "" if rc == 0 else f"  (exit {rc})"
            goal = "" if argv[0] == "verify" else ("yes" if outer < 1.0 else "NO")
            print(
                f"{label:48} {inner:>10.3f}s {outer:>8.3f}s {cpu:>7.3f}s {fastest:>7.3f}s"
                f"  {lines:>9}  {goal:9}{note}",
                flush=True,
            )
        timed = [as_command(["--help"]) for _ in range(runs)]
        wall = statistics.median(w for w, _ in timed)
        cpu = statistics.median(u for _, u in timed)
        print(f"{'(start-up: breakglass --help)':48} {'':>11} {wall:>8.3f}s {cpu:>7.3f}s")
    return 0


async def _create(db: Path) -> None:
    store = await SQLiteStore.open(db)
    await store.close()


if __name__ == "__main__":
    raise SystemExit(main())
