"""Each alert sink against a real receiver on 127.0.0.1 (or a real hook program)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.alerts.payload import AlertContext, build
from proxy.alerts.sinks import (
    CommandSink,
    Outgoing,
    SinkError,
    SyslogSink,
    WebhookSink,
    make_sinks,
    rfc5424,
    sink_key,
)
from proxy.config.model import SinkConfig
from proxy.core import anomaly, chain
from tests.integration.alertkit import (
    SECRET,
    SyslogListener,
    WebhookReceiver,
    command_hook,
    hook_payloads,
    self_signed,
    syslog_json,
    unused_loopback_port,
)

HOSTILE = "INC-7 \r\nFAKE RECORD\x1b]52;c;AAAA\x07 \u202e bidi \u00e9"


def outgoing(rule: str = "session_start") -> Outgoing:
    alert = build(
        anomaly.Firing(rule, "detail"),
        AlertContext(session_id="S1", person="alice", target="db01", justification=HOSTILE),
        1_700_000_000.0,
        proxy="bastion",
    )
    return Outgoing.of(chain.canonical(alert.payload))


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "hook.secret"
    path.write_bytes(SECRET + b"\n")  # `echo secret > file`: the newline is not the key
    path.chmod(0o600)
    return path


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver().start()
    yield r
    r.stop()


# --------------------------------------------------------------------------- webhook


async def test_webhook_posts_the_signed_payload(
    receiver: WebhookReceiver, secret_file: Path
) -> None:
    sink = WebhookSink("w", receiver.url, secret_file, 5.0)
    alert = outgoing()

    assert await sink.send(alert) == "HTTP 204"

    (got,) = receiver.requests
    assert got.signature_ok
    assert got.body == alert.body
    assert got.headers["x-breakglass-signature"] == (
        "sha256=" + hmac.new(SECRET, alert.body, hashlib.sha256).hexdigest()
    )
    assert got.headers["x-breakglass-alert-id"] == alert.alert_id
    assert got.headers["content-type"].startswith("application/json")
    assert got.doc()["justification"] == HOSTILE


async def test_a_wrong_secret_is_refused_by_the_receiver(
    receiver: WebhookReceiver, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.secret"
    wrong.write_bytes(b"not-the-secret")
    with pytest.raises(SinkError, match="HTTP 401"):
        await WebhookSink("w", receiver.url, wrong, 5.0).send(outgoing())


async def test_webhook_500_is_a_failure(receiver: WebhookReceiver, secret_file: Path) -> None:
    receiver.mode = "fail"
    with pytest.raises(SinkError, match="HTTP 500"):
        await WebhookSink("w", receiver.url, secret_file, 5.0).send(outgoing())


async def test_webhook_down_is_a_failure(secret_file: Path) -> None:
    url = f"http://127.0.0.1:{unused_loopback_port()}/"
    with pytest.raises(SinkError, match="HTTP request failed"):
        await WebhookSink("w", url, secret_file, 5.0).send(outgoing())


async def test_webhook_that_hangs_times_out(receiver: WebhookReceiver, secret_file: Path) -> None:
    receiver.mode = "slow"
    receiver.delay = 3.0
    with pytest.raises(SinkError, match=r"no answer within 0\.3s"):
        await WebhookSink("w", receiver.url, secret_file, 0.3).send(outgoing())


async def test_webhook_tls_verifies_the_certificate(tmp_path: Path, secret_file: Path) -> None:
    cert, key = self_signed(tmp_path)
    r = WebhookReceiver(tls=(cert, key)).start()
    try:
        url = f"https://127.0.0.1:{r.port}/hook"
        with pytest.raises(SinkError, match="CERTIFICATE_VERIFY_FAILED"):
            await WebhookSink("w", url, secret_file, 5.0).send(outgoing())
        assert r.requests == []
        # The same server, once its certificate is trusted: delivered over TLS.
        trusting = ssl.create_default_context(cafile=str(cert))
        assert await WebhookSink("w", url, secret_file, 5.0, trusting).send(outgoing()) == (
            "HTTP 204"
        )
        assert len(r.delivered()) == 1
    finally:
        r.stop()


async def test_an_unreadable_secret_is_a_failure_without_the_path_content(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="cannot read the webhook secret"):
        await WebhookSink("w", "http://127.0.0.1:9/", tmp_path / "missing", 1.0).send(outgoing())


def test_webhook_sink_key_hides_the_url_path_and_query() -> None:
    key = sink_key(SinkConfig(type="webhook", url="https://hooks.example/T0/B1/XXXX?token=abc"))
    assert key.startswith("webhook:https://hooks.example:443#")
    assert "XXXX" not in key
    assert "token" not in key


# --------------------------------------------------------------------------- syslog


def test_rfc5424_is_one_ascii_line_that_no_field_can_break() -> None:
    payload = outgoing().payload()
    message = rfc5424(payload, pid=4242)
    text = message.decode("ascii")
    assert "\n" not in text
    assert "\r" not in text
    assert "\x1b" not in text
    # <authpriv.warning>1 TIMESTAMP HOST APP PROCID MSGID SD MSG
    assert re.match(
        r"<84>1 2023-11-14T22:13:20\.000Z bastion breakglass 4242 session_start - \{", text
    ), text
    assert syslog_json(message)["justification"] == HOSTILE


def test_rfc5424_severity_follows_the_rule() -> None:
    assert rfc5424({"rule": "max_sessions_total"}, pid=1).startswith(b"<81>1 ")  # alert
    assert rfc5424({"rule": "store_write_failed"}, pid=1).startswith(b"<82>1 ")  # crit


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_syslog_over_the_network(proto: str) -> None:
    listener = SyslogListener(proto).start()
    try:
        alert = outgoing()
        note = await SyslogSink("s", listener.address, 5.0).send(alert)
        assert proto in note
        message = listener.wait_for(alert.alert_id)
        assert syslog_json(message)["alert_id"] == alert.alert_id
        assert message.startswith(b"<84>1 ")
    finally:
        listener.stop()


async def test_syslog_tcp_down_is_a_failure() -> None:
    address = f"tcp://127.0.0.1:{unused_loopback_port()}"
    with pytest.raises(SinkError, match="syslog send failed"):
        await SyslogSink("s", address, 5.0).send(outgoing())


async def test_syslog_to_a_local_datagram_socket(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(10)
        alert = outgoing()
        await SyslogSink("s", str(path), 5.0).send(alert)
        message = server.recv(65536)
    assert syslog_json(message)["alert_id"] == alert.alert_id


async def test_syslog_to_a_missing_local_socket_is_a_failure(tmp_path: Path) -> None:
    with pytest.raises(SinkError):
        await SyslogSink("s", str(tmp_path / "nothing"), 1.0).send(outgoing())


# --------------------------------------------------------------------------- command


async def test_command_gets_the_payload_on_stdin_and_a_minimal_environment(
    tmp_path: Path,
) -> None:
    script, out = command_hook(tmp_path)
    os.environ["BREAKGLASS_TEST_LEAK"] = "leaked"
    try:
        alert = outgoing()
        assert await CommandSink("c", [str(script), "--flag"], 5.0).send(alert) == "exit 0"
    finally:
        del os.environ["BREAKGLASS_TEST_LEAK"]
    (doc,) = hook_payloads(out)
    assert doc == json.loads(alert.body)
    env_line = next(line for line in out.read_text().splitlines() if line.startswith("ENV "))
    assert f"BREAKGLASS_ALERT_ID={alert.alert_id}" in env_line
    assert "BREAKGLASS_ALERT_RULE=session_start" in env_line
    assert "leaked" not in env_line
    assert "HOME=" not in env_line


async def test_command_is_never_run_through_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # With a shell, this argument would create the marker file.
    sink = CommandSink("c", ["/bin/echo", f"; touch {marker}"], 5.0)
    await sink.send(outgoing())
    assert not marker.exists()


async def test_command_failure_says_the_exit_status(tmp_path: Path) -> None:
    script, _ = command_hook(tmp_path, exit_status=3)
    with pytest.raises(SinkError, match="exited 3"):
        await CommandSink("c", [str(script)], 5.0).send(outgoing())


async def test_command_that_hangs_is_killed_at_the_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = tmp_path / "hang.sh"
    script.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 30\n")
    script.chmod(0o700)
    with pytest.raises(SinkError, match=r"did not finish within 0\.5s"):
        await CommandSink("c", [str(script)], 0.5).send(outgoing())
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone (reaped), not left behind


async def test_a_missing_program_is_a_failure(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="cannot run"):
        await CommandSink("c", [str(tmp_path / "nope")], 1.0).send(outgoing())


def test_make_sinks_builds_one_per_distinct_sink(tmp_path: Path) -> None:
    configs = [
        SinkConfig(type="syslog", address="udp://127.0.0.1:514"),
        SinkConfig(type="syslog", address="udp://127.0.0.1:514"),
        SinkConfig(type="command", argv=("/bin/true",)),
        SinkConfig(type="webhook", url="http://127.0.0.1:1/x", secret_file=tmp_path / "s"),
    ]
    keys = [s.key for s in make_sinks(configs)]
    assert keys[:2] == ["syslog:udp://127.0.0.1:514", "command:/bin/true"]
    assert keys[2].startswith("webhook:http://127.0.0.1:1#")
