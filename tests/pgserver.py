"""A real PostgreSQL server for the fleet tests, and a TCP relay that can hang.

Owns: finding Debian's server binaries (``/usr/lib/postgresql/*/bin``), a cluster made
by ``initdb`` in a 0700 temporary folder as the unprivileged user ``nobody`` (when the
tests run as root; as the current user otherwise), started with ``postgres`` on a free
loopback port with fsync off (a test cluster need not survive a power cut), stopped
``fast`` or ``immediate`` (a crash), and removed at exit. ``psql`` runs SQL as the
superuser over the cluster's private Unix socket; ``create_db``, ``dsn``, ``dump`` and
``restore`` are what the ledger tests need. Local and loopback connections are trusted:
the tests exercise the ledger's behaviour, not PostgreSQL's authentication.

``HangRelay`` forwards a loopback port to the server and, on command, stops forwarding
without closing anything (a hung network or server), resumes, or drops the server's
replies: the failures a ledger client must bound.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

__all__ = ["HangRelay", "PgMissing", "PgServer", "find_bindir", "free_port", "running_server"]

LOOPBACK = "127.0.0.1"
SUPERUSER = "postgres"
START_WITHIN = 60.0  # seconds; initdb + start on a loaded 2-core machine
UNPRIVILEGED = "nobody"


class PgMissing(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/N/bin`` holding ``initdb`` and ``postgres``."""
    found = [
        Path(p)
        for p in glob.glob("/usr/lib/postgresql/*/bin")
        if os.access(os.path.join(p, "initdb"), os.X_OK)
        and os.access(os.path.join(p, "postgres"), os.X_OK)
    ]
    if not found:
        raise PgMissing(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/postgres): "
            "install Debian's postgresql package (./run-tests does: run it as root once)"
        )

    def major(path: Path) -> float:
        try:
            return float(path.parent.name)
        except ValueError:
            return 0.0

    return max(found, key=major)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _as_unprivileged(*, die_with_parent: bool = False) -> list[str]:
    """The argv prefix that runs a program as ``nobody`` (initdb refuses root).

    ``die_with_parent``: the program gets SIGQUIT (PostgreSQL's immediate shutdown) when
    the test process dies, even by SIGKILL, so no server outlives its tests.
    """
    death = ["setpriv", "--pdeathsig", "SIGQUIT"] if die_with_parent else []
    if os.geteuid() != 0:
        return [*death, "--"] if death else []
    return [
        *(death or ["setpriv"]),
        "--reuid",
        UNPRIVILEGED,
        "--regid",
        "nogroup",
        "--clear-groups",
        "--",
    ]


def _cleanup(proc_ref: list[subprocess.Popen[bytes] | None], root: Path) -> None:
    """At exit (or when the server is collected): crash-stop the server, remove its files."""
    proc = proc_ref[0]
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    shutil.rmtree(root, ignore_errors=True)


class PgServer:
    """One PostgreSQL cluster of its own. ``start()`` before use; ``stop()`` any time."""

    def __init__(self, *, settings: Mapping[str, str] | None = None) -> None:
        self.bindir = find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="breakglass-pg-"))  # mode 0700
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.settings = dict(settings or {})
        self._dumps = 0
        self._ever_started = False
        self._proc: list[subprocess.Popen[bytes] | None] = [None]
        # Removed even if the test run forgets to stop it or is interrupted.
        self._finalizer = weakref.finalize(self, _cleanup, self._proc, self.root)
        atexit.register(self._finalizer)
        self._initdb()

    def _initdb(self) -> None:
        self.socket_dir.mkdir(mode=0o700)
        if os.geteuid() == 0:
            user = pwd.getpwnam(UNPRIVILEGED)
            for path in (self.root, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run(
            [
                *_as_unprivileged(),
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )

    def _run(self, argv: list[str], what: str, timeout: float = START_WITHIN) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"{what} failed (exit {done.returncode}): {done.stderr.strip() or done.stdout}"
            )
        return done.stdout

    @property
    def running(self) -> bool:
        proc = self._proc[0]
        return proc is not None and proc.poll() is None

    def start(self) -> None:
        """Start the server on ``self.port`` (the same port after a stop) and wait until it
        accepts connections."""
        if self.running:
            return
        argv = [
            *_as_unprivileged(die_with_parent=True),
            str(self.bindir / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-k",
            str(self.socket_dir),
            "-c",
            f"listen_addresses={LOOPBACK}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=100",
            "-c",
            "shared_buffers=16MB",
        ]
        for key, value in self.settings.items():
            argv += ["-c", f"{key}={value}"]
        for attempt in range(3):
            if self._started(argv):
                self._ever_started = True
                return
            # Another program took the free port between our look and the bind: on a
            # first start, look again (a restart keeps its port: DSNs already name it).
            if self._ever_started or "could not bind" not in self.log_tail() or attempt == 2:
                raise RuntimeError(f"postgres exited at start: {self.log_tail()}")
            self.port = free_port()
            argv[argv.index("-p") + 1] = str(self.port)

    def _started(self, argv: list[str]) -> bool:
        """Run ``argv``; True once the server accepts connections, False if it exited."""
        with open(self.log, "ab") as log:
            # Its own session: a Ctrl-C meant for pytest does not reach the server, which
            # the finalizer then stops cleanly.
            self._proc[0] = subprocess.Popen(
                argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + START_WITHIN
        while True:
            proc = self._proc[0]
            if proc is None or proc.poll() is not None:
                self._proc[0] = None
                return False
            if self._accepts():
                return True
            if time.monotonic() > deadline:
                self.stop("immediate")
                raise RuntimeError(f"postgres did not start within {START_WITHIN:g}s")
            time.sleep(0.05)

    def _accepts(self) -> bool:
        done = subprocess.run(
            [
                str(self.bindir / "pg_isready"),
                "-q",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
            ],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    def stop(self, mode: Literal["fast", "immediate"] = "fast") -> None:
        """Stop the server: ``fast`` (clients disconnected, a clean shutdown) or
        ``immediate`` (no shutdown checkpoint: a crash, recovered at the next start)."""
        proc = self._proc[0]
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT if mode == "fast" else signal.SIGQUIT)
        try:
            proc.wait(timeout=START_WITHIN)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        self._proc[0] = None

    def close(self) -> None:
        """Stop (immediate) and remove every file."""
        self._finalizer()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run ``sql`` as the superuser; its unaligned, tuples-only output."""
        return self._run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                db,
                "-c",
                sql,
            ],
            "psql",
        )

    def dsn(self, db: str, user: str = SUPERUSER, *, port: int | None = None) -> str:
        """A libpq URI for ``db`` as ``user`` over loopback TCP (``port``: e.g. a relay's)."""
        return f"postgresql://{user}@{LOOPBACK}:{port or self.port}/{db}"

    def create_db(self, name: str) -> str:
        """A new, empty database; its DSN as the superuser."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_db(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def create_role(self, name: str) -> None:
        """A login role (no password: the test cluster trusts loopback)."""
        self.psql(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}')"
            f' THEN CREATE ROLE "{name}" LOGIN; END IF; END $$'
        )

    def require_password(self, role: str, password: str) -> None:
        """``role`` logs in over loopback with ``password`` only (SCRAM); others stay trusted."""
        self.create_role(role)
        self.psql(f"ALTER ROLE \"{role}\" PASSWORD '{password}'")
        hba = self.data / "pg_hba.conf"
        rule = f"host all {role} {LOOPBACK}/32 scram-sha-256\n"
        text = hba.read_text()
        if rule not in text:
            hba.write_text(rule + text)  # first match wins
        self.psql("SELECT pg_reload_conf()")
        # The reload is asynchronous: done when a password-less login is refused.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        deadline = time.monotonic() + START_WITHIN
        while time.monotonic() < deadline:
            done = subprocess.run(
                [
                    str(self.bindir / "psql"),
                    "-X",
                    "-w",
                    "-c",
                    "SELECT 1",
                    self.dsn("postgres", role),
                ],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            if done.returncode != 0 and "password" in done.stderr:
                return
            time.sleep(0.05)
        raise RuntimeError(f"the server did not start asking {role} for a password")

    def dump(self, db: str) -> Path:
        """``pg_dump`` of ``db`` (custom format) into the cluster's folder."""
        self._dumps += 1
        path = self.root / f"{db}-{self._dumps}.dump"
        self._run(
            [
                str(self.bindir / "pg_dump"),
                "-Fc",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-f",
                str(path),
                db,
            ],
            "pg_dump",
        )
        return path

    def restore(self, db: str, path: Path) -> None:
        """Replace ``db`` by the dump at ``path`` (connections to it are ended)."""
        self.drop_db(db)
        self.create_db(db)
        self._run(
            [
                str(self.bindir / "pg_restore"),
                "--exit-on-error",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                db,
                str(path),
            ],
            "pg_restore",
        )


class HangRelay:
    """A loopback TCP relay to ``127.0.0.1:target_port`` that the test controls.

    ``hang()`` stops forwarding in both directions without closing anything (bytes read
    meanwhile are held, not lost; new connections are accepted and get nothing),
    ``resume()`` forwards again, ``drop_replies()`` forwards requests but discards the
    server's replies. Runs its own event loop in a thread, so it serves any test,
    synchronous or not; every control call has taken effect when it returns.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections = 0  # accepted so far
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._open = asyncio.Event()
        self._drop = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> HangRelay:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._thread.start()
        self._call(self._start())

    def _call(self, coro: object) -> None:
        assert asyncio.iscoroutine(coro)
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _start(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _set(self, *, forward: bool, drop: bool) -> None:
        self._drop = drop
        if forward:
            self._open.set()
        else:
            self._open.clear()

    def hang(self) -> None:
        self._call(self._set(forward=False, drop=self._drop))

    def resume(self) -> None:
        self._call(self._set(forward=True, drop=False))

    def drop_replies(self) -> None:
        self._call(self._set(forward=True, drop=True))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Ended by close(): a cancelled handler would be logged by asyncio as an error.
        with contextlib.suppress(asyncio.CancelledError):
            await self._relay(reader, writer)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            await self._open.wait()
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            writer.close()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer, replies=False),
            self._pipe(up_reader, writer, replies=True),
            return_exceptions=True,
        )
        for w in (writer, up_writer):
            w.close()
            self._writers.discard(w)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replies: bool
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                await self._open.wait()  # hung: hold the bytes, close nothing
                if replies and self._drop:
                    continue
                writer.write(chunk)
                await writer.drain()
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.write_eof()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@contextlib.contextmanager
def running_server() -> Iterator[PgServer]:
    """A started server, stopped and removed afterwards."""
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
