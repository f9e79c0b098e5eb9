"""Packaging and the scripts around it (issue 19, items 9-11): the SPDX licence in the
installed metadata, a first run of ``./breakglass`` that leaves one line in the log it
writes to, and ``run-tests`` waiting for apt's lock and installing Dropbear's client.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.integration.harness import REPO_ROOT


def test_license_is_an_spdx_expression() -> None:
    metadata = importlib.metadata.metadata("breakglass")
    assert metadata["License-Expression"] == "Apache-2.0"
    assert "LICENSE" in (metadata.get_all("License-File") or [])


def _checkout_copy(destination: Path) -> Path:
    shutil.copytree(
        REPO_ROOT,
        destination,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "recordings", "tests", "benchmarks", "docs", "*.egg-info", ".*cache"
        ),
    )
    return destination


@pytest.mark.slow
def test_first_run_leaves_one_line_in_the_log(tmp_path: Path) -> None:
    """``./breakglass`` installs on first use; what the installers print goes to
    .venv/bootstrap.log, and the command's stderr (serve's log) gets one line.

    The copy's venv sees this venv's packages (a .pth file), so the real bootstrap runs
    the real pip quickly: only breakglass itself is installed."""
    checkout = _checkout_copy(tmp_path / "checkout")
    venv = checkout / ".venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    [site] = list(venv.glob("lib/python3*/site-packages"))
    (site / "parent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {key: value for key, value in os.environ.items() if key != "BREAKGLASS_CONFIG"}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(checkout / "breakglass"), "config", "check"],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=400,
            env=env,
            check=False,
        )

    first = run()
    assert first.returncode == 0, first
    lines = first.stderr.splitlines()
    assert len(lines) == 1, first.stderr
    assert lines[0].startswith("breakglass: installed into .venv in "), lines
    assert (venv / "bootstrap.log").exists()
    assert (venv / ".breakglass-stamp").exists()

    again = run()
    assert again.returncode == 0, again
    assert again.stderr == "", again.stderr
    assert again.stdout == first.stdout


def test_run_tests_waits_for_apt_and_installs_dropbear(tmp_path: Path) -> None:
    """``run-tests`` as root on a machine without the clients: its apt-get calls (a
    stand-in that records them; the real one would change the machine) wait for the
    lock and ask for dropbear-bin."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "apt-calls"
    (bin_dir / "apt-get").write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\ncase "$*" in *install*) exit 42;; esac\n'
    )
    (bin_dir / "id").write_text("#!/bin/sh\necho 0\n")
    for tool in ("apt-get", "id"):
        (bin_dir / tool).chmod(0o755)
    for tool in ("dirname", "sh"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    done = subprocess.run(
        ["/bin/bash", str(REPO_ROOT / "run-tests")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(bin_dir)},
        check=False,
    )
    assert done.returncode == 42, done
    update, install = calls.read_text().splitlines()
    for call in (update, install):
        assert call.startswith("-o DPkg::Lock::Timeout=300 "), call
    assert "update" in update
    assert "dropbear-bin" in install.split(), install
