"""The login decision (proxy.core.login), driven directly: re-prompts, throttling, every
refusal reason, the per-connection cut-off, the phase table, and the constant-cost
property (one credential read and one argon2 check per attempt, the same answer for
every reason the client must not learn)."""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.config.model import PolicyConfig
from proxy.core.credentials import UseDecision, format_code
from proxy.core.fleetuse import SpendOutcome
from proxy.core.login import (
    JUSTIFICATION_PROMPT,
    MAX_FAILURES,
    TRANSITIONS,
    Admit,
    Ask,
    Commit,
    LoginMachine,
    LoginStateError,
    NeedCredential,
    Phase,
    ProxyState,
    Refuse,
    Spend,
)
from proxy.core.policy import JustificationRule
from proxy.core.throttle import ThrottleRule
from tests.unit.loginsim import (
    NOW,
    ROOMY,
    Codes,
    Outcome,
    Step,
    credential,
    drive,
    machine,
    rules,
    throttle,
)

GOOD = "INC-1234 database down, restoring service"
SHORT = "too short"
SECRET = "ABCDEFGHJKMNPQRSTVWXYZ12"
OTHER_SECRET = "0" * 24


def codes_for(*people: str) -> tuple[Codes, list[str]]:
    """One usable code per person, ids A00000, A00001..."""
    codes = Codes()
    return codes, [codes.add(credential(f"A0000{n}", p), SECRET) for n, p in enumerate(people)]


# --------------------------------------------------------------- whose session


PEOPLE = ["alice", "bob"]


def scripted(*attempts: tuple[int, str, bool]) -> tuple[list[Step], Codes]:
    """(who, "own" | "wrong" | "other", justification ok) -> steps; who == 2 is no name."""
    codes, own = codes_for(*PEOPLE)
    steps = []
    for who, kind, ok in attempts:
        username = f"{PEOPLE[who]}@db01" if who < len(PEOPLE) else "not a user name"
        mine = own[who % 2]
        code = {
            "own": mine,
            "wrong": format_code(mine.split("-")[1], OTHER_SECRET),
            "other": own[(who + 1) % 2],
        }[kind]
        steps.append(Step(username, code, GOOD if ok else SHORT))
    return steps, codes


def a(who: int, code: str = "own", ok: bool = True) -> tuple[int, str, bool]:
    return (who, code, ok)


@pytest.mark.parametrize(
    ("script", "person"),
    [
        ([a(0)], "alice"),
        ([a(1, "other")], None),
        ([a(0, "wrong"), a(1)], "bob"),  # fail as one, succeed as another
        ([a(0, "wrong"), a(1, "wrong"), a(0, "other"), a(1)], None),  # cut after 3
        ([a(0, ok=False), a(0, "wrong", ok=True)], "alice"),  # the first code is kept
        ([a(0, "wrong", ok=False), a(0, "own", ok=True)], None),  # ...even a wrong one
        ([a(0, ok=False), a(1, "wrong", ok=True)], None),  # a new name drops the code
        ([a(0, ok=False), a(1, ok=True)], "bob"),  # and is asked for its own
        ([a(0, ok=False)] * 3 + [a(0)], "alice"),  # 3 bad tries = 1 failure, then in
        ([a(0, ok=False)] * 9 + [a(0)], None),  # 3 x 3 bad tries = 3 failures
        ([a(2)], None),
        ([a(2, ok=False), a(2)], None),
        ([a(0, ok=False)], None),  # gives up when asked again
    ],
)
def test_the_session_belongs_to_whoever_succeeded(
    script: list[tuple[int, str, bool]], person: str | None
) -> None:
    steps, codes = scripted(*script)
    assert drive(machine(), steps, codes).person == person


attempt_scripts = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(["own", "wrong", "other"]), st.booleans()),
    min_size=1,
    max_size=8,
)


@given(attempt_scripts)
def test_every_attempt_costs_one_read_and_one_check_and_refusals_look_alike(
    script: list[tuple[int, str, bool]],
) -> None:
    steps, codes = scripted(*script)
    out = drive(machine(), steps, codes)

    needs = [x for x in out.answers if isinstance(x, NeedCredential)]
    # Every answer whose justification passed was checked, exactly once each, and only
    # that check decides: no refusal of a code (bad name, unknown target...) before it.
    assert codes.reads == codes.checks == len(needs)
    for before, after in itertools.pairwise(out.answers):
        if isinstance(before, Commit):
            continue  # the store's own answer at commit
        decided = isinstance(after, Commit) or (
            isinstance(after, Refuse)
            and not after.failure.reason.startswith(("justification_", "bad_response"))
        )
        assert decided == isinstance(before, NeedCredential), (before, after)
    # Until a secret has verified, a refusal tells the client nothing; after, it says
    # what is wrong. What it waits and whether the connection ends depend only on how
    # many failures came before.
    for n, refusal in enumerate(out.refusals, start=1):
        assert (refusal.message != "") == refusal.failure.verified, refusal
        assert not refusal.served
        assert refusal.wait == [1.0, 2.0, 4.0][n - 1]
        assert refusal.disconnect == (n == MAX_FAILURES)
    assert len(out.refusals) <= MAX_FAILURES
    # A session only for the code's own person, with a good justification.
    if out.person is not None:
        assert out.person in PEOPLE


# --------------------------------------------------------------- every refusal reason


def one_attempt(
    username: str,
    code: str,
    codes: Codes,
    *,
    m: LoginMachine | None = None,
    state: ProxyState = ROOMY,
    justification: str = GOOD,
) -> Refuse | Spend | Commit:
    m = m or machine()
    m.challenge(username)
    need = m.answers(username, [code, justification], NOW)
    assert isinstance(need, NeedCredential), need
    return codes.answer(m, need, state)


def refusal_reason(result: object) -> str:
    assert isinstance(result, Refuse), result
    return result.failure.reason


def test_each_check_of_a_credential_has_its_reason() -> None:
    codes, (good,) = codes_for("alice")
    add = codes.add
    bobs = add(credential("B00000", "bob"), SECRET)
    revoked = add(credential("R00000", "alice", revoked_at=NOW, revoke_reason="lost"), SECRET)
    expired = add(credential("E00000", "alice", valid_until=NOW), SECRET)
    burnt = add(credential("X00000", "alice", activated_at=NOW - 5 * 3600), SECRET)
    spent = add(credential("S00000", "alice", max_uses=1, uses=1, activated_at=NOW), SECRET)
    db01_only = add(credential("D00000", "alice", targets=("db01",)), SECRET)
    when = "2027-01-15 08:00 UTC"  # NOW
    cases = {
        "bad_username": (
            "alice",
            good,
            "no target in the user name: log in as alice@TARGET; this code allows: db01, web01",
        ),
        "unknown_code": ("alice@db01", "BG-ZZZZZZ-" + good.split("-", 2)[2], ""),
        "wrong_code": ("alice@db01", format_code("A00000", OTHER_SECRET), ""),
        "unknown_target": (
            "alice@dmeo",
            good,
            "there is no target named dmeo; this code allows: db01, web01",
        ),
        "login_not_allowed": (
            "alice@admin@db01",
            good,
            "login admin is not allowed on db01; allowed: root, postgres",
        ),
        "wrong_person": ("alice@db01", bobs, "this code was issued to someone else"),
        "revoked": ("alice@db01", revoked, f"this code was revoked at {when}"),
        "expired": ("alice@db01", expired, f"this code expired unused at {when}"),
        "burnt": ("alice@db01", burnt, "this code's window ended at 2027-01-15 07:00 UTC"),
        "spent": ("alice@db01", spent, "this code has been used for all of its 1 logins"),
        "target_not_allowed": (
            "alice@web01",
            db01_only,
            "this code does not allow web01; this code allows: db01",
        ),
    }
    for reason, (username, code, told) in cases.items():
        result = one_attempt(username, code, codes)
        assert refusal_reason(result) == reason, username
        assert isinstance(result, Refuse)
        assert result.failure.justification == GOOD
        assert result.failure.verified == (reason not in ("unknown_code", "wrong_code"))
        assert result.message == told
    assert codes.reads == codes.checks == len(cases)
    # Input that is no code at all is read too, as the id nothing has.
    m = machine()
    m.challenge("alice@db01")
    need = m.answers("alice@db01", ["hunter2", GOOD], NOW)
    assert isinstance(need, NeedCredential)
    assert (need.cred_id, need.secret) == ("", "")
    assert refusal_reason(codes.answer(m, need)) == "unknown_code"


def test_a_row_that_disagrees_with_the_chain_is_refused_whatever_the_secret() -> None:
    codes, (good,) = codes_for("alice")
    for right_secret in (True, False):
        m = machine()
        m.challenge("alice@db01")
        need = m.answers("alice@db01", [good, GOOD], NOW)
        assert isinstance(need, NeedCredential)
        row = codes.row(need.cred_id)
        result = m.credential(row, right_secret, ROOMY, NOW, tampered=True)
        assert refusal_reason(result) == "credential_tampered"
        assert isinstance(result, Refuse)
        # A forged hash verifies the forger's secret: that proves nothing, tell nothing.
        assert result.failure.verified is False
        assert result.message == ""


def test_a_row_edited_behind_its_chain_in_the_store_is_refused() -> None:
    """The same through the store: a row given more uses than its events say (as an
    attacker with the database would) is read with its mismatch and refused."""
    codes, (good,) = codes_for("alice")
    spent = codes.add(credential("S00000", "alice", max_uses=1, uses=1), SECRET)
    assert refusal_reason(one_attempt("alice@db01", spent, codes)) == "spent"
    cred, code_hash = codes.store._creds["S00000"]
    codes.store._creds["S00000"] = (replace(cred, max_uses=5), code_hash)
    result = one_attempt("alice@db01", spent, codes)
    assert refusal_reason(result) == "credential_tampered"
    assert isinstance(one_attempt("alice@db01", good, codes), Commit)  # the others still work


def test_the_audit_names_the_typed_id_never_the_secret() -> None:
    codes, _ = codes_for("alice")
    unknown = "BG-ZZZZZZ-" + SECRET
    result = one_attempt("alice@db01", unknown, codes)
    assert isinstance(result, Refuse)
    assert result.failure.cred_id == "ZZZZZZ"
    assert SECRET not in repr(result)
    m = machine()
    m.challenge("alice@db01")
    need = m.answers("alice@db01", [unknown, GOOD], NOW)
    assert SECRET not in repr(need)
    assert SECRET not in repr(m.__dict__)


def test_a_source_outside_the_allowed_networks_is_refused_after_the_check() -> None:
    codes, (good,) = codes_for("alice")
    # The networks in force when the login is checked (a reload may have narrowed them).
    narrowed = dataclasses.replace(ROOMY, allowed_sources=(ipaddress.ip_network("10.0.0.0/8"),))
    m = machine(source="127.0.0.1")
    result = one_attempt("alice@db01", good, codes, m=m, state=narrowed)
    assert refusal_reason(result) == "source_not_allowed"
    inside = machine(source="10.1.2.3")
    assert isinstance(one_attempt("alice@db01", good, codes, m=inside, state=narrowed), Commit)


@pytest.mark.parametrize(
    ("state", "reason", "words"),
    [
        (dataclasses.replace(ROOMY, live_sessions=200), "too_many_sessions", "limit of 200"),
        (dataclasses.replace(ROOMY, free_bytes=1000), "disk_full", "disk is almost full"),
    ],
)
def test_the_proxys_state_refuses_a_proven_engineer_and_tells_them(
    state: ProxyState, reason: str, words: str
) -> None:
    codes, (good,) = codes_for("alice")
    m = machine()
    result = one_attempt("alice@db01", good, codes, m=m, state=state)
    assert isinstance(result, Refuse)
    assert (result.failure.reason, result.served) == (reason, True)
    assert words in result.message
    assert m.phase is Phase.ADMITTED
    assert m.failures == 0  # not the engineer's fault: nothing counted
    assert m.throttle.by_source.count("127.0.0.1", NOW) == 0


def test_a_commit_is_planned_then_admitted_or_refused_by_the_store() -> None:
    codes, (good,) = codes_for("alice")
    policy = PolicyConfig(max_session=3600.0)
    m = machine(rules(policy))
    commit = one_attempt("alice@postgres@db01", good, codes, m=m)
    assert isinstance(commit, Commit)
    plan = commit.plan
    assert (plan.person, plan.target.name, plan.login) == ("alice", "db01", "postgres")
    assert (plan.justification, plan.started_at, plan.deadline) == (GOOD, NOW, NOW + 3600)
    assert m.phase is Phase.COMMITTING
    admitted = m.committed(UseDecision(True, "ok"), NOW)
    assert isinstance(admitted, Admit)
    assert admitted.plan == plan

    # Spent by a parallel login between the read and the commit: the store says so.
    m = machine()
    assert isinstance(one_attempt("alice@db01", good, codes, m=m), Commit)
    assert refusal_reason(m.committed(UseDecision(False, "spent"), NOW)) == "spent"
    assert m.failures == 1

    m = machine()
    assert isinstance(one_attempt("alice@db01", good, codes, m=m), Commit)
    failed = m.commit_failed()
    assert (failed.failure.reason, failed.served) == ("store_unavailable", True)
    assert "audit trail cannot be written" in failed.message


def test_an_unexpected_error_fails_closed_as_one_failure() -> None:
    m = machine()
    m.challenge("alice@db01")
    refusal = m.error("alice@db01", NOW)
    assert (refusal.failure.reason, refusal.failure.justification) == ("internal_error", None)
    assert m.failures == 1
    assert m.throttle.by_person.count("alice", NOW) == 1


# --------------------------------------------------------------- re-prompts


@pytest.mark.parametrize(
    ("justification", "reason"),
    [
        (SHORT, "justification_too_short"),
        ("x" * 3000, "justification_too_long"),
        ("long enough but no ticket", "justification_pattern"),
    ],
)
def test_a_bad_justification_is_asked_again_with_the_rule_then_counts_as_one_failure(
    justification: str, reason: str
) -> None:
    rule = JustificationRule(min_length=15, max_bytes=2048, pattern=re.compile(r"INC-\d+"))
    m = machine(rules(PolicyConfig(justification=rule)))
    codes, (good,) = codes_for("alice")
    m.challenge("alice@db01")
    first = m.answers("alice@db01", [good, justification], NOW)
    second = m.answers("alice@db01", [justification], NOW)
    for ask in (first, second):
        assert isinstance(ask, Ask)
        assert ask.prompts == ((JUSTIFICATION_PROMPT, True),)
        assert "at least 15 characters, at most 2048 bytes" in ask.instruction
        assert r"INC-\d+" in ask.instruction
        assert ask.failure is not None
        assert ask.failure.reason == reason
    assert m.failures == 0  # audited, not counted
    third = m.answers("alice@db01", [justification], NOW)
    assert refusal_reason(third) == reason
    assert m.failures == 1
    assert codes.reads == 0  # the code is checked only with a good justification


def test_the_code_typed_first_is_kept_while_the_justification_is_asked_again() -> None:
    codes, (good,) = codes_for("alice")
    m = machine()
    m.challenge("alice@db01")
    assert isinstance(m.answers("alice@db01", [good, SHORT], NOW), Ask)
    need = m.answers("alice@db01", [GOOD], NOW)
    assert isinstance(need, NeedCredential)
    assert isinstance(codes.answer(m, need), Commit)


def test_a_new_challenge_drops_the_pending_code() -> None:
    _, (good,) = codes_for("alice")
    m = machine()
    m.challenge("alice@db01")
    assert isinstance(m.answers("alice@db01", [good, SHORT], NOW), Ask)
    m.challenge("alice@db01")
    # One answer to a two-prompt challenge is no answer.
    assert refusal_reason(m.answers("alice@db01", [GOOD], NOW)) == "bad_response"


def test_answers_that_do_not_fit_the_challenge_are_a_bad_response() -> None:
    m = machine()
    m.challenge("alice@db01")
    assert refusal_reason(m.answers("alice@db01", ["a", "b", "c"], NOW)) == "bad_response"
    m.challenge("alice@db01")
    assert isinstance(m.answers("alice@db01", ["BG-x", SHORT], NOW), Ask)
    # The justification round answered with two answers, or under another name.
    assert refusal_reason(m.answers("alice@db01", ["a", GOOD], NOW)) == "bad_response"


def test_the_challenge_names_the_person_escaped() -> None:
    m = machine()
    ask = m.challenge("Alice@db01")
    assert ask.prompts[0] == ("Break-glass code for alice: ", False)
    assert ask.prompts[1] == (JUSTIFICATION_PROMPT, True)
    odd = m.challenge("\x1b[2Jx")
    assert "\x1b" not in odd.prompts[0][0]
    assert "\\x1b" in odd.prompts[0][0]


# --------------------------------------------------------------- failures and throttles


def test_failures_wait_longer_each_time_and_the_third_ends_the_connection() -> None:
    codes, (good,) = codes_for("alice")
    m = machine(rules(failure_delay_base=0.5))
    wrong = format_code("A00000", OTHER_SECRET)
    results = [one_attempt("alice@db01", wrong, codes, m=m) for _ in range(3)]
    assert [(r.wait, r.disconnect) for r in results if isinstance(r, Refuse)] == [
        (0.5, False),
        (1.0, False),
        (2.0, True),
    ]
    assert m.phase is Phase.CLOSED
    # Whatever still arrives is refused again, and the connection ends again.
    m.challenge("alice@db01")
    late = m.answers("alice@db01", [good, GOOD], NOW)
    assert isinstance(late, Refuse)
    assert late.disconnect
    assert late.failure.reason == "bad_response"


def test_failures_slow_later_attempts_from_the_source_and_for_the_person() -> None:
    rule = ThrottleRule(count=2, window=60.0, base_delay=1.0, max_delay=5.0)
    shared = throttle(rule)
    codes, (good, _) = codes_for("alice", "bob")
    wrong = format_code("A00000", OTHER_SECRET)
    attacker = machine(login_throttle=shared, source="127.0.0.4")
    for _ in range(3):
        one_attempt("alice@db01", wrong, codes, m=attacker)

    def wait(username: str, source: str) -> float:
        m = machine(login_throttle=shared, source=source)
        m.challenge(username)
        need = m.answers(username, [good, GOOD], NOW + 1)
        assert isinstance(need, NeedCredential)
        return need.wait

    assert wait("alice@db01", "127.0.0.5") == 2.0  # the person is under attack
    assert wait("bob@db01", "127.0.0.4") == 2.0  # the source attacked
    assert wait("bob@db01", "127.0.0.5") == 0.0  # neither
    # Past the window everything is forgotten.
    m = machine(login_throttle=shared, source="127.0.0.4")
    m.challenge("alice@db01")
    need = m.answers("alice@db01", [good, GOOD], NOW + 61)
    assert isinstance(need, NeedCredential)
    assert need.wait == 0.0


@settings(max_examples=50)
@given(st.integers(0, 60))
def test_a_throttled_login_waits_at_most_the_cap_and_is_never_refused(attacks: int) -> None:
    rule = ThrottleRule(count=5, window=600.0, base_delay=1.0, max_delay=10.0)
    shared = throttle(rule)
    codes, (good,) = codes_for("alice")
    wrong = format_code("A00000", OTHER_SECRET)
    for n in range(attacks):
        m = machine(login_throttle=shared, source="127.0.0.4")
        one_attempt("alice@db01", wrong, codes, m=m)
        assert m.failures == 1, n
    m = machine(login_throttle=shared, source="127.0.0.4")
    m.challenge("alice@db01")
    need = m.answers("alice@db01", [good, GOOD], NOW)
    assert isinstance(need, NeedCredential)
    assert need.wait == (0.0 if attacks < 5 else min(10.0, 2.0 ** (attacks - 5)))
    assert isinstance(codes.answer(m, need), Commit)


# --------------------------------------------------------------- the phase table

USER = "alice@db01"
Move = tuple[str, Callable[[LoginMachine], object]]  # (event kind, how to send it)


def moves(good: str, codes: Codes) -> dict[str, Move]:
    row = codes.row("A00000")
    return {
        "challenge": ("challenge", lambda m: m.challenge(USER)),
        "answers good": ("answers", lambda m: m.answers(USER, [good, GOOD], NOW)),
        "answers short": ("answers", lambda m: m.answers(USER, [good, SHORT], NOW)),
        "answers one": ("answers", lambda m: m.answers(USER, [GOOD], NOW)),
        "credential ok": ("credential", lambda m: m.credential(row, True, ROOMY, NOW)),
        "credential none": ("credential", lambda m: m.credential(None, False, ROOMY, NOW)),
        "committed ok": ("committed", lambda m: m.committed(UseDecision(True, "ok"), NOW)),
        "committed no": ("committed", lambda m: m.committed(UseDecision(False, "spent"), NOW)),
        "commit_failed": ("commit_failed", lambda m: m.commit_failed()),
        "error": ("error", lambda m: m.error(USER, NOW)),
    }


MOVE_NAMES = sorted(moves("", codes_for("alice")[0]))


@given(st.lists(st.sampled_from(MOVE_NAMES), max_size=25))
def test_every_move_follows_the_table_and_anything_else_is_refused(names: list[str]) -> None:
    codes, (good,) = codes_for("alice")
    table = moves(good, codes)
    m = machine()
    for name in names:
        before = m.phase
        kind, send = table[name]
        if kind not in TRANSITIONS[before]:
            with pytest.raises(LoginStateError):
                send(m)
            assert m.phase is before
            continue
        send(m)
        assert m.phase in TRANSITIONS[before][kind], (before, name, m.phase)


def test_the_table_has_every_phase_and_only_the_closed_phase_cannot_restart() -> None:
    assert set(TRANSITIONS) == set(Phase)
    for phase, moves in TRANSITIONS.items():
        if phase is Phase.CLOSED:
            assert all(targets == {Phase.CLOSED} for targets in moves.values())
        else:
            assert moves["challenge"] == {Phase.ASKING}


def test_each_failure_is_audited_once_with_the_typed_id() -> None:
    # A wrong code with a short justification, then a good one: the kept wrong code.
    steps, codes = scripted(a(0, "wrong", ok=False), a(0))
    out: Outcome = drive(machine(), steps, codes)
    assert out.person is None
    assert out.reasons == ["wrong_code", "justification_too_short"]
    assert dataclasses.asdict(out.refusals[0].failure) == {
        "reason": "wrong_code",
        "justification": GOOD,
        "cred_id": "A00000",
        "verified": False,
        "justification_length": len(GOOD),
    }


def test_the_readme_shows_the_phase_table_as_it_is() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    header = (
        "  | phase | challenge | answers | credential | spent | committed | commit_failed | error |"
    )
    lines = readme[readme.index(header) :].splitlines()[2 : 2 + len(Phase)]
    kinds = header.strip(" |").split(" | ")[1:]
    shown = {}
    for line in lines:
        phase, *cells = line.strip(" |").split(" | ")
        shown[Phase(phase)] = {
            kind: frozenset(Phase(p) for p in cell.split(", "))
            for kind, cell in zip(kinds, cells, strict=True)
            if cell != "-"
        }
    assert shown == TRANSITIONS


# --------------------------------------------------------------- what the engineer is told


@pytest.mark.parametrize("secret", [SECRET, OTHER_SECRET])
def test_an_address_outside_the_allowed_networks_is_told_so_whatever_was_typed(
    secret: str,
) -> None:
    codes, _ = codes_for("alice")
    narrowed = dataclasses.replace(ROOMY, allowed_sources=(ipaddress.ip_network("10.0.0.0/8"),))
    code = format_code("A00000", secret)
    result = one_attempt("alice@db01", code, codes, m=machine(source="127.0.0.9"), state=narrowed)
    assert isinstance(result, Refuse)
    assert result.failure.reason == "source_not_allowed"
    assert result.message == "address not allowed: 127.0.0.9 may not use break-glass access"
    assert codes.reads == codes.checks == 1


def test_targets_are_listed_only_for_a_code_usable_now_by_its_person() -> None:
    codes, _ = codes_for("alice")
    revoked = codes.add(credential("R00000", "alice", revoked_at=NOW), SECRET)
    bobs = codes.add(credential("B00000", "bob"), SECRET)
    told = [
        one_attempt(username, code, codes)
        for username, code in [("alice@dmeo", revoked), ("alice", bobs), ("alice@dmeo", bobs)]
    ]
    assert [r.message for r in told if isinstance(r, Refuse)] == [
        "there is no target named dmeo",
        "no target in the user name: log in as alice@TARGET",
        "there is no target named dmeo",
    ]


def test_a_revoked_code_says_when_never_why_and_no_answer_names_the_owner() -> None:
    codes, _ = codes_for("alice")
    revoked = codes.add(credential("R00000", "alice", revoked_at=NOW, revoke_reason="lost"), SECRET)
    result = one_attempt("alice@db01", revoked, codes)
    assert isinstance(result, Refuse)
    assert "lost" not in result.message
    mallorys = one_attempt("mallory@db01", revoked, codes)
    assert isinstance(mallorys, Refuse)
    assert mallorys.message == "this code was issued to someone else"
    assert "alice" not in mallorys.message


def test_an_odd_user_name_with_a_verified_code_gets_the_usage_escaped() -> None:
    codes, (good,) = codes_for("alice")
    for username in ("\x1b[31mred", "a@b@c@d", "alice@"):
        result = one_attempt(username, good, codes)
        assert isinstance(result, Refuse)
        assert result.message == (
            "the user name is not one the proxy knows: "
            "log in as PERSON@TARGET or PERSON@LOGIN@TARGET"
        )


def test_a_slowed_login_says_why_and_for_how_long() -> None:
    rule = ThrottleRule(count=2, window=60.0, base_delay=1.0, max_delay=5.0)
    shared = throttle(rule)
    codes, (good, _) = codes_for("alice", "bob")
    wrong = format_code("A00000", OTHER_SECRET)
    for _ in range(3):
        one_attempt("alice@db01", wrong, codes, m=machine(login_throttle=shared, source="10.9.9.9"))

    def notice(username: str, source: str) -> str:
        m = machine(login_throttle=shared, source=source)
        m.challenge(username)
        need = m.answers(username, [good, GOOD], NOW)
        assert isinstance(need, NeedCredential)
        return need.notice

    assert notice("bob@db01", "10.9.9.9") == (
        "login slowed by 2 s after failed attempts from this address"
    )
    assert notice("alice@db01", "10.1.1.1") == "login slowed by 2 s after failed attempts for alice"
    assert notice("bob@db01", "10.1.1.1") == ""


def test_the_first_challenge_states_the_justification_rule() -> None:
    rule = JustificationRule(min_length=20, max_bytes=1000, pattern=re.compile(r"INC-\d+"))
    ask = machine(rules(PolicyConfig(justification=rule))).challenge("alice@db01")
    assert ask.instruction == (
        "All activity is recorded and every use raises an alert. The justification must "
        r"have at least 20 characters, at most 1000 bytes, containing a match for INC-\d+."
    )


# --------------------------------------------------------------- with a fleet's ledger


def fleet_machine(unreachable: str) -> tuple[LoginMachine, Spend]:
    codes, (good,) = codes_for("alice")
    m = machine(dataclasses.replace(rules(), unreachable=unreachable))
    step = one_attempt(USER, good, codes, m=m)
    assert isinstance(step, Spend), step
    assert m.phase is Phase.SPENDING
    return m, step


@pytest.mark.parametrize("unreachable", ["serve", "refuse"])
def test_a_use_the_ledger_spent_commits_unflagged(unreachable: str) -> None:
    m, spend = fleet_machine(unreachable)
    step = m.spent(SpendOutcome("spent"), NOW)
    assert isinstance(step, Commit)
    assert step.plan == spend.plan
    assert not step.plan.ledger_unreachable


def test_a_use_the_ledger_refused_is_a_verified_failure_that_says_why() -> None:
    m, _ = fleet_machine("serve")
    step = m.spent(SpendOutcome("refused", "spent"), NOW)
    assert isinstance(step, Refuse)
    assert (step.failure.reason, step.failure.verified, step.served) == ("spent", True, False)
    assert "across the fleet" in step.message
    assert m.failures == 1


def test_an_unanswered_ledger_serves_flagged_or_refuses_with_the_reason() -> None:
    m, _ = fleet_machine("serve")
    step = m.spent(SpendOutcome("unreachable", detail="no answer within the timeout"), NOW)
    assert isinstance(step, Commit)
    assert step.plan.ledger_unreachable
    m, _ = fleet_machine("refuse")
    refused = m.spent(SpendOutcome("unreachable", detail="no answer within the timeout"), NOW)
    assert isinstance(refused, Refuse)
    assert (refused.failure.reason, refused.served, m.failures) == ("ledger_unreachable", True, 0)
    assert "no answer within the timeout" in refused.message
    assert "fleet.unreachable: refuse" in refused.message
