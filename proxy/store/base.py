"""The audit store's narrow interfaces (one per consumer), and the records that cross them.

The event log is the truth; session, channel and credential rows are projections the
store keeps in the same transaction as the events that change them. SQLite implements
them now, and ``memory.py`` (every Protocol, in a few dicts) for unit tests; a
PostgreSQL store for several nodes will implement the same Protocols. ``factory.py``
is the one place that picks the implementation the proxy and its commands run on.
``with_state`` and ``take_use`` are the two write rules every store shares: what a
code's events carry, and what a login's use of a code commits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol

from proxy.core import events
from proxy.core.chaincheck import ChainRow
from proxy.core.credentials import Credential, UseDecision, check_use
from proxy.core.credstate import MISMATCH, snapshot


@dataclass(frozen=True)
class NewEvent:
    """An event to append. ``data`` must be JSON-serialisable; it is stored verbatim."""

    type: str
    time: float
    session_id: str | None = None
    channel: int | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        event: events.Event,
        time: float,
        session_id: str | None = None,
        channel: int | None = None,
    ) -> NewEvent:
        """The event to append for a catalogue event (``proxy.core.events``)."""
        return cls(event.TYPE, time, session_id, channel, event.data())

    def typed(self) -> events.Event:
        """This event as its catalogue dataclass (``EventDataError`` if it is not one)."""
        return events.decode(self.type, self.data)


class CredentialRead(NamedTuple):
    """A credential row, its argon2 hash, and how the row disagrees with the chain
    (None when it agrees; ``proxy.core.credstate.row_mismatch``)."""

    cred: Credential
    hash: str
    mismatch: str | None


def with_state(event: NewEvent, cred: Credential, code_hash: str) -> NewEvent:
    """``event`` with the code's id and its whole state after the event (what the login
    path and verify check the row against): every store writes a code's events so."""
    data = {**event.data, "credential_id": cred.cred_id, "state": snapshot(cred, code_hash)}
    return replace(event, data=data)


class Use(NamedTuple):
    """A login's use of a code, as every store commits it (``take_use``)."""

    decision: UseDecision
    cred: Credential | None  # the code after the use; None when refused
    events: list[NewEvent]  # to append, ``start`` last; empty when refused


def take_use(
    found: CredentialRead | None, person: str, target: str, now: float, start: NewEvent
) -> Use:
    """Check a code the store just read (inside the transaction that will commit the
    use) and say what the use writes: ``cred_activated`` on first use, ``cred_used``,
    then ``start``. A row that disagrees with its chain is never used."""
    if found is not None and found.mismatch is not None:
        return Use(UseDecision(False, MISMATCH), None, [])
    cred = found.cred if found else None
    decision = check_use(cred, person, target, now)
    if not decision.ok or cred is None or found is None:
        return Use(decision, None, [])
    written = []
    if cred.activated_at is None:
        cred = replace(cred, activated_at=now)
        activated = events.CredActivated(cred.cred_id, person, now + cred.window)
        written.append(with_state(NewEvent.of(activated, now, start.session_id), cred, found.hash))
    cred = replace(cred, uses=cred.uses + 1)
    used = NewEvent.of(events.CredUsed(cred.cred_id, person, cred.uses), now, start.session_id)
    written.append(with_state(used, cred, found.hash))
    written.append(start)
    return Use(decision, cred, written)


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    time: float
    type: str
    session_id: str | None
    channel: int | None
    data: dict[str, Any]
    prev_hash: str
    hash: str

    def typed(self) -> events.Event:
        """This event as its catalogue dataclass (``EventDataError`` if it is not one)."""
        return events.decode(self.type, self.data)


@dataclass(frozen=True)
class ChannelRow:
    session_id: str
    n: int
    kind: str
    command: str | None
    pty: bool
    term: str | None
    started_at: float
    ended_at: float | None
    exit_status: int | None
    exit_signal: str | None
    recording: str | None
    recording_sha256: str | None
    recording_bytes: int | None
    bytes_up: int
    bytes_down: int


@dataclass(frozen=True)
class SessionRow:
    id: str
    person: str
    credential_id: str
    source: str
    client_version: str
    target: str
    login: str
    justification: str
    started_at: float
    deadline: float
    ended_at: float | None
    end_reason: str | None
    end_detail: str | None
    channels: tuple[ChannelRow, ...] = ()


@dataclass(frozen=True)
class SessionFilter:
    person: str | None = None
    target: str | None = None
    since: float | None = None
    until: float | None = None
    end_reason: str | None = None
    live: bool | None = None
    limit: int | None = None
    # Sessions with an ``alert`` or ``flag`` event (True) or without one (False).
    flagged: bool | None = None
    # Globs (``*``, ``?``, ``[...]``, case-sensitive, whole text): a channel's command
    # line or a ``command`` event's text; a ``file_*`` event's path.
    command: str | None = None
    path: str | None = None


# One event as the bulk readers return it: (seq, time, type, session_id, channel,
# data_json, prev_hash, hash), ChainRow's fields as a plain tuple with ``data`` still
# JSON text. A year's report reads a quarter of a million of these; a tuple costs a
# fraction of a dataclass, and most are never needed as more than a few fields.
EventTuple = tuple[int, float, str, str | None, int | None, str, str, str]


@dataclass(frozen=True)
class GroupTotals:
    """Sessions of one person (or target) in a period. ``total_seconds`` is the exact
    sum of their durations and ``longest`` the longest (0.0 when none has ended; never
    below 0.0); both unrounded."""

    sessions: int
    total_seconds: float
    longest: float


@dataclass(frozen=True)
class PeriodSummary:
    """What ``report`` sums up over the sessions started in a period, aggregated by the
    store (SQL GROUP BY) rather than by walking every session."""

    sessions: int
    by_person: Mapping[str, GroupTotals]
    by_target: Mapping[str, GroupTotals]
    ended: int  # sessions with a duration (ended)
    total_seconds: float  # sum of those durations, unrounded
    mean: float | None  # None when none has ended
    median: float | None
    longest: float | None
    end_reasons: Mapping[str, int]  # "live" for a session without an end reason
    flagged: int  # sessions with a flag event
    reviewed: int  # sessions with a review event


@dataclass(frozen=True)
class NewAlert:
    """An alert to put in the outbox, in the same transaction as the events that raised
    it. ``payload`` is what every sink receives, verbatim (it carries ``alert_id``);
    ``subject`` is what a rate rule counted; ``flag`` also flags the session."""

    alert_id: str
    time: float
    rule: str
    payload: Mapping[str, Any]
    session_id: str | None = None
    subject: str | None = None
    flag: bool = False


@dataclass(frozen=True)
class PendingAlert:
    """An alert not yet delivered to one sink, with that sink's attempts so far."""

    alert_id: str
    created: float
    rule: str
    session_id: str | None
    payload_json: str  # exactly as stored: the webhook body, the same on every attempt
    attempts: int
    last_attempt: float | None


# -- the seams: one small Protocol per consumer -------------------------------------
#
# Each consumer is typed against only what it uses, so a second store (the PostgreSQL
# ledger) can be added one seam at a time and a unit test can hand a consumer the
# in-memory store. ``Store`` is their union, for the wiring that owns the whole thing.


class EventLog(Protocol):
    """Appending to the event log (the truth every projection is built from)."""

    async def append(self, events: Sequence[NewEvent]) -> None:
        """Append events in one durable transaction (all or none)."""


class LoginStore(Protocol):
    """What a login reads and commits: the code, then one use of it with the start."""

    async def get_credential(self, cred_id: str) -> CredentialRead | None:
        """The credential, its argon2 hash and whether the row agrees with its latest
        event in the chain (one read, the same cost for every code), or None."""

    async def start_session(
        self,
        cred_id: str,
        person: str,
        target: str,
        now: float,
        start: NewEvent,
        alerts: Sequence[NewAlert] = (),
    ) -> UseDecision:
        """Count one use of the code and commit ``start`` atomically, re-checking the
        code's rules inside the transaction so two logins racing for the last use
        cannot both win. ``alerts`` are committed with it (and only if it is)."""


class SessionJournal(EventLog, Protocol):
    """What a live session writes: its events, alone or with the alerts they raise."""

    async def append_with_alerts(
        self, events: Sequence[NewEvent], alerts: Sequence[NewAlert]
    ) -> None:
        """Append ``events``, then each alert (an outbox row, an ``alert`` event and,
        for a flagging alert on a session, a ``flag`` event), in one transaction."""


class AlertOutboxStore(SessionJournal, Protocol):
    """The alert outbox (proxy/store/outbox.py): raising, delivering, and the history
    the rate rules count."""

    async def pending_alerts(self, sink: str, limit: int = 100) -> list[PendingAlert]:
        """Alerts ``sink`` has not yet received, oldest first."""

    async def record_delivery(
        self,
        alert_id: str,
        sink: str,
        time: float,
        ok: bool,
        detail: str,
        sinks: Sequence[str],
    ) -> int:
        """Record one delivery attempt; the alert is done once every one of ``sinks``
        has taken it. Returns the attempt's number (1, 2, ...)."""

    async def recent_activity(self, since: float) -> ActivityRows:
        """Session starts, failed logins and alerts fired since ``since``."""


class OverrideReads(Protocol):
    """What the running proxy polls for operator overrides (kill, extend)."""

    async def events_after(
        self, after_seq: int, types: Sequence[str], limit: int = 100
    ) -> list[StoredEvent]:
        """Events of these types with seq > ``after_seq``, by seq."""

    async def last_seq(self) -> int: ...


class FeedStore(Protocol):
    """The event feed (proxy/store/feed.py): the SIEM forwarders and ``events``."""

    async def event_page(
        self,
        after_seq: int,
        limit: int,
        since: float | None = None,
        until: float | None = None,
    ) -> list[ChainRow]:
        """Up to ``limit`` events with seq > ``after_seq`` and since <= time < until,
        by seq, exactly as stored."""

    async def feed_cursor(self, name: str) -> int:
        """The last seq the forwarder ``name`` has sent (0: none yet)."""

    async def save_feed_cursor(self, name: str, seq: int, now: float) -> None: ...


class SessionReads(Protocol):
    """Sessions and their events, as ``list``, ``show``, retention and recovery read them."""

    async def list_sessions(self, flt: SessionFilter, *, channels: bool = True) -> list[SessionRow]:
        """Sessions matching ``flt``, by id; ``channels=False`` leaves each row's
        ``channels`` empty (the listing does not show them)."""

    async def get_session(self, session_id: str) -> SessionRow | None: ...

    async def session_events(self, session_id: str) -> list[StoredEvent]: ...

    async def unfinished_sessions(self) -> list[SessionRow]: ...

    async def events_for_sessions(
        self, session_ids: Sequence[str], types: Collection[str] | None = None
    ) -> list[StoredEvent]:
        """The events of these sessions (optionally only these types; a type with ``*``
        is a glob, e.g. ``file_*``), by seq."""

    async def events_between(
        self, types: Collection[str], since: float | None, until: float | None
    ) -> list[StoredEvent]:
        """Events of these types (globs allowed) with since <= time < until, by seq."""


class ChainReads(Protocol):
    """The raw chain, as ``verify`` and the checkpoints read it."""

    async def head(self) -> tuple[int, str]:
        """The last event's seq and hash; (0, GENESIS) for an empty log."""

    async def chain_rows(self, after_seq: int, limit: int) -> list[ChainRow]:
        """Up to ``limit`` events with seq > ``after_seq``, ascending, exactly as stored."""


class ReportReads(Protocol):
    """The period reads ``report`` aggregates (proxy/store/auditreads.py)."""

    def period_sessions(
        self,
        since: float | None,
        until: float | None,
        types: Collection[str],
        batch: int = 1000,
    ) -> AsyncIterator[list[tuple[SessionRow, list[EventTuple]]]]:
        """The sessions started in [since, until), by id, each with its events of these
        types (globs allowed) by seq, ``batch`` sessions at a time: a year's report
        never holds every session at once."""

    async def period_summary(self, since: float | None, until: float | None) -> PeriodSummary:
        """Aggregates over the sessions started in [since, until)."""

    async def period_recordings(
        self, since: float | None, until: float | None
    ) -> list[tuple[ChannelRow, int | None]]:
        """Every channel of the sessions started in [since, until) that has a recording
        or a recording hash, by session and channel, with the seq of its latest
        ``recording_pruned`` event (None when it was never pruned)."""


class CredentialReads(Protocol):
    """The credential state the auditor commands show."""

    async def get_credential(self, cred_id: str) -> CredentialRead | None: ...

    async def list_credentials(self) -> list[Credential]: ...


class AuditorReads(SessionReads, ReportReads, CredentialReads, Protocol):
    """What the auditor's commands read, from one node's store or from the fleet's
    ledger (``proxy.fleet.reads``, where a session's chain is read per node)."""


class AuditStore(SessionReads, ChainReads, ReportReads, CredentialReads, Protocol):
    """Everything the auditor reads, and ``verify``'s check of the projections."""

    async def projection_differences(self) -> list[str]:
        """Rebuild the session, channel and credential rows from the log and say where
        the stored rows differ (they are what ``show``, ``report`` and logins read)."""


class CheckpointStore(ChainReads, EventLog, Protocol):
    """A checkpoint reads the chain's head and appends the signed checkpoint event."""


class SessionLog(SessionReads, EventLog, Protocol):
    """Reading sessions and appending to them: retention (each prune), recovery (each
    unfinished session's end), ``review`` and the operator overrides."""


class AlertTaskStore(OverrideReads, FeedStore, Protocol):
    """What the proxy's background alert tasks poll besides the outbox: operator
    overrides and, for each ``events: all`` sink, the event feed."""


class OverrideStore(SessionReads, SessionJournal, Protocol):
    """``kill`` and ``extend``: append an operator override (with the alert it raises)
    and watch the session until the proxy has acted on it."""


class CredentialAdmin(CredentialReads, Protocol):
    """Issuing and revoking codes (``issue``, ``revoke``, the demo)."""

    async def issue_credential(self, cred: Credential, code_hash: str, event: NewEvent) -> None: ...

    async def revoke_credential(
        self, cred_id: str, reason: str, actor: str, now: float
    ) -> Credential | None: ...


# The bases' order is the one C3 accepts (each narrow Protocol keeps its own order).
class Store(
    LoginStore,
    AlertOutboxStore,
    OverrideStore,
    AlertTaskStore,
    AuditStore,
    CheckpointStore,
    SessionLog,
    CredentialAdmin,
    Protocol,
):
    """The whole store, for the wiring that opens and closes it (``serve``, the CLI)."""

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ActivityRows:
    """Raw recent history for the alert rules (proxy.core.anomaly.History is built
    from it): (time, person); (time, source, person, reason, count: a summarised row
    weighs its count, a single failure 1); (rule, subject, time)."""

    session_starts: tuple[tuple[float, str], ...] = ()
    failures: tuple[tuple[float, str, str | None, str, int], ...] = ()
    fired: tuple[tuple[str, str, float], ...] = ()
