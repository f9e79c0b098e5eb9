"""No enumeration (issue 4, point 2; issue 18 item 1): until a code's secret has
verified, an unknown person, an unknown code id, a wrong secret, the id of a revoked or
expired code, another person's code id, a disallowed target or login and an unparseable
username all get the same answer for the same work: one argon2 check (a dummy one when
there is nothing to check), then USERAUTH_FAILURE. Only the audit log says why. Once the
secret has verified, whoever typed it holds the code and is told what is wrong (one
authentication banner), still for the same work.

The classes of bug: OpenSSH CVE-2016-6210 (unknown users hashed differently: a timing
oracle) and CVE-2018-15473 (a different answer for an invalid user). Timing itself is
measured, not asserted, by benchmarks/login_timing.py; here the work is counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.integration.conftest import SECOND, TARGET, standard_targets
from tests.integration.harness import GOOD_JUSTIFICATION, SshdTarget, new_person
from tests.integration.inproc import KBDINT, InProcessProxy, ScriptedClient, Step, in_process_proxy
from tests.integration.inproc import connect as connect_client


@pytest.fixture
async def proxy(
    tmp_path: Path, target: SshdTarget, other_target: SshdTarget
) -> AsyncIterator[InProcessProxy]:
    async with in_process_proxy(tmp_path / "proxy", standard_targets(target, other_target)) as p:
        yield p


@dataclass(frozen=True)
class Case:
    name: str
    username: str
    code: str
    reason: str  # what the audit log must say


@dataclass(frozen=True)
class Answer:
    """Everything the client saw, with the name it typed taken out."""

    exception: str
    challenges: tuple[tuple[str, str, tuple[tuple[str, bool], ...]], ...]
    failures: tuple[tuple[tuple[str, ...], bool], ...]
    banners: tuple[str, ...]


def wrong_secret(code: str) -> str:
    return f"BG-{code.split('-')[1]}-{'0' * 24}"


async def cases(proxy: InProcessProxy) -> tuple[list[Case], list[Case]]:
    """(cases without a verified secret, cases with one)."""
    alice, bob, ghost = new_person("alice"), new_person("bob"), new_person("ghost")
    good = await proxy.quick_code(alice)
    revoked = await proxy.quick_code(alice)
    await proxy.revoke(revoked)
    expired = await proxy.quick_code(alice, valid=-1.0)
    db01_only = await proxy.quick_code(alice, targets=[TARGET])
    bobs = await proxy.quick_code(bob)
    unknown_id = "BG-ZZZZZZ-" + good.split("-", 2)[2]
    verified = [
        Case("unknown person", f"{ghost}@{TARGET}", good, "wrong_person"),
        Case("revoked code", f"{alice}@{TARGET}", revoked, "revoked"),
        Case("expired code", f"{alice}@{TARGET}", expired, "expired"),
        Case("another person's code", f"{alice}@{TARGET}", bobs, "wrong_person"),
        Case("target not in the code", f"{alice}@{SECOND}", db01_only, "target_not_allowed"),
        Case("unknown target", f"{alice}@nosuch01", good, "unknown_target"),
        Case("login not allowed", f"{alice}@postgres@{TARGET}", good, "login_not_allowed"),
        Case("unparseable username", f"{alice}", good, "bad_username"),
        Case("too many parts", f"{alice}@x@y@{TARGET}", good, "bad_username"),
    ]
    blind = [
        Case("unknown code id", f"{alice}@{TARGET}", unknown_id, "unknown_code"),
        Case("not a code at all", f"{alice}@{TARGET}", "hunter2", "unknown_code"),
        Case("a 20 KB code", f"{alice}@{TARGET}", good + "0" * 20_000, "unknown_code"),
        Case("wrong secret", f"{alice}@{TARGET}", wrong_secret(good), "wrong_code"),
    ] + [
        # Each verified case again without the secret: the code's state, owner and
        # targets must not show through.
        Case(
            f"{case.name}, wrong secret",
            case.username,
            wrong_secret(case.code),
            "bad_username" if case.reason == "bad_username" else "wrong_code",
        )
        for case in verified
    ]
    return blind, verified


def normalise(text: str, case: Case) -> str:
    """Take out the name the client typed: the prompt names the person, or the whole
    username when it has no person part (which says nothing about who exists)."""
    return text.replace(case.username, "<NAME>").replace(case.username.split("@")[0], "<NAME>")


async def attempt(proxy: InProcessProxy, case: Case) -> tuple[Answer, int]:
    """One attempt on its own connection: what the client saw and the argon2 checks."""
    client = ScriptedClient([Step(case.username, case.code, GOOD_JUSTIFICATION)])
    checks = proxy.app.hasher.checks
    with pytest.raises(asyncssh.PermissionDenied) as denied:
        await connect_client(proxy.port, client)
    answer = Answer(
        exception=f"{type(denied.value).__name__}: {normalise(str(denied.value), case)}",
        challenges=tuple(
            (c.name, c.instruction, tuple((normalise(p, case), e) for p, e in c.prompts))
            for c in client.challenges
        ),
        failures=tuple(client.failures),
        banners=tuple(client.banners),
    )
    return answer, proxy.app.hasher.checks - checks


async def answers_and_work(
    proxy: InProcessProxy, monkeypatch: pytest.MonkeyPatch, table: list[Case]
) -> tuple[dict[str, Answer], dict[str, tuple[int, list[str]]]]:
    """What the client saw for each case, and the work: argon2 checks and store calls."""
    store = proxy.app.store
    calls: list[str] = []

    def counting(name: str) -> Any:
        real = getattr(store, name)

        def counted(*args: Any) -> Any:
            calls.append(name)
            return real(*args)

        return counted

    for method in ("get_credential", "start_session"):
        monkeypatch.setattr(store, method, counting(method))
    answers: dict[str, Answer] = {}
    work: dict[str, tuple[int, list[str]]] = {}
    for case in table:
        calls.clear()
        answers[case.name], checks = await attempt(proxy, case)
        work[case.name] = (checks, list(calls))
    return answers, work


async def test_every_refusal_without_a_verified_secret_looks_the_same_at_one_check(
    proxy: InProcessProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    table, _ = await cases(proxy)
    answers, work = await answers_and_work(proxy, monkeypatch, table)

    # The same work too: one argon2 check, one credential read, no transaction (what the
    # commit would refuse is refused before it; benchmarks/login_timing.py times it).
    assert work == {case.name: (1, ["get_credential"]) for case in table}
    reference = answers[table[0].name]
    # asyncssh's client starts with a "none" request: two failures, both alike.
    assert reference.failures == (((KBDINT,), False),) * 2, reference
    assert len(reference.challenges) == 1, reference
    assert reference.banners == (), reference
    different = {name: a for name, a in answers.items() if a != reference}
    assert different == {}, f"reference {reference}"
    # The audit log, and only the audit log, says exactly why.
    failures = await proxy.wait_events("login_failed", count=len(table))
    assert [(e.data["username"], e.data["reason"]) for e in failures] == [
        (case.username, case.reason) for case in table
    ]
    assert await proxy.sessions() == []


async def test_a_verified_secret_is_told_what_is_wrong_at_the_same_cost(
    proxy: InProcessProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    blind, table = await cases(proxy)
    answers, work = await answers_and_work(proxy, monkeypatch, [blind[0], *table])
    reference = answers.pop(blind[0].name)

    assert work == {case.name: (1, ["get_credential"]) for case in [blind[0], *table]}
    for case in table:
        answer = answers[case.name]
        # One line saying what is wrong; everything else as for a wrong code.
        assert len(answer.banners) == 1, (case, answer)
        assert answer.banners[0].startswith("breakglass: "), (case, answer)
        assert dataclasses.replace(answer, banners=()) == reference, (case, answer)
    assert len({a.banners for a in answers.values()}) >= 7  # the answers say different things
    failures = await proxy.wait_events("login_failed", count=len(table) + 1)
    assert [e.data["reason"] for e in failures[1:]] == [case.reason for case in table]
    assert await proxy.sessions() == []


async def test_the_right_code_also_costs_exactly_one_check(proxy: InProcessProxy) -> None:
    alice = new_person("alice")
    code = await proxy.quick_code(alice)
    client = ScriptedClient([Step(f"{alice}@{TARGET}", code, GOOD_JUSTIFICATION)])
    checks = proxy.app.hasher.checks

    conn = await connect_client(proxy.port, client)
    conn.close()

    assert proxy.app.hasher.checks - checks == 1
    assert client.failures == [((KBDINT,), False)]  # the "none" request only
