"""proxy.core.credstate: a code's state as a projection of its chained events."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from proxy.core.credentials import Credential
from proxy.core.credstate import CredentialReplay, hash_digest, row_mismatch, snapshot

T = 1_800_000_000.0
HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"


def cred(**changes: Any) -> Credential:
    base = Credential(
        cred_id="ABC123",
        person="alice",
        issued_by="ops",
        issued_at=T,
        valid_until=T + 86400,
        window=3600.0,
        max_uses=2,
        uses=0,
        targets=("db*",),
        max_session=None,
        activated_at=None,
        revoked_at=None,
        revoke_reason=None,
    )
    return replace(base, **changes)


def history() -> list[tuple[int, str, float, dict[str, Any]]]:
    """Issued, activated and used once, revoked: each event with its state."""
    c0 = cred()
    c1 = replace(c0, activated_at=T + 10)
    c2 = replace(c1, uses=1)
    c3 = replace(c2, revoked_at=T + 20, revoke_reason="lost")
    base = {"credential_id": "ABC123", "person": "alice"}
    return [
        (1, "cred_issued", T, {**base, "state": snapshot(c0, HASH)}),
        (2, "cred_activated", T + 10, {**base, "state": snapshot(c1, HASH)}),
        (3, "cred_used", T + 10, {**base, "use": 1, "state": snapshot(c2, HASH)}),
        (4, "cred_revoked", T + 20, {**base, "reason": "lost", "state": snapshot(c3, HASH)}),
    ]


def replayed(events: list[tuple[int, str, float, dict[str, Any]]]) -> CredentialReplay:
    replay = CredentialReplay()
    for seq, type_, t, data in events:
        replay.feed(seq, type_, t, data)
    return replay


FINAL = cred(activated_at=T + 10, uses=1, revoked_at=T + 20, revoke_reason="lost")


def test_an_honest_history_matches_its_row() -> None:
    assert replayed(history()).compare([(FINAL, HASH)]) == []
    latest = history()[-1]
    assert row_mismatch(FINAL, HASH, (latest[1], latest[2], latest[3])) is None


def test_every_edited_field_and_a_swapped_hash_are_named() -> None:
    for change, field in (
        ({"revoked_at": None, "revoke_reason": None}, "revoked_at, revoke_reason"),
        ({"uses": 0}, "uses"),
        ({"max_uses": 0}, "max_uses"),
        ({"targets": ("*",)}, "targets"),
        ({"person": "mallory"}, "person"),
    ):
        row = replace(FINAL, **change)
        assert replayed(history()).compare([(row, HASH)]) == [
            f"credentials row ABC123 differs from the log in: {field}"
        ]
        latest = history()[-1]
        found = row_mismatch(row, HASH, (latest[1], latest[2], latest[3]))
        assert found is not None
        assert field in found
    latest = history()[-1]
    assert "hash_sha256" in (row_mismatch(FINAL, "other", (latest[1], latest[2], latest[3])) or "")
    assert replayed(history()).compare([(FINAL, "other")]) == [
        "credentials row ABC123 differs from the log in: hash_sha256"
    ]


def test_a_lost_or_unbacked_row_is_reported() -> None:
    assert replayed(history()).compare([]) == [
        "credentials row ABC123 is missing, though the log has it"
    ]
    assert replayed([]).compare([(FINAL, HASH)]) == [
        "credentials row ABC123 has no events in the log behind it"
    ]
    assert row_mismatch(FINAL, HASH, None) == "no event in the audit chain issued this code"


def test_state_only_moves_forward() -> None:
    events = history()
    base = {"credential_id": "ABC123", "person": "alice"}
    # A use after the revocation, a second activation, a use that skips one.
    late = replace(FINAL, uses=2)
    events.append((5, "cred_used", T + 30, {**base, "use": 2, "state": snapshot(late, HASH)}))
    found = replayed(events).problems
    assert found == ["event 5 (cred_used): code ABC123 was already revoked"]

    skip = history()[:3]
    skip.append((4, "cred_used", T + 30, {**base, "use": 3}))
    skip.append((5, "cred_activated", T + 31, {**base}))
    assert replayed(skip).problems == [
        "event 4 (cred_used): use 3 of code ABC123 does not follow use 1",
        "event 5 (cred_activated): code ABC123 was already activated",
    ]


def test_a_state_that_does_not_follow_from_the_events_is_reported() -> None:
    events = history()
    seq, type_, t, data = events[3]
    # A forged revocation event that also winds the use count back.
    data = {**data, "state": {**data["state"], "uses": 0}}
    events[3] = (seq, type_, t, data)
    assert replayed(events).problems == [
        "event 4 (cred_revoked): the state it records for code ABC123 does not follow from"
        " the events before it (uses)"
    ]


def test_events_of_the_first_release_are_checked_for_what_they_say() -> None:
    base = {"person": "alice"}
    legacy: list[tuple[int, str, float, dict[str, Any]]] = [
        (1, "cred_issued", T, {**base, "id": "ABC123", "issued_by": "ops", "max_uses": 2}),
        (2, "cred_activated", T + 10, {**base, "credential_id": "ABC123"}),
        (3, "cred_used", T + 10, {**base, "credential_id": "ABC123", "use": 1}),
    ]
    row = cred(activated_at=T + 10, uses=1)
    assert replayed(legacy).compare([(row, "any hash: not chained then")]) == []
    assert replayed(legacy).compare([(replace(row, uses=0), HASH)]) == [
        "credentials row ABC123 differs from the log in: uses"
    ]
    assert row_mismatch(row, HASH, ("cred_used", T + 10, legacy[2][3])) is None
    assert "uses" in (
        row_mismatch(replace(row, uses=0), HASH, ("cred_used", T, legacy[2][3])) or ""
    )
    assert hash_digest(HASH) == snapshot(row, HASH)["hash_sha256"]
