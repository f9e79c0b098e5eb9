"""One bad target must not stop the proxy: a target whose host name does not resolve.

Names under ``.invalid`` never resolve (RFC 2606), so no test depends on DNS outside the
machine; ``localhost`` always does. The proxy starts, reloads and serves every other
target; a login to the bad one gets one clear line and exit status 255, and the audit
trail says why (``upstream_failed`` with reason ``target_unresolved``).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import (
    Deployment,
    SshdTarget,
    events_of,
    read_events,
    run_cli,
    write_proxy_config,
)
from tests.integration.test_upstream import UPSTREAM_FAILED, the_clear_line
from tests.waiting import eventually

GHOST = "ghost"
GHOST_HOST = "ghost.invalid"


def targets_with_a_ghost(target: SshdTarget, **ghosts: str) -> dict[str, dict[str, object]]:
    entries: dict[str, dict[str, object]] = {
        "db01": target.target_entry(),
        # A name that does resolve, read at each connect like any other.
        "local01": target.target_entry(host="localhost"),
    }
    for name, host in ghosts.items():
        entries[name] = target.target_entry(host=host)
    return entries


@pytest.fixture
def deployment(tmp_path: Path, target: SshdTarget) -> Iterator[Deployment]:
    # Before the fix, serve exited 1 here: "host 'ghost.invalid' does not resolve".
    running = Deployment.start(
        tmp_path / "proxy", targets_with_a_ghost(target, **{GHOST: GHOST_HOST})
    )
    yield running
    running.stop()


def test_the_proxy_serves_with_a_target_that_does_not_resolve(
    deployment: Deployment, person: str
) -> None:
    assert deployment.proxy.alive()
    eventually(
        lambda: (
            f"target {GHOST}: host '{GHOST_HOST}' does not resolve now" in deployment.proxy.log()
        ),
        within=20,
        what="the start-up warning about the ghost target",
    )
    code = deployment.code(person)

    result = deployment.ssh(person, GHOST, code, "echo should-not-run")

    assert result.returncode == UPSTREAM_FAILED, result.describe()
    assert b"should-not-run" not in result.stdout
    line = the_clear_line(result, GHOST)
    assert f"'{GHOST_HOST}'" in line, line
    assert "does not resolve" in line, line
    session = deployment.wait_for_session(person)
    failed = events_of(session, "upstream_failed")
    assert [e["data"]["reason"] for e in failed] == ["target_unresolved"], session["events"]
    assert GHOST_HOST in failed[0]["data"]["detail"]
    assert session["end_reason"] == "target_error"

    # The other targets, by address and by a name that resolves, still work.
    for name in ("db01", "local01"):
        result = deployment.ssh(person, name, code, f"echo via-{name}")
        assert result.returncode == 0, result.describe()
        assert result.stdout == f"via-{name}\n".encode()


def test_config_check_warns_about_names_that_do_not_resolve(
    tmp_path: Path, target: SshdTarget
) -> None:
    config = write_proxy_config(
        tmp_path, 2222, targets_with_a_ghost(target, **{GHOST: GHOST_HOST, "typo": "db0l.invalid"})
    )

    result = run_cli(config, "config", "check")

    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, result.stdout
    assert warnings[0].startswith(f"warning: target {GHOST}: host '{GHOST_HOST}' does not resolve")
    assert warnings[1].startswith("warning: target typo: host 'db0l.invalid' does not resolve")


def test_a_reload_with_a_name_that_does_not_resolve_is_applied(
    deployment: Deployment, person: str, target: SshdTarget
) -> None:
    write_proxy_config(
        deployment.directory,
        deployment.port,
        targets_with_a_ghost(target, **{GHOST: GHOST_HOST, "ghost2": "ghost2.invalid"}),
    )

    deployment.proxy.process.send_signal(signal.SIGHUP)

    reloaded = eventually(
        lambda: [e for e in read_events(deployment.database) if e.type == "config_reloaded"],
        within=20,
        what="config_reloaded",
    )
    assert "ghost2" in reloaded[0].data["targets"], reloaded[0].data
    assert not [e for e in read_events(deployment.database) if e.type == "config_reload_failed"]
    eventually(
        lambda: (
            "target ghost2: host 'ghost2.invalid' does not resolve now" in deployment.proxy.log()
        ),
        within=20,
        what="the reload's warning about ghost2",
    )
    code = deployment.code(person)
    result = deployment.ssh(person, "ghost2", code, "true")
    assert result.returncode == UPSTREAM_FAILED, result.describe()
    assert "ghost2.invalid" in the_clear_line(result, "ghost2")
    result = deployment.ssh(person, "db01", code, "echo after-reload")
    assert result.returncode == 0, result.describe()
