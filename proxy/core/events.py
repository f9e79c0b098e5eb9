"""The audit event catalogue: every event type, its fields, and how its data is stored.

Owns the one definition of each audit event: a frozen class per type (a dataclass to
mypy) whose fields are the keys of the event's ``data`` object. Emitters build events
here (``Event.data()`` is the object the store canonicalises and hashes); every reader
(the SQL projection, ``verify``'s chain check, the alert rules, the auditor's views)
turns stored data back into that class with ``decode``, which fails with one
``EventDataError`` message when a field is missing, unknown, or of the wrong JSON type.
No other module spells an event type: they use ``SessionStart.TYPE`` and the groups
below.

Compatibility, because hashes cover the stored text:

- a field with a default is left out of the data while it holds it: ``= None`` for a
  field never stored as null, ``= ABSENT`` for one that is sometimes stored as null and
  sometimes not at all. So encoding a decoded event gives back the stored bytes;
- a field that an earlier release did not write yet has a default (``source_port``,
  ``detail`` ...), so decoding accepts every event any release wrote.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from proxy.core.errors import EventDataError

__all__ = [
    "ABSENT",
    "CATALOGUE",
    "FILE_TYPES",
    "SESSION_ROW_TYPES",
    "Absent",
    "Event",
    "EventDataError",
    "decode",
    "given",
    "markdown_table",
]

T = TypeVar("T")
D = TypeVar("D")


class Absent(enum.Enum):
    """A field that is not in the data at all (unlike one stored as null)."""

    ABSENT = "absent"

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = Absent.ABSENT


def given(value: T | Absent, default: D) -> T | D:
    """An ``ABSENT``-defaulted field's value, or ``default`` when it is absent."""
    return default if value is ABSENT else value


class _Spec(typing.NamedTuple):
    name: str
    required: bool
    omit: object  # the default (None or ABSENT) that is left out; _KEEP: always written
    allowed: tuple[type, ...] | None  # None: any JSON value


_KEEP = object()
# What an annotation's names admit as JSON values. Annotations stay text (``from
# __future__ import annotations``) and are read here, not evaluated: every command
# imports this module, and evaluating them and making dataclasses cost ~60 ms.
_JSON_TYPES: dict[str, tuple[type, ...] | None] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "None": (type(None),),
    "list": (list,),
    "dict": (dict,),
    "Any": None,
    "Absent": (),
}


def _allowed(annotation: str, where: str) -> tuple[type, ...] | None:
    """The JSON value types a field's annotation (``"str | None | Absent"``) admits."""
    out: list[type] = []
    for part in annotation.split("|"):
        name = part.strip().split("[", 1)[0]
        if name not in _JSON_TYPES:
            raise TypeError(f"{where}: annotation {annotation!r} is not a JSON type")
        admitted = _JSON_TYPES[name]
        if admitted is None:
            return None
        out.extend(admitted)
    return tuple(out)


@typing.dataclass_transform(frozen_default=True)
class Event:
    """Base of every event type: a frozen dataclass (as mypy checks it) whose fields are
    the data's keys; ``TYPE`` is the stored type name. Fields without a default are
    required; a default is None or ``ABSENT`` (see the module docstring)."""

    TYPE: ClassVar[str]
    _SPECS: ClassVar[tuple[_Spec, ...]] = ()
    _NAMES: ClassVar[frozenset[str]] = frozenset()
    _REQUIRED: ClassVar[frozenset[str]] = frozenset()
    # name -> the JSON types it admits (None: any), for decode's one pass over the data.
    _TYPES: ClassVar[dict[str, tuple[type, ...] | None]] = {}
    _DEFAULTS: ClassVar[dict[str, object]] = {}
    _IMPLICIT: ClassVar[frozenset[str]] = frozenset()  # fields no class declares

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        specs: list[_Spec] = []
        for klass in reversed(cls.__mro__[: cls.__mro__.index(Event)]):
            for name, annotation in vars(klass).get("__annotations__", {}).items():
                if str(annotation).startswith("ClassVar"):
                    continue
                default = vars(klass).get(name, _KEEP)
                if default is not _KEEP and default is not None and default is not ABSENT:
                    raise TypeError(f"{cls.__name__}.{name}: a default must be None or ABSENT")
                if default is _KEEP and specs and not specs[-1].required:
                    raise TypeError(f"{cls.__name__}.{name}: a required field after a default")
                where = f"{cls.__name__}.{name}"
                specs.append(_Spec(name, default is _KEEP, default, _allowed(annotation, where)))
        if all(s.name != "truncated" for s in specs):
            # The store cuts an event whose JSON passes 16 KiB (limits.bound_data) and
            # marks it: any event may carry ``truncated``, the whole's bytes and sha256.
            specs.append(_Spec("truncated", False, ABSENT, (dict,)))
            cls._IMPLICIT = frozenset({"truncated"})
        cls._SPECS = tuple(specs)
        cls._NAMES = frozenset(s.name for s in specs)
        cls._REQUIRED = frozenset(s.name for s in specs if s.required)
        # A None-defaulted field stored as null reads as None: accepted.
        cls._TYPES = {
            s.name: None if s.allowed is None else (*s.allowed, *([type(None)] * (s.omit is None)))
            for s in specs
        }
        cls._DEFAULTS = {s.name: s.omit for s in specs if not s.required}

    if not TYPE_CHECKING:  # mypy sees the dataclass __init__ that dataclass_transform makes

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            specs = self._SPECS
            if len(args) > len(specs):
                raise TypeError(f"{type(self).__name__} takes {len(specs)} fields")
            values = dict(self._DEFAULTS)
            values.update(zip((s.name for s in specs), args, strict=False))
            for name, value in kwargs.items():
                if name not in self._NAMES:
                    raise TypeError(f"{type(self).__name__} has no field {name!r}")
                values[name] = value
            missing = self._REQUIRED - values.keys()
            if missing:
                raise TypeError(f"{type(self).__name__} needs {', '.join(sorted(missing))}")
            self.__dict__.update(values)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((type(self), *(repr(v) for v in self.__dict__.values())))

    def __repr__(self) -> str:
        fields = ", ".join(f"{s.name}={getattr(self, s.name)!r}" for s in self._SPECS)
        return f"{type(self).__name__}({fields})"

    def data(self) -> dict[str, Any]:
        """The event's data object, as stored (before canonical JSON)."""
        out: dict[str, Any] = {}
        for spec in self._SPECS:
            value = getattr(self, spec.name)
            if value is spec.omit:  # never true for _KEEP: no value is that object
                continue
            out[spec.name] = value
        return out


CATALOGUE: dict[str, type[Event]] = {}
E = TypeVar("E", bound=type[Event])


def event(type_: str) -> typing.Callable[[E], E]:
    """Register the class as the definition of event type ``type_``."""

    def register(cls: E) -> E:
        if type_ in CATALOGUE:
            raise ValueError(f"event type {type_} is defined twice")
        cls.TYPE = type_
        CATALOGUE[type_] = cls
        return cls

    return register


_JSON_NAMES: dict[type, str] = {
    type(None): "null",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
}


def _json_name(value: object) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def decode(type_: str, data: Mapping[str, Any]) -> Event:
    """The typed event for stored (or emitted) data; ``EventDataError`` says exactly what
    does not match: an unknown type, a missing field, an unknown field, a wrong type."""
    cls = CATALOGUE.get(type_)
    if cls is None:
        raise EventDataError(f"unknown event type {type_!r}")
    if not isinstance(data, Mapping):
        raise EventDataError(f"{type_} event: its data is {_json_name(data)}, not an object")
    keys = data.keys()
    if not keys >= cls._REQUIRED or not keys <= cls._NAMES:
        missing = sorted(cls._REQUIRED - keys)
        unknown = sorted(k for k in keys if k not in cls._NAMES)
        said = [f"missing field(s) {', '.join(missing)}"] if missing else []
        said += [f"unknown field(s) {', '.join(map(str, unknown))}"] if unknown else []
        raise EventDataError(f"{type_} event: {'; '.join(said)}")
    types_ = cls._TYPES
    for name, value in data.items():
        allowed = types_[name]
        if allowed is not None and type(value) not in allowed:
            expected = " or ".join(sorted({_JSON_NAMES[a] for a in allowed}))
            raise EventDataError(
                f"{type_} event: field {name} is {_json_name(value)}, expected {expected}"
            )
    # Checked above, so __init__ is skipped: a year's report decodes a quarter of a
    # million command events.
    ev = object.__new__(cls)
    ev.__dict__.update(cls._DEFAULTS)
    ev.__dict__.update(data)
    return ev


def markdown_table() -> str:
    """The README's table of event types (generated: ``python -m proxy.core.events``).
    Types with the same fields (the file operations) share a row."""
    rows: dict[str, list[str]] = {}
    for type_ in sorted(CATALOGUE):
        fields = ", ".join(
            f"`{s.name}`" + ("" if s.required else "?")
            for s in CATALOGUE[type_]._SPECS
            if s.name not in CATALOGUE[type_]._IMPLICIT
        )
        rows.setdefault(fields or "(none)", []).append(f"`{type_}`")
    lines = ["| event type | fields (`?`: not always present) |", "|---|---|"]
    lines += [f"| {', '.join(types_)} | {fields} |" for fields, types_ in rows.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- sessions


@event("session_start")
class SessionStart(Event):
    person: str
    credential_id: str
    source: str
    client_version: str
    target: str
    login: str
    justification: str
    deadline: float
    source_port: int | Absent | None = ABSENT  # written since the login hardening
    # With a fleet (since issue 22): the code's use spent in the ledger under this id, and
    # whether the ledger did not answer, so the node decided on its own copy (flagged).
    use_id: str | None = None
    ledger_unreachable: bool | None = None


@event("session_warning")
class SessionWarning(Event):
    remaining: float


@event("deadline_changed")
class DeadlineChanged(Event):
    deadline: float
    by: float
    operator: str
    reason: str


@event("session_end")
class SessionEnd(Event):
    reason: str
    detail: str | Absent | None = ABSENT


@event("upstream_failed")
class UpstreamFailed(Event):
    reason: str
    detail: str | None


@event("recording_limit")
class RecordingLimit(Event):
    recorded_bytes: int
    limit: int


@event("recording_failed")
class RecordingFailed(Event):
    detail: str


@event("request_refused")
class RequestRefused(Event):
    request: str  # "repeated": the refusals past the first few of each kind, counted
    detail: str
    count: int | None = None  # environment variables refused at once
    limit: int | None = None  # the channel limit a channel was refused at
    burst: int | None = None  # the channel open rate a channel was refused at: its burst
    rate: int | None = None  # ... and opens a second
    counts: dict[str, int] | None = None  # "repeated": refusals per kind


@event("channel_start")
class ChannelStart(Event):
    kind: str
    pty: bool
    recording: str | None
    command: str | Absent | None = ABSENT
    term: str | Absent | None = ABSENT
    size: list[int] | None = None  # [columns, rows] of a PTY


@event("channel_end")
class ChannelEnd(Event):
    exit_status: int | None
    exit_signal: str | Absent | None = ABSENT
    recording_sha256: str | None = None
    recording_bytes: int | None = None
    bytes_up: int | None = None
    bytes_down: int | None = None
    lines_not_read: int | None = None  # pasted lines past the extractor's limit
    resizes: int | None = None  # window changes asked for, when some were coalesced
    resizes_applied: int | None = None
    omitted_bytes: int | None = None  # past recording.max_channel_bytes
    omitted_sha256: str | None = None
    recovered: bool | None = None  # written by the crash recovery at start-up


# ------------------------------------------------------------------------- credentials


@event("cred_issued")
class CredIssued(Event):
    person: str
    # ``cred issue`` writes the credential's listing (``id`` ...); the demo and the first
    # release wrote ``credential_id`` and who issued it.
    id: str | None = None
    credential_id: str | None = None
    issued_by: str | None = None
    by: str | None = None
    issued_at: str | None = None
    valid_until: str | None = None
    window: float | None = None
    max_uses: int | None = None
    targets: list[str] | None = None
    max_session: float | Absent | None = ABSENT
    activated_at: str | Absent | None = ABSENT
    window_ends: str | Absent | None = ABSENT
    revoked_at: str | Absent | None = ABSENT
    revoke_reason: str | Absent | None = ABSENT
    # The code's whole state after the event (proxy.core.credstate), since issue 17.
    state: dict[str, Any] | None = None


@event("cred_activated")
class CredActivated(Event):
    credential_id: str
    person: str
    window_ends: float
    state: dict[str, Any] | None = None


@event("cred_used")
class CredUsed(Event):
    credential_id: str
    person: str
    use: int
    state: dict[str, Any] | None = None


@event("cred_revoked")
class CredRevoked(Event):
    credential_id: str
    person: str
    by: str
    reason: str
    state: dict[str, Any] | None = None


@event("cred_use_pending")
class CredUsePending(Event):
    """A login is about to spend one use of a code in the fleet's ledger under
    ``use_id`` (written before the ledger is asked: a crash after it is settled)."""

    credential_id: str
    use_id: str
    person: str
    target: str


@event("cred_use_settled")
class CredUseSettled(Event):
    """What became of a pending use that no unflagged session start settled: whether the
    ledger holds it (``spent``); ``offline`` when the node served without the ledger and
    recorded the use afterwards. ``over`` says how that use went past the code's rules
    fleet-wide (over-spent, or after a revocation): it alerts."""

    credential_id: str
    use_id: str
    spent: bool
    offline: bool
    uses: int | None = None  # the ledger's count of the code's uses after settling
    max_uses: int | None = None
    over: str | None = None


# ------------------------------------------------------------------------------- login


@event("login_failed")
class LoginFailed(Event):
    reason: str
    username: str  # cut to its longest valid shape
    person: str | None
    target: str | None
    login: str | None
    credential_id: str | None
    source: str
    client_version: str | None
    justification: str | None  # cut to the policy's maximum
    username_length: int | Absent = ABSENT  # the whole's length, written since issue 15
    justification_length: int | None = None  # when the justification was cut


@event("login_aborted")
class LoginAborted(Event):
    source: str
    client_version: str | None
    detail: str


@event("login_failures_summarised")
class LoginFailuresSummarised(Event):
    """Failed logins of one network in one minute, counted rather than written one by one
    (``proxy.core.failsummary``)."""

    network: str
    minute: float
    first: float
    last: float
    count: int
    reasons: dict[str, int]
    persons: list[list[Any]]  # [person, count]
    credential_ids: list[list[Any]]  # [credential id, count]
    attempts: list[list[Any]]  # [source, person, reason, count]
    unitemised: int
    degraded: bool | None = None  # written late: the disk was inside the reserve


@event("login_slots_full")
class LoginSlotsFull(Event):
    """One minute in which unauthenticated connections were cut or refused for lack of a
    login slot (``proxy.loginslots``)."""

    minute: float
    first: float
    last: float
    dropped: int
    refused: int
    networks: list[list[Any]]  # [network, count]
    max_unauthenticated: int
    max_unauthenticated_per_source: int


@event("login_failures_held")
class LoginFailuresHeld(Event):
    """The disk is inside the reserve kept for sessions: failed logins are counted in
    memory until there is room (``proxy.failurelog``)."""

    free_bytes: int
    floor_bytes: int


# ----------------------------------------------------------------------------- service


@event("proxy_started")
class ProxyStarted(Event):
    pid: int


@event("proxy_stopped")
class ProxyStopped(Event):
    pass


@event("disk_space_ok")
class DiskSpaceOk(Event):
    free_bytes: int


@event("disk_space_low")
class DiskSpaceLow(Event):
    free_bytes: int


@event("disk_space_critical")
class DiskSpaceCritical(Event):
    free_bytes: int


@event("config_reload_failed")
class ConfigReloadFailed(Event):
    problems: list[str]


@event("config_reloaded")
class ConfigReloaded(Event):
    targets: list[str]
    needs_restart: list[str]


@event("backup")
class Backup(Event):
    database: str
    schema_version: int
    last_seq: int
    integrity_check: str
    database_sha256: str
    recordings: str
    recordings_files: int
    recordings_sha256: str
    by: str


# ---------------------------------------------------- operators, alerts and the auditor


@event("operator_kill")
class OperatorKill(Event):
    operator: str
    reason: str


@event("operator_extend")
class OperatorExtend(Event):
    operator: str
    reason: str
    by: float


@event("drill")
class Drill(Event):
    operator: str
    alert_id: str


@event("alert")
class Alert(Event):
    """The alert document every sink receives (``proxy/alerts/payload.py``), verbatim."""

    alert_id: str
    v: int
    rule: str
    time: str
    session_id: str | None
    person: str | None
    source: str | None
    target: str | None
    login: str | None
    justification: str | None
    credential_id: str | None
    detail: str
    proxy: str
    test: bool | None = None  # a drill


@event("flag")
class Flag(Event):
    rule: str
    alert_id: str
    detail: str | None


@event("alert_delivered")
class AlertDelivered(Event):
    alert_id: str
    sink: str
    attempt: int


@event("review")
class Review(Event):
    by: str
    note: str


@event("checkpoint")
class Checkpoint(Event):
    seq: int
    head: str
    time: float
    signature: str
    key: str


@event("recording_pruned")
class RecordingPruned(Event):
    path: str
    sha256: str | None
    bytes: int | None
    session_ended_at: float | None
    retention: float
    by: str


# ------------------------------------------------------------------------------- fleet


@event("fleet_conflict")
class FleetConflict(Event):
    """The fleet's ledger holds this node's event ``seq`` with another hash: shipping
    stops (it never overwrites and never skips) until an operator looks (it alerts)."""

    ledger: str  # the ledger as the node names it (host:port/database, never a secret)
    seq: int
    local_hash: str
    ledger_hash: str


@event("fleet_gap")
class FleetGap(Event):
    """The ledger lost a tail of this node's events (restored from a backup, an
    asynchronous failover): the node ships them again (it alerts)."""

    ledger: str
    ledger_seq: int  # this node's last event in the ledger (0: none)
    shipped_seq: int  # the last event the node knew was in the ledger


@event("fleet_name_taken")
class FleetNameTaken(Event):
    """The ledger knows this node's name with another node id or another checkpoint key:
    the node serves locally and does not ship (it alerts)."""

    ledger: str
    node: str
    node_id: str  # this node's id (``<recordings>/fleet-node-id``)
    detail: str


@event("fleet_too_old")
class FleetTooOld(Event):
    """The ledger needs a newer reader than this node: it serves locally and does not
    ship (it alerts)."""

    ledger: str
    min_reader_version: int
    reader_version: int


@event("peer_witness")
class PeerWitness(Event):
    """A peer's latest signed checkpoint as the ledger held it, copied verbatim into this
    node's chain: a tail later cut from the peer's events in the ledger is caught here."""

    peer: str
    seq: int
    head: str
    time: float
    signature: str
    key: str


# ------------------------------------------------- resources accessed inside a channel


@event("command")
class Command(Event):
    source: str  # exec, stdin, or the PTY extraction's name
    offset: float  # seconds into the channel's recording
    text: str | None = None  # absent when redacted
    redacted: bool | Absent = ABSENT  # PTY commands only
    truncated: bool | dict[str, Any] | None = None  # the line was cut (or the event was)


@event("commands_omitted")
class CommandsOmitted(Event):
    count: int
    source: str
    offset: float


@event("command_extraction_error")
class CommandExtractionError(Event):
    detail: str
    source: str
    offset: float


@event("scp_parse_error")
class ScpParseError(Event):
    detail: str
    source: str
    offset: float


@event("sftp_parse_error")
class SftpParseError(Event):
    direction: str
    detail: str
    source: str
    offset: float


@event("sftp_tracking_lost")
class SftpTrackingLost(Event):
    """The SFTP parser let go of its first request or handle past a cap (it alerts)."""

    detail: str
    source: str
    offset: float


@event("sftp_untracked")
class SftpUntracked(Event):
    """At a channel's end: requests and handles the SFTP parser let go past its caps."""

    requests: int
    handles: int
    max_pending: int
    max_handles: int
    source: str
    offset: float


class FileEvent(Event):
    """A file operation seen in an sftp or scp channel. Every file event has these
    fields; which of the others are present depends on the operation."""

    path: str | None
    source: str  # sftp or scp
    offset: float
    raw: bool | Absent = ABSENT  # the path was not UTF-8 (shown escaped)
    status: str | Absent = ABSENT
    message: str | Absent = ABSENT
    name: str | Absent = ABSENT
    target_path: str | Absent | None = ABSENT
    flags: list[str] | Absent = ABSENT
    handle: str | Absent = ABSENT
    entries: int | Absent = ABSENT
    bytes_read: int | Absent = ABSENT
    bytes_written: int | Absent = ABSENT
    sha256: str | Absent | None = ABSENT
    hash_note: str | Absent = ABSENT
    read_sha256: str | Absent | None = ABSENT
    read_hash_note: str | Absent = ABSENT
    size: int | Absent = ABSENT
    mode: str | Absent = ABSENT
    uid: int | Absent = ABSENT
    gid: int | Absent = ABSENT
    atime: int | Absent = ABSENT
    mtime: int | Absent = ABSENT
    extended: list[str] | Absent = ABSENT
    offset_from: int | Absent = ABSENT
    length: int | Absent = ABSENT
    offset_to: int | Absent = ABSENT
    extension: str | Absent = ABSENT
    path_cut: bool | Absent = ABSENT  # path (or target_path) held cut at 4,096 characters

    def operation(self) -> str:
        """What was done, as the auditor reads it: ``open``, ``rename`` ..."""
        return self.TYPE.removeprefix("file_")


@event("file_open")
class FileOpen(FileEvent):
    pass


@event("file_close")
class FileClose(FileEvent):
    pass


@event("file_read")
class FileRead(FileEvent):
    pass


@event("file_write")
class FileWrite(FileEvent):
    pass


@event("file_list")
class FileList(FileEvent):
    pass


@event("file_mkdir")
class FileMkdir(FileEvent):
    pass


@event("file_rmdir")
class FileRmdir(FileEvent):
    pass


@event("file_remove")
class FileRemove(FileEvent):
    pass


@event("file_rename")
class FileRename(FileEvent):
    pass


@event("file_readlink")
class FileReadlink(FileEvent):
    pass


@event("file_symlink")
class FileSymlink(FileEvent):
    pass


@event("file_link")
class FileLink(FileEvent):
    pass


@event("file_setstat")
class FileSetstat(FileEvent):
    pass


@event("file_fsync")
class FileFsync(FileEvent):
    pass


@event("file_statvfs")
class FileStatvfs(FileEvent):
    pass


@event("file_copy")
class FileCopy(FileEvent):
    pass


@event("file_extended")
class FileExtended(FileEvent):
    pass


# ---------------------------------------------------------------------------- groups

FILE_TYPES = frozenset(t for t, cls in CATALOGUE.items() if issubclass(cls, FileEvent))
# The events the session and channel rows are derived from (both projections read them).
SESSION_ROW_TYPES = frozenset(
    t.TYPE for t in (SessionStart, SessionEnd, DeadlineChanged, ChannelStart, ChannelEnd)
)
# The disk-space events that raise an alert, and the level each one names.
DISK_SPACE_ALERTS = {DiskSpaceLow.TYPE: "low", DiskSpaceCritical.TYPE: "critical"}


def disk_space(level: str, free_bytes: int) -> DiskSpaceOk | DiskSpaceLow | DiskSpaceCritical:
    """The event for the audit disk entering ``level`` (ok, low or critical)."""
    if level == "critical":
        return DiskSpaceCritical(free_bytes)
    if level == "low":
        return DiskSpaceLow(free_bytes)
    return DiskSpaceOk(free_bytes)


if __name__ == "__main__":
    print(markdown_table(), end="")
