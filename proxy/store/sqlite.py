"""SQLite implementation of the audit store (aiosqlite, WAL, synchronous=FULL).

Owns the schema, the append-only guarantee (triggers), the hash chain's head and the
projections (sessions, channels, credentials) that are kept in the same transaction as
the events that change them. Never decides policy: the core does, this only persists.

One connection per process; an asyncio lock serialises transactions from the many
sessions of one proxy, and SQLite's own lock (BEGIN IMMEDIATE + busy_timeout)
serialises the proxy against CLI processes writing to the same file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiosqlite

from proxy.core import chain, events
from proxy.core.chaincheck import FLAG_TYPES, ChainRow
from proxy.core.credentials import Credential, UseDecision
from proxy.core.credstate import (
    CRED_EVENTS,
    CredentialReplay,
    row_mismatch,
)
from proxy.core.errors import StoreError
from proxy.core.limits import bound_data
from proxy.store.auditreads import AuditReads
from proxy.store.base import (
    ChannelRow,
    CredentialRead,
    NewAlert,
    NewEvent,
    SessionFilter,
    SessionRow,
    StoredEvent,
    take_use,
    with_state,
)
from proxy.store.feed import FEED_SCHEMA, EventFeed
from proxy.store.outbox import ALERTS_SCHEMA, AlertOutbox
from proxy.store.projection import apply_event
from proxy.store.rows import (
    CHANNEL_COLS,
    CHUNK,
    EVENT_COLS,
    SESSION_COLS,
    channel_row,
    range_clauses,
    session_row,
    stored_event,
    type_clause,
)

# The code an event changes, as the ``events_credential`` index computes it: queries
# must spell the expression and the type list exactly so for SQLite to use the index.
CRED_KEY = (
    f"CASE WHEN type = '{events.CredIssued.TYPE}'"
    " THEN coalesce(json_extract(data, '$.credential_id'),"
    " json_extract(data, '$.id')) ELSE json_extract(data, '$.credential_id') END"
)
CRED_TYPES = "type IN (" + ", ".join(f"'{t}'" for t in CRED_EVENTS) + ")"
_CRED_ROW = (
    "id, person, issued_by, issued_at, valid_until, window, max_uses, uses, targets,"
    " max_session, activated_at, revoked_at, revoke_reason, hash"
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY,
    time       REAL NOT NULL,
    type       TEXT NOT NULL,
    session_id TEXT,
    channel    INTEGER,
    data       TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_session ON events(session_id, seq);
-- The auditor's queries: flagged sessions, command/path search, report periods.
CREATE INDEX IF NOT EXISTS events_type ON events(type, time);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;

CREATE TABLE IF NOT EXISTS credentials (
    id            TEXT PRIMARY KEY,
    person        TEXT NOT NULL,
    issued_by     TEXT NOT NULL,
    issued_at     REAL NOT NULL,
    valid_until   REAL NOT NULL,
    window        REAL NOT NULL,
    max_uses      INTEGER NOT NULL,
    uses          INTEGER NOT NULL DEFAULT 0,
    targets       TEXT NOT NULL,
    max_session   REAL,
    activated_at  REAL,
    revoked_at    REAL,
    revoke_reason TEXT,
    hash          TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS sessions (
    id             TEXT PRIMARY KEY,
    person         TEXT NOT NULL,
    credential_id  TEXT NOT NULL,
    source         TEXT NOT NULL,
    client_version TEXT NOT NULL,
    target         TEXT NOT NULL,
    login          TEXT NOT NULL,
    justification  TEXT NOT NULL,
    started_at     REAL NOT NULL,
    deadline       REAL NOT NULL,
    ended_at       REAL,
    end_reason     TEXT,
    end_detail     TEXT
);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions(started_at);
CREATE INDEX IF NOT EXISTS sessions_person ON sessions(person, started_at);
CREATE INDEX IF NOT EXISTS sessions_target ON sessions(target, started_at);

CREATE TABLE IF NOT EXISTS channels (
    session_id       TEXT NOT NULL,
    n                INTEGER NOT NULL,
    kind             TEXT NOT NULL,
    command          TEXT,
    pty              INTEGER NOT NULL,
    term             TEXT,
    started_at       REAL NOT NULL,
    ended_at         REAL,
    exit_status      INTEGER,
    exit_signal      TEXT,
    recording        TEXT,
    recording_sha256 TEXT,
    recording_bytes  INTEGER,
    bytes_up         INTEGER NOT NULL DEFAULT 0,
    bytes_down       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session_id, n)
);
"""

# Schema migrations, in order: MIGRATIONS[i] takes a store from version i to i + 1, and
# PRAGMA user_version holds the version reached. Version 0 is the first release's schema
# (or an empty file); version 1 is SCHEMA + ALERTS_SCHEMA, whose IF NOT EXISTS statements
# add what the first release lacked (the search indexes, the alert outbox). Append a
# migration, never edit one that has shipped: a store is upgraded in place, in one
# transaction, by SQLiteStore.open, and the events (append-only) are never rewritten.
# Version 2 adds the event feed's cursors (proxy/store/feed.py).
# Version 3: the index that finds a code's latest event in one step (the login path's
# check of the row against the chain), and the credential rows only move forward.
CREDENTIALS_SCHEMA = f"""
CREATE INDEX IF NOT EXISTS events_credential ON events({CRED_KEY}, seq)
    WHERE {CRED_TYPES};
CREATE TRIGGER IF NOT EXISTS credentials_forward BEFORE UPDATE ON credentials
    WHEN NEW.id IS NOT OLD.id OR NEW.hash IS NOT OLD.hash OR NEW.person IS NOT OLD.person
        OR NEW.uses < OLD.uses
        OR (OLD.activated_at IS NOT NULL AND NEW.activated_at IS NOT OLD.activated_at)
        OR (OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS NOT OLD.revoked_at)
    BEGIN SELECT RAISE(ABORT, 'credential state only moves forward'); END;
CREATE TRIGGER IF NOT EXISTS credentials_no_delete BEFORE DELETE ON credentials
    BEGIN SELECT RAISE(ABORT, 'credentials are never deleted'); END;
"""
MIGRATIONS: tuple[str, ...] = (SCHEMA + ALERTS_SCHEMA, FEED_SCHEMA, CREDENTIALS_SCHEMA)
SCHEMA_VERSION = len(MIGRATIONS)

_SESSION_WIDTH = len(SESSION_COLS.split(","))
_CRED_ROW_OF_C = ", ".join("c." + col.strip() for col in _CRED_ROW.split(","))

_CHANNEL_COLS_OF_C = ", ".join("c." + col.strip() for col in CHANNEL_COLS.split(","))


class SQLiteStore(AlertOutbox, AuditReads, EventFeed):
    """The audit store on one SQLite file. Create with ``await SQLiteStore.open(path)``."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self._path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> SQLiteStore:
        """Open the store, creating it (and its folder) when there is none: only for
        ``serve`` and the commands that issue or revoke codes."""
        try:
            _prepare_file(path)
        except OSError as exc:
            raise StoreError(f"cannot open the audit database {path}: {exc}") from exc
        return await cls._connect(path, read_only=False)

    @classmethod
    async def open_existing(cls, path: Path, *, read_only: bool = True) -> SQLiteStore:
        """Open a store that must already exist and hold an audit trail: a missing,
        empty or unreadable file is a StoreError naming it, and nothing is created.
        ``read_only`` (every auditor command) opens it read-only and never migrates: a
        store of an older schema is read as it is."""
        check_existing(path)
        return await cls._connect(path, read_only=read_only)

    @classmethod
    async def _connect(cls, path: Path, *, read_only: bool) -> SQLiteStore:
        target = f"file:{quote(str(path))}?mode=ro" if read_only else f"file:{quote(str(path))}"
        try:
            db = await aiosqlite.connect(target, isolation_level=None, timeout=10.0, uri=True)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the audit database {path}: {exc}") from exc
        store = cls(db, path)
        try:
            await db.execute("PRAGMA busy_timeout=10000")
            if read_only:
                await _check_readable(db, path)
            else:
                await db.execute("PRAGMA journal_mode=WAL")
                # FULL: a committed session start survives power loss, not only a crash.
                await db.execute("PRAGMA synchronous=FULL")
                await db.execute("PRAGMA foreign_keys=ON")
                # The WAL is checkpointed every 256 pages (1 MiB) and cut back to 1 MiB
                # after: by default it grows to 4 MiB and keeps that size, which on a
                # small disk is space a flood of failed logins takes from the sessions
                # (issue 15).
                await db.execute("PRAGMA wal_autocheckpoint=256")
                await db.execute(f"PRAGMA journal_size_limit={1 << 20}")
                await _migrate(db, path)
        except sqlite3.Error as exc:
            await db.close()
            raise StoreError(f"cannot read the audit database {path}: {exc}") from exc
        except StoreError:
            await db.close()
            raise
        if not read_only:
            _private_side_files(path)
        return store

    async def close(self) -> None:
        await self._db.close()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction, serialised in-process and across processes."""
        async with self._lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"audit store unavailable: {exc}") from exc
            try:
                yield self._db
                await self._db.execute("COMMIT")
            except BaseException as exc:
                with suppress(sqlite3.Error):
                    await self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"audit store write failed: {exc}") from exc
                raise

    async def _append_in_tx(self, db: aiosqlite.Connection, events: Sequence[NewEvent]) -> None:
        async with db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1") as cur:
            row = await cur.fetchone()
        seq, prev = (int(row[0]), str(row[1])) if row else (0, chain.GENESIS)
        for ev in events:
            seq += 1
            # No event may make the store (and every report) pay for what a client sent:
            # past MAX_EVENT_DATA its long texts are cut, with the whole's hash kept.
            data, data_json = bound_data(ev.data)
            if data is not ev.data:
                ev = dataclasses.replace(ev, data=data)
            digest = chain.link(prev, seq, ev.time, ev.type, ev.session_id, ev.channel, data_json)
            await db.execute(
                "INSERT INTO events (seq, time, type, session_id, channel, data, prev_hash, hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, ev.time, ev.type, ev.session_id, ev.channel, data_json, prev, digest),
            )
            for sql, params in apply_event(ev):
                await db.execute(sql, params)
            prev = digest

    async def append(self, events: Sequence[NewEvent]) -> None:
        async with self._tx() as db:
            await self._append_in_tx(db, events)

    # -- credentials --------------------------------------------------------------

    async def issue_credential(self, cred: Credential, code_hash: str, event: NewEvent) -> None:
        """Insert the row and append ``event`` (a ``cred_issued``) with the code's id and
        state added, whatever data the caller gave it."""
        async with self._tx() as db:
            await db.execute(
                f"INSERT INTO credentials ({_CRED_ROW}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                " ?, ?, ?, ?)",
                (
                    cred.cred_id,
                    cred.person,
                    cred.issued_by,
                    cred.issued_at,
                    cred.valid_until,
                    cred.window,
                    cred.max_uses,
                    cred.uses,
                    json.dumps(list(cred.targets)),
                    cred.max_session,
                    cred.activated_at,
                    cred.revoked_at,
                    cred.revoke_reason,
                    code_hash,
                ),
            )
            await self._append_in_tx(db, [with_state(event, cred, code_hash)])

    async def _fetch_credential(
        self, db: aiosqlite.Connection, cred_id: str
    ) -> CredentialRead | None:
        # One statement: the row, and the latest event about the code (found through
        # the events_credential index), so the check costs the same for every code.
        async with db.execute(
            f"SELECT {_CRED_ROW_OF_C}, e.type, e.time, e.data FROM (SELECT ? AS id) AS k"
            " LEFT JOIN credentials AS c ON c.id = k.id"
            " LEFT JOIN events AS e ON e.seq = (SELECT seq FROM events"
            f" WHERE {CRED_KEY} = k.id AND {CRED_TYPES} ORDER BY seq DESC LIMIT 1)",
            (cred_id,),
        ) as cur:
            row = await cur.fetchone()
        if row is None or row[0] is None:
            return None
        cred, code_hash = _credential(row), str(row[13])
        if row[14] is None:
            return CredentialRead(cred, code_hash, row_mismatch(cred, code_hash, None))
        try:
            data = json.loads(row[16])
        except ValueError:
            return CredentialRead(cred, code_hash, "its latest event cannot be read")
        latest = (str(row[14]), float(row[15]), data if isinstance(data, dict) else {})
        return CredentialRead(cred, code_hash, row_mismatch(cred, code_hash, latest))

    async def get_credential(self, cred_id: str) -> CredentialRead | None:
        # Under the write lock: this connection also commits session starts, and a read
        # between a commit's row update and its event would see the row ahead of its
        # chain and refuse a rightful login as credential_tampered. The wait depends on
        # other logins' commits, never on what this attempt got wrong.
        try:
            async with self._lock:
                return await self._fetch_credential(self._db, cred_id)
        except sqlite3.Error as exc:
            raise StoreError(f"audit store read failed: {exc}") from exc

    async def list_credentials(self) -> list[Credential]:
        async with self._db.execute(
            f"SELECT {_CRED_ROW} FROM credentials ORDER BY issued_at"
        ) as cur:
            rows = await cur.fetchall()
        return [_credential(r) for r in rows]

    async def revoke_credential(
        self, cred_id: str, reason: str, actor: str, now: float
    ) -> Credential | None:
        async with self._tx() as db:
            found = await self._fetch_credential(db, cred_id)
            if found is None:
                return None
            cred = found.cred
            if cred.revoked_at is not None:
                return cred
            cred = replace(cred, revoked_at=now, revoke_reason=reason)
            await db.execute(
                "UPDATE credentials SET revoked_at = ?, revoke_reason = ? WHERE id = ?",
                (now, reason, cred_id),
            )
            await self._append_in_tx(
                db,
                [
                    with_state(
                        NewEvent.of(events.CredRevoked(cred_id, cred.person, actor, reason), now),
                        cred,
                        found.hash,
                    )
                ],
            )
        found = await self.get_credential(cred_id)
        return found[0] if found else None

    async def start_session(
        self,
        cred_id: str,
        person: str,
        target: str,
        now: float,
        start: NewEvent,
        alerts: Sequence[NewAlert] = (),
    ) -> UseDecision:
        async with self._tx() as db:
            use = take_use(await self._fetch_credential(db, cred_id), person, target, now, start)
            if not use.decision.ok:
                return use.decision
            await db.execute(
                "UPDATE credentials SET uses = uses + 1, activated_at = COALESCE(activated_at, ?)"
                " WHERE id = ?",
                (now, cred_id),
            )
            await self._append_in_tx(db, use.events)
            await self._alerts_in_tx(db, alerts)
            return use.decision

    # -- reading ------------------------------------------------------------------

    async def _sessions(
        self, where: str, params: Sequence[Any], tail: str = "", *, channels: bool = True
    ) -> list[SessionRow]:
        sessions = f"SELECT {SESSION_COLS} FROM sessions {where} ORDER BY id {tail}"
        try:
            if not channels:
                async with self._db.execute(sessions, tuple(params)) as cur:
                    return [session_row(r, ()) for r in await cur.fetchall()]
            # The sessions with their channels in one statement, so one snapshot: a
            # list of every session took a hundred queries of 900 bound ids each, and
            # two statements could disagree about a session that ended in between.
            async with self._db.execute(
                f"SELECT s.*, {_CHANNEL_COLS_OF_C} FROM ({sessions}) AS s"
                " LEFT JOIN channels AS c ON c.session_id = s.id ORDER BY s.id, c.n",
                tuple(params),
            ) as cur:
                joined = await cur.fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"audit store read failed: {exc}") from exc
        # One row per channel (or one with NULL channel columns), in session order.
        out: list[SessionRow] = []
        width = _SESSION_WIDTH
        current: Any = None
        chans: list[ChannelRow] = []
        for r in joined:
            if current is None or r[0] != current[0]:
                if current is not None:
                    out.append(session_row(current, chans))
                current, chans = r, []
            if r[width] is not None:
                chans.append(channel_row(r[width:]))
        if current is not None:
            out.append(session_row(current, chans))
        return out

    async def list_sessions(self, flt: SessionFilter, *, channels: bool = True) -> list[SessionRow]:
        clauses: list[str] = []
        params: list[Any] = []
        for col, value in (("person", flt.person), ("target", flt.target)):
            if value is not None:
                clauses.append(f"{col} = ?")
                params.append(value)
        if flt.since is not None:
            clauses.append("started_at >= ?")
            params.append(flt.since)
        if flt.until is not None:
            clauses.append("started_at < ?")
            params.append(flt.until)
        if flt.end_reason is not None:
            clauses.append("end_reason = ?")
            params.append(flt.end_reason)
        if flt.live is not None:
            clauses.append("ended_at IS NULL" if flt.live else "ended_at IS NOT NULL")
        # A session's events come after its start: bound the event searches by the
        # period too, so they read only its slice of the (type, time) index.
        ev_time = ""
        ev_params: list[Any] = []
        if flt.since is not None:
            ev_time = " AND time >= ?"
            ev_params.append(flt.since)
        if flt.flagged is not None:
            marks = ",".join("?" for _ in _FLAGGING)
            clauses.append(
                ("" if flt.flagged else "NOT ")
                + f"id IN (SELECT session_id FROM events WHERE type IN ({marks})"
                f" AND session_id IS NOT NULL{ev_time})"
            )
            params += [*_FLAGGING, *ev_params]
        if flt.command is not None:
            clauses.append(
                "(id IN (SELECT session_id FROM channels WHERE command GLOB ?)"
                " OR id IN (SELECT session_id FROM events WHERE type = ?"
                f"{ev_time} AND json_extract(data, '$.text') GLOB ?))"
            )
            params += [flt.command, events.Command.TYPE, *ev_params, flt.command]
        if flt.path is not None:
            marks = ",".join("?" for _ in _FILE_TYPES)
            clauses.append(
                f"id IN (SELECT session_id FROM events WHERE type IN ({marks})"
                f"{ev_time} AND json_extract(data, '$.path') GLOB ?)"
            )
            params += [*_FILE_TYPES, *ev_params, flt.path]
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        tail = f"LIMIT {int(flt.limit)}" if flt.limit else ""
        return await self._sessions(where, params, tail, channels=channels)

    async def get_session(self, session_id: str) -> SessionRow | None:
        rows = await self._sessions("WHERE id = ?", (session_id,))
        return rows[0] if rows else None

    async def session_events(self, session_id: str) -> list[StoredEvent]:
        async with self._db.execute(
            f"SELECT {EVENT_COLS} FROM events WHERE session_id = ? ORDER BY seq",
            (session_id,),
        ) as cur:
            rows = await cur.fetchall()
        return [stored_event(r) for r in rows]

    async def unfinished_sessions(self) -> list[SessionRow]:
        return await self._sessions("WHERE ended_at IS NULL", ())

    # -- the auditor's side -------------------------------------------------------

    async def head(self) -> tuple[int, str]:
        async with self._db.execute(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
        ) as cur:
            row = await cur.fetchone()
        return (int(row[0]), str(row[1])) if row else (0, chain.GENESIS)

    async def chain_rows(self, after_seq: int, limit: int) -> list[ChainRow]:
        try:
            async with self._db.execute(
                "SELECT seq, time, type, session_id, channel, data, prev_hash, hash FROM events"
                " WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ) as cur:
                rows = await cur.fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"audit store read failed: {exc}") from exc
        return [ChainRow(*r) for r in rows]

    async def events_for_sessions(
        self, session_ids: Sequence[str], types: Collection[str] | None = None
    ) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        types_sql, type_params = type_clause(types)
        for i in range(0, len(session_ids), CHUNK):
            part = list(session_ids[i : i + CHUNK])
            marks = ",".join("?" for _ in part)
            out += await self._stored(
                f"WHERE session_id IN ({marks}){types_sql}", [*part, *type_params]
            )
        out.sort(key=lambda e: e.seq)
        return out

    async def events_between(
        self, types: Collection[str], since: float | None, until: float | None
    ) -> list[StoredEvent]:
        types_sql, type_params = type_clause(types)
        clauses, params = range_clauses("time", since, until)
        where = " AND ".join([types_sql.removeprefix(" AND "), *clauses])
        return await self._stored("WHERE " + where, [*type_params, *params])

    async def _stored(self, where: str, params: Sequence[Any]) -> list[StoredEvent]:
        try:
            async with self._db.execute(
                f"SELECT {EVENT_COLS} FROM events {where} ORDER BY seq", tuple(params)
            ) as cur:
                rows = await cur.fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"audit store read failed: {exc}") from exc
        return [stored_event(r) for r in rows]

    async def projection_differences(self) -> list[str]:
        return await asyncio.to_thread(_projection_differences, self._path)


# Every session raises a session_start alert, so "flagged" means a flag event only.
_FLAGGING = sorted(FLAG_TYPES)
_FILE_TYPES = sorted(events.FILE_TYPES)


def _projection_differences(path: Path, limit: int = 50) -> list[str]:
    """Replay the log into a fresh in-memory schema with the very statements the store
    ran (``apply_event``), then compare with the stored rows."""
    mem = sqlite3.connect("file::memory:", uri=True)
    try:
        mem.executescript(SCHEMA)
        mem.execute("ATTACH DATABASE ? AS audit", (f"file:{path}?mode=ro",))
        out: list[str] = []
        for seq, t, type_, sid, ch, data in mem.execute(
            "SELECT seq, time, type, session_id, channel, data FROM audit.events ORDER BY seq"
        ):
            try:
                ev = NewEvent(type_, t, sid, ch, json.loads(data))
                for sql, params in apply_event(ev):
                    mem.execute(sql, params)
            except (ValueError, KeyError, TypeError, sqlite3.Error) as exc:
                out.append(f"event {seq} ({type_}) cannot be replayed: {exc!r}")
        for table, cols, key in (
            ("sessions", SESSION_COLS, "id"),
            ("channels", CHANNEL_COLS, "session_id || '/' || n"),
        ):
            names = [c.strip() for c in cols.split(",")]
            both = (
                f"SELECT {key} FROM (SELECT {cols} FROM main.{table} EXCEPT"
                f" SELECT {cols} FROM audit.{table}) UNION SELECT {key} FROM (SELECT {cols}"
                f" FROM audit.{table} EXCEPT SELECT {cols} FROM main.{table})"
            )
            for (ident,) in mem.execute(both + " ORDER BY 1 LIMIT ?", (limit,)):
                fresh = mem.execute(
                    f"SELECT {cols} FROM main.{table} WHERE {key} = ?", (ident,)
                ).fetchone()
                stored = mem.execute(
                    f"SELECT {cols} FROM audit.{table} WHERE {key} = ?", (ident,)
                ).fetchone()
                if stored is None:
                    out.append(f"{table} row {ident} is missing, though the log has it")
                elif fresh is None:
                    out.append(f"{table} row {ident} has no events in the log behind it")
                else:
                    diff = [n for n, a, b in zip(names, fresh, stored, strict=True) if a != b]
                    out.append(f"{table} row {ident} differs from the log in: {', '.join(diff)}")
        return out + _credential_differences(mem)
    except sqlite3.Error as exc:
        return [f"the session, channel and credential rows could not be rebuilt: {exc}"]
    finally:
        mem.close()


def _credential_differences(mem: sqlite3.Connection) -> list[str]:
    """Every code's state rebuilt from its events (``CredentialReplay``), compared with
    the credential rows, including the digest of each row's argon2 hash."""
    replay = CredentialReplay()
    for seq, t, type_, data in mem.execute(
        f"SELECT seq, time, type, data FROM audit.events WHERE {CRED_TYPES} ORDER BY seq"
    ):
        try:
            replay.feed(seq, type_, t, json.loads(data))
        except ValueError as exc:
            replay.problems.append(f"event {seq} ({type_}) cannot be read: {exc!r}")
    rows = [
        (_credential(r), str(r[13]))
        for r in mem.execute(f"SELECT {_CRED_ROW} FROM audit.credentials ORDER BY id")
    ]
    return replay.compare(rows)


async def _user_version(db: aiosqlite.Connection) -> int:
    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


def _too_new(path: Path, version: int) -> StoreError:
    return StoreError(
        f"the audit database {path} has schema version {version}, newer than this"
        f" breakglass knows (up to {SCHEMA_VERSION}): it was written by a later release."
        " Run that release (or restore a backup made by this one); nothing was changed"
    )


def check_existing(path: Path) -> None:
    """A StoreError naming ``path`` unless it is a non-empty readable file."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise StoreError(
            f"there is no audit database at {path}: nothing to read (none was created)"
        ) from None
    except OSError as exc:
        raise StoreError(f"cannot read the audit database {path}: {exc.strerror}") from exc
    if not path.is_file():
        raise StoreError(f"the audit database {path} is not a file")
    if size == 0:
        raise StoreError(f"the audit database {path} is empty: it holds no audit trail")
    if not os.access(path, os.R_OK):
        raise StoreError(f"cannot read the audit database {path}: permission denied")


async def _check_readable(db: aiosqlite.Connection, path: Path) -> None:
    """A read-only store must be one this code knows: an audit trail, not newer."""
    version = await _user_version(db)
    if version > SCHEMA_VERSION:
        raise _too_new(path, version)
    async with db.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
        " AND name IN ('events', 'sessions', 'channels', 'credentials')"
    ) as cur:
        row = await cur.fetchone()
    if row is None or int(row[0]) != 4:
        raise StoreError(f"the audit database {path} holds no audit trail (no events table)")


async def _migrate(db: aiosqlite.Connection, path: Path) -> None:
    """Bring the store to SCHEMA_VERSION: every pending migration and the new version
    number in one transaction, so a crash leaves the old schema or the new, never half.
    A store already current is only read (so a read-only store still opens)."""
    version = await _user_version(db)
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise _too_new(path, version)
    await db.execute("BEGIN IMMEDIATE")
    try:
        version = await _user_version(db)  # another process may have been first
        if version > SCHEMA_VERSION:
            raise _too_new(path, version)
        for script in MIGRATIONS[version:]:
            # executescript would commit first: run the statements one by one instead.
            for statement in sql_statements(script):
                await db.execute(statement)
        await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        await db.execute("COMMIT")
    except BaseException:
        with suppress(sqlite3.Error):
            await db.execute("ROLLBACK")
        raise


def sql_statements(script: str) -> list[str]:
    """Split a script into complete statements (a trigger's body keeps its ';')."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        if not buf and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def _prepare_file(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        # Create it 0600 ourselves: sqlite would use the umask.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _private_side_files(path: Path) -> None:
    for suffix in ("-wal", "-shm"):
        side = Path(str(path) + suffix)
        if side.exists():
            os.chmod(side, 0o600)


def _credential(row: Sequence[Any]) -> Credential:
    return Credential(
        cred_id=row[0],
        person=row[1],
        issued_by=row[2],
        issued_at=float(row[3]),
        valid_until=float(row[4]),
        window=float(row[5]),
        max_uses=int(row[6]),
        uses=int(row[7]),
        targets=tuple(json.loads(row[8])),
        max_session=None if row[9] is None else float(row[9]),
        activated_at=None if row[10] is None else float(row[10]),
        revoked_at=None if row[11] is None else float(row[11]),
        revoke_reason=row[12],
    )
