"""Logins on a real ``breakglass serve`` node with a ``fleet:`` whose ledger does not
answer, through the real OpenSSH client: ``fleet.unreachable: serve`` lets the engineer
in, flagged and alerted; ``refuse`` fails closed and tells the engineer why."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from proxy.audit.checkpoint import key_path, load_or_generate, public_hex
from tests.integration.conftest import TARGET, standard_targets
from tests.integration.harness import (
    Deployment,
    ProxyProcess,
    SshdTarget,
    current_login,
    new_person,
    read_events,
    write_proxy_config,
)
from tests.integration.harness import free_port as free


def fleet_node(
    directory: Path, target: SshdTarget, other: SshdTarget, unreachable: str
) -> Deployment:
    """A node whose ledger is a closed loopback port (connections refused at once)."""
    config = write_proxy_config(directory, free(), standard_targets(target, other))
    recordings = directory / "recordings"
    key = load_or_generate(key_path(recordings))
    document = yaml.safe_load(config.read_text())
    document["fleet"] = {
        "node": "bg-a",
        "postgres": f"postgresql://breakglass@127.0.0.1:{free()}/ledger",
        "peers": {"bg-a": f"ed25519 {public_hex(key.public_key())}"},
        "timeout": 1.0,
        "unreachable": unreachable,
    }
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    return Deployment(directory, config, ProxyProcess.start(config), {TARGET: target})


@pytest.mark.parametrize("unreachable", ["serve", "refuse"])
def test_a_login_without_the_ledger_is_served_flagged_or_refused_with_the_reason(
    tmp_path: Path, target: SshdTarget, other_target: SshdTarget, unreachable: str
) -> None:
    node = fleet_node(tmp_path, target, other_target, unreachable)
    try:
        person = new_person()
        code = node.code(person)
        result = node.ssh(person, TARGET, code, "echo in", login=current_login())
        found = read_events(node.database)
        types = [e.type for e in found]
        assert types.count("cred_use_pending") == 1
        if unreachable == "serve":
            assert result.returncode == 0, result.describe()
            assert b"in" in result.stdout
            (start,) = [e for e in found if e.type == "session_start"]
            assert start.data["ledger_unreachable"] is True
            assert start.data["use_id"]
            rules = [e.data["rule"] for e in found if e.type == "alert"]
            assert "ledger_unreachable" in rules
            assert any(e.type == "flag" and e.data["rule"] == "ledger_unreachable" for e in found)
        else:
            assert result.returncode != 0
            assert b"fleet.unreachable: refuse" in result.stderr, result.describe()
            assert "session_start" not in types
            failed = node.wait_for_login_failures(person)  # written in the background
            assert [f["reason"] for f in failed] == ["ledger_unreachable"]
    finally:
        node.stop()
