"""A full disk under the recordings: the session that cannot be recorded is closed,
new sessions are refused with a clear message, nothing written is corrupted, and with
space back the proxy serves again by itself. A real tmpfs, real clients."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import (
    ProxyProcess,
    SshdTarget,
    asciinema_cat,
    free_port,
    issue_code,
    read_events,
    show,
    ssh,
    user_at,
    wait_for_session,
    write_proxy_config,
)
from tests.waiting import eventually

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_recordings_disk_fails_closed_and_recovers(
    tmp_path: Path, small_disk: Path, target: SshdTarget
) -> None:
    recordings = small_disk / "recordings"
    recordings.mkdir(mode=0o700)
    port = free_port()
    config = write_proxy_config(tmp_path / "proxy", port, {"db01": target.target_entry()})
    text = config.read_text().replace(str(tmp_path / "proxy" / "recordings"), str(recordings))
    config.write_text(text)
    # min_free/warn_free small enough for a 6 MiB disk.
    config.write_text(
        config.read_text().replace(
            f"recordings: {recordings}",
            f"recordings: {recordings}\n  min_free: 1MiB\n  warn_free: 2MiB",
        )
    )
    proxy = ProxyProcess.start(config)
    try:
        code = issue_code(config, "erin")
        # 1. A session whose output outgrows the disk is closed, and says why.
        big = ssh(port, user_at("erin", "db01"), code, "head -c 30000000 /dev/zero | base64")
        assert big.returncode != 0
        assert b"recording cannot be written" in big.stderr, big.describe()
        session = wait_for_session(config, "erin")
        assert session["end_reason"] == "recording_error"
        doc = show(config, str(session["id"]))
        assert [e for e in doc["events"] if e["type"] == "recording_failed"]
        channel = doc["channels"][0]
        cast = Path(channel["recording"])
        # What was written is intact: whole lines, hashed, replayable.
        data = cast.read_bytes()
        assert data.endswith(b"\n")
        assert channel["recording_sha256"] == hashlib.sha256(data).hexdigest()
        assert asciinema_cat(cast).returncode == 0

        # 2. With the disk (nearly) full, a new login is refused with a clear reason.
        filler = small_disk / "filler"
        # Unbuffered: the write that hits ENOSPC fails here, not at close.
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        refused = ssh(port, user_at("erin", "db01"), code, "echo no")
        assert refused.returncode == 255
        assert b"disk is almost full" in refused.stderr, refused.describe()
        eventually(
            lambda: any(e.data.get("reason") == "disk_full" for e in read_events(proxy.database)),
            within=15,
            what="a login_failed event with reason disk_full",
        )

        # 3. Space back: the proxy serves again by itself.
        os.unlink(filler)
        cast.unlink()
        back = ssh(port, user_at("erin", "db01"), code, "echo back")
        assert back.returncode == 0, back.describe()
        assert b"back" in back.stdout
    finally:
        proxy.stop()


def test_a_session_past_its_recording_limit_is_closed_not_recorded_partially(
    tmp_path: Path, target: SshdTarget
) -> None:
    port = free_port()
    config = write_proxy_config(
        tmp_path,
        port,
        {"db01": target.target_entry()},
        recording={"max_session_bytes": "256KiB"},
    )
    proxy = ProxyProcess.start(config)
    try:
        code = issue_code(config, "fay")
        result = ssh(port, user_at("fay", "db01"), code, "seq 1 3000000")
        assert result.returncode != 0
        assert b"reached their limit of 256KiB" in result.stderr, result.describe()
        # The engineer did not get the whole output: the session was cut.
        assert b"\n3000000\n" not in result.stdout
        session = wait_for_session(config, "fay")
        assert session["end_reason"] == "recording_limit"
        doc = show(config, str(session["id"]))
        assert [e for e in doc["events"] if e["type"] == "recording_limit"]
        channel = doc["channels"][0]
        cast = Path(channel["recording"])
        data = cast.read_bytes()
        # Bounded: the cap plus at most one write buffer, and intact.
        assert len(data) < 256 * 1024 + 128 * 1024
        assert channel["recording_sha256"] == hashlib.sha256(data).hexdigest()
        assert asciinema_cat(cast).returncode == 0
    finally:
        proxy.stop()
