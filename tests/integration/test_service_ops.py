"""Operating the proxy as a service: sd_notify, reload on SIGHUP, graceful stop on
SIGTERM, recovery after SIGKILL. Real processes, real signals, a real NOTIFY_SOCKET."""

from __future__ import annotations

import hashlib
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.harness import (
    ProxyProcess,
    SshdTarget,
    asciinema_cat,
    free_port,
    issue_code,
    read_events,
    show,
    ssh,
    ssh_start,
    user_at,
    wait_for_session,
    write_proxy_config,
)
from tests.waiting import eventually

pytestmark = pytest.mark.slow


class NotifySocket:
    """The systemd side of sd_notify: a datagram socket the proxy writes to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(20)

    def next(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines() if "=" in line)

    def wait_for(self, key: str) -> dict[str, str]:
        for _ in range(10):
            message = self.next()
            if key in message:
                return message
        raise AssertionError(f"no {key} notification")


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    n = NotifySocket(tmp_path / "notify.sock")
    yield n
    n.sock.close()


def _config(tmp: Path, port: int, targets: dict[str, dict[str, object]]) -> Path:
    return write_proxy_config(tmp, port, targets)


def test_notify_reload_and_stop(tmp_path: Path, target: SshdTarget, notify: NotifySocket) -> None:
    port = free_port()
    config = _config(tmp_path, port, {"db01": target.target_entry()})
    proxy = ProxyProcess.start(config, env={"NOTIFY_SOCKET": str(notify.path)})
    try:
        ready = notify.wait_for("READY")
        assert ready["READY"] == "1"
        assert ready["MAINPID"] == str(proxy.process.pid)

        # A good reload: a new target is reachable by new logins.
        _config(tmp_path, port, {"db01": target.target_entry(), "db02": target.target_entry()})
        proxy.process.send_signal(signal.SIGHUP)
        assert notify.wait_for("RELOADING")["RELOADING"] == "1"
        assert "reloaded" in notify.wait_for("READY")["STATUS"]
        code = issue_code(config, "alice")
        result = ssh(port, user_at("alice", "db02"), code, "echo via-db02")
        assert result.returncode == 0, result.describe()
        assert b"via-db02" in result.stdout

        # A bad reload keeps the running config and says why.
        good = config.read_text()
        config.write_text(good + "\nbogus_key: 1\n")
        proxy.process.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING")
        assert "refused" in notify.wait_for("READY")["STATUS"]
        failed = [e for e in read_events(proxy.database) if e.type == "config_reload_failed"]
        assert len(failed) == 1
        assert any("bogus_key" in p for p in failed[0].data["problems"])
        alerts = [
            e
            for e in read_events(proxy.database)
            if e.type == "alert" and e.data.get("rule") == "config_reload_failed"
        ]
        assert len(alerts) == 1, alerts
        result = ssh(port, user_at("alice", "db02"), code, "echo still-db02")
        assert result.returncode == 0, result.describe()

        proxy.process.send_signal(signal.SIGTERM)
        assert notify.wait_for("STOPPING")["STOPPING"] == "1"
        assert proxy.process.wait(30) == 0
    finally:
        proxy.stop()


def test_live_sessions_keep_running_through_a_reload(tmp_path: Path, target: SshdTarget) -> None:
    port = free_port()
    config = _config(tmp_path, port, {"db01": target.target_entry()})
    proxy = ProxyProcess.start(config)
    try:
        code = issue_code(config, "bob")
        run = ssh_start(port, user_at("bob", "db01"), code, "read line; echo got-$line")
        wait_for_session(config, "bob", ended=False)
        # The reload removes the live session's target: the session must not notice.
        _config(tmp_path, port, {"web01": target.target_entry()})
        proxy.process.send_signal(signal.SIGHUP)
        eventually(
            lambda: any(e.type == "config_reloaded" for e in read_events(proxy.database)),
            within=15,
            what="config_reloaded event",
        )
        result = run.wait(stdin=b"hello\n")
        assert result.returncode == 0, result.describe()
        assert b"got-hello" in result.stdout
        session = wait_for_session(config, "bob")
        assert session["end_reason"] == "client_exit"
        refused = ssh(port, user_at("bob", "db01"), code, "true")
        assert refused.returncode == 255
    finally:
        proxy.stop()


def test_sigterm_ends_every_session_cleanly(tmp_path: Path, target: SshdTarget) -> None:
    port = free_port()
    config = _config(tmp_path, port, {"db01": target.target_entry()})
    proxy = ProxyProcess.start(config)
    code = issue_code(config, "carol")
    runs = [
        ssh_start(port, user_at("carol", "db01"), code, "echo started; sleep 60"),
        ssh_start(port, user_at("carol", "db01"), code, None, tty=True),
    ]
    try:
        wait_for_session(config, "carol", count=2, ended=False)
        proxy.process.send_signal(signal.SIGTERM)
        assert proxy.process.wait(30) == 0
        for run in runs:
            result = run.wait(timeout=20)
            assert result.returncode != 0
            assert b"shutting down" in result.stdout + result.stderr
    finally:
        for run in runs:
            if run.process.poll() is None:
                run.kill()
        proxy.stop()
    sessions = wait_for_session(config, "carol", count=2)
    ids = [e.row["session_id"] for e in read_events(proxy.database) if e.type == "session_start"]
    assert len(ids) == 2
    for sid in ids:
        doc = show(config, str(sid))
        assert doc["end_reason"] == "proxy_shutdown", sessions
        for channel in doc["channels"]:
            cast = Path(channel["recording"])
            assert channel["ended_at"] is not None
            assert channel["recording_sha256"] == hashlib.sha256(cast.read_bytes()).hexdigest()
            assert asciinema_cat(cast).returncode == 0


def test_sigkill_then_restart_recovers(tmp_path: Path, target: SshdTarget) -> None:
    port = free_port()
    config = _config(tmp_path, port, {"db01": target.target_entry()})
    proxy = ProxyProcess.start(config)
    code = issue_code(config, "dave")
    run = ssh_start(
        port, user_at("dave", "db01"), code, "for i in $(seq 1 100000); do echo line $i; done"
    )
    try:
        session = wait_for_session(config, "dave", ended=False)
        sid = str(session["id"])

        def has_cast_data() -> bool:
            doc = show(config, sid)
            chans = doc["channels"]
            return bool(chans) and Path(chans[0]["recording"]).stat().st_size > 4096

        eventually(has_cast_data, within=15, what="cast data on disk")
        proxy.process.send_signal(signal.SIGKILL)
        proxy.process.wait(10)
    finally:
        run.kill()
    committed = [e.row["hash"] for e in read_events(proxy.database)]
    restarted = ProxyProcess.start(config)
    try:
        doc = show(config, sid)
        assert doc["end_reason"] == "interrupted"
        channel = doc["channels"][0]
        cast = Path(channel["recording"])
        data = cast.read_bytes()
        assert data.endswith(b"\n")
        assert channel["recording_sha256"] == hashlib.sha256(data).hexdigest()
        played = asciinema_cat(cast)
        assert played.returncode == 0, played.stderr
        assert b"line 1\r\n" in played.stdout or b"line 1\n" in played.stdout
        # Nothing committed before the kill was lost.
        after = [e.row["hash"] for e in read_events(restarted.database)]
        assert after[: len(committed)] == committed
        # And the proxy serves again.
        result = ssh(port, user_at("dave", "db01"), code, "echo back")
        assert result.returncode == 0, result.describe()
    finally:
        restarted.stop()


def test_the_default_config_loads_and_runs(tmp_path: Path) -> None:
    """The shipped config/proxy.yaml, relocated so its relative paths land in tmp."""
    shipped = Path(__file__).resolve().parents[2] / "config" / "proxy.yaml"
    document = yaml.safe_load(shipped.read_text())
    assert document["listen"]["host"] == "127.0.0.1"
    folder = tmp_path / "config"
    folder.mkdir()
    port = free_port()
    text = shipped.read_text().replace("port: 2222", f"port: {port}")
    (folder / "proxy.yaml").write_text(text)
    proxy = ProxyProcess.start(folder / "proxy.yaml")
    try:
        key = tmp_path / "recordings" / "ssh_host_ed25519_key"
        assert key.exists()
        assert key.stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "recordings" / "audit.db").exists()
    finally:
        assert proxy.stop() == 0
