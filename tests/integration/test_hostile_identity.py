"""Identity binding (issue 4, point 1): whatever a client says and in whatever order, the
session belongs to exactly the person whose code and justification succeeded on that
connection, or there is no session.

The classes of bug: Warpgate CVE-2023-43660 (an unsigned public-key offer taken as
proof), x/crypto/ssh CVE-2024-45337 (the last key offered taken as the one that
authenticated), Warpgate CVE-2023-48712 (fail as one user, succeed as another, get the
first) and russh CVE-2026-46705 (auth state kept across a username change). The client
is asyncssh with the private hooks described in tests/integration/inproc.py: OpenSSH
cannot change its username inside a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from asyncssh.packet import String
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from proxy.core.login import LoginMachine, LoginRules
from tests.integration.conftest import TARGET, standard_targets
from tests.integration.harness import GOOD_JUSTIFICATION, SshdTarget, new_person, show
from tests.integration.inproc import (
    KBDINT,
    InProcessProxy,
    ScriptedClient,
    Step,
    close,
    connect,
    in_process_proxy,
    login,
)
from tests.unit import loginsim

SHORT = "too short"
WRONG_SECRET = "BG-{id}-0000-0000-0000-0000-0000-0000"


@pytest.fixture
async def proxy(
    tmp_path: Path, target: SshdTarget, other_target: SshdTarget
) -> AsyncIterator[InProcessProxy]:
    async with in_process_proxy(tmp_path / "proxy", standard_targets(target, other_target)) as p:
        yield p


def wrong_secret(code: str) -> str:
    """The same code id with another secret."""
    return WRONG_SECRET.format(id=code.split("-")[1])


def user(person: str) -> str:
    return f"{person}@{TARGET}"


async def new_sessions(proxy: InProcessProxy, before: set[str]) -> list[tuple[str, str]]:
    """(person, credential id) of each session that started since ``before``."""
    return [(s.person, s.credential_id) for s in await proxy.sessions() if s.id not in before]


def cred_id(code: str) -> str:
    return code.split("-")[1]


# --------------------------------------------------------------- public keys offered


async def test_an_unsigned_offer_of_someone_elses_key_is_ignored(proxy: InProcessProxy) -> None:
    victim, mallory = new_person("victim"), new_person("mallory")
    code = await proxy.quick_code(mallory)
    victims_key = asyncssh.generate_private_key("ssh-ed25519")
    before = await proxy.session_ids()

    # publickey with has-signature FALSE for the victim's name and key, then
    # keyboard-interactive as mallory with mallory's own code.
    client = ScriptedClient(
        [Step(user(mallory), code, GOOD_JUSTIFICATION)],
        pubkey_queries=[(user(victim), victims_key)],
    )
    conn = await connect(proxy.port, client)
    await close(conn)

    assert client.usernames_sent == [user(victim), user(mallory)]
    # The query got the same answer as the "none" request: only keyboard-interactive
    # (CVE-2016-20012: a publickey query tells nothing about the name or the key).
    assert client.failures[:2] == [((KBDINT,), False)] * 2
    assert await new_sessions(proxy, before) == [(mallory, cred_id(code))]


async def test_an_unsigned_key_offer_then_the_victims_name_gets_nobody_in(
    proxy: InProcessProxy,
) -> None:
    victim, mallory = new_person("victim"), new_person("mallory")
    code = await proxy.quick_code(mallory)
    await proxy.quick_code(victim)
    victims_key = asyncssh.generate_private_key("ssh-ed25519")
    before = await proxy.session_ids()

    client = ScriptedClient(
        [Step(user(victim), code, GOOD_JUSTIFICATION)],
        pubkey_queries=[(user(victim), victims_key)],
    )
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(proxy.port, client)

    assert await new_sessions(proxy, before) == []
    [failure] = await proxy.wait_events("login_failed", lambda e: e.data.get("person") == victim)
    assert failure.data["reason"] == "wrong_person"


async def test_a_client_offering_the_victims_key_falls_back_to_the_code(
    proxy: InProcessProxy,
) -> None:
    # asyncssh's own publickey auth with the victim's key: the proxy lists only
    # keyboard-interactive, so the key is never even tried and the code decides.
    mallory = new_person("mallory")
    code = await proxy.quick_code(mallory)
    victims_key = asyncssh.generate_private_key("ssh-ed25519")
    before = await proxy.session_ids()

    client = ScriptedClient([Step(user(mallory), code, GOOD_JUSTIFICATION)])
    conn = await connect(
        proxy.port,
        client,
        client_keys=[victims_key],
        preferred_auth=["publickey", KBDINT],
    )
    await close(conn)

    assert await new_sessions(proxy, before) == [(mallory, cred_id(code))]


# --------------------------------------------------------------- changing usernames


async def test_failing_as_one_person_then_succeeding_as_another_binds_the_second(
    proxy: InProcessProxy,
) -> None:
    admin, bob = new_person("admin"), new_person("bob")
    admin_code, bob_code = await asyncio.gather(proxy.quick_code(admin), proxy.quick_code(bob))
    before = await proxy.session_ids()

    client, conn = await login(
        proxy.port,
        [
            Step(user(admin), wrong_secret(admin_code), GOOD_JUSTIFICATION),
            Step(user(bob), bob_code, GOOD_JUSTIFICATION),
        ],
    )
    assert not isinstance(conn, Exception), conn
    await close(conn)

    assert client.usernames_sent == [user(admin), user(bob)]
    started = await new_sessions(proxy, before)
    assert started == [(bob, cred_id(bob_code))]
    [session] = [s for s in await proxy.sessions() if s.id not in before]
    shown = await asyncio.to_thread(show, proxy.config_path, session.id)
    assert shown["person"] == bob
    assert shown["credential_id"] == cred_id(bob_code)


async def test_another_persons_code_under_your_name_is_refused_in_the_same_connection(
    proxy: InProcessProxy,
) -> None:
    # First a good login attempt as bob fails on the justification three times, then
    # the client tries bob's code under admin's name: nothing may carry over.
    admin, bob = new_person("admin"), new_person("bob")
    await proxy.quick_code(admin)
    bob_code = await proxy.quick_code(bob)
    before = await proxy.session_ids()

    client, result = await login(
        proxy.port,
        [
            Step(user(bob), bob_code, SHORT),
            Step(user(bob), "", SHORT),
            Step(user(bob), "", SHORT),
            Step(user(admin), bob_code, GOOD_JUSTIFICATION),
        ],
    )

    assert isinstance(result, asyncssh.PermissionDenied), result
    assert [(c.username, len(c.prompts)) for c in client.challenges] == [
        (user(bob), 2),
        (user(bob), 1),
        (user(bob), 1),
        (user(admin), 2),
    ]
    assert await new_sessions(proxy, before) == []
    reasons = [
        e.data["reason"]
        for e in await proxy.wait_events(
            "login_failed", lambda e: e.data.get("person") in (admin, bob), count=4
        )
    ]
    assert reasons == ["justification_too_short"] * 3 + ["wrong_person"]


async def test_a_new_name_in_the_justification_round_is_asked_for_its_own_code(
    proxy: InProcessProxy,
) -> None:
    alice, mallory = new_person("alice"), new_person("mallory")
    alice_code = await proxy.quick_code(alice)
    await proxy.quick_code(mallory)
    checks = proxy.app.hasher.checks
    before = await proxy.session_ids()

    # alice's right code with a short justification; asked for the justification again,
    # the client switches to mallory and answers with a good justification and no code.
    client, result = await login(
        proxy.port,
        [
            Step(user(alice), alice_code, SHORT),
            Step(user(mallory), "", GOOD_JUSTIFICATION),
        ],
    )

    assert isinstance(result, asyncssh.PermissionDenied), result
    assert [(c.username, len(c.prompts)) for c in client.challenges] == [
        (user(alice), 2),
        (user(alice), 1),  # the justification again, without the code
        (user(mallory), 2),  # a new name: asked for its own code
    ]
    assert f"code for {mallory}" in client.challenges[2].prompts[0][0]
    assert await new_sessions(proxy, before) == []
    # alice's code was never checked (her justification never passed); mallory's empty
    # code was, once.
    assert proxy.app.hasher.checks - checks == 1
    [failure] = await proxy.wait_events("login_failed", lambda e: e.data.get("person") == mallory)
    assert failure.data["reason"] == "unknown_code"


async def test_a_justification_only_answer_under_a_new_name_is_refused(
    proxy: InProcessProxy,
) -> None:
    # As above, but the client answers the new name's code+justification challenge with
    # one response only, as if it were still the justification-again round.
    alice, mallory = new_person("alice"), new_person("mallory")
    alice_code = await proxy.quick_code(alice)
    before = await proxy.session_ids()

    client, result = await login(
        proxy.port,
        [
            Step(user(alice), alice_code, SHORT),
            Step(user(mallory), None, GOOD_JUSTIFICATION),
        ],
    )

    assert isinstance(result, asyncssh.PermissionDenied), result
    assert [(c.username, len(c.prompts)) for c in client.challenges] == [
        (user(alice), 2),
        (user(alice), 1),
        (user(mallory), 2),
    ]
    assert await new_sessions(proxy, before) == []
    [failure] = await proxy.wait_events("login_failed", lambda e: e.data.get("person") == mallory)
    assert failure.data["reason"] == "bad_response"


async def test_switching_back_to_the_first_name_asks_for_the_code_again(
    proxy: InProcessProxy,
) -> None:
    alice, mallory = new_person("alice"), new_person("mallory")
    alice_code = await proxy.quick_code(alice)
    before = await proxy.session_ids()

    client, result = await login(
        proxy.port,
        [
            Step(user(alice), alice_code, SHORT),
            Step(user(mallory), "", SHORT),
            # back to alice: her earlier code must not be remembered, so this round is
            # a code+justification round, answered with the empty code.
            Step(user(alice), "", GOOD_JUSTIFICATION),
        ],
    )

    assert isinstance(result, asyncssh.PermissionDenied), result
    assert [(c.username, len(c.prompts)) for c in client.challenges] == [
        (user(alice), 2),
        (user(alice), 1),
        (user(mallory), 2),
        (user(mallory), 1),
        (user(alice), 2),
    ]
    assert await new_sessions(proxy, before) == []


async def test_a_login_refused_after_proof_reaches_nothing(
    tmp_path: Path, target: SshdTarget, other_target: SshdTarget
) -> None:
    # At its live-session limit the proxy lets a proven engineer in only to say why it
    # cannot serve (proxy/core/login.py: a served Refuse): such a connection must have no
    # session, no channel to anywhere, and its refusal must be audited.
    async with in_process_proxy(
        tmp_path / "proxy", standard_targets(target, other_target), policy={"max_live_sessions": 1}
    ) as proxy:
        holder, late = new_person("holder"), new_person("late")
        holder_code, late_code = await proxy.quick_code(holder), await proxy.quick_code(late)
        _, live = await login(proxy.port, [Step(user(holder), holder_code, GOOD_JUSTIFICATION)])
        assert not isinstance(live, Exception), live
        try:
            checks = proxy.app.hasher.checks
            _, refused = await login(proxy.port, [Step(user(late), late_code, GOOD_JUSTIFICATION)])
            assert not isinstance(refused, Exception), refused
            try:
                async with asyncio.timeout(30):
                    result = await refused.run("echo reached", check=False)
                    with pytest.raises(asyncssh.ChannelOpenError):
                        await refused.open_connection("127.0.0.1", target.port)
            finally:
                await close(refused)
        finally:
            await close(live)

        assert result.exit_status == 255
        assert "reached" not in str(result.stdout)
        assert "limit" in str(result.stderr)
        assert proxy.app.hasher.checks - checks == 1
        assert [s.person for s in await proxy.sessions()] == [holder]
        [failure] = await proxy.wait_events("login_failed", lambda e: e.data.get("person") == late)
        assert failure.data["reason"] == "too_many_sessions"


# --------------------------------------------------------------- the property


PEOPLE = 2


@dataclass(frozen=True)
class Attempt:
    who: int  # index into the people; PEOPLE means an unparseable username
    code: str  # "own", "wrong" (own id, wrong secret), "other" (someone else's code)
    justification_ok: bool


attempts = st.lists(
    st.builds(
        Attempt,
        who=st.integers(0, PEOPLE),
        code=st.sampled_from(["own", "wrong", "other"]),
        justification_ok=st.booleans(),
    ),
    min_size=1,
    max_size=6,
)


def username_of(attempt: Attempt, people: Sequence[str]) -> str:
    return user(people[attempt.who]) if attempt.who < len(people) else "not a user name"


async def expected_person(proxy: InProcessProxy, steps: list[Step], codes: list[str]) -> str | None:
    """Whose session ``steps`` must end with, by the login machine itself
    (proxy/core/login.py) fed the codes' rows as they are now in the store."""
    fake = loginsim.Codes()
    for code in codes:
        found = await proxy.app.store.get_credential(cred_id(code))
        assert found is not None
        fake.add(found[0], code.split("-", 2)[2].replace("-", ""))
    config = proxy.app.config
    rules = LoginRules(
        policy=config.policy, targets=config.targets, min_free=config.storage.min_free
    )
    machine = LoginMachine(rules, loginsim.throttle(), "127.0.0.1")
    script = [loginsim.Step(s.username, str(s.code), str(s.justification)) for s in steps]
    return loginsim.drive(machine, script, fake, now=time.time()).person


@pytest.fixture
async def cast(proxy: InProcessProxy) -> tuple[list[str], list[str]]:
    """The people and their codes, the same for every example of one test run."""
    names = [new_person(f"prop{n}x") for n in range(PEOPLE)]
    return names, [await proxy.quick_code(name) for name in names]


@pytest.mark.slow
@settings(
    max_examples=25,
    deadline=None,
    database=None,  # no .hypothesis/ directory in the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=attempts)
async def test_the_session_belongs_to_whoever_succeeded_on_the_connection(
    proxy: InProcessProxy, cast: tuple[list[str], list[str]], script: list[Attempt]
) -> None:
    people, codes = cast
    steps = []
    for attempt in script:
        own = codes[attempt.who % PEOPLE]
        code = {
            "own": own,
            "wrong": wrong_secret(own),
            "other": codes[(attempt.who + 1) % PEOPLE],
        }[attempt.code]
        justification = GOOD_JUSTIFICATION if attempt.justification_ok else SHORT
        steps.append(Step(username_of(attempt, people), code, justification))
    want = await expected_person(proxy, steps, codes)
    before = await proxy.session_ids()

    _, result = await login(proxy.port, steps)
    if not isinstance(result, Exception):
        await close(result)

    event("a session" if want else "no session")
    started = [person for person, _ in await new_sessions(proxy, before)]
    assert started == ([want] if want else []), (script, result)
    assert isinstance(result, Exception) == (want is None), (script, result)


# --------------------------------------------------------------- abandoned mid-commit


@pytest.mark.parametrize("move", ["new_username", "disconnect"])
async def test_a_login_abandoned_while_its_session_start_commits_leaves_no_live_session(
    proxy: InProcessProxy, monkeypatch: pytest.MonkeyPatch, move: str
) -> None:
    # The client answers right, and while the proxy commits the session start (made
    # slow here, as on a busy disk) it either sends a new USERAUTH_REQUEST under
    # another name (asyncssh then cancels the check in progress) or drops the
    # connection. Nobody got in on this connection, so no session may stay open.
    alice, bob = new_person("alice"), new_person("bob")
    code = await proxy.quick_code(alice)
    store = proxy.app.store
    start_session = store.start_session
    committed = asyncio.Event()

    async def slow_start_session(*args: Any, **kwargs: Any) -> Any:
        decision = await start_session(*args, **kwargs)
        committed.set()
        await asyncio.sleep(1.0)
        return decision

    monkeypatch.setattr(store, "start_session", slow_start_session)
    before = await proxy.session_ids()

    client = ScriptedClient(
        [Step(user(alice), code, GOOD_JUSTIFICATION), Step(user(bob), "", GOOD_JUSTIFICATION)]
    )
    attempt = asyncio.ensure_future(connect(proxy.port, client))
    await asyncio.wait_for(committed.wait(), 20)
    assert client.conn is not None
    if move == "new_username":
        # private asyncssh API (see inproc.py): a pipelined request under bob's name
        client._set_username(user(bob))
        await client.conn.send_userauth_request(b"keyboard-interactive", String(""), String(""))
    else:
        client.conn.abort()
    with contextlib.suppress(asyncssh.Error, OSError):
        conn = await asyncio.wait_for(attempt, 20)
        await close(conn)

    async def none_open() -> bool:
        started = [s for s in await proxy.sessions() if s.id not in before]
        return all(s.ended_at is not None and s.end_reason for s in started)

    for _ in range(100):
        if await none_open() and not proxy.app.sessions:
            break
        await asyncio.sleep(0.05)
    started = [s for s in await proxy.sessions() if s.id not in before]
    assert all(s.ended_at is not None for s in started), [
        (s.id, s.person, s.ended_at, s.end_reason) for s in started
    ]
