"""Care over months: ``breakglass target add``, ``backup`` and ``prune``.

``target add NAME HOST[:PORT]`` connects to the target only to fetch its host keys (no
authentication), shows them with their SHA256 fingerprints for an out-of-band check,
generates the proxy's Ed25519 key for that target (0600) and prints the
``authorized_keys`` line to install and the ``targets:`` snippet to paste. It never
writes the config.

``backup FILE`` copies the audit database with SQLite's online backup API (one step, so
one consistent snapshot even while the proxy writes; never a plain file copy) into FILE
(0600), checks the copy (``PRAGMA integrity_check``), then packs the recordings folder
into ``FILE.recordings.tar`` (0600). The database is copied first: every cast the
snapshot vouches for was final before its ``channel_end`` was committed.

``prune [--dry-run]`` applies ``storage.retention`` (proxy.retention).

Listed in ``COMMANDS`` (proxy.cli.registry).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import re
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from proxy.cli.registry import Command, Group
from proxy.cli.util import WRITE, open_store, operator, print_json
from proxy.config import Config
from proxy.core import events
from proxy.core.errors import StoreError
from proxy.core.text import escape
from proxy.core.units import format_duration
from proxy.store.base import NewEvent

if TYPE_CHECKING:
    import asyncssh

    from proxy.retention import PruneItem

# As proxy.config checks target names and logins.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# One key per family: the server offers one per negotiation, so ask for each in turn.
HOST_KEY_FAMILIES: tuple[tuple[str, ...], ...] = (
    ("ssh-ed25519",),
    ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"),
    ("rsa-sha2-512", "rsa-sha2-256"),
)
AUTHORIZED_OPTIONS = "restrict,pty"  # no forwarding, agent, X11 or rc; a terminal is fine
DB_SIDE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def _name(text: str) -> str:
    if not _NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: use letters, digits, '.', '_' and '-' (at most 64)"
        )
    return text


def _address(text: str) -> tuple[str, int]:
    host, port = text, "22"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise argparse.ArgumentTypeError(f"{text!r}: expected [HOST]:PORT")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST or HOST:PORT (1..65535)")
    return host, int(port)


def _add_arguments(add: argparse.ArgumentParser) -> None:
    add.add_argument("name", type=_name, metavar="NAME")
    add.add_argument("address", type=_address, metavar="HOST[:PORT]")
    add.add_argument("--login", type=_name, default="root", help="login on the target (root)")
    add.add_argument(
        "--key-dir", type=Path, default=None, help="where the key goes (<config dir>/keys)"
    )
    add.add_argument(
        "--from",
        dest="source",
        default=None,
        metavar="ADDRESS",
        help='add from="ADDRESS" (the proxy\'s address) to the key line',
    )
    add.add_argument("--timeout", type=float, default=10.0, help="seconds per connection (10)")
    add.add_argument("--json", action="store_true")


def _backup_arguments(backup: argparse.ArgumentParser) -> None:
    backup.add_argument("file", type=Path, metavar="FILE")
    backup.add_argument("--json", action="store_true")


def _prune_arguments(prune: argparse.ArgumentParser) -> None:
    prune.add_argument("--dry-run", action="store_true", help="say what would go; change nothing")
    prune.add_argument("--json", action="store_true")


def _err(message: str) -> int:
    print(f"breakglass: {message}", file=sys.stderr)
    return 1


# --------------------------------------------------------------------------- target add


async def fetch_host_keys(host: str, port: int, per_try: float) -> list[asyncssh.SSHKey]:
    """Every host key the server offers, one key exchange per key family, no login."""
    import asyncssh  # here, not at the top: it costs every other command ~0.1 s to start

    keys: dict[bytes, asyncssh.SSHKey] = {}
    failure: Exception | None = None
    for algs in HOST_KEY_FAMILIES:
        try:
            key = await asyncio.wait_for(
                asyncssh.get_server_host_key(
                    host, port, server_host_key_algs=list(algs), config=None
                ),
                per_try,
            )
        except (asyncssh.Error, ConnectionResetError, BrokenPipeError) as exc:
            # No key of this family: sshd fails the key exchange or just drops the
            # connection. (Refused, unreachable or too slow is raised at once.)
            failure = exc
            continue
        if key is not None:
            keys.setdefault(key.public_data, key)
    if not keys and failure is not None:
        raise failure
    return list(keys.values())


def key_line(key: asyncssh.SSHKey) -> str:
    """``type base64``: the form ``host_key:`` pins."""
    kind, blob = key.export_public_key("openssh").decode().split()[:2]
    return f"{kind} {blob}"


def _proxy_key(path: Path) -> tuple[asyncssh.SSHKey, bool]:
    """The proxy's key for a target: the one at ``path``, or a new Ed25519 key written
    there 0600 (its folder 0700). Returns the key and whether it is new."""
    import asyncssh

    if path.exists():
        return asyncssh.read_private_key(path), False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519", comment=f"breakglass-proxy:{path.name}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key())
    pub = path.with_name(path.name + ".pub")
    pub.write_bytes(key.export_public_key())
    return key, True


def cmd_target_add(args: argparse.Namespace, config: Config) -> int:
    import asyncssh

    host, port = args.address
    try:
        keys = asyncio.run(fetch_host_keys(host, port, args.timeout))
    except (OSError, TimeoutError, asyncssh.Error) as exc:
        detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return _err(f"cannot fetch the host key of {escape(host)}:{port}: {escape(detail)}")
    if not keys:
        return _err(f"{escape(host)}:{port} offered no host key this proxy can pin")
    key_path = (args.key_dir or config.source.parent / "keys") / args.name
    key_path = Path(os.path.abspath(key_path))
    try:
        proxy_key, new = _proxy_key(key_path)
    except (OSError, asyncssh.KeyImportError) as exc:
        return _err(f"cannot use the key {escape(str(key_path))}: {exc}")
    options = AUTHORIZED_OPTIONS
    if args.source:
        options += f',from="{args.source}"'
    authorized = f"{options} {key_line(proxy_key)} breakglass-proxy:{args.name}"
    entry: dict[str, Any] = {"host": host}
    if port != 22:
        entry["port"] = port
    entry["login"] = args.login
    entry["identity_file"] = str(key_path)
    lines = [key_line(k) for k in keys]
    entry["host_key"] = lines[0] if len(lines) == 1 else lines
    snippet = yaml.safe_dump({"targets": {args.name: entry}}, sort_keys=False, width=1000)
    fingerprints = [(k.get_algorithm(), k.get_fingerprint("sha256"), key_line(k)) for k in keys]
    if args.json:
        print_json(
            {
                "name": args.name,
                "host": host,
                "port": port,
                "host_keys": [{"type": a, "fingerprint": f, "key": k} for a, f, k in fingerprints],
                "identity_file": str(key_path),
                "key_created": new,
                "authorized_keys": authorized,
                "config": snippet,
            }
        )
        return 0
    print(f"# {args.name} at {escape(host)}:{port} offered these host keys. Check the")
    print("# fingerprint out of band before pinning it (on the target:")
    print("#   ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub):")
    for alg, fp, _line in fingerprints:
        print(f"#   {alg:22} {fp}")
    for _alg, _fp, line in fingerprints:
        print(f"host-key: {line}")
    print()
    state = "generated now (0600)" if new else "already there, reused"
    print(f"# The proxy's key for {args.name}: {escape(str(key_path))} ({state})")
    print(f"# Install this one line on the target in ~{args.login}/.ssh/authorized_keys.")
    print(f"# {AUTHORIZED_OPTIONS}: no port/agent/X11 forwarding, no ~/.ssh/rc; a terminal.")
    if not args.source:
        print('# Add from="PROXY_ADDRESS" in front (or rerun with --from) to pin its source.')
    print(authorized)
    print()
    print("# Merge into the config's targets: section, then `breakglass config check`")
    print("# and `systemctl reload breakglass`. (This command never edits the config.)")
    if args.name in config.targets:
        print(f"# Note: {args.name} is already configured; this replaces its entry.")
    sys.stdout.write(snippet)
    return 0


# --------------------------------------------------------------------------- backup


def _create_private(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def backup_database(database: Path, dest: Path) -> dict[str, Any]:
    """Copy the live database into ``dest`` (new, 0600) with the online backup API, in
    one step: one read transaction, so one consistent snapshot. Returns facts about it."""
    if not database.exists():
        raise StoreError(f"there is no audit database at {database}")
    os.close(_create_private(dest))
    try:
        source = sqlite3.connect(f"file:{database}?mode=rw", uri=True, timeout=10.0)
        try:
            source.execute("PRAGMA busy_timeout=10000")
            copy = sqlite3.connect(dest)
            try:
                source.backup(copy)  # pages=-1: everything, in one step
                copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                check = [r[0] for r in copy.execute("PRAGMA integrity_check")]
                version = int(copy.execute("PRAGMA user_version").fetchone()[0])
                last = copy.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
                row = last.fetchone()
            finally:
                copy.close()
        finally:
            source.close()
        with open(dest, "rb") as f:
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            dest.unlink()
        raise
    if check != ["ok"]:
        raise StoreError(f"the copy in {dest} fails its integrity check: {'; '.join(check)}")
    return {
        "database": str(dest),
        "schema_version": version,
        "last_seq": int(row[0]) if row else 0,
        "head": str(row[1]) if row else None,
        "integrity_check": "ok",
    }


def _walk(root: Path, skip: set[Path]) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if path.resolve() not in skip and path.is_file() and not path.is_symlink():
                yield path


def backup_recordings(root: Path, tar_path: Path, skip: set[Path]) -> int:
    """Pack the recordings folder (casts, and the checkpoint key kept with them) into a
    new tar, 0600. A file that vanishes meanwhile (pruned) is left out."""
    import tarfile

    count = 0
    fd = _create_private(tar_path)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as tar:
            for path in _walk(root, skip):
                try:
                    tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
                except FileNotFoundError:
                    continue
                count += 1
            tar.close()
            raw.flush()
            os.fsync(raw.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tar_path.unlink()
        raise
    return count


async def _record_backup(config: Config, data: dict[str, Any]) -> None:
    store = await open_store(config, WRITE)
    try:
        await store.append([NewEvent.of(events.decode(events.Backup.TYPE, data), time.time())])
    finally:
        await store.close()


def cmd_backup(args: argparse.Namespace, config: Config) -> int:
    dest = Path(os.path.abspath(args.file))
    tar_path = dest.with_name(dest.name + ".recordings.tar")
    for path in (dest, tar_path):
        if path.exists() or path.is_symlink():
            return _err(f"{escape(str(path))} already exists; choose a new name")
    database = config.storage.database
    try:
        facts = backup_database(database, dest)
    except (OSError, sqlite3.Error) as exc:
        return _err(f"backup of {escape(str(database))} failed: {exc}")
    skip = {Path(str(database) + s).resolve() for s in DB_SIDE_SUFFIXES}
    skip |= {dest.resolve(), tar_path.resolve()}
    try:
        files = backup_recordings(config.storage.recordings, tar_path, skip)
    except OSError as exc:
        return _err(f"backup of the recordings failed: {exc}")
    facts |= {
        "database_sha256": _sha256(dest),
        "recordings": str(tar_path),
        "recordings_files": files,
        "recordings_sha256": _sha256(tar_path),
        "by": operator(),
    }
    # Who took a copy of every recording is itself audit-worthy; best effort (a full
    # or read-only store must not stop a backup).
    problem = None
    try:
        asyncio.run(_record_backup(config, {k: v for k, v in facts.items() if k != "head"}))
    except StoreError as exc:
        problem = exc.message
    if args.json:
        print_json({**facts, "recorded": problem is None})
    else:
        print(
            f"database   {escape(str(dest))} (schema {facts['schema_version']}, events up to"
            f" {facts['last_seq']}, integrity ok, sha256 {facts['database_sha256'][:16]}…)"
        )
        print(
            f"recordings {escape(str(tar_path))} ({files} file(s), sha256"
            f" {facts['recordings_sha256'][:16]}…)"
        )
        print("both are private (0600): they hold every recording and the checkpoint key")
    if problem is not None:
        print(
            f"breakglass: the backup was not recorded in the audit store: {problem}",
            file=sys.stderr,
        )
    return 0


# --------------------------------------------------------------------------- prune


def _item_json(i: PruneItem) -> dict[str, Any]:
    return {
        "session": i.session_id,
        "channel": i.channel,
        "path": i.path,
        "sha256": i.sha256,
        "bytes": i.size,
        "session_ended_at": dt.datetime.fromtimestamp(i.ended_at, dt.UTC).isoformat(),
        "outcome": i.outcome,
    }


def cmd_prune(args: argparse.Namespace, config: Config) -> int:
    # Here, not at the top: retention brings in verify and cryptography, which every
    # other command would pay for at start-up.
    from proxy.retention import KEPT_ALTERED, PRUNED_NOW, WOULD_PRUNE, prune_recordings

    retention = config.storage.retention
    if retention is None:
        print("storage.retention is not set: recordings are kept forever; nothing to do")
        return 0

    async def run() -> list[PruneItem]:
        store = await open_store(config, WRITE)
        try:
            return await prune_recordings(
                store,
                config.storage.recordings,
                retention,
                time.time(),
                operator(),
                dry_run=args.dry_run,
            )
        finally:
            await store.close()

    items = asyncio.run(run())
    kept = [i for i in items if i.outcome == KEPT_ALTERED]
    if args.json:
        print_json(
            {
                "retention": retention,
                "dry_run": args.dry_run,
                "items": [_item_json(i) for i in items],
            }
        )
    else:
        for i in items:
            print(f"{i.outcome:24}  {i.session_id}/{i.channel}  {escape(i.path)}")
        gone = sum(1 for i in items if i.outcome in (PRUNED_NOW, WOULD_PRUNE))
        verb = "would prune" if args.dry_run else "pruned"
        print(
            f"{verb} {gone} recording(s) of sessions ended more than"
            f" {format_duration(retention)} ago"
        )
    if kept:
        print(
            f"breakglass: kept {len(kept)} recording(s) that do not match the chain's hash;"
            " run breakglass verify",
            file=sys.stderr,
        )
        return 1
    return 0


COMMANDS: tuple[Group | Command, ...] = (
    Group(name="target", help="set up targets"),
    Command(
        path=("target", "add"),
        help="fetch a target's host key, make the proxy's key for it",
        arguments=_add_arguments,
        run=cmd_target_add,
    ),
    Command(
        path=("backup",),
        help="online backup: database + casts",
        arguments=_backup_arguments,
        run=cmd_backup,
    ),
    Command(
        path=("prune",),
        help="apply storage.retention to casts",
        arguments=_prune_arguments,
        run=cmd_prune,
    ),
)
