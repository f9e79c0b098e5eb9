"""A node's shipped casts in the ledger, checked against what its chain says of them.

Owns the rule for each cast the chain claims: ``open`` (its channel has not ended),
``pruned``, ``shipping`` (not every byte is in the ledger yet, and the node has not said
otherwise), or hashed from its chunks in offset order and compared with its
``channel_end`` (``core.chaincheck.recording_problem``). A cast shorter than its end says
is a problem only once the node reported every byte shipped after that end; a gap
between chunks always is. Chunks no event claims are reported once the node is caught
up. Reads only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from proxy.core.chaincheck import RecordingClaim, recording_problem
from proxy.fleet.scan import LedgerCalls, cast_chunks, cast_sizes

# A problem found: (kind, message, seq or None); the caller knows the node.
AddProblem = Callable[[str, str, int | None], None]


@dataclass(frozen=True)
class ShipState:
    """What a node last said about its shipping (``node_status``, liveness only)."""

    journal_seq: int
    shipped_seq: int
    unshipped_bytes: int

    def shipped_all_of(self, end_seq: int | None) -> bool:
        """The node said nothing was left to ship after the event ``end_seq`` was in the
        ledger: a cast ended there is then complete in the ledger, or lost."""
        return end_seq is not None and self.shipped_seq >= end_seq and self.unshipped_bytes == 0


async def check_casts(
    ledger: LedgerCalls,
    node: str,
    last_seq: int,
    claims: Mapping[tuple[str, int], RecordingClaim],
    ship: ShipState | None,
    add: AddProblem,
) -> tuple[dict[str, int], list[str]]:
    """The status of each cast the chain claims (status -> count) and notes; problems
    through ``add``. ``last_seq``: the node's last event in the ledger."""
    shipped = await cast_sizes(ledger, node)
    status_count: dict[str, int] = {}
    notes: list[str] = []
    for key, claim in claims.items():
        if claim.path is None and claim.sha256 is None:
            continue  # a channel that never had a recording (refused before start)
        status = await _cast_status(ledger, node, claim, shipped.get(key, 0), ship, add)
        status_count[status] = status_count.get(status, 0) + 1
    waiting = status_count.get("shipping", 0)
    if waiting:
        notes.append(f"{waiting} ended cast(s) not fully shipped yet")
    caught_up = (
        ship is not None and ship.shipped_seq >= ship.journal_seq and last_seq >= ship.shipped_seq
    )
    for (sid, n), size in sorted(shipped.items()):
        if (sid, n) in claims:
            continue
        if caught_up:
            add(
                "cast_unclaimed",
                f"cast {sid}/{n} ({size} bytes) is in the ledger, but no event of {node} claims it",
                None,
            )
        else:
            notes.append(f"cast {sid}/{n} is shipped before the events that claim it")
    return status_count, notes


async def _cast_status(
    ledger: LedgerCalls,
    node: str,
    claim: RecordingClaim,
    size: int,
    ship: ShipState | None,
    add: AddProblem,
) -> str:
    where = f"channel {claim.session_id}/{claim.channel}"
    if not claim.ended:
        return "open"
    short = size < claim.size if claim.size is not None else size == 0
    if short and claim.pruned_seq is not None:
        return "pruned"
    if short and (ship is None or not ship.shipped_all_of(claim.end_seq)):
        return "shipping"
    found = await _cast_digest(ledger, node, claim.session_id, claim.channel, add)
    if found is None:
        return "MISMATCH"
    if short:
        add(
            "cast_missing" if size == 0 else "cast_incomplete",
            f"the ledger has {size} of the {claim.size} bytes of the cast of {where}, though"
            f" {node} reported every byte shipped after its end (event {claim.end_seq})",
            claim.end_seq,
        )
        return "missing" if size == 0 else "incomplete"
    status, problem = recording_problem(
        claim, found, f"{claim.session_id}/{claim.channel}.cast in the ledger"
    )
    if problem is not None:
        add(problem.kind, problem.message, problem.seq)
    return status


async def _cast_digest(
    ledger: LedgerCalls, node: str, sid: str, n: int, add: AddProblem
) -> tuple[str, int] | None:
    """sha256 and size of a shipped cast, its chunks in offset order; None (and a
    problem) when the chunks do not follow each other."""
    h = hashlib.sha256()
    size = 0
    async for offset, data in cast_chunks(ledger, node, sid, n):
        if offset != size:
            add(
                "cast_chunks_broken",
                f"the cast of channel {sid}/{n} in the ledger has a chunk at byte {offset}"
                f" where byte {size} was expected: chunks were changed",
                None,
            )
            return None
        h.update(data)
        size += len(data)
    return h.hexdigest(), size
