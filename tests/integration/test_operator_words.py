"""The operator's words, through the real CLI: what ``cred issue``, ``cred list`` and
``cred revoke`` say. A code's state reads as a word (sealed, active until T, burnt,
spent, revoked, expired), a typo in ``--targets`` is pointed out, and a second
revocation says that it changed nothing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import TARGET
from tests.integration.harness import (
    Deployment,
    SshdTarget,
    cli_json,
    issue_credential,
    new_person,
    run_cli,
    write_proxy_config,
)
from tests.waiting import eventually

MINUTE = r"\d{4}-\d\d-\d\d \d\d:\d\d UTC"
STATES = ("sealed", "active", "burnt", "spent", "revoked", "expired")


@pytest.fixture
def config(tmp_path: Path, target: SshdTarget) -> Path:
    return write_proxy_config(
        tmp_path, 2222, {"db01": target.target_entry(), "web01": target.target_entry()}
    )


def test_issue_says_when_an_unused_code_expires(config: Path) -> None:
    result = run_cli(config, "cred", "issue", "alice", "--valid", "30d")

    assert result.returncode == 0, result.stderr
    assert "sealed until" not in result.stdout
    assert re.search(rf"; expires unused at {MINUTE};", result.stdout), result.stdout
    assert result.stderr == ""


def test_issue_warns_about_targets_that_match_nothing(config: Path) -> None:
    result = run_cli(config, "cred", "issue", "alice", "--targets", "db*,wbe01,bd*")

    assert result.returncode == 0, result.stderr  # targets may be added later: still issued
    warnings = result.stderr.splitlines()
    assert warnings == [
        "breakglass: warning: --targets 'wbe01' matches no configured target "
        "(configured: db01, web01)",
        "breakglass: warning: --targets 'bd*' matches no configured target "
        "(configured: db01, web01)",
    ], result.stderr
    assert "BG-" in result.stdout


def test_revoking_twice_says_it_was_already_revoked(config: Path) -> None:
    cred = issue_credential(config, "alice")
    first = run_cli(config, "cred", "revoke", cred["id"], "--reason", "INC-1 rotated")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"revoked {cred['id']} (alice)"

    second = run_cli(config, "cred", "revoke", cred["id"], "--reason", "INC-2 again")

    assert second.returncode == 0, second.stderr
    assert re.fullmatch(
        rf"{cred['id']} \(alice\) was already revoked at {MINUTE}; nothing changed "
        r"\(this reason is not recorded\)\n",
        second.stdout,
    ), second.stdout
    [listed] = [c for c in cli_json(config, "cred", "list") if c["id"] == cred["id"]]
    assert listed["revoke_reason"] == "INC-1 rotated"


def test_list_shows_each_state_in_words(deployment: Deployment) -> None:
    # Every state reached the real way: logins through the proxy, time passing, revoke.
    people = {state: new_person(state) for state in STATES}
    options: dict[str, dict[str, Any]] = {
        "expired": {"valid": "1s"},
        "burnt": {"window": "2s"},
        "spent": {"uses": 1},
    }
    ids = {}
    for state, person in people.items():
        credential = deployment.issue(person, **options.get(state, {}))
        ids[state] = str(credential["id"])
        if state in ("active", "burnt", "spent"):
            result = deployment.ssh(person, TARGET, str(credential["code"]), "true")
            assert result.returncode == 0, result.describe()
    assert deployment.cli("cred", "revoke", ids["revoked"], "--reason", "x").returncode == 0

    def listed() -> dict[str, str] | None:
        result = deployment.cli("cred", "list")
        assert result.returncode == 0, result.stderr
        rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
        words = {state: re.split(r"\s{2,}", rows[cred_id])[2] for state, cred_id in ids.items()}
        done = words["burnt"] == "burnt" and words["expired"] == "expired"
        return words if done else None

    words = eventually(listed, within=30, what="the burnt and expired codes")

    [active] = [c for c in cli_json(deployment.config, "cred", "list") if c["id"] == ids["active"]]
    until = str(active["window_ends"])[:16].replace("T", " ")
    assert words == {
        "sealed": "sealed",
        "active": f"active until {until} UTC",
        "burnt": "burnt",
        "spent": "spent",
        "revoked": "revoked",
        "expired": "expired",
    }, words
