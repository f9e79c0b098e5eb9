"""Dropbear's client, which has no AES-GCM (issue 19, item 3).

Debian's ``dbclient`` offers chacha20-poly1305 and AES-CTR only. The proxy offers
AES-GCM only unless ``listen.chacha20`` is on; with it, dbclient logs in and runs a
command (chacha20 takes asyncssh's own path, not wire.py's AES-GCM fast path, on the
engineer's leg; the target leg stays AES-GCM).

dbclient reads an echoed keyboard-interactive answer (the justification) from stdin when
it has no terminal, and a hidden one (the code) from ``DROPBEAR_PASSWORD``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import TARGET, standard_targets
from tests.integration.harness import (
    GOOD_JUSTIFICATION,
    LOOPBACK,
    Deployment,
    SshdTarget,
    user_at,
    wait_for_session,
)
from tests.integration.test_clients_audit import assert_no_failure

DBCLIENT = shutil.which("dbclient")
pytestmark = pytest.mark.skipif(
    DBCLIENT is None and not os.environ.get("CI"), reason="dbclient (dropbear-bin) not installed"
)


@pytest.fixture(scope="module")
def chacha_deployment(
    tmp_path_factory: pytest.TempPathFactory, target: SshdTarget, other_target: SshdTarget
) -> Iterator[Deployment]:
    running = Deployment.start(
        tmp_path_factory.mktemp("proxy-chacha"),
        standard_targets(target, other_target),
        sshd_targets={TARGET: target},
        listen={"chacha20": True},
    )
    yield running
    running.stop()


def dbclient(
    port: int, user: str, code: str, command: str, home: Path
) -> subprocess.CompletedProcess[bytes]:
    assert DBCLIENT is not None, "dbclient (Debian package dropbear-bin) is not installed"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        # -y: accept the proxy's (new) host key into $HOME/.ssh/known_hosts.
        [DBCLIENT, "-y", "-p", str(port), "-l", user, LOOPBACK, command],
        input=f"{GOOD_JUSTIFICATION}\n".encode(),
        capture_output=True,
        timeout=60,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "DROPBEAR_PASSWORD": code,
        },
        start_new_session=True,  # no controlling terminal: answers come from stdin
        check=False,
    )


def test_dbclient_logs_in_with_chacha20(
    chacha_deployment: Deployment, person: str, tmp_path: Path
) -> None:
    code = chacha_deployment.code(person)
    result = dbclient(
        chacha_deployment.port, user_at(person, TARGET), code, "echo dropbear", tmp_path
    )
    assert result.returncode == 0, result
    assert result.stdout == b"dropbear\n", result
    session = wait_for_session(chacha_deployment.config, person)
    assert session["client_version"].startswith("SSH-2.0-dropbear"), session


def test_dbclient_is_refused_by_default(
    deployment: Deployment, person: str, tmp_path: Path
) -> None:
    """The default stays AES-GCM only: no cipher in common, nothing asked."""
    result = dbclient(deployment.port, user_at(person, TARGET), "BG-none", "echo no", tmp_path)
    assert result.returncode != 0, result
    assert result.stdout == b""
    assert b"No matching algo" in result.stderr or b"algo" in result.stderr.lower(), result


def test_ssh_audit_finds_no_failure_with_chacha20(chacha_deployment: Deployment) -> None:
    report = assert_no_failure(chacha_deployment.port)
    assert "chacha20-poly1305@openssh.com" in [entry["algorithm"] for entry in report["enc"]]
