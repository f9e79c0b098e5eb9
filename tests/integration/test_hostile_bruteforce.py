"""Brute force (issue 4, point 3): each failure in a connection waits longer, the third
ends the connection; failures per source address and per person slow later attempts
from anywhere, but the rightful engineer always gets in (break-glass must work during an
attack); every failure is an audit event.

No timing is asserted: the delays the proxy asks for are read from its own counters and
from the delay function it calls.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from proxy.core.policy import failure_delay
from tests.integration.conftest import TARGET, standard_targets
from tests.integration.harness import GOOD_JUSTIFICATION, SshdTarget, new_person
from tests.integration.inproc import (
    InProcessProxy,
    Step,
    close,
    in_process_proxy,
    login,
)

WRONG = "BG-ZZZZZZ-0000-0000-0000-0000-0000-0000"
THRESHOLD = 3  # failures per source / per person before attempts are slowed
THROTTLED = {
    "rules": {
        "failed_logins_per_source": {"count": THRESHOLD, "window": "10m"},
        "failed_logins_per_person": {"count": THRESHOLD, "window": "10m"},
    }
}


@pytest.fixture
async def proxy(
    tmp_path: Path, target: SshdTarget, other_target: SshdTarget
) -> AsyncIterator[InProcessProxy]:
    async with in_process_proxy(
        tmp_path / "proxy", standard_targets(target, other_target), alerts=THROTTLED
    ) as p:
        yield p


def user(person: str) -> str:
    return f"{person}@{TARGET}"


async def test_failures_in_a_connection_wait_longer_each_time_and_the_third_ends_it(
    proxy: InProcessProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    person = new_person()
    asked: list[float] = []

    def recording_delay(failures: int, base: float = 1.0, cap: float = 8.0) -> float:
        delay = failure_delay(failures, base=base, cap=cap)
        asked.append(delay)
        return delay

    monkeypatch.setattr("proxy.core.login.failure_delay", recording_delay)

    client, result = await login(
        proxy.port, [Step(user(person), WRONG, GOOD_JUSTIFICATION)] * 6, local_addr="127.0.0.3"
    )

    assert isinstance(result, asyncssh.PermissionDenied), result
    assert "Too many authentication failures" in str(result)
    assert len(client.answered_at) == 3  # the 4th answer was never asked for
    assert len(asked) == 3, asked
    assert asked[0] < asked[1] < asked[2], asked
    failures = await proxy.wait_events(
        "login_failed", lambda e: e.data.get("person") == person, count=3
    )
    assert [e.data["reason"] for e in failures] == ["unknown_code"] * 3
    assert all(e.data["source"] == "127.0.0.3" for e in failures)


async def test_failures_per_source_and_per_person_slow_later_attempts_but_never_lock_out(
    proxy: InProcessProxy,
) -> None:
    app = proxy.app
    assert app.failures_by_source.rule.count == THRESHOLD  # from the config
    assert app.failures_by_person.rule.count == THRESHOLD
    victim, bystander = new_person("victim"), new_person("bystander")
    code = await proxy.quick_code(victim)
    bystander_code = await proxy.quick_code(bystander)

    # An attacker at 127.0.0.4 guesses the victim's code: one connection, cut after 3.
    _, result = await login(
        proxy.port, [Step(user(victim), WRONG, GOOD_JUSTIFICATION)] * 3, local_addr="127.0.0.4"
    )
    assert isinstance(result, asyncssh.PermissionDenied), result

    now = time.time()
    assert app.failures_by_source.delay("127.0.0.4", now) > 0
    assert app.failures_by_person.delay(victim, now) > 0
    assert app.failures_by_source.delay("127.0.0.5", now) == 0
    assert app.failures_by_person.delay(bystander, now) == 0

    # The victim, from elsewhere, is slowed (their name is under attack) but gets in.
    _, conn = await login(
        proxy.port, [Step(user(victim), code, GOOD_JUSTIFICATION)], local_addr="127.0.0.5"
    )
    assert not isinstance(conn, Exception), conn
    await close(conn)
    # Someone else from the attacked address is slowed and gets in too.
    _, conn = await login(
        proxy.port,
        [Step(user(bystander), bystander_code, GOOD_JUSTIFICATION)],
        local_addr="127.0.0.4",
    )
    assert not isinstance(conn, Exception), conn
    await close(conn)
    assert sorted(s.person for s in await proxy.sessions()) == sorted([victim, bystander])


@pytest.mark.slow
async def test_a_long_attack_caps_the_delay_and_the_right_code_still_works(
    proxy: InProcessProxy,
) -> None:
    # Delays shrunk (not the counting) so the cap is reached in a bounded test.
    app = proxy.app
    for counter in (app.failures_by_source, app.failures_by_person):
        counter.rule = dataclasses.replace(counter.rule, base_delay=0.01, max_delay=0.05)
    victim = new_person("victim")
    code = await proxy.quick_code(victim)

    for _ in range(4):  # 12 failures from one source for one person
        _, result = await login(
            proxy.port,
            [Step(user(victim), WRONG, GOOD_JUSTIFICATION)] * 3,
            local_addr="127.0.0.6",
        )
        assert isinstance(result, asyncssh.PermissionDenied), result
    now = time.time()
    assert app.failures_by_person.delay(victim, now) == 0.05  # capped, not a lock-out
    assert app.failures_by_source.delay("127.0.0.6", now) == 0.05

    _, conn = await login(
        proxy.port, [Step(user(victim), code, GOOD_JUSTIFICATION)], local_addr="127.0.0.6"
    )
    assert not isinstance(conn, Exception), conn
    await close(conn)


async def test_every_failure_is_an_audit_event(proxy: InProcessProxy) -> None:
    person = new_person()
    code = await proxy.quick_code(person)
    steps = [
        Step(user(person), code, "short"),  # justification_too_short
        Step(user(person), None, "x" * 3000),  # justification_too_long, same code
        Step(user(person), None, "still short"),  # third try: the code attempt fails
        Step(user(person), WRONG, GOOD_JUSTIFICATION),  # unknown_code
        Step(f"{person}@nosuch01", code, GOOD_JUSTIFICATION),  # unknown_target
    ]

    _, result = await login(proxy.port, steps, local_addr="127.0.0.7")

    assert isinstance(result, asyncssh.PermissionDenied), result
    failures = await proxy.wait_events(
        "login_failed", lambda e: e.data.get("person") == person, count=5
    )
    assert [e.data["reason"] for e in failures] == [
        "justification_too_short",
        "justification_too_long",
        "justification_too_short",
        "unknown_code",
        "unknown_target",
    ]
    for event in failures:
        assert event.data["source"] == "127.0.0.7"
        assert event.data["client_version"].startswith("SSH-2.0-")
    assert await proxy.sessions() == []
