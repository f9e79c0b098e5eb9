"""Checking the audit chain: what ``breakglass verify`` concludes from the stored rows.

Owns the rules that turn stored events into precise findings: a sequence gap (events
missing), an event whose contents no longer match its hash (changed), an event found at
another position than the one it was hashed at (reordered), a broken link between two
neighbours (something before was rewritten or removed), checkpoints whose signed head
disagrees with the chain, sessions and channels without an end, and the recordings the
chain vouches for. Also the exact bytes a checkpoint signature covers.

Pure: rows in, findings out. The I/O half (reading the store, hashing files, checking
Ed25519 signatures) is ``proxy/audit/verify.py``. Recomputes hashes with exactly
``chain.link`` over the row *as stored* (the data column's text, not a re-serialisation),
so a verifier years later agrees with the writer.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.core import chain, events

# How far from its position a reordered event is looked for (only on a mismatch).
REORDER_WINDOW = 64
# Reorder lookups cost 2 x REORDER_WINDOW hashes each: after this many, a mismatch is
# reported as a change without looking (a renumbered tail would otherwise cost minutes).
MAX_REORDER_LOOKUPS = 1000
# How many recent hashes are kept to check a checkpoint's head without a lookup.
RECENT_HASHES = 4096

CHECKPOINT_DOMAIN = "breakglass checkpoint v1"

ALERT_TYPES = frozenset({events.Alert.TYPE})
FLAG_TYPES = frozenset({events.Flag.TYPE})
PRUNED = events.RecordingPruned.TYPE
# The events verify's projection reads (the rest are hashed and counted only).
PROJECTED = events.SESSION_ROW_TYPES | {PRUNED, events.Checkpoint.TYPE}


@dataclass(frozen=True)
class ChainRow:
    """One event row exactly as stored (``data_json`` is the stored text)."""

    seq: int
    time: float
    type: str
    session_id: str | None
    channel: int | None
    data_json: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Problem:
    """One finding. ``kind`` is stable (for machines); ``message`` says what and where."""

    kind: str
    message: str
    seq: int | None = None
    session_id: str | None = None


@dataclass(frozen=True)
class Checkpoint:
    """A signed checkpoint as found in a ``checkpoint`` event or held by an auditor."""

    seq: int  # the last event the signature covers
    head: str  # that event's hash
    time: float
    signature: str  # hex
    key: str  # the signing key's fingerprint
    at: int | None = None  # the seq of the checkpoint event itself, if in the chain


@dataclass
class RecordingClaim:
    """What the chain says about one channel's recording."""

    session_id: str
    channel: int
    path: str | None = None
    sha256: str | None = None
    size: int | None = None
    ended: bool = False
    end_seq: int | None = None
    # A later recording_pruned event: the retention policy deleted the file on purpose;
    # the chain keeps its hash, and the event says when and by whom.
    pruned_seq: int | None = None


@dataclass
class SessionState:
    started_at: float
    deadline: float
    ended: bool = False


def checkpoint_message(seq: int, head: str, time: float) -> bytes:
    """The exact bytes a checkpoint's Ed25519 signature covers."""
    body = chain.canonical({"seq": seq, "head": head, "time": time})
    return f"{CHECKPOINT_DOMAIN}\n{body}".encode()


def checkpoint_from_data(data: Mapping[str, Any], at: int | None = None) -> Checkpoint | None:
    """A checkpoint from its event data (or a JSON document an auditor kept, whose other
    keys are ignored), or None when a field is missing or of the wrong type."""
    if not isinstance(data, Mapping):
        return None
    fields = ("seq", "head", "time", "signature", "key")
    try:
        cp = events.decode(events.Checkpoint.TYPE, {k: data[k] for k in fields if k in data})
    except events.EventDataError:
        return None
    assert isinstance(cp, events.Checkpoint)
    return Checkpoint(cp.seq, cp.head, float(cp.time), cp.signature, cp.key, at)


def _session_label(row: ChainRow) -> str:
    where = f", session {row.session_id}" if row.session_id else ""
    if row.session_id and row.channel is not None:
        where = f", channel {row.session_id}/{row.channel}"
    return f"type {row.type}{where}"


@dataclass
class ChainChecker:
    """Feed every row in ascending ``seq`` order, then call ``finish``.

    Keeps O(sessions + channels) state, not O(events), so it walks a million events in
    constant memory per event.
    """

    problems: list[Problem] = field(default_factory=list)
    count: int = 0
    first_seq: int | None = None
    last_seq: int = 0
    head: str = chain.GENESIS
    sessions: dict[str, SessionState] = field(default_factory=dict)
    recordings: dict[tuple[str, int], RecordingClaim] = field(default_factory=dict)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    # Checkpoints whose head is older than the recent window: the caller looks them up.
    unresolved: list[Checkpoint] = field(default_factory=list)
    _recent: OrderedDict[int, str] = field(default_factory=OrderedDict)
    _intact: bool = True  # the last row's own hash recomputed correctly
    _lookups: int = 0
    # The run being merged: (kind, first seq, last seq, index in problems).
    _run: tuple[str, int, int, int] | None = None

    def _add(self, kind: str, message: str, row: ChainRow | None = None) -> None:
        self.problems.append(
            Problem(kind, message, row.seq if row else None, row.session_id if row else None)
        )

    def _add_run(self, kind: str, message: str, row: ChainRow, plural: str) -> None:
        """Consecutive events with the same finding become one problem ("events A..B")
        so a rewritten tail of a million events is one line, not a million."""
        run = self._run
        if run is not None and run[0] == kind and run[2] == row.seq - 1:
            first, index = run[1], run[3]
            self._run = (kind, first, row.seq, index)
            self.problems[index] = Problem(
                kind, f"events {first}..{row.seq} {plural}", first, self.problems[index].session_id
            )
            return
        self._run = (kind, row.seq, row.seq, len(self.problems))
        self._add(kind, message, row)

    def feed(self, row: ChainRow) -> None:
        self.count += 1
        expected = self.last_seq + 1
        gap = row.seq != expected
        if row.seq <= self.last_seq:
            # Only a store that does not keep seq unique could do this.
            self._add(
                "events_out_of_order",
                f"event {row.seq} comes after event {self.last_seq}: events out of order",
                row,
            )
        elif gap:
            missing = (
                f"event {expected} is missing"
                if row.seq == expected + 1
                else f"events {expected}..{row.seq - 1} are missing"
            )
            after = f"after event {self.last_seq}" if self.last_seq else "at the start"
            self._add(
                "events_missing",
                f"{missing} ({row.seq - expected} deleted {after}; the chain resumes at"
                f" event {row.seq})",
                row,
            )
        if self.first_seq is None:
            self.first_seq = row.seq

        recomputed = chain.link(
            row.prev_hash, row.seq, row.time, row.type, row.session_id, row.channel, row.data_json
        )
        intact = recomputed == row.hash
        if not intact:
            moved_from = self._hashed_at(row)
            if moved_from is not None:
                self._add_run(
                    "event_moved",
                    f"event {row.seq} is the event hashed as number {moved_from}, moved here:"
                    f" events were reordered ({_session_label(row)})",
                    row,
                    "were hashed at other positions: events were reordered or renumbered",
                )
            else:
                self._add_run(
                    "event_changed",
                    f"event {row.seq} changed: its contents no longer match its hash"
                    f" ({_session_label(row)})",
                    row,
                    "changed: their contents no longer match their hashes",
                )
        elif not gap and row.prev_hash != self.head and self._intact:
            # Its own hash is right, so its link was written for another predecessor:
            # the event before it was replaced, or this one was rehashed onto a forged
            # history. (A changed or moved predecessor is reported on its own.)
            self._add(
                "chain_broken",
                f"event {row.seq} does not follow event {self.last_seq}: it was hashed"
                f" after a different event {self.last_seq} (the earlier one was"
                f" rewritten, or this one was recomputed; {_session_label(row)})",
                row,
            )
        self._intact = intact
        if row.seq > self.last_seq:
            self.last_seq = row.seq
        self.head = row.hash
        self._recent[row.seq] = row.hash
        if len(self._recent) > RECENT_HASHES:
            self._recent.popitem(last=False)
        self._project(row)

    def _hashed_at(self, row: ChainRow) -> int | None:
        if self._lookups >= MAX_REORDER_LOOKUPS:
            return None
        self._lookups += 1
        lo = max(1, row.seq - REORDER_WINDOW)
        for seq in range(lo, row.seq + REORDER_WINDOW + 1):
            if seq == row.seq:
                continue
            digest = chain.link(
                row.prev_hash, seq, row.time, row.type, row.session_id, row.channel, row.data_json
            )
            if digest == row.hash:
                return seq
        return None

    def _project(self, row: ChainRow) -> None:
        if row.type not in PROJECTED:
            return
        try:
            data = json.loads(row.data_json)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            self._add("event_malformed", f"event {row.seq} has data that is not a JSON object")
            return
        if row.type == events.Checkpoint.TYPE:
            self._checkpoint(row, data)
            return
        try:
            ev = events.decode(row.type, data)
        except events.EventDataError as exc:
            self._add("event_malformed", f"event {row.seq}: {exc}", row)
            return
        sid = row.session_id
        if sid is None:
            return
        match ev:
            case events.SessionStart():
                self.sessions[sid] = SessionState(row.time, float(ev.deadline))
            case events.SessionEnd():
                state = self.sessions.get(sid)
                if state is None:
                    self._add(
                        "session_end_orphan",
                        f"event {row.seq} ends session {sid}, which has no start in the chain",
                        row,
                    )
                else:
                    state.ended = True
            case events.DeadlineChanged():
                state = self.sessions.get(sid)
                if state is not None:
                    state.deadline = float(ev.deadline)
            case events.ChannelStart() if row.channel is not None:
                self.recordings[(sid, row.channel)] = RecordingClaim(sid, row.channel, ev.recording)
            case events.ChannelEnd() if row.channel is not None:
                key = (sid, row.channel)
                claim = self.recordings.setdefault(key, RecordingClaim(sid, row.channel))
                claim.ended = True
                claim.end_seq = row.seq
                claim.sha256 = ev.recording_sha256
                claim.size = ev.recording_bytes
            case events.RecordingPruned() if row.channel is not None:
                pruned = self.recordings.get((sid, row.channel))
                if pruned is None or not pruned.ended or pruned.sha256 != ev.sha256:
                    self._add(
                        "recording_pruned_mismatch",
                        f"event {row.seq} prunes the recording of channel {sid}/{row.channel},"
                        " but the chain has no ended channel with that hash",
                        row,
                    )
                else:
                    pruned.pruned_seq = row.seq

    def _checkpoint(self, row: ChainRow, data: Mapping[str, Any]) -> None:
        cp = checkpoint_from_data(data, at=row.seq)
        if cp is None:
            self._add(
                "checkpoint_malformed",
                f"checkpoint at event {row.seq} lacks seq, head, time, signature or key",
                row,
            )
            return
        self.checkpoints.append(cp)
        if cp.seq >= row.seq:
            self._add(
                "checkpoint_malformed",
                f"checkpoint at event {row.seq} claims to cover event {cp.seq},"
                " which comes after it",
                row,
            )
            return
        known = self._recent.get(cp.seq)
        if known is None:
            self.unresolved.append(cp)
        elif known != cp.head:
            self._add("checkpoint_head_mismatch", checkpoint_head_message(cp, known), row)

    def finish(self, now: float, grace: float = 60.0) -> None:
        """Findings that need the whole chain: sessions and channels left without an
        end. A session past its deadline (plus ``grace``) cannot be live: the proxy
        closes it then, so a missing end means a crash not yet recovered, or a deletion.
        """
        for sid, state in self.sessions.items():
            if state.ended:
                continue
            if now <= state.deadline + grace:
                continue
            self._add(
                "session_without_end",
                f"session {sid} has no end, and its deadline passed at"
                f" {_utc(state.deadline)}: it is not live (a crash not yet recovered by a"
                " proxy start, or its end was removed)",
            )
        for (sid, n), claim in self.recordings.items():
            owner = self.sessions.get(sid)
            if claim.ended or owner is None or not owner.ended:
                continue
            self._add(
                "channel_without_end",
                f"channel {sid}/{n} has no end although its session ended",
            )

    def live_sessions(self, now: float, grace: float = 60.0) -> list[str]:
        return [
            sid for sid, s in self.sessions.items() if not s.ended and now <= s.deadline + grace
        ]


def checkpoint_head_message(cp: Checkpoint, actual: str) -> str:
    where = f"checkpoint at event {cp.at}" if cp.at is not None else "the checkpoint"
    return (
        f"{where} signed event {cp.seq} with hash {cp.head[:16]}…, but the chain's event"
        f" {cp.seq} has hash {actual[:16]}…: history up to event {cp.seq} was rewritten"
        " after the checkpoint was signed"
    )


def check_external(cp: Checkpoint, last_seq: int, hash_at: str | None) -> Problem | None:
    """An auditor's copy of a checkpoint against the chain: truncated or rewritten?"""
    if cp.seq > last_seq:
        missing = (
            f"event {cp.seq} is missing"
            if cp.seq == last_seq + 1
            else f"events {last_seq + 1}..{cp.seq} are missing"
        )
        return Problem(
            "events_truncated",
            f"{missing}: the chain ends at event {last_seq}, but a checkpoint signed at"
            f" {_utc(cp.time)} covers up to event {cp.seq} (the tail was cut off)",
            cp.seq,
        )
    if hash_at is None:
        return Problem(
            "events_missing",
            f"event {cp.seq}, covered by a checkpoint signed at {_utc(cp.time)}, is missing",
            cp.seq,
        )
    if hash_at != cp.head:
        return Problem("checkpoint_head_mismatch", checkpoint_head_message(cp, hash_at), cp.seq)
    return None


def recording_problem(
    claim: RecordingClaim, found: tuple[str, int] | None, shown_path: str
) -> tuple[str, Problem | None]:
    """Compare what the chain says about a recording with the file found (its sha256 and
    size, or None when absent). Returns the status word and the problem, if any."""
    where = f"channel {claim.session_id}/{claim.channel}"
    if claim.pruned_seq is not None and found is None:
        return "pruned", None  # deleted by the retention policy; its hash stays in the chain
    if claim.sha256 is None:
        if found is None:
            return "missing", Problem(
                "recording_missing",
                f"recording {shown_path} ({where}) is missing, and its channel end records no hash",
                claim.end_seq,
                claim.session_id,
            )
        return "unhashed", Problem(
            "recording_unhashed",
            f"recording {shown_path} ({where}) exists but its channel end records no hash",
            claim.end_seq,
            claim.session_id,
        )
    if found is None:
        return "missing", Problem(
            "recording_missing",
            f"recording {shown_path} ({where}) is missing (the chain records"
            f" {claim.size} bytes, sha256 {claim.sha256[:16]}…)",
            claim.end_seq,
            claim.session_id,
        )
    sha, size = found
    if sha == claim.sha256 and (claim.size is None or size == claim.size):
        return "ok", None
    return "MISMATCH", Problem(
        "recording_altered",
        f"recording {shown_path} ({where}) was altered: it has {size} bytes, sha256"
        f" {sha[:16]}…; the chain records {claim.size} bytes, sha256 {claim.sha256[:16]}…",
        claim.end_seq,
        claim.session_id,
    )


def _utc(t: float) -> str:
    stamp = dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")
    return stamp.replace("+00:00", "Z")
