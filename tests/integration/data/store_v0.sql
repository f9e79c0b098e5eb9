-- The first release's audit store schema (commit 2e87b4e, "version 0"): events,
-- credentials, sessions, channels; no search indexes, no alert outbox, user_version 0.
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
