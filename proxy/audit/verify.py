"""``breakglass verify``: the whole audit trail, checked against itself and its files.

Owns the I/O half of verification: reading every event from the store in batches,
hashing every recording the chain vouches for, checking checkpoint signatures with the
proxy's key (or the auditor's copy of it), comparing checkpoints an auditor kept off the
box, and rebuilding the session rows from the log. The rules are ``core.chaincheck``.

Reports every finding with where it is; never repairs anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from proxy.core.chaincheck import (
    ChainChecker,
    ChainRow,
    Checkpoint,
    Problem,
    RecordingClaim,
    check_external,
    checkpoint_head_message,
    recording_problem,
)
from proxy.core.errors import BreakglassError
from proxy.core.text import escape
from proxy.recorder import recording_path
from proxy.store.base import AuditStore, ChainReads, ChannelRow, SessionRow

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

BATCH = 5000


@dataclass(repr=False)
class VerifyResult:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    events: int = 0
    last_seq: int = 0
    head: str = ""
    sessions: int = 0
    live: list[str] = field(default_factory=list)
    recordings: dict[str, int] = field(default_factory=dict)  # status -> count
    checkpoints: int = 0
    last_checkpoint: Checkpoint | None = None
    key: str | None = None  # fingerprint of the key checkpoints were checked with
    external: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def __repr__(self) -> str:  # short: see Report.__repr__ in report.py
        return f"VerifyResult({self.events} events, {len(self.problems)} problems)"


def file_digest(path: Path) -> tuple[str, int] | None:
    """sha256 and size of a file, or None when it does not exist or cannot be read."""
    h = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
    except OSError:
        return None
    return h.hexdigest(), size


def resolve_recording(stored: str | None, root: Path, session_id: str, channel: int) -> Path | None:
    """Where a recording belongs under the recordings folder ``root``.

    Events name a recording relative to the recordings folder. The first releases named
    it by absolute path: that is resolved by its prefix, i.e. the part after the folder
    it was written under (the layout's ``<id[:4]>/<id>/<n>.cast``) is taken under
    ``root``. The stored absolute path itself is never used, so a copy of the store and
    its recordings checks the copy's casts, wherever it is put. None for a path that
    cannot be placed under ``root`` (which the chain does not produce)."""
    if not stored:
        return recording_path(root, session_id, channel)
    path = PurePosixPath(stored)
    if not path.is_absolute():
        return None if ".." in path.parts else root / path
    with contextlib.suppress(ValueError):
        return root / path.relative_to(root)
    tail = path.parts[-3:]
    if len(tail) == 3 and tail[0] == tail[1][:4] and tail[2].endswith(".cast"):
        return root.joinpath(*tail)
    return None


def locate_recording(
    stored: str | None, root: Path, session_id: str, channel: int
) -> tuple[Path | None, str]:
    """The recording's file under ``root`` (``resolve_recording``) when it exists, or
    None; and the path to show."""
    path = resolve_recording(stored, root, session_id, channel)
    if path is None:
        return None, stored or ""
    return (path if path.exists() else None), str(path)


def with_resolved_paths(row: SessionRow, root: Path) -> SessionRow:
    """``row`` with each channel's recording where it is under ``root`` (what the
    auditor's listings show), not as the event names it."""
    channels = tuple(
        replace(c, recording=str(path))
        if c.recording and (path := resolve_recording(c.recording, root, c.session_id, c.n))
        else c
        for c in row.channels
    )
    return replace(row, channels=channels)


def unclaimed_casts(root: Path, claimed: Iterable[Path]) -> list[Path]:
    """Every cast under ``root`` that no event claims, sorted."""
    known = {os.path.normpath(p) for p in claimed}
    out: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        out += [
            Path(folder) / name
            for name in sorted(files)
            if name.endswith(".cast") and os.path.normpath(Path(folder) / name) not in known
        ]
    return out


def recording_check(
    stored: str | None,
    root: Path,
    session_id: str,
    channel: int,
    sha256: str | None,
    size: int | None,
    ended: bool = True,
    pruned_seq: int | None = None,
) -> tuple[str, Problem | None]:
    """``ok``, ``MISMATCH``, ``missing``, ``unhashed``, ``pruned`` (deleted by the
    retention policy, a ``recording_pruned`` event says so) or ``open`` (not ended yet),
    and the problem when not ok. Used by ``verify``, ``show``, ``report`` and ``export``."""
    if not ended:
        return "open", None
    path, shown = locate_recording(stored, root, session_id, channel)
    found = None if path is None else file_digest(path)
    claim = RecordingClaim(session_id, channel, stored, sha256, size, True, pruned_seq=pruned_seq)
    return recording_problem(claim, found, shown)


def channel_recording_check(c: ChannelRow, root: Path, pruned_seq: int | None = None) -> str:
    """``recording_check`` of one channel as the store has it (the status only)."""
    status, _ = recording_check(
        c.recording,
        root,
        c.session_id,
        c.n,
        c.recording_sha256,
        c.recording_bytes,
        ended=c.ended_at is not None,
        pruned_seq=pruned_seq,
    )
    return status


def digest_check(
    c: ChannelRow, found: tuple[str, int] | None, shown: str, pruned_seq: int | None = None
) -> str:
    """``channel_recording_check`` for a recording read from somewhere else than a file
    (the fleet's ledger): ``found`` is its sha256 and size, or None when there is none."""
    if c.ended_at is None:
        return "open"
    claim = RecordingClaim(
        c.session_id,
        c.n,
        c.recording,
        c.recording_sha256,
        c.recording_bytes,
        True,
        pruned_seq=pruned_seq,
    )
    status, _ = recording_problem(claim, found, shown)
    return status


# Checks many channels' recordings at once: (channel, seq of its latest prune or None)
# in, the status of each by (session id, channel) out. ``file_checks`` hashes the files
# under a recordings folder; the fleet's ledger hashes its shipped casts.
RecordingChecks = Callable[
    [Sequence[tuple[ChannelRow, int | None]]], Awaitable[dict[tuple[str, int], str]]
]


def file_checks(root: Path) -> RecordingChecks:
    """The recordings' checks against the files under ``root``."""

    async def check(
        channels: Sequence[tuple[ChannelRow, int | None]],
    ) -> dict[tuple[str, int], str]:
        return {(c.session_id, c.n): channel_recording_check(c, root, p) for c, p in channels}

    return check


def load_public_key(recordings: Path) -> Ed25519PublicKey | None:
    # The checkpoint module (and cryptography) only where checkpoints are checked:
    # show and report import this module for channel_recording_check and should start
    # fast.
    from proxy.audit.checkpoint import key_path, read_private

    path = key_path(recordings)
    if not path.exists():
        return None
    return read_private(path).public_key()


async def check_chain(
    store: ChainReads, now: float, on_row: Callable[[ChainRow], None] | None = None
) -> ChainChecker:
    """Walk the whole chain through ``core.chaincheck`` in batches, then look up the
    checkpoints whose head was beyond the checker's window one by one; every finding is
    in the returned checker's ``problems``. ``on_row`` sees each row as it is fed."""
    checker = ChainChecker()
    after = 0
    while True:
        rows = await store.chain_rows(after, BATCH)
        if not rows:
            break
        for row in rows:
            checker.feed(row)
            if on_row is not None:
                on_row(row)
        after = rows[-1].seq
    checker.finish(now)
    for cp in checker.unresolved:
        got = await store.chain_rows(cp.seq - 1, 1)
        actual = got[0].hash if got and got[0].seq == cp.seq else None
        if actual is None:
            checker.problems.append(
                Problem(
                    "events_missing",
                    f"event {cp.seq}, signed by the checkpoint at event {cp.at}, is missing",
                    cp.at,
                )
            )
        elif actual != cp.head:
            checker.problems.append(
                Problem("checkpoint_head_mismatch", checkpoint_head_message(cp, actual), cp.at)
            )
    return checker


async def verify(
    store: AuditStore,
    recordings: Path,
    now: float,
    *,
    public_key: Ed25519PublicKey | None = None,
    external: Sequence[Checkpoint] = (),
    projections: bool = True,
) -> VerifyResult:
    """Check everything. ``public_key`` is the auditor's copy of the checkpoint key;
    without it, the key file on the box is used (which proves less: whoever controls
    the box controls that file too)."""
    result = VerifyResult()
    checker = await check_chain(store, now)
    result.problems += checker.problems
    result.events = checker.count
    result.last_seq = checker.last_seq
    result.head = checker.head
    result.sessions = len(checker.sessions)
    result.live = checker.live_sessions(now)

    await _check_signatures(result, checker.checkpoints, external, recordings, public_key)

    for cp in external:
        got = await store.chain_rows(cp.seq - 1, 1) if cp.seq >= 1 else []
        actual = got[0].hash if got and got[0].seq == cp.seq else None
        problem = check_external(cp, checker.last_seq, actual)
        if problem is not None:
            result.problems.append(problem)
    result.external = len(external)

    for claim in checker.recordings.values():
        if claim.path is None and claim.sha256 is None:
            continue  # a channel that never had a recording (refused before start)
        status, problem = await asyncio.to_thread(
            recording_check,
            claim.path,
            recordings,
            claim.session_id,
            claim.channel,
            claim.sha256,
            claim.size,
            claim.ended,
            claim.pruned_seq,
        )
        result.recordings[status] = result.recordings.get(status, 0) + 1
        if problem is not None:
            result.problems.append(problem)

    claimed = [
        path
        for claim in checker.recordings.values()
        if (path := resolve_recording(claim.path, recordings, claim.session_id, claim.channel))
    ]
    for cast in await asyncio.to_thread(unclaimed_casts, recordings, claimed):
        result.problems.append(
            Problem(
                "recording_unclaimed",
                f"recording {cast} is on disk but no event in the chain claims it (events"
                " lost, or a channel whose start could not be recorded)",
            )
        )

    if projections:
        for diff in await store.projection_differences():
            result.problems.append(Problem("projection_mismatch", diff))

    if checker.checkpoints:
        last = checker.checkpoints[-1]
        result.last_checkpoint = last
        after_last = checker.last_seq - (last.at or last.seq)
        if after_last:
            result.notes.append(
                f"{after_last} event(s) after the last checkpoint (event {last.at}) are not"
                " covered by a signature yet"
            )
    elif checker.count:
        result.notes.append("no checkpoint in the chain yet: nothing is signed")
    if result.live:
        result.notes.append(
            f"{len(result.live)} live session(s) without an end yet: {', '.join(result.live)}"
        )
    return result


async def _check_signatures(
    result: VerifyResult,
    checkpoints: Sequence[Checkpoint],
    external: Sequence[Checkpoint],
    recordings: Path,
    public_key: Ed25519PublicKey | None,
) -> None:
    from proxy.audit.checkpoint import fingerprint, key_path

    result.checkpoints = len(checkpoints)
    if not checkpoints and not external:
        return
    pub = public_key
    if pub is None:
        try:
            pub = load_public_key(recordings)
        except BreakglassError as exc:
            result.problems.append(Problem("checkpoint_key_missing", exc.message))
            return
        if pub is None:
            result.problems.append(
                Problem(
                    "checkpoint_key_missing",
                    f"{len(checkpoints)} checkpoint(s) cannot be checked: no key at"
                    f" {key_path(recordings)}; pass the public key with --key",
                )
            )
            return
    result.key = fingerprint(pub)
    result.problems += signature_problems([*checkpoints, *external], pub)


def signature_problems(checkpoints: Iterable[Checkpoint], pub: Ed25519PublicKey) -> list[Problem]:
    """Each checkpoint not signed by ``pub``: another key's, or a bad signature."""
    from proxy.audit.checkpoint import fingerprint, signature_ok

    fp = fingerprint(pub)
    problems: list[Problem] = []
    for cp in checkpoints:
        where = (
            f"checkpoint at event {cp.at}"
            if cp.at is not None
            else (f"the supplied checkpoint for event {cp.seq}")
        )
        if cp.key != fp:
            problems.append(
                Problem(
                    "checkpoint_wrong_key",
                    f"{where} was signed by key {cp.key}, not by the checked key {fp}",
                    cp.at,
                )
            )
        elif not signature_ok(pub, cp):
            problems.append(
                Problem(
                    "checkpoint_bad_signature",
                    f"{where}: the signature does not verify (event {cp.seq}, head"
                    f" {cp.head[:16]}…, key {fp})",
                    cp.at,
                )
            )
    return problems


def _problem_json(p: Problem) -> dict[str, Any]:
    return {"kind": p.kind, "message": p.message, "seq": p.seq, "session": p.session_id}


def verify_json(r: VerifyResult) -> dict[str, Any]:
    cp = r.last_checkpoint
    return {
        "ok": r.ok,
        "events": r.events,
        "last_seq": r.last_seq,
        "head": r.head,
        "sessions": r.sessions,
        "live_sessions": r.live,
        "recordings": r.recordings,
        "checkpoints": r.checkpoints,
        "checkpoint_key": r.key,
        "last_checkpoint": None
        if cp is None
        else {
            "at": cp.at,
            "seq": cp.seq,
            "head": cp.head,
            "time": cp.time,
            "signature": cp.signature,
            "key": cp.key,
        },
        "external_checkpoints": r.external,
        "problems": [_problem_json(p) for p in r.problems],
        "notes": r.notes,
    }


def verify_text(r: VerifyResult) -> str:
    recs = ", ".join(f"{n} {status}" for status, n in sorted(r.recordings.items())) or "none"
    cp = r.last_checkpoint
    checkpoints = (
        "none"
        if cp is None
        else f"{r.checkpoints}, last at event {cp.at} (signs event {cp.seq}), key {r.key or '-'}"
    )
    out = [
        f"events       {r.events} (last seq {r.last_seq}, head {r.head[:16] or '-'}…)",
        f"sessions     {r.sessions} ({len(r.live)} live)",
        f"recordings   {recs}",
        f"checkpoints  {checkpoints}",
    ]
    if r.external:
        out.append(f"kept copies  {r.external} checkpoint(s) supplied with --checkpoint")
    for note in r.notes:
        out.append(f"note: {escape(note)}")
    if r.problems:
        out.append(f"PROBLEMS ({len(r.problems)}):")
        out += [f"  [{p.kind}] {escape(p.message)}" for p in r.problems]
        out.append("verify: FAILED")
    else:
        out.append("verify: OK, every event, link, checkpoint and recording checks out")
    return "\n".join(out)
