"""Clear answers at the login (issue 18 items 1-4), seen by the real OpenSSH client.

Once a code's secret has verified, the engineer is told what is wrong (an authentication
banner, printed by OpenSSH on stderr at its default LogLevel); without a verified secret
the answer stays neutral; an address outside the allowed networks is told so; a slowed
login says why and for how long; a code typed without its ``BG-`` prefix works; the
justification rule is shown where it is typed, and a justification OpenSSH cut is
refused, never stored cut.

The harness's clients run at LogLevel=ERROR; these tests ask for INFO, OpenSSH's default,
so they see what an engineer sees.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from proxy.core.answers import clock, when
from tests.integration.conftest import SECOND, TARGET, standard_targets
from tests.integration.harness import (
    GOOD_JUSTIFICATION,
    SshdTarget,
    SshResult,
    new_person,
    ssh,
    user_at,
)
from tests.integration.inproc import InProcessProxy, in_process_proxy
from tests.integration.sshtools import SFTP, run_client, ssh_options

INFO = "LogLevel=INFO"  # OpenSSH's default: banners and instructions are shown
ALLOWED = "db01, web01"  # the configured targets a "*" code allows, sorted
DENIED = "Permission denied (keyboard-interactive)."


@pytest.fixture
async def proxy(
    tmp_path: Path, target: SshdTarget, other_target: SshdTarget
) -> AsyncIterator[InProcessProxy]:
    every = standard_targets(target, other_target)
    targets = {name: every[name] for name in (TARGET, SECOND)}
    async with in_process_proxy(tmp_path / "proxy", targets) as p:
        yield p


async def client(proxy: InProcessProxy, user: str, code: str, **options: Any) -> SshResult:
    """The real ssh, ``true`` as the command, OpenSSH's default LogLevel."""
    extra = options.pop("options", ())
    return await asyncio.to_thread(
        ssh, proxy.port, user, code, "true", options=[INFO, *extra], **options
    )


def told(result: SshResult) -> list[str]:
    """The proxy's lines among what ssh printed on stderr."""
    lines = result.stderr.decode(errors="replace").splitlines()
    return [line for line in lines if "breakglass:" in line]


async def reason_for(proxy: InProcessProxy, person: str) -> str:
    [event] = await proxy.wait_events("login_failed", lambda e: e.data.get("person") == person)
    return str(event.data["reason"])


# --------------------------------------------------------------- item 1: real answers


async def test_a_verified_code_is_told_what_is_wrong(proxy: InProcessProxy) -> None:
    alice, bob = new_person("alice"), new_person("bob")
    code, bobs = await proxy.quick_code(alice), await proxy.quick_code(bob)
    revoked = await proxy.quick_code(alice)
    await proxy.revoke(revoked)
    db01_only = await proxy.quick_code(alice, targets=[TARGET])
    cases = [
        (f"{alice}@dmeo", code, f"there is no target named dmeo; this code allows: {ALLOWED}"),
        (
            alice,  # ssh alice@proxy: the target forgotten
            code,
            f"no target in the user name: log in as {alice}@TARGET; this code allows: {ALLOWED}",
        ),
        (f"{alice}@{TARGET}", bobs, "this code was issued to someone else"),
        (
            f"{alice}@{SECOND}",
            db01_only,
            f"this code does not allow {SECOND}; this code allows: {TARGET}",
        ),
        (f"{alice}@admin@{TARGET}", code, f"login admin is not allowed on {TARGET}; allowed:"),
        (f"{alice}@{TARGET}", revoked, "this code was revoked at "),
    ]
    for user, typed, words in cases:
        result = await client(proxy, user, typed)
        assert result.returncode == 255, result.describe()
        [line] = told(result)
        assert line.startswith(f"breakglass: {words}"), result.describe()
        # What OpenSSH prints for the failure itself (the README quotes it).
        assert DENIED in result.stderr.decode(), result.describe()
    # Revoked: when (to the minute), never why.
    found = await proxy.app.store.get_credential(revoked.split("-")[1])
    assert found is not None
    assert found[0].revoked_at is not None
    assert told(result) == [f"breakglass: this code was revoked at {when(found[0].revoked_at)}"]
    assert await proxy.sessions() == []


async def test_without_a_verified_secret_the_answer_stays_neutral(proxy: InProcessProxy) -> None:
    alice = new_person("alice")
    code = await proxy.quick_code(alice)
    revoked = await proxy.quick_code(alice)
    await proxy.revoke(revoked)
    wrong = f"BG-{code.split('-')[1]}-0000-0000-0000-0000-0000-0000"
    wrong_revoked = f"BG-{revoked.split('-')[1]}-0000-0000-0000-0000-0000-0000"
    outputs = set()
    for user, typed in [
        (f"{alice}@{TARGET}", wrong),
        (f"{alice}@dmeo", wrong),  # a misspelled target, but the secret is wrong
        (f"{alice}@{TARGET}", wrong_revoked),  # a revoked code's id, wrong secret
        (f"{alice}@{TARGET}", "BG-ZZZZZZ-" + code.split("-", 2)[2]),
        (alice, "hunter2"),
    ]:
        result = await client(proxy, user, typed)
        assert result.returncode == 255, result.describe()
        assert told(result) == [], result.describe()
        outputs.add(result.stderr.decode().replace(user, "<USER>"))
    assert len(outputs) == 1, outputs


async def test_three_failures_end_the_connection_as_the_readme_says(proxy: InProcessProxy) -> None:
    # OpenSSH's default of three tries: the proxy ends the connection after the third.
    alice = new_person("alice")
    wrong = "BG-ZZZZZZ-0000-0000-0000-0000-0000-0000"

    result = await client(
        proxy,
        user_at(alice, TARGET),
        wrong,
        codes=[wrong] * 4,
        justifications=[GOOD_JUSTIFICATION] * 4,
        password_prompts=3,
    )

    assert result.returncode == 255, result.describe()
    assert result.code_prompts == 3, result.describe()
    stderr = result.stderr.decode()
    port = proxy.port
    assert (
        f"Received disconnect from 127.0.0.1 port {port}:14: Too many authentication failures"
    ) in stderr, result.describe()
    assert told(result) == [], result.describe()


async def test_an_address_outside_the_allowed_networks_is_told_so(
    tmp_path: Path, target: SshdTarget, other_target: SshdTarget
) -> None:
    async with in_process_proxy(
        tmp_path / "proxy",
        standard_targets(target, other_target),
        policy={"allowed_sources": ["127.0.0.1/32"]},
    ) as proxy:
        alice = new_person("alice")
        code = await proxy.quick_code(alice)
        wrong = f"BG-{code.split('-')[1]}-0000-0000-0000-0000-0000-0000"
        for typed in (code, wrong):
            result = await client(proxy, user_at(alice, TARGET), typed, args=["-b", "127.0.0.8"])
            assert result.returncode == 255, result.describe()
            assert told(result) == [
                "breakglass: address not allowed: 127.0.0.8 may not use break-glass access"
            ], result.describe()
        failures = await proxy.wait_events(
            "login_failed", lambda e: e.data.get("person") == alice, count=2
        )
        assert [e.data["reason"] for e in failures] == ["source_not_allowed"] * 2
        assert await proxy.sessions() == []


# --------------------------------------------------------------- item 2: slowed logins


async def test_a_slowed_login_says_why_and_for_how_long(
    tmp_path: Path, target: SshdTarget, other_target: SshdTarget
) -> None:
    throttled = {"rules": {"failed_logins_per_source": {"count": 2, "window": "10m"}}}
    async with in_process_proxy(
        tmp_path / "proxy", standard_targets(target, other_target), alerts=throttled
    ) as proxy:
        alice, mallory = new_person("alice"), new_person("mallory")
        code = await proxy.quick_code(alice)
        wrong = "BG-ZZZZZZ-0000-0000-0000-0000-0000-0000"
        for _ in range(3):  # three failed attempts from 127.0.0.9: past the threshold
            result = await client(proxy, user_at(mallory, TARGET), wrong, args=["-b", "127.0.0.9"])
            assert result.returncode == 255, result.describe()

        result = await client(proxy, user_at(alice, TARGET), code, args=["-b", "127.0.0.9"])

        assert result.returncode == 0, result.describe()
        assert told(result)[0] == (
            "breakglass: login slowed by 2 s after failed attempts from this address"
        ), result.describe()


# --------------------------------------------------------------- item 3: forgiving codes


async def test_a_code_typed_without_its_prefix_logs_in(proxy: InProcessProxy) -> None:
    alice = new_person("alice")
    code = await proxy.quick_code(alice)
    typed = code.removeprefix("BG-").lower().replace("-", " ")

    result = await client(proxy, user_at(alice, TARGET), typed)

    assert result.returncode == 0, result.describe()
    assert [s.person for s in await proxy.sessions()] == [alice]


# --------------------------------------------------------------- item 4: the limit shown


async def test_the_justification_rule_is_shown_and_a_cut_one_is_refused(
    proxy: InProcessProxy,
) -> None:
    alice = new_person("alice")
    code = await proxy.quick_code(alice)
    # OpenSSH sends at most 1023 bytes of this: the proxy must refuse it, not store it cut.
    long = "INC-1 " + "x" * 3063

    result = await client(
        proxy, user_at(alice, TARGET), code, justifications=[long, GOOD_JUSTIFICATION]
    )

    assert result.returncode == 0, result.describe()
    assert result.justification_prompts == 2, result.describe()
    stderr = result.stderr.decode()
    rule = "The justification must have at least 15 characters, at most 1000 bytes."
    assert stderr.count(rule) == 1, result.describe()  # the first challenge
    assert "Justification rejected: it must have at least 15 characters, at most 1000 bytes" in (
        stderr
    ), result.describe()
    [session] = await proxy.sessions()
    assert session.justification == GOOD_JUSTIFICATION
    [failure] = await proxy.wait_events("login_failed", lambda e: e.data.get("person") == alice)
    assert failure.data["reason"] == "justification_too_long"
    # What OpenSSH sent, cut by OpenSSH, was refused (and is kept to max_bytes, issue 15).
    assert failure.data["justification_length"] == 1023


async def test_max_bytes_is_the_configured_limit(
    tmp_path: Path, target: SshdTarget, other_target: SshdTarget
) -> None:
    async with in_process_proxy(
        tmp_path / "proxy",
        standard_targets(target, other_target),
        policy={"justification": {"min_length": 10, "max_bytes": 40}},
    ) as proxy:
        alice = new_person("alice")
        code = await proxy.quick_code(alice)
        fits, too_long = "INC-7 replica lag, failover", "INC-7 " + "y" * 40
        result = await client(proxy, user_at(alice, TARGET), code, justifications=[too_long, fits])
        assert result.returncode == 0, result.describe()
        assert "at least 10 characters, at most 40 bytes" in result.stderr.decode()
        assert await reason_for(proxy, alice) == "justification_too_long"
        [session] = await proxy.sessions()
        assert session.justification == fits


# --------------------------------------------------------------- item 6: the notice


async def test_sftp_shows_the_session_notice_and_its_transfer_stays_clean(
    proxy: InProcessProxy,
) -> None:
    alice = new_person("alice")
    code = await proxy.quick_code(alice)
    argv = [SFTP, "-P", str(proxy.port), *ssh_options([INFO])]  # no -q: it would hide it
    argv.append(f"{user_at(alice, TARGET)}@127.0.0.1")

    result = await asyncio.to_thread(run_client, argv, code, stdin=b"pwd\n")

    assert result.returncode == 0, result.describe()
    [session] = await proxy.sessions()
    notice = f"breakglass: session {session.id} is recorded; it ends at {clock(session.deadline)}."
    assert told(result) == [notice], result.describe()
    assert b"breakglass" not in result.stdout, result.describe()
    assert b"Remote working directory:" in result.stdout, result.describe()
