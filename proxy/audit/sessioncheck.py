"""One session checked against the audit chain, for the page an auditor is handed.

Owns ``check_session``: the stretch of the hash chain from the event before the
session's first to its last (other sessions' events in between included) is re-hashed
and its links followed, so each of the session's events is shown to be the one the
chain holds at its place, unchanged; each recording's hash is checked as ``verify``
checks it. ``verify`` checks the whole chain and signatures; this is the part an export
can state about itself, with when it was checked.

Must never: write to the store, or call a session sound when a row could not be read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from proxy.audit.views import rfc3339
from proxy.core import chain
from proxy.store.base import ChainReads, StoredEvent

BATCH = 5000
SOUND_RECORDINGS = frozenset({"ok", "pruned", "open"})


@dataclass
class SessionCheck:
    checked_at: float
    events: int  # the session's own events
    first_seq: int = 0  # the stretch of the chain that was re-hashed
    last_seq: int = 0
    problems: list[str] = field(default_factory=list)
    recordings: dict[int, str] = field(default_factory=dict)  # channel -> status

    @property
    def ok(self) -> bool:
        return not self.problems and set(self.recordings.values()) <= SOUND_RECORDINGS


async def check_session(
    store: ChainReads, events: list[StoredEvent], recordings: dict[int, str], now: float
) -> SessionCheck:
    """Check ``events`` (one session's, in seq order) against the chain around them."""
    result = SessionCheck(now, len(events), recordings=dict(recordings))
    for n, status in sorted(recordings.items()):
        if status not in SOUND_RECORDINGS:
            result.problems.append(f"recording of channel {n}: {status}")
    if not events:
        return result
    ours = {e.seq: e for e in events}
    first, last = events[0].seq, events[-1].seq
    result.first_seq, result.last_seq = max(first - 1, 1), last
    prev_hash: str | None = None
    expected = result.first_seq
    after = result.first_seq - 1
    while after < last:
        rows = await store.chain_rows(after, min(BATCH, last - after))
        if not rows:
            break
        for row in rows:
            if row.seq != expected:
                result.problems.append(f"events {expected}..{row.seq - 1} are missing")
            recomputed = chain.link(
                row.prev_hash,
                row.seq,
                row.time,
                row.type,
                row.session_id,
                row.channel,
                row.data_json,
            )
            if recomputed != row.hash:
                result.problems.append(f"event {row.seq}: its hash does not match its content")
            if prev_hash is not None and row.prev_hash != prev_hash:
                result.problems.append(f"event {row.seq} does not link to event {row.seq - 1}")
            mine = ours.pop(row.seq, None)
            if mine is not None and mine.hash != row.hash:
                result.problems.append(f"event {row.seq} changed while it was checked")
            prev_hash, expected = row.hash, row.seq + 1
        after = rows[-1].seq
    for seq in sorted(ours):
        result.problems.append(f"event {seq} of this session is not in the chain")
    return result


def check_text(check: SessionCheck) -> str:
    """The sentence the page shows."""
    when = rfc3339(check.checked_at)
    counts = Counter(check.recordings.values())
    casts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"
    if check.ok:
        stretch = (
            f" (chain events {check.first_seq}..{check.last_seq} re-hashed and linked)"
            if check.events
            else ""
        )
        return (
            f"Checked against the audit chain at {when}: OK. The session's {check.events}"
            f" event(s) are in the chain unchanged{stretch}; recordings checked against"
            f" their hashes: {casts}."
        )
    return (
        f"Checked against the audit chain at {when}: {len(check.problems)} PROBLEM(S): "
        + "; ".join(check.problems[:20])
        + ("; ..." if len(check.problems) > 20 else "")
        + ". Run `breakglass verify` on the proxy."
    )
