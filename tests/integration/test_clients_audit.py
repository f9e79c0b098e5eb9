"""ssh-audit, the scanner auditors run, finds no failure on the proxy (issue 19, item 2).

ssh-audit failed the server on the NIST P-curve key exchanges; the proxy now offers the
ML-KEM hybrid, curve25519 and the large DH groups only. Its warnings stay (curve25519
and the DH groups are not post-quantum; the connection rate test sees no DHEat
throttling below the per-source rate Ansible needs) and are explained in the README.
The scan runs the real ssh-audit (from PyPI) against the real proxy on 127.0.0.1, with
its default tests, including the connection rate test (a few dozen connections).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.integration.harness import LOOPBACK, Deployment

SSH_AUDIT = Path(sys.executable).parent / "ssh-audit"
FAILURE = 3  # ssh-audit's exit status when anything failed (exitcodes.py)


def ssh_audit(port: int) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [str(SSH_AUDIT), "-n", "-j", "-t", "20", "-p", str(port), LOOPBACK],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


def failures(report: dict[str, Any]) -> list[str]:
    """Every algorithm ssh-audit failed, with why, and every CVE it listed."""
    found = [
        f"{section} {entry['algorithm']}: {'; '.join(entry['notes']['fail'])}"
        for section in ("kex", "key", "enc", "mac")
        for entry in report.get(section, [])
        if entry.get("notes", {}).get("fail")
    ]
    return found + [f"cve {cve}" for cve in report.get("cves", [])]


def assert_no_failure(port: int) -> dict[str, Any]:
    status, report = ssh_audit(port)
    assert failures(report) == [], failures(report)
    assert status != FAILURE, report
    assert report["banner"]["software"] == "proxy"  # the neutral version string
    return report


def test_ssh_audit_finds_no_failure(deployment: Deployment) -> None:
    report = assert_no_failure(deployment.port)
    kex = [entry["algorithm"] for entry in report["kex"]]
    assert kex[:2] == ["mlkem768x25519-sha256", "curve25519-sha256"], kex
    assert not [name for name in kex if "nistp" in name], kex
    assert [entry["algorithm"] for entry in report["enc"]] == [
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
    ]
