"""The audit trail fails closed: when the store cannot be written, nobody gets in.

Root ignores file modes, so the store is made unwritable with the immutable attribute
(`chattr +i`) on the database, its WAL/journal and its directory. Never on the `-shm`
file: SQLite writes it through a shared mapping, and a write to an immutable mapped file
is a SIGBUS that would kill any process, which would prove nothing about the proxy.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import TARGET
from tests.integration.harness import Deployment

CHATTR = shutil.which("chattr")


def chattr(flag: str, paths: list[Path]) -> subprocess.CompletedProcess[str]:
    assert CHATTR is not None
    return subprocess.run(
        [CHATTR, flag, *map(str, paths)], capture_output=True, text=True, timeout=10, check=False
    )


@pytest.fixture
def freeze_store() -> Iterator[list[Path]]:
    """Paths put here are made immutable by the test and always thawed afterwards (an
    immutable file left behind could not even be deleted by pytest's tmp cleanup)."""
    frozen: list[Path] = []
    yield frozen
    if frozen:
        chattr("-i", [path for path in frozen if path.exists()])


@pytest.mark.skipif(CHATTR is None, reason="chattr is not installed")
def test_no_session_starts_when_the_store_cannot_be_written(
    private_deployment: Deployment, person: str, freeze_store: list[Path]
) -> None:
    deployment = private_deployment
    code = deployment.code(person)  # no use cap: the same code is good for both logins
    before = deployment.ssh(person, TARGET, code, "echo before")
    assert before.returncode == 0, before.describe()
    deployment.wait_for_session(person)  # its end is written before the store goes away

    database = deployment.database
    paths = [database.parent, database] + [
        path
        for path in (database.with_name(database.name + s) for s in ("-wal", "-journal"))
        if path.exists()
    ]
    froze = chattr("+i", paths)
    if froze.returncode != 0:
        chattr("-i", paths)
        pytest.skip(f"cannot make files immutable here: {froze.stderr.strip()}")
    freeze_store.extend(paths)
    log_offset = deployment.proxy.log_size()

    after = deployment.ssh(person, TARGET, code, "echo after-$((1 + 1))")

    assert b"after-2" not in after.stdout, after.describe()
    assert after.returncode != 0, after.describe()
    # The README ("Alerts"): a failure to write the audit trail goes straight to the log.
    log = deployment.proxy.log_since(log_offset).lower()
    assert "store" in log or "database" in log, log
