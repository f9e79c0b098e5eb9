"""The fleet ledger's PostgreSQL schema: its DDL, its migrations and the version check.

Owns the shape of the ledger (every node's events, keyed by ``(node, seq)`` and stored
as the exact JSON text that was hashed; cast chunks; node claims, retirements and
liveness), the triggers that make the evidence tables append-only and refuse an event
that does not link to its predecessor or a chunk that does not follow the previous one,
and the two views that project sessions and channels from the events exactly as
proxy.store.projection projects them into SQLite.

Migrations are expand-only steps applied in order by ``migrate`` (run by ``breakglass
fleet migrate`` only; a node never migrates the ledger) under a transaction-scoped
advisory lock, so concurrent runs serialise and the second finds nothing to do.
``ledger_meta`` holds ``schema_version`` and ``min_reader_version``: a node whose
``READER_VERSION`` is below the latter keeps serving locally and does not ship
(``schema_problem``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, LiteralString

from proxy.core import events
from proxy.core.errors import BreakglassError

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "LOCK_KEY",
    "NOT_MIGRATED",
    "READER_VERSION",
    "SCHEMA_VERSION",
    "STEPS",
    "TOO_OLD",
    "LedgerSchemaError",
    "Migrated",
    "grant",
    "ledger_versions",
    "migrate",
    "schema_problem",
]

SCHEMA_VERSION = 2  # the ledger schema this code writes
READER_VERSION = 1  # the oldest ledger layout this code reads: compared to min_reader_version
# pg_advisory_xact_lock's key: "breakglass fleet migrate" (any constant; documented here
# so an operator can see who holds it in pg_locks).
LOCK_KEY = 0x6272_6B67_6C61_7373 & 0x7FFF_FFFF_FFFF_FFFF

NOT_MIGRATED = "ledger not migrated: run `breakglass fleet migrate`"
TOO_OLD = "this node is too old for the ledger"

_GENESIS = "0" * 64
# channel_start's data key (a JSON key, not the event type of the same name).
_COMMAND_KEY = "command"

# Version 1. Plain statements (no parameters), run as one simple-protocol batch.
_V1 = f"""
CREATE TABLE ledger_meta (key text PRIMARY KEY, value text NOT NULL);

-- Identity claims: INSERT-only for nodes.
CREATE TABLE nodes (
    name           text PRIMARY KEY,
    node_id        text NOT NULL,
    checkpoint_key text NOT NULL,
    claimed_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE node_retirements (
    name       text NOT NULL,
    node_id    text NOT NULL,
    retired_at timestamptz NOT NULL DEFAULT now(),
    operator   text NOT NULL,
    reason     text NOT NULL,
    PRIMARY KEY (name, node_id)
);

-- Liveness, not evidence: each node upserts its row.
CREATE TABLE node_status (
    name            text PRIMARY KEY,
    node_id         text NOT NULL,
    heartbeat_at    timestamptz NOT NULL,
    node_time       double precision NOT NULL,
    journal_seq     bigint NOT NULL,
    shipped_seq     bigint NOT NULL,
    unshipped_bytes bigint NOT NULL,
    version         text NOT NULL,
    problem         text
);

-- data is EXACTLY the JSON text that was hashed: text, never jsonb (jsonb re-encodes).
CREATE TABLE events (
    node       text NOT NULL,
    seq        bigint NOT NULL,
    time       double precision NOT NULL,
    type       text NOT NULL,
    session_id text,
    channel    integer,
    data       text NOT NULL,
    prev_hash  text NOT NULL,
    hash       text NOT NULL,
    PRIMARY KEY (node, seq)
);
CREATE INDEX events_session ON events (node, session_id, seq);
CREATE INDEX events_type ON events (type, time);

-- An empty chunk would take its offset's key and make the next real chunk there a
-- silent no-op under ON CONFLICT DO NOTHING, so chunks carry at least one byte.
CREATE TABLE cast_chunks (
    node       text NOT NULL,
    session_id text NOT NULL,
    channel    integer NOT NULL,
    "offset"   bigint NOT NULL CHECK ("offset" >= 0),
    data       bytea NOT NULL CHECK (length(data) > 0),
    PRIMARY KEY (node, session_id, channel, "offset")
);

CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger % are append-only', TG_TABLE_NAME;
END $$;

-- Runs before the primary key check, so a re-shipped row (same node, seq) passes here
-- and is then skipped by ON CONFLICT DO NOTHING. Rows inserted earlier by the same
-- statement are visible to this (volatile) function: a batch links row to row.
CREATE FUNCTION ledger_events_link() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq = 1 AND NEW.prev_hash = '{_GENESIS}' THEN
        RETURN NEW;
    END IF;
    IF NEW.seq > 1 AND EXISTS (
        SELECT 1 FROM events
        WHERE node = NEW.node AND seq = NEW.seq - 1 AND hash = NEW.prev_hash
    ) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'ledger: event (%, %) does not link to its predecessor', NEW.node, NEW.seq;
END $$;

CREATE FUNCTION ledger_chunks_follow() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    expected bigint;
BEGIN
    IF NEW."offset" = 0 THEN
        RETURN NEW;
    END IF;
    SELECT c."offset" + length(c.data) INTO expected FROM cast_chunks c
    WHERE c.node = NEW.node AND c.session_id = NEW.session_id AND c.channel = NEW.channel
      AND c."offset" < NEW."offset"
    ORDER BY c."offset" DESC LIMIT 1;
    IF expected = NEW."offset" THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'ledger: cast chunk (%, %, %) at offset % does not follow the previous chunk',
        NEW.node, NEW.session_id, NEW.channel, NEW."offset";
END $$;

CREATE TRIGGER events_link BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION ledger_events_link();
CREATE TRIGGER cast_chunks_follow BEFORE INSERT ON cast_chunks
    FOR EACH ROW EXECUTE FUNCTION ledger_chunks_follow();

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER nodes_append_only BEFORE UPDATE OR DELETE ON nodes
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER nodes_no_truncate BEFORE TRUNCATE ON nodes
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER cast_chunks_append_only BEFORE UPDATE OR DELETE ON cast_chunks
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER cast_chunks_no_truncate BEFORE TRUNCATE ON cast_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER node_retirements_append_only BEFORE UPDATE OR DELETE ON node_retirements
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER node_retirements_no_truncate BEFORE TRUNCATE ON node_retirements
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- The session and channel rows, projected from the events as proxy.store.projection
-- projects them into SQLite: the first session_start / channel_start makes the row; the
-- first session_end after it ends the session; the last deadline_changed sets the
-- deadline; the last channel_end sets the channel's end fields.
CREATE VIEW ledger_sessions AS
SELECT s.node,
       s.session_id AS id,
       s.d ->> 'person' AS person,
       s.d ->> 'credential_id' AS credential_id,
       s.d ->> 'source' AS source,
       s.d ->> 'client_version' AS client_version,
       s.d ->> 'target' AS target,
       s.d ->> 'login' AS login,
       s.d ->> 'justification' AS justification,
       s.time AS started_at,
       COALESCE(dl.deadline, (s.d ->> 'deadline')::double precision) AS deadline,
       en.time AS ended_at,
       en.d ->> 'reason' AS end_reason,
       en.d ->> 'detail' AS end_detail
FROM (
    SELECT DISTINCT ON (node, session_id) node, session_id, seq, time, data::jsonb AS d
    FROM events
    WHERE type = '{events.SessionStart.TYPE}' AND session_id IS NOT NULL
    ORDER BY node, session_id, seq
) s
LEFT JOIN LATERAL (
    SELECT (e.data::jsonb ->> 'deadline')::double precision AS deadline
    FROM events e
    WHERE e.node = s.node AND e.session_id = s.session_id
      AND e.type = '{events.DeadlineChanged.TYPE}' AND e.seq > s.seq
    ORDER BY e.seq DESC LIMIT 1
) dl ON true
LEFT JOIN LATERAL (
    SELECT e.time, e.data::jsonb AS d
    FROM events e
    WHERE e.node = s.node AND e.session_id = s.session_id
      AND e.type = '{events.SessionEnd.TYPE}' AND e.seq > s.seq
    ORDER BY e.seq LIMIT 1
) en ON true;

CREATE VIEW ledger_channels AS
SELECT c.node,
       c.session_id,
       c.channel AS n,
       c.d ->> 'kind' AS kind,
       c.d ->> '{_COMMAND_KEY}' AS command,
       CASE WHEN (c.d ->> 'pty')::boolean THEN 1 ELSE 0 END AS pty,
       c.d ->> 'term' AS term,
       c.time AS started_at,
       en.time AS ended_at,
       (en.d ->> 'exit_status')::integer AS exit_status,
       en.d ->> 'exit_signal' AS exit_signal,
       c.d ->> 'recording' AS recording,
       en.d ->> 'recording_sha256' AS recording_sha256,
       (en.d ->> 'recording_bytes')::bigint AS recording_bytes,
       COALESCE((en.d ->> 'bytes_up')::bigint, 0) AS bytes_up,
       COALESCE((en.d ->> 'bytes_down')::bigint, 0) AS bytes_down
FROM (
    SELECT DISTINCT ON (node, session_id, channel)
           node, session_id, channel, seq, time, data::jsonb AS d
    FROM events
    WHERE type = '{events.ChannelStart.TYPE}' AND session_id IS NOT NULL AND channel IS NOT NULL
    ORDER BY node, session_id, channel, seq
) c
LEFT JOIN LATERAL (
    SELECT e.time, e.data::jsonb AS d
    FROM events e
    WHERE e.node = c.node AND e.session_id = c.session_id AND e.channel = c.channel
      AND e.type = '{events.ChannelEnd.TYPE}' AND e.seq > c.seq
    ORDER BY e.seq DESC LIMIT 1
) en ON true;
"""


# Version 2: codes across nodes. ``fleet_credentials`` holds each code's facts as its
# origin node's chain says them (plus the argon2 hash, which no event carries: a pulling
# node checks it against the SHA-256 its origin's signed event holds); its state only
# moves forward. ``cred_uses`` is every spent use, one row per ``use_id``, INSERT-only:
# a code's uses are counted from it, never kept in a counter. ``ledger_spend`` spends
# one use in one statement (so in one round trip, and committed by the server even when
# the reply is lost): it locks the code's row, re-checks the rules against the ledger's
# own clock, and inserts the use; a use_id already there is a retry and is not counted
# again.
_V2 = """
CREATE TABLE fleet_credentials (
    id             text PRIMARY KEY,
    origin_node    text NOT NULL,
    origin_seq     bigint NOT NULL,
    person         text NOT NULL,
    targets        text NOT NULL,               -- JSON list of globs, as the event has it
    max_uses       integer NOT NULL,
    valid_until    double precision NOT NULL,   -- unix seconds (activation deadline)
    window_seconds double precision NOT NULL,
    max_session    double precision,
    issued_at      double precision NOT NULL,
    code_hash      text NOT NULL,               -- argon2; SHA-256 of it is in the event
    activated_at   timestamptz,                 -- the ledger's clock at the first use
    revoked_at     double precision,            -- the revoking node's clock (its event)
    revoke_reason  text,
    revoked_by     text                         -- node whose event revoked it
);

CREATE TABLE cred_uses (
    use_id        text PRIMARY KEY,
    credential_id text NOT NULL,
    node          text NOT NULL,
    person        text NOT NULL,
    target        text NOT NULL,
    session_id    text,
    node_time     double precision NOT NULL,    -- the node's clock when it decided
    offline       boolean NOT NULL DEFAULT false, -- decided while the ledger did not answer
    spent_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cred_uses_credential ON cred_uses (credential_id);

CREATE FUNCTION ledger_credentials_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id IS DISTINCT FROM OLD.id OR NEW.person IS DISTINCT FROM OLD.person
        OR NEW.code_hash IS DISTINCT FROM OLD.code_hash
        OR NEW.origin_node IS DISTINCT FROM OLD.origin_node
        OR NEW.origin_seq IS DISTINCT FROM OLD.origin_seq
        OR NEW.max_uses IS DISTINCT FROM OLD.max_uses
        OR NEW.valid_until IS DISTINCT FROM OLD.valid_until
        OR NEW.window_seconds IS DISTINCT FROM OLD.window_seconds
        OR NEW.targets IS DISTINCT FROM OLD.targets
        OR (OLD.activated_at IS NOT NULL AND NEW.activated_at IS DISTINCT FROM OLD.activated_at)
        OR (OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at)
    THEN
        RAISE EXCEPTION 'ledger: credential % only moves forward', OLD.id;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER fleet_credentials_forward BEFORE UPDATE ON fleet_credentials
    FOR EACH ROW EXECUTE FUNCTION ledger_credentials_forward();
CREATE TRIGGER fleet_credentials_no_delete BEFORE DELETE ON fleet_credentials
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER fleet_credentials_no_truncate BEFORE TRUNCATE ON fleet_credentials
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER cred_uses_append_only BEFORE UPDATE OR DELETE ON cred_uses
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER cred_uses_no_truncate BEFORE TRUNCATE ON cred_uses
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- The facts a node passes (p_code, jsonb) are its verified local copy of the code: they
-- create the row when the ledger has none yet (the origin's copy has not arrived), and
-- when the row exists they must agree with it, else 'mismatch' (the node trusts neither).
-- Answers: 'ok' (spent now), 'again' (this use_id was spent before: a retry), or why not.
CREATE FUNCTION ledger_spend(
    p_use_id text, p_node text, p_target text, p_session text, p_node_time double precision,
    p_code jsonb
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    c fleet_credentials%ROWTYPE;
    used bigint;
BEGIN
    INSERT INTO fleet_credentials (id, origin_node, origin_seq, person, targets, max_uses,
        valid_until, window_seconds, max_session, issued_at, code_hash)
    VALUES (p_code ->> 'id', p_code ->> 'origin_node', (p_code ->> 'origin_seq')::bigint,
        p_code ->> 'person', p_code ->> 'targets', (p_code ->> 'max_uses')::integer,
        (p_code ->> 'valid_until')::double precision,
        (p_code ->> 'window_seconds')::double precision,
        (p_code ->> 'max_session')::double precision,
        (p_code ->> 'issued_at')::double precision, p_code ->> 'code_hash')
    ON CONFLICT (id) DO NOTHING;
    SELECT * INTO c FROM fleet_credentials WHERE id = p_code ->> 'id' FOR UPDATE;
    IF EXISTS (SELECT 1 FROM cred_uses WHERE use_id = p_use_id) THEN
        RETURN 'again';
    END IF;
    IF c.person <> p_code ->> 'person' OR c.code_hash <> p_code ->> 'code_hash'
        OR c.max_uses <> (p_code ->> 'max_uses')::integer
        OR c.valid_until <> (p_code ->> 'valid_until')::double precision
        OR c.window_seconds <> (p_code ->> 'window_seconds')::double precision THEN
        RETURN 'mismatch';
    END IF;
    IF c.revoked_at IS NOT NULL THEN
        RETURN 'revoked';
    END IF;
    IF c.activated_at IS NULL AND extract(epoch FROM now()) >= c.valid_until THEN
        RETURN 'expired';
    END IF;
    IF c.activated_at IS NOT NULL
        AND now() >= c.activated_at + make_interval(secs => c.window_seconds) THEN
        RETURN 'burnt';
    END IF;
    SELECT count(*) INTO used FROM cred_uses WHERE credential_id = c.id;
    IF c.max_uses > 0 AND used >= c.max_uses THEN
        RETURN 'spent';
    END IF;
    INSERT INTO cred_uses (use_id, credential_id, node, person, target, session_id, node_time)
    VALUES (p_use_id, c.id, p_node, c.person, p_target, p_session, p_node_time);
    UPDATE fleet_credentials SET activated_at = coalesce(activated_at, now()) WHERE id = c.id;
    RETURN 'ok';
END $$;
"""


@dataclass(frozen=True)
class Step:
    """One migration: takes the ledger from ``version - 1`` to ``version``.

    Expand-only: a step adds tables, columns, indexes or views and never drops, renames
    or narrows what an older node reads. ``min_reader_version`` is the oldest
    READER_VERSION that can still read the ledger after it (raise it only when a step
    really breaks older readers).
    """

    version: int
    sql: str
    min_reader_version: int


# Append a step, never edit one that has shipped.
STEPS: tuple[Step, ...] = (Step(1, _V1, 1), Step(2, _V2, 1))
assert [s.version for s in STEPS] == list(range(1, SCHEMA_VERSION + 1))

# What a node's role may do (``fleet migrate --grant ROLE``): read everything, append
# evidence, claim its name, and upsert its own liveness row.
_GRANTS: tuple[LiteralString, ...] = (
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
    # Tables and views a later step adds are readable without granting again.
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}",
    "GRANT INSERT ON events, cast_chunks, nodes, node_status TO {role}",
    "GRANT UPDATE ON node_status TO {role}",
    # Codes (v2): publish and spend them; the triggers keep their state moving forward.
    "GRANT INSERT, UPDATE ON fleet_credentials TO {role}",
    "GRANT INSERT ON cred_uses TO {role}",
)


class LedgerSchemaError(BreakglassError):
    """The ledger's schema is newer than this breakglass can migrate."""

    reason = "ledger_schema"


@dataclass(frozen=True)
class Migrated:
    """What ``migrate`` did: the versions before and after, and the steps applied."""

    before: int
    after: int
    applied: tuple[int, ...]


async def ledger_versions(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int] | None:
    """``(schema_version, min_reader_version)``, or None for a ledger never migrated."""
    cur = await conn.execute("SELECT to_regclass('ledger_meta') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return None
    cur = await conn.execute(
        "SELECT key, value FROM ledger_meta WHERE key IN ('schema_version', 'min_reader_version')"
    )
    values = {str(k): int(v) for k, v in await cur.fetchall()}
    if "schema_version" not in values:
        return None
    return values["schema_version"], values.get("min_reader_version", values["schema_version"])


async def schema_problem(conn: psycopg.AsyncConnection[Any]) -> str | None:
    """Why this node cannot ship to the ledger behind ``conn``, or None when it can.

    ``NOT_MIGRATED`` when the schema is missing or older than this code writes (an
    operator runs ``breakglass fleet migrate``; a node never does), ``TOO_OLD`` when the
    ledger needs a newer reader than this node (it keeps serving locally).
    """
    versions = await ledger_versions(conn)
    if versions is None or versions[0] < SCHEMA_VERSION:
        return NOT_MIGRATED
    if versions[1] > READER_VERSION:
        return TOO_OLD
    return None


async def migrate(conn: psycopg.AsyncConnection[Any], *, grant_to: str | None = None) -> Migrated:
    """Apply every missing step in order, in one transaction under the advisory lock;
    then, with ``grant_to``, grant that role a node's rights. Idempotent."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        versions = await ledger_versions(conn)
        before = versions[0] if versions else 0
        if before > SCHEMA_VERSION:
            raise LedgerSchemaError(
                f"the ledger's schema is version {before}, newer than this breakglass "
                f"knows ({SCHEMA_VERSION}): run `fleet migrate` from the newest release"
            )
        applied = []
        min_reader = versions[1] if versions else 0
        for step in STEPS[before:]:
            await conn.execute(step.sql.encode())
            applied.append(step.version)
            min_reader = max(min_reader, step.min_reader_version)
        after = max(before, SCHEMA_VERSION)
        await conn.execute(
            "INSERT INTO ledger_meta (key, value) VALUES"
            " ('schema_version', %s), ('min_reader_version', %s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (str(after), str(min_reader)),
        )
        if grant_to is not None:
            await grant(conn, grant_to)
    return Migrated(before, after, tuple(applied))


async def grant(conn: psycopg.AsyncConnection[Any], role: str) -> None:
    """Give ``role`` a node's rights on the ledger (see ``_GRANTS``)."""
    from psycopg import sql

    for statement in _GRANTS:
        await conn.execute(sql.SQL(statement).format(role=sql.Identifier(role)))
