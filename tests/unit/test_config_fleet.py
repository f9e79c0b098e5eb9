"""The ``fleet:`` section: what loads, and every refusal with its line."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from proxy.config import FleetConfig, load_config
from proxy.core.errors import ConfigError

KEY_A = "ed25519 " + "3b" * 32
KEY_B = "ed25519 " + "9F" * 32


def write(tmp_path: Path, fleet: str) -> Path:
    path = tmp_path / "proxy.yaml"
    path.write_text("fleet:\n" + textwrap.indent(textwrap.dedent(fleet).strip("\n"), "  ") + "\n")
    return path


def problems(path: Path) -> list[tuple[int | None, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [(p.line, p.message) for p in info.value.problems]


GOOD = f"""
node: bg-eu1
postgres: postgresql://breakglass@127.0.0.1:5432/breakglass
peers:
  bg-eu1: "{KEY_A}"
  bg-us1: "{KEY_B}"
"""


def test_no_fleet_section_is_a_node_on_its_own(tmp_path: Path) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text("{}\n")
    assert load_config(path).fleet is None
    path.write_text("fleet:\n")
    assert load_config(path).fleet is None


def test_a_fleet_section_loads_with_defaults(tmp_path: Path) -> None:
    fleet = load_config(write(tmp_path, GOOD)).fleet
    assert fleet == FleetConfig(
        node="bg-eu1",
        postgres="postgresql://breakglass@127.0.0.1:5432/breakglass",
        password_file=None,
        peers={"bg-eu1": KEY_A, "bg-us1": KEY_B.lower()},
        timeout=2.0,
        ship_interval=0.5,
        witness_interval=60.0,
    )


def test_timings_and_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pgpass"
    secret.write_text("127.0.0.1:5432:breakglass:breakglass:s3cret\n")
    os.chmod(secret, 0o600)
    fleet = load_config(
        write(
            tmp_path,
            GOOD + "password_file: pgpass\ntimeout: 500ms\n"
            "ship_interval: 0.25\nwitness_interval: 2m\n",
        )
    ).fleet
    assert fleet is not None
    assert (fleet.password_file, fleet.timeout, fleet.ship_interval, fleet.witness_interval) == (
        secret,
        0.5,
        0.25,
        120.0,
    )


@pytest.mark.parametrize(
    ("dsn", "secret"),
    [
        ("postgresql://breakglass:hunter2@db/breakglass", "hunter2"),
        ("host=db dbname=breakglass password=hunter2", "hunter2"),
        ("postgresql://breakglass@db/breakglass?password=hunter2", "hunter2"),
    ],
)
def test_a_password_in_the_dsn_is_refused_without_repeating_it(
    tmp_path: Path, dsn: str, secret: str
) -> None:
    text = GOOD.replace("postgresql://breakglass@127.0.0.1:5432/breakglass", dsn)
    found = problems(write(tmp_path, text))
    assert found == [(3, "fleet.postgres must not contain a password")]
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert secret not in str(info.value)


def test_a_node_missing_from_peers_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace("node: bg-eu1", "node: bg-ap1")
    assert problems(write(tmp_path, text)) == [(4, "fleet.peers has no key for this node (bg-ap1)")]


@pytest.mark.parametrize(
    "key",
    [
        "3b" * 32,  # the hex alone
        "ed25519 " + "3b" * 31,  # short
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB",  # an SSH key, not a checkpoint key
        "ed25519 " + "zz" * 32,
    ],
)
def test_a_bad_peer_key_is_refused(tmp_path: Path, key: str) -> None:
    text = GOOD.replace(KEY_B, key)
    assert problems(write(tmp_path, text)) == [(6, "fleet.peers.bg-us1 is not a checkpoint key")]


def test_every_other_refusal(tmp_path: Path) -> None:
    secret = tmp_path / "pgpass"
    secret.write_text("x\n")
    os.chmod(secret, 0o644)
    text = f"""
    node: Bg_EU1
    postgres: "host=db port=notaport sslmode=bogus' x"
    password_file: pgpass
    peers:
      Bad/Name: "{KEY_A}"
    timeout: 0
    ship_interval: soon
    colour: blue
    """
    found = problems(write(tmp_path, text))
    messages = [m for _, m in found]
    assert "fleet.node 'Bg_EU1' is not a node name" in messages
    assert "fleet.postgres is not a PostgreSQL connection string" in messages
    assert any("is accessible by group or others" in m for m in messages)
    assert "fleet.peers: 'Bad/Name' is not a node name" in messages
    assert "fleet.peers has no key for this node (Bg_EU1)" in messages
    assert "fleet.timeout must be longer than 0" in messages
    assert any(m.startswith("fleet.ship_interval: bad duration") for m in messages)
    assert "unknown key 'fleet.colour'" in messages
    assert len(found) == 8, found


def test_required_keys(tmp_path: Path) -> None:
    assert problems(write(tmp_path, "timeout: 1s")) == [
        (2, "fleet.node is required"),
        (2, "fleet.postgres is required"),
        (2, "fleet.peers is required"),
    ]
