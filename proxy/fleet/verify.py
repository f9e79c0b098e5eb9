"""``breakglass verify`` across a fleet: every node's journal as the PostgreSQL ledger has it.

Owns the fleet half of verification. For each node (claimed in ``nodes``, found in
``events`` or pinned in ``fleet.peers``):
- its chain end to end, with the rules of ``core.chaincheck`` (``audit.verify.check_chain``);
- its checkpoints, against the key pinned for it in ``fleet.peers``, never against the
  ledger's own ``nodes.checkpoint_key`` (whoever can write the ledger can write that row;
  a row that differs from the pin is itself a problem);
- what its peers witnessed of it (``peer_witness`` events in their chains): each witnessed
  checkpoint must be signed by its pinned key and its event must be in the ledger with
  that hash, so a tail cut from one node's events is caught from the others' chains;
- every complete shipped cast (``cast_chunks``), against its ``channel_end`` hash.

Every problem names its node. Reads only, one bounded ``Ledger.run`` per batch; never
repairs anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proxy.audit.checkpoint import fingerprint, signature_ok
from proxy.audit.verify import check_chain, signature_problems
from proxy.core import events
from proxy.core.chaincheck import (
    ChainRow,
    Checkpoint,
    Problem,
    check_external,
)
from proxy.core.text import escape
from proxy.fleet.castcheck import AddProblem, ShipState, check_casts
from proxy.fleet.scan import LedgerCalls, NodeChain, event_nodes, fetch

# Findings that a node's shipping lag explains while it says it is behind.
ENDS_MAYBE_UNSHIPPED = frozenset({"session_without_end", "channel_without_end"})
NO_NODE = "-"  # a problem that belongs to no node (a kept checkpoint no pin signed)


@dataclass(frozen=True)
class NodeClaim:
    """A ``nodes`` row: who claimed the name, with which key."""

    name: str
    node_id: str
    checkpoint_key: str


@dataclass(frozen=True)
class Witness:
    """A ``peer_witness`` event: ``by`` recorded at its event ``at`` the checkpoint
    ``cp`` of ``peer`` that it read from the ledger."""

    by: str
    at: int
    peer: str
    cp: Checkpoint


@dataclass(frozen=True)
class FleetProblem:
    node: str
    problem: Problem


@dataclass
class NodeReport:
    node: str
    claimed: bool = False  # has a row in ``nodes``
    pinned: bool = False  # has a key in ``fleet.peers``
    events: int = 0
    last_seq: int = 0
    head: str = ""
    sessions: int = 0
    live: list[str] = field(default_factory=list)
    casts: dict[str, int] = field(default_factory=dict)  # status -> count
    checkpoints: int = 0
    last_checkpoint: Checkpoint | None = None
    key: str | None = None  # fingerprint of the pinned key checkpoints were checked with
    witnessed: dict[str, int] = field(default_factory=dict)  # peer -> highest seq witnessed
    notes: list[str] = field(default_factory=list)


@dataclass(repr=False)
class FleetVerifyResult:
    ledger: str
    nodes: list[NodeReport] = field(default_factory=list)
    problems: list[FleetProblem] = field(default_factory=list)
    external: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def __repr__(self) -> str:
        return f"FleetVerifyResult({len(self.nodes)} nodes, {len(self.problems)} problems)"


def key_bytes(text: str) -> bytes | None:
    """The raw key of ``ed25519 <64 hex digits>`` (what ``checkpoint-key`` prints), or None.
    Strict on purpose: a ledger row is never taken for a file name to read, as
    ``parse_public_key`` would take it."""
    words = text.split()
    if len(words) != 2 or words[0] != "ed25519" or len(words[1]) != 64:
        return None
    try:
        return bytes.fromhex(words[1])
    except ValueError:
        return None


async def verify_fleet(
    ledger: LedgerCalls,
    peers: Mapping[str, str],
    now: float,
    *,
    external: Sequence[Checkpoint] = (),
) -> FleetVerifyResult:
    """Check every node's journal in the ledger. ``peers`` is ``fleet.peers``: the
    checkpoint key pinned for each node, as ``breakglass checkpoint-key`` prints it."""
    result = FleetVerifyResult(ledger.describe())
    problems = result.problems
    pins: dict[str, Ed25519PublicKey] = {}
    for name, text in peers.items():
        raw = key_bytes(text)
        if raw is None:  # the config loader refuses these already
            problems.append(
                FleetProblem(name, Problem("peer_key_bad", "its fleet.peers pin is not a key"))
            )
            continue
        pins[name] = Ed25519PublicKey.from_public_bytes(raw)

    claims = {
        c.name: c
        for c in (
            NodeClaim(str(a), str(b), str(k))
            for a, b, k in await fetch(
                ledger,
                "SELECT name, node_id, checkpoint_key FROM nodes ORDER BY name",
                (),
                "the nodes",
            )
        )
    }
    shipping = {
        str(name): ShipState(int(j), int(s), int(u))
        for name, j, s, u in await fetch(
            ledger,
            "SELECT name, journal_seq, shipped_seq, unshipped_bytes FROM node_status",
            (),
            "the nodes' status",
        )
    }
    names = sorted(set(claims) | set(peers) | set(await event_nodes(ledger)))

    witnesses: dict[tuple[str, int, str, str], Witness] = {}
    for name in names:
        pin = (peers[name], pins[name]) if name in pins else None
        report = await _verify_node(
            ledger, name, claims.get(name), pin, shipping.get(name), witnesses, problems, now
        )
        result.nodes.append(report)

    reports = {r.node: r for r in result.nodes}
    await _check_witnesses(ledger, list(witnesses.values()), reports, pins, problems)
    await _check_external(ledger, external, reports, pins, problems)
    result.external = len(external)
    return result


async def _verify_node(
    ledger: LedgerCalls,
    name: str,
    claim: NodeClaim | None,
    pin: tuple[str, Ed25519PublicKey] | None,
    ship: ShipState | None,
    witnesses: dict[tuple[str, int, str, str], Witness],
    problems: list[FleetProblem],
    now: float,
) -> NodeReport:
    """One node: its claim against its pin, its chain, its checkpoints and its casts; the
    witnesses in its chain are collected for ``_check_witnesses``."""
    report = NodeReport(name, claimed=claim is not None, pinned=pin is not None)

    def add(kind: str, message: str, seq: int | None = None) -> None:
        problems.append(FleetProblem(name, Problem(kind, message, seq)))

    if (
        claim is not None
        and pin is not None
        and key_bytes(claim.checkpoint_key) != key_bytes(pin[0])
    ):
        add(
            "peer_key_replaced",
            f"peer key replaced in the ledger: its nodes row holds"
            f" {claim.checkpoint_key[:24]}…, but fleet.peers pins {pin[0][:24]}…",
        )
    checker = await check_chain(
        NodeChain(ledger, name), now, on_row=lambda row: _collect_witness(row, name, witnesses, add)
    )
    behind = ship.journal_seq - checker.last_seq if ship is not None else 0
    for p in checker.problems:
        if behind > 0 and p.kind in ENDS_MAYBE_UNSHIPPED:
            # Its end may be among the events the node has not shipped yet.
            report.notes.append(f"{p.message} [its end may not be shipped yet]")
        else:
            problems.append(FleetProblem(name, p))
    if behind > 0:
        report.notes.append(
            f"{behind} event(s) in its journal are not in the ledger yet (its last heartbeat)"
        )
    report.events, report.last_seq, report.head = checker.count, checker.last_seq, checker.head
    report.sessions, report.live = len(checker.sessions), checker.live_sessions(now)
    report.checkpoints = len(checker.checkpoints)
    if checker.count and claim is None:
        add(
            "node_unclaimed",
            f"{checker.count} event(s) in the ledger, but no node claimed the name",
        )
    if pin is not None:
        report.key = fingerprint(pin[1])
        problems += [FleetProblem(name, p) for p in signature_problems(checker.checkpoints, pin[1])]
    elif checker.count or claim is not None:
        add(
            "node_unpinned",
            "in the ledger but not pinned in fleet.peers: its checkpoints cannot be"
            " checked (pin its `breakglass checkpoint-key`, or retire it)",
        )
    if checker.checkpoints:
        last = report.last_checkpoint = checker.checkpoints[-1]
        after_last = checker.last_seq - (last.at or last.seq)
        if after_last:
            report.notes.append(
                f"{after_last} event(s) after the last checkpoint (event {last.at})"
                " are not covered by a signature yet"
            )
    elif checker.count:
        report.notes.append("no checkpoint in the ledger yet: nothing is signed")
    elif claim is None and pin is not None:
        report.notes.append("pinned in fleet.peers, but has not joined the ledger")
    if report.live:
        report.notes.append(f"{len(report.live)} live session(s) without an end yet")
    report.casts, notes = await check_casts(
        ledger, name, checker.last_seq, checker.recordings, ship, add
    )
    report.notes += notes
    return report


def _collect_witness(
    row: ChainRow,
    by: str,
    into: dict[tuple[str, int, str, str], Witness],
    add: AddProblem,
) -> None:
    if row.type != events.PeerWitness.TYPE:
        return
    try:
        ev = events.decode(row.type, json.loads(row.data_json))
    except (ValueError, events.EventDataError) as exc:
        add("witness_malformed", f"event {row.seq}: {exc}", row.seq)
        return
    assert isinstance(ev, events.PeerWitness)
    cp = Checkpoint(ev.seq, ev.head, float(ev.time), ev.signature, ev.key)
    # A node idle for hours is witnessed at the same checkpoint every round: check it once.
    into.setdefault((ev.peer, cp.seq, cp.head, cp.signature), Witness(by, row.seq, ev.peer, cp))


async def _check_witnesses(
    ledger: LedgerCalls,
    witnesses: list[Witness],
    reports: Mapping[str, NodeReport],
    pins: Mapping[str, Ed25519PublicKey],
    problems: list[FleetProblem],
) -> None:
    by_peer: dict[str, list[Witness]] = {}
    for w in witnesses:
        by_peer.setdefault(w.peer, []).append(w)
    for peer, seen in sorted(by_peer.items()):
        report = reports.get(peer) or NodeReport(peer)
        last_seq = report.last_seq
        pin = pins.get(peer)
        ok: list[Witness] = []
        for w in seen:
            if pin is not None and (w.cp.key != fingerprint(pin) or not signature_ok(pin, w.cp)):
                problems.append(
                    FleetProblem(
                        peer,
                        Problem(
                            "witness_bad_signature",
                            f"{w.by} witnessed (at its event {w.at}) a checkpoint of {peer} for"
                            f" event {w.cp.seq} that {peer}'s pinned key did not sign: a forged"
                            " checkpoint was in the ledger",
                            w.cp.seq,
                        ),
                    )
                )
                continue
            ok.append(w)
            report.witnessed[w.by] = max(report.witnessed.get(w.by, 0), w.cp.seq)
        # A cut tail: one problem per witness, about the furthest event it saw.
        cut: dict[str, Witness] = {}
        for w in ok:
            if w.cp.seq > last_seq and (w.by not in cut or w.cp.seq > cut[w.by].cp.seq):
                cut[w.by] = w
        for by, w in sorted(cut.items()):
            ends = f"ends at event {last_seq}" if last_seq else "has no events"
            problems.append(
                FleetProblem(
                    peer,
                    Problem(
                        "events_truncated",
                        f"tail cut: {peer}'s chain in the ledger {ends}, but {by} witnessed"
                        f" (at its event {w.at}) {peer}'s checkpoint signing event {w.cp.seq}",
                        w.cp.seq,
                    ),
                )
            )
        inside = [w for w in ok if w.cp.seq <= last_seq]
        hashes = await NodeChain(ledger, peer).hashes(w.cp.seq for w in inside)
        for w in inside:
            actual = hashes.get(w.cp.seq)
            if actual == w.cp.head:
                continue
            said = (
                "is missing"
                if actual is None
                else f"has hash {actual[:16]}…, not {w.cp.head[:16]}…: history was rewritten"
            )
            problems.append(
                FleetProblem(
                    peer,
                    Problem(
                        "events_missing" if actual is None else "checkpoint_head_mismatch",
                        f"witnessed by {w.by} at its event {w.at}: {peer}'s event {w.cp.seq}"
                        f" in the ledger {said}",
                        w.cp.seq,
                    ),
                )
            )


async def _check_external(
    ledger: LedgerCalls,
    external: Sequence[Checkpoint],
    reports: Mapping[str, NodeReport],
    pins: Mapping[str, Ed25519PublicKey],
    problems: list[FleetProblem],
) -> None:
    """Checkpoints an auditor kept: each belongs to the node whose pinned key signed it."""
    owner = {fingerprint(pub): name for name, pub in pins.items()}
    for cp in external:
        node = owner.get(cp.key)
        if node is None:
            problems.append(
                FleetProblem(
                    NO_NODE,
                    Problem(
                        "checkpoint_wrong_key",
                        f"the supplied checkpoint for event {cp.seq} was signed by key {cp.key},"
                        " which is pinned for no node in fleet.peers",
                    ),
                )
            )
            continue
        bad = signature_problems([cp], pins[node])
        problems += [FleetProblem(node, p) for p in bad]
        if bad:
            continue
        report = reports.get(node) or NodeReport(node)
        actual = (await NodeChain(ledger, node).hashes([cp.seq])).get(cp.seq)
        problem = check_external(cp, report.last_seq, actual)
        if problem is not None:
            problems.append(FleetProblem(node, problem))


def _problem_json(fp: FleetProblem) -> dict[str, Any]:
    p = fp.problem
    return {
        "node": fp.node,
        "kind": p.kind,
        "message": p.message,
        "seq": p.seq,
        "session": p.session_id,
    }


def _checkpoint_json(cp: Checkpoint | None) -> dict[str, Any] | None:
    if cp is None:
        return None
    return {"at": cp.at, "seq": cp.seq, "head": cp.head, "time": cp.time, "key": cp.key}


def fleet_verify_json(r: FleetVerifyResult) -> dict[str, Any]:
    return {
        "ok": r.ok,
        "ledger": r.ledger,
        "nodes": [
            {
                "node": n.node,
                "claimed": n.claimed,
                "pinned": n.pinned,
                "events": n.events,
                "last_seq": n.last_seq,
                "head": n.head,
                "sessions": n.sessions,
                "live_sessions": n.live,
                "casts": n.casts,
                "checkpoints": n.checkpoints,
                "checkpoint_key": n.key,
                "last_checkpoint": _checkpoint_json(n.last_checkpoint),
                "witnessed": n.witnessed,
                "notes": n.notes,
            }
            for n in r.nodes
        ],
        "external_checkpoints": r.external,
        "problems": [_problem_json(p) for p in r.problems],
    }


def fleet_verify_text(r: FleetVerifyResult) -> str:
    out = [f"ledger       {escape(r.ledger)} ({len(r.nodes)} node(s))"]
    for n in r.nodes:
        casts = ", ".join(f"{c} {status}" for status, c in sorted(n.casts.items())) or "none"
        cp = n.last_checkpoint
        checkpoints = (
            "none"
            if cp is None
            else f"{n.checkpoints}, last at event {cp.at} (signs event {cp.seq}),"
            f" key {n.key or '-'}"
        )
        seen = ", ".join(f"{escape(by)} up to event {s}" for by, s in sorted(n.witnessed.items()))
        out += [
            f"node {escape(n.node)}",
            f"  events       {n.events} (last seq {n.last_seq}, head {n.head[:16] or '-'}…)",
            f"  sessions     {n.sessions} ({len(n.live)} live)",
            f"  casts        {casts}",
            f"  checkpoints  {checkpoints}",
            f"  witnessed    {seen or 'by no peer yet'}",
        ]
        out += [f"  note: {escape(note)}" for note in n.notes]
    if r.external:
        out.append(f"kept copies  {r.external} checkpoint(s) supplied with --checkpoint")
    if r.problems:
        out.append(f"PROBLEMS ({len(r.problems)}):")
        out += [
            f"  [{p.problem.kind}] {escape(p.node)}: {escape(p.problem.message)}"
            for p in r.problems
        ]
        out.append("verify: FAILED")
    else:
        out.append(
            "verify: OK, every node's events, links, checkpoints, witnesses and shipped casts"
            " check out"
        )
    return "\n".join(out)
