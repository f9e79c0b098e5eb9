"""A credential's state as a projection of its chained events.

Every event that changes a code (``cred_issued``, ``cred_activated``, ``cred_used``,
``cred_revoked``) carries the code's whole state after it, ``state``: the credential's
fields and the SHA-256 of its argon2 hash. The ``credentials`` row is a copy kept for
fast reads; the chain is the truth. So:

- ``row_mismatch`` (the login path) compares the row it uses with the state its latest
  event holds: one row and one event, a constant cost whatever the code's history;
- ``CredentialReplay`` (``verify``) rebuilds every code's state from all its events, says
  where an event's ``state`` disagrees with what the events before it imply, or where the
  state moved backwards, then compares with the rows.

Events written before states were chained (the first releases) carry only some facts;
they are checked for what they say. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.core import events
from proxy.core.credentials import Credential

CRED_EVENTS = tuple(
    t.TYPE for t in (events.CredIssued, events.CredActivated, events.CredUsed, events.CredRevoked)
)
_ISSUED, _ACTIVATED, _USED, _REVOKED = CRED_EVENTS
# The fields of a state, in the row's order; ``hash_sha256`` is the SHA-256 (hex) of the
# argon2 hash, so the hash itself stays out of the log and a swapped one is still seen.
FIELDS = (
    "person",
    "issued_by",
    "issued_at",
    "valid_until",
    "window",
    "max_uses",
    "uses",
    "targets",
    "max_session",
    "activated_at",
    "revoked_at",
    "revoke_reason",
    "hash_sha256",
)
MISMATCH = "credential_tampered"


def hash_digest(code_hash: str) -> str:
    return hashlib.sha256(code_hash.encode("utf-8", "surrogatepass")).hexdigest()


def snapshot(c: Credential, code_hash: str) -> dict[str, Any]:
    """The state an event records: ``c``'s fields, and the digest of its hash."""
    return {
        "person": c.person,
        "issued_by": c.issued_by,
        "issued_at": c.issued_at,
        "valid_until": c.valid_until,
        "window": c.window,
        "max_uses": c.max_uses,
        "uses": c.uses,
        "targets": list(c.targets),
        "max_session": c.max_session,
        "activated_at": c.activated_at,
        "revoked_at": c.revoked_at,
        "revoke_reason": c.revoke_reason,
        "hash_sha256": hash_digest(code_hash),
    }


def event_credential_id(type_: str, data: Mapping[str, Any]) -> str | None:
    """The code an event is about (the first release's ``cred_issued`` said ``id``)."""
    found = data.get("credential_id")
    if found is None and type_ == _ISSUED:
        found = data.get("id")
    return found if isinstance(found, str) else None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int):
        # Exact for states written by this code (JSON floats round-trip); the tolerance
        # only spares a float that went through a text column.
        return math.isclose(float(a), float(b), rel_tol=0.0, abs_tol=1e-6)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return list(a) == list(b)
    return bool(a == b)


def differences(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """The fields of ``expected`` that ``actual`` does not match (fields ``expected``
    does not know are not compared)."""
    return [k for k in FIELDS if k in expected and not _same(expected[k], actual.get(k))]


def legacy_facts(type_: str, time: float, data: Mapping[str, Any]) -> dict[str, Any]:
    """What an event without a ``state`` says about the state after it."""
    facts: dict[str, Any] = {}
    if type_ == _ISSUED:
        facts.update(uses=0, activated_at=None, revoked_at=None, revoke_reason=None)
        for key in ("person", "issued_by", "window", "max_uses", "max_session"):
            if key in data:
                facts[key] = data[key]
        if isinstance(data.get("targets"), list):
            facts["targets"] = data["targets"]
    elif type_ == _ACTIVATED:
        facts["activated_at"] = time
    elif type_ == _USED and isinstance(data.get("use"), int):
        facts["uses"] = data["use"]
    elif type_ == _REVOKED:
        facts.update(revoked_at=time, revoke_reason=data.get("reason"))
    return facts


def row_mismatch(
    row: Credential | None,
    code_hash: str | None,
    latest: tuple[str, float, Mapping[str, Any]] | None,
) -> str | None:
    """The login path's check: does the row it read agree with the latest event about
    that code (``(type, time, data)``)? None when it does (or when neither exists);
    otherwise what disagrees, for the alert. Constant cost: one SHA-256 and a compare."""
    if row is None:
        return None  # unknown code: refused anyway, and verify reports a lost row
    if latest is None:
        return "no event in the audit chain issued this code"
    type_, time, data = latest
    state = data.get("state")
    expected = state if isinstance(state, Mapping) else legacy_facts(type_, time, data)
    actual = snapshot(row, code_hash or "")
    if not isinstance(state, Mapping):
        actual.pop("hash_sha256")  # the first releases did not chain it
    diff = differences(expected, actual)
    if diff:
        return f"the stored row differs from its latest {type_} event in: {', '.join(diff)}"
    return None


@dataclass
class _Code:
    state: dict[str, Any]  # what the events imply so far (only known fields)
    last_seq: int


class CredentialReplay:
    """Feed every credential event in chain order; then ``compare`` with the rows."""

    def __init__(self) -> None:
        self.codes: dict[str, _Code] = {}
        self.problems: list[str] = []

    def feed(self, seq: int, type_: str, time: float, data: Mapping[str, Any]) -> None:
        cred_id = event_credential_id(type_, data)
        where = f"event {seq} ({type_})"
        if cred_id is None:
            self.problems.append(f"{where} names no code")
            return
        code = self.codes.get(cred_id)
        if type_ == _ISSUED:
            if code is not None:
                self.problems.append(f"{where}: code {cred_id} was already issued")
                return
            code = self.codes[cred_id] = _Code({}, seq)
        elif code is None:
            self.problems.append(f"{where}: code {cred_id} was never issued")
            return
        self._forward(code, cred_id, where, type_, data)
        code.state.update(legacy_facts(type_, time, data))
        state = data.get("state")
        if isinstance(state, Mapping):
            diff = differences(code.state, state)
            if diff:
                self.problems.append(
                    f"{where}: the state it records for code {cred_id} does not follow from"
                    f" the events before it ({', '.join(diff)})"
                )
            code.state = {k: state.get(k) for k in FIELDS}
        code.last_seq = seq

    def _forward(
        self, code: _Code, cred_id: str, where: str, type_: str, data: Mapping[str, Any]
    ) -> None:
        """Only forward: nothing after a revocation, one activation, uses one by one."""
        s = code.state
        if type_ != _ISSUED and s.get("revoked_at") is not None:
            self.problems.append(f"{where}: code {cred_id} was already revoked")
        if type_ == _ACTIVATED and s.get("activated_at") is not None:
            self.problems.append(f"{where}: code {cred_id} was already activated")
        if type_ == _USED:
            use = data.get("use")
            uses = s.get("uses")
            if isinstance(uses, int) and use != uses + 1:
                self.problems.append(
                    f"{where}: use {use} of code {cred_id} does not follow use {uses}"
                )

    def compare(self, rows: Sequence[tuple[Credential, str]]) -> list[str]:
        """Where the stored rows differ from the replayed states."""
        out = list(self.problems)
        seen: set[str] = set()
        for cred, code_hash in rows:
            seen.add(cred.cred_id)
            code = self.codes.get(cred.cred_id)
            if code is None:
                out.append(f"credentials row {cred.cred_id} has no events in the log behind it")
                continue
            actual = snapshot(cred, code_hash)
            diff = differences(code.state, actual)
            if diff:
                out.append(
                    f"credentials row {cred.cred_id} differs from the log in: {', '.join(diff)}"
                )
        for cred_id in sorted(set(self.codes) - seen):
            out.append(f"credentials row {cred_id} is missing, though the log has it")
        return out
