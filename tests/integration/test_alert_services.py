"""The Slack, Teams, PagerDuty, JSM and e-mail sinks against real receivers on
127.0.0.1: HTTPS servers with a test CA the sinks are told to trust (``ca_file``), and
aiosmtpd over STARTTLS. Each request is checked against the service's documented
payload (required fields and their types), and a hostile justification and person
(mentions, links, Markdown, CR/LF, ANSI, a bidi override) must arrive inert. A sink
that is down, then up, receives every alert with its ``alert_id``; no secret reaches a
log line or a delivery record."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.alerts.base import Outgoing, SinkError
from proxy.alerts.chat import ChatSink
from proxy.alerts.delivery import Backoff, Deliverer
from proxy.alerts.mail import EmailSink
from proxy.alerts.paging import JsmSink, PagerDutySink
from proxy.alerts.payload import AlertContext, build
from proxy.alerts.sinks import Sink, make_sinks
from proxy.config.model import SinkConfig
from proxy.core import anomaly, chain
from proxy.store.base import NewAlert, NewEvent
from proxy.store.sqlite import SQLiteStore
from tests.clock import ManualClock
from tests.integration.alertkit import (
    SECRET,
    SyslogListener,
    WebhookReceiver,
    command_hook,
    config_with,
    hook_payloads,
    syslog_json,
)
from tests.integration.harness import run_cli
from tests.integration.servicekit import (
    HttpsReceiver,
    LocalCA,
    Request,
    SmtpReceiver,
    make_test_ca,
    write_secret,
)
from tests.waiting import eventually_async

HOSTILE = (
    "INC-9 <!channel> <!here> @here @channel <@U012AB3CD> <https://evil.example/x|click here>"
    " [docs](https://evil.example/y) *bold* _it_ `code` ~s~ **md**\r\n"
    "Bcc: victim@evil.example\r\nX-Injected: 1\n\x1b[31mRED\x1b[0m\x1b]52;c;AAAA\x07 \u202eevil"
)
HOSTILE_PERSON = "mallory\r\nBcc: victim@evil.example"
SLACK_TOKEN_PATH = "/services/T000SECRET/B000SECRET/XXXXslacksecretXXXX"
TEAMS_TOKEN_PATH = "/workflows/teamssecret0123/triggers/manual/paths/invoke?sig=teamssig0123"
ROUTING_KEY = "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY12"
API_KEY = "a1b2c3d4-jsm-api-key-secret-5678"
SMTP_PASSWORD = "smtp-pass-SECRET-42"
SECRETS = (
    "slacksecret",
    "teamssecret",
    "teamssig",
    ROUTING_KEY,
    API_KEY,
    SMTP_PASSWORD,
)
# Retries on a driven clock (tests/clock.py): the backoff costs no real time.
BACKOFF = Backoff(base=2.0, factor=2.0, cap=60.0)
NOW = 1_700_000_000.0
HOSTILE_MARK = "evil.example"


def alert(
    rule: str = "session_start",
    *,
    justification: str = HOSTILE,
    person: str = HOSTILE_PERSON,
    now: float = NOW,
) -> NewAlert:
    return build(
        anomaly.Firing(rule, f"detail for {person}", flag=False),
        AlertContext(
            session_id="1M8D55D61GDK",
            person=person,
            source="192.0.2.7",
            target="db01",
            login="root",
            justification=justification,
            credential_id="D42GR6",
        ),
        now,
        proxy="bastion-1",
    )


def outgoing(rule: str = "session_start", **kw: Any) -> Outgoing:
    return Outgoing.of(chain.canonical(alert(rule, **kw).payload))


# ------------------------------------------------------------------- payload checks


def walk(node: Any, parent: Any = None, key: Any = None) -> Iterator[tuple[Any, Any, Any]]:
    """Every (value, parent, key) in a JSON document."""
    yield node, parent, key
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, node, k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, node, i)


def strings(doc: Any) -> list[tuple[str, Any, Any]]:
    return [(v, p, k) for v, p, k in walk(doc) if isinstance(v, str)]


def assert_one_line_each(doc: Any) -> None:
    for text, _, key in strings(doc):
        assert all(ch >= " " and ch != "\x7f" for ch in text), (key, text)
        assert "\u202e" not in text, (key, text)


def check_slack(doc: dict[str, Any]) -> None:
    """Incoming webhook + Block Kit: ``text`` (str), ``blocks`` (header/section/context
    with text objects within Slack's limits); untrusted text only in plain_text."""
    assert isinstance(doc["text"], str)
    assert doc["text"]
    assert doc["unfurl_links"] is False
    assert doc["unfurl_media"] is False
    assert doc["mrkdwn"] is False
    assert isinstance(doc["blocks"], list)
    assert doc["blocks"]
    for block in doc["blocks"]:
        assert block["type"] in ("header", "section", "context")
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text"
            assert 1 <= len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            assert "text" in block or "fields" in block
            for f in block.get("fields", []):
                assert f["type"] == "plain_text"
                assert 1 <= len(f["text"]) <= 2000
            assert len(block.get("fields", [])) <= 10
            if "text" in block:
                assert block["text"]["type"] in ("plain_text",)
                assert 1 <= len(block["text"]["text"]) <= 3000
        if block["type"] == "context":
            assert 1 <= len(block["elements"]) <= 10
    types = [v.get("type") for v, _, _ in walk(doc) if isinstance(v, dict)]
    assert "mrkdwn" not in types
    hostile = [(t, p, k) for t, p, k in strings(doc) if HOSTILE_MARK in t]
    assert hostile, "the justification must be shown"
    for _, parent, key in hostile:
        assert key == "text", parent
        assert parent.get("type") == "plain_text", parent
        assert parent.get("emoji") is False
    assert HOSTILE_MARK not in doc["text"]  # the notification: our words only
    assert_one_line_each(doc)


def check_teams(doc: dict[str, Any]) -> None:
    """Workflows webhook: a message with one Adaptive Card attachment; untrusted text
    only in TextRuns (never in a Markdown-capable TextBlock or FactSet)."""
    assert doc["type"] == "message"
    (attachment,) = doc["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert isinstance(card["version"], str)
    assert isinstance(card["body"], list)
    assert card["body"]
    for element in card["body"]:
        assert element["type"] == "RichTextBlock"
        for inline in element["inlines"]:
            assert inline["type"] == "TextRun"
            assert isinstance(inline["text"], str)
    hostile = [(t, p, k) for t, p, k in strings(doc) if HOSTILE_MARK in t]
    assert hostile
    for _, parent, key in hostile:
        assert key == "text", parent
        assert parent.get("type") == "TextRun", parent
    assert_one_line_each(card)


def check_pagerduty(doc: dict[str, Any], want: Outgoing, severity: str) -> None:
    """Events API v2: routing_key, event_action, dedup_key, payload.summary (<= 1024),
    payload.source, payload.severity, custom_details."""
    assert doc["routing_key"] == ROUTING_KEY
    assert doc["event_action"] == "trigger"
    assert doc["dedup_key"] == want.alert_id
    body = doc["payload"]
    assert isinstance(body["summary"], str)
    assert 1 <= len(body["summary"]) <= 1024
    assert isinstance(body["source"], str)
    assert body["source"]
    assert body["severity"] == severity
    assert body["custom_details"] == want.payload()  # the payload, as data
    assert isinstance(body["timestamp"], str)
    assert_one_line_each({k: v for k, v in body.items() if k != "custom_details"})


def check_jsm(request: Request, want: Outgoing) -> None:
    """Operations alerts API: GenieKey auth; message (<= 130), alias = alert_id,
    description, priority P1-P5, details (string map), tags, source (<= 100)."""
    assert request.headers["authorization"] == f"GenieKey {API_KEY}"
    doc = request.json()
    assert isinstance(doc["message"], str)
    assert 1 <= len(doc["message"]) <= 130
    assert doc["alias"] == want.alert_id
    assert isinstance(doc["description"], str)
    assert len(doc["description"]) <= 15000
    assert doc["priority"] in ("P1", "P2", "P3", "P4", "P5")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in doc["details"].items())
    assert all(isinstance(t, str) for t in doc["tags"])
    assert 1 <= len(doc["source"]) <= 100
    assert doc["details"]["alert_id"] == want.alert_id
    assert_one_line_each({k: v for k, v in doc.items() if k != "description"})
    # The description is lines of "Label: value", each value escaped onto its line.
    assert all(all(ch >= " " for ch in line) for line in doc["description"].splitlines())


# ------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def https(ca: LocalCA) -> Iterator[HttpsReceiver]:
    r = HttpsReceiver(ca).start()
    yield r
    r.stop()


@pytest.fixture
def smtp(ca: LocalCA) -> Iterator[SmtpReceiver]:
    r = SmtpReceiver(ca, password=SMTP_PASSWORD).start()
    yield r
    r.stop()


def chat(kind: str, https: HttpsReceiver, tmp_path: Path, ca: Path | None) -> ChatSink:
    path = SLACK_TOKEN_PATH if kind == "slack" else TEAMS_TOKEN_PATH
    url_file = write_secret(tmp_path / f"{kind}.url", https.url(path))
    return ChatSink(f"{kind}:{url_file}", kind, url_file, 5.0, ca)


# ------------------------------------------------------------------------- each sink


async def test_slack_gets_block_kit_with_untrusted_text_only_in_plain_text(
    https: HttpsReceiver, ca: LocalCA, tmp_path: Path
) -> None:
    want = outgoing()
    assert await chat("slack", https, tmp_path, ca.ca).send(want) == "HTTP 202"
    (got,) = https.received()
    assert got.path == SLACK_TOKEN_PATH
    assert got.headers["content-type"].startswith("application/json")
    doc = got.json()
    check_slack(doc)
    shown = "\n".join(t for t, _, _ in strings(doc))
    # who, where, when, why, the session and the command to run
    for fact in ("db01", "root@db01", "192.0.2.7", "2023-11-14T22:13:20.000Z", "D42GR6"):
        assert fact in shown
    assert "breakglass show 1M8D55D61GDK" in shown
    assert "\u201cINC-9 <!channel>" in shown  # the justification, quoted
    assert "\\x1b[31mRED" in shown
    assert "\\x0d\\x0a" in shown


async def test_teams_gets_an_adaptive_card_with_untrusted_text_only_in_text_runs(
    https: HttpsReceiver, ca: LocalCA, tmp_path: Path
) -> None:
    want = outgoing()
    assert await chat("teams", https, tmp_path, ca.ca).send(want) == "HTTP 202"
    (got,) = https.received()
    assert got.path == TEAMS_TOKEN_PATH
    check_teams(got.json())
    shown = "\n".join(t for t, _, _ in strings(got.json()))
    assert "breakglass show 1M8D55D61GDK" in shown
    assert "root@db01" in shown


@pytest.mark.parametrize(
    ("rule", "severity"),
    [
        ("session_start", "warning"),
        ("not_allowed", "error"),
        ("store_write_failed", "critical"),
        ("drill", "info"),
    ],
)
async def test_pagerduty_gets_an_events_v2_trigger_deduplicated_by_alert_id(
    https: HttpsReceiver, ca: LocalCA, tmp_path: Path, rule: str, severity: str
) -> None:
    key_file = write_secret(tmp_path / "pd.key", ROUTING_KEY)
    sink = PagerDutySink("pd", key_file, 5.0, https.url("/v2/enqueue"), ca.ca)
    want = outgoing(rule)
    assert await sink.send(want) == "HTTP 202"
    (got,) = https.received()
    assert got.path == "/v2/enqueue"
    check_pagerduty(got.json(), want, severity)


async def test_jsm_gets_an_alert_whose_alias_is_the_alert_id(
    https: HttpsReceiver, ca: LocalCA, tmp_path: Path
) -> None:
    key_file = write_secret(tmp_path / "jsm.key", API_KEY)
    path = "/jsm/ops/integration/v2/alerts"
    sink = JsmSink("jsm", key_file, 5.0, https.url(path), ca.ca)
    want = outgoing("not_allowed")
    assert await sink.send(want) == "HTTP 202"
    (got,) = https.received()
    assert got.path == path
    check_jsm(got, want)
    assert got.json()["priority"] == "P2"


def email_sink(smtp: SmtpReceiver, tmp_path: Path, ca: LocalCA) -> EmailSink:
    auth = write_secret(tmp_path / "smtp.auth", f"alerts\n{SMTP_PASSWORD}")
    return EmailSink(
        f"email:{smtp.port}",
        host="127.0.0.1",
        port=smtp.port,
        tls="starttls",
        sender="breakglass@example.com",
        recipients=("oncall@example.com", "security@example.com"),
        timeout=10.0,
        auth_file=auth,
        ca_file=ca.ca,
    )


async def test_email_goes_over_starttls_with_a_clean_subject_and_a_verbatim_body(
    smtp: SmtpReceiver, ca: LocalCA, tmp_path: Path
) -> None:
    want = outgoing()
    note = await email_sink(smtp, tmp_path, ca).send(want)
    assert "accepted" in note
    assert smtp.logins == ["alerts"]  # authenticated, which aiosmtpd allows only after TLS
    (msg,) = smtp.messages
    assert smtp.envelopes == [
        ("breakglass@example.com", ["oncall@example.com", "security@example.com"])
    ]
    subject = str(msg["Subject"])
    assert "\r" not in subject
    assert "\n" not in subject
    assert subject.startswith("[breakglass] Break-glass session started: mallory")
    assert subject.endswith(" on db01")
    # No header was smuggled in by the person or the justification.
    assert msg["Bcc"] is None
    assert msg["X-Injected"] is None
    assert sorted(k.lower() for k in msg) == sorted(
        [
            "subject",
            "from",
            "to",
            "message-id",
            "x-breakglass-alert-id",
            "x-breakglass-rule",
            "auto-submitted",
            "date",
            "content-type",
            "content-transfer-encoding",
            "mime-version",
        ]
    )
    assert msg["X-Breakglass-Alert-Id"] == want.alert_id
    assert want.alert_id in str(msg["Message-ID"])
    assert msg.get_content_type() == "text/plain"
    body = msg.get_content()
    # Verbatim: every character of the justification, line breaks as line breaks.
    for line in HOSTILE.replace("\r\n", "\n").split("\n"):
        assert line in body
    assert "breakglass show 1M8D55D61GDK" in body
    assert "root@db01" in body
    assert "192.0.2.7" in body


async def test_email_refuses_a_server_that_does_not_offer_starttls(
    ca: LocalCA, tmp_path: Path
) -> None:
    plain = SmtpReceiver(ca, password=SMTP_PASSWORD, starttls=False).start()
    try:
        with pytest.raises(SinkError, match="STARTTLS"):
            await email_sink(plain, tmp_path, ca).send(outgoing())
        assert plain.messages == []
    finally:
        plain.stop()


async def test_without_the_ca_file_the_test_certificate_is_refused(
    https: HttpsReceiver, smtp: SmtpReceiver, ca: LocalCA, tmp_path: Path
) -> None:
    """Verified against the system's trust store: the test CA is not in it."""
    key_file = write_secret(tmp_path / "k", ROUTING_KEY)
    sinks: list[Sink] = [
        chat("slack", https, tmp_path, None),
        chat("teams", https, tmp_path, None),
        PagerDutySink("pd", key_file, 5.0, https.url("/v2/enqueue")),
        JsmSink("jsm", key_file, 5.0, https.url("/alerts")),
    ]
    for sink in sinks:
        with pytest.raises(SinkError, match="CERTIFICATE_VERIFY_FAILED"):
            await sink.send(outgoing())
    mail = email_sink(smtp, tmp_path, ca)
    mail.ca_file = None
    with pytest.raises(SinkError, match="CERTIFICATE_VERIFY_FAILED"):
        await mail.send(outgoing())
    assert https.received() == []
    assert smtp.messages == []


def test_sink_keys_never_hold_a_secret(tmp_path: Path) -> None:
    configs = [
        SinkConfig(type="slack", url_file=tmp_path / "slack.url"),
        SinkConfig(type="teams", url_file=tmp_path / "teams.url"),
        SinkConfig(type="pagerduty", key_file=tmp_path / "pd.key"),
        SinkConfig(type="jsm", key_file=tmp_path / "jsm.key", url="https://jsm.example/a?k=x"),
        SinkConfig(type="email", host="smtp.example", port=587, mail_to=("a@example.com",)),
    ]
    keys = [s.key for s in make_sinks(configs)]
    assert keys[0] == f"slack:{tmp_path / 'slack.url'}"
    assert keys[3] == f"jsm:{tmp_path / 'jsm.key'}@https://jsm.example:443"
    assert keys[4].startswith("email:smtp.example:587#")
    assert len(set(keys)) == 5


# --------------------------------------------------------- down, then up, with retries


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "audit.db")
    yield s
    await s.close()


async def test_every_sink_down_then_up_receives_every_alert_and_no_secret_is_logged(
    store: SQLiteStore,
    ca: LocalCA,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="breakglass")
    receivers = {kind: HttpsReceiver(ca) for kind in ("slack", "teams", "pagerduty", "jsm")}
    mail = SmtpReceiver(ca, password=SMTP_PASSWORD)  # not started: down
    ca_file = str(ca.ca)
    slack_url = write_secret(tmp_path / "slack.url", receivers["slack"].url(SLACK_TOKEN_PATH))
    teams_url = write_secret(tmp_path / "teams.url", receivers["teams"].url(TEAMS_TOKEN_PATH))
    configs = [
        SinkConfig(type="slack", url_file=slack_url, ca_file=Path(ca_file), timeout=3.0),
        SinkConfig(type="teams", url_file=teams_url, ca_file=Path(ca_file), timeout=3.0),
        SinkConfig(
            type="pagerduty",
            key_file=write_secret(tmp_path / "pd.key", ROUTING_KEY),
            url=receivers["pagerduty"].url("/v2/enqueue"),
            ca_file=Path(ca_file),
            timeout=3.0,
        ),
        SinkConfig(
            type="jsm",
            key_file=write_secret(tmp_path / "jsm.key", API_KEY),
            url=receivers["jsm"].url("/jsm/ops/integration/v2/alerts"),
            ca_file=Path(ca_file),
            timeout=3.0,
        ),
        SinkConfig(
            type="email",
            host="127.0.0.1",
            port=mail.port,
            tls="starttls",
            auth_file=write_secret(tmp_path / "smtp.auth", f"alerts\n{SMTP_PASSWORD}"),
            mail_from="breakglass@example.com",
            mail_to=("oncall@example.com",),
            ca_file=Path(ca_file),
            timeout=3.0,
        ),
    ]
    sinks = make_sinks(configs)
    alerts = [alert("session_start", now=NOW + i, person=f"p{i}") for i in range(3)]
    await store.append_with_alerts([NewEvent("test", NOW)], alerts)
    wanted = {a.alert_id for a in alerts}
    clock = ManualClock(NOW)
    deliverer = Deliverer(store, sinks, backoff=BACKOFF, poll=1.0, clock=clock)
    stop = asyncio.Event()
    task = asyncio.create_task(deliverer.run(stop))
    try:

        async def failed_everywhere() -> bool:
            async with store._db.execute(
                "SELECT COUNT(DISTINCT sink) FROM alert_deliveries WHERE ok = 0"
            ) as cur:
                row = await cur.fetchone()
            return row is not None and int(row[0]) == len(sinks)

        await eventually_async(failed_everywhere, what="a failed attempt on every sink", within=20)
        for r in receivers.values():
            r.start()
        mail.start()

        def http_ids(kind: str) -> set[str]:
            docs = [r.json() for r in receivers[kind].received()]
            if kind == "pagerduty":
                return {d["dedup_key"] for d in docs}
            if kind == "jsm":
                return {d["alias"] for d in docs}
            shown = "\n".join(t for d in docs for t, _, _ in strings(d))
            return {a for a in wanted if a in shown}

        async def all_delivered() -> bool:
            got = {kind: http_ids(kind) for kind in receivers}
            got["email"] = {str(m["X-Breakglass-Alert-Id"]) for m in list(mail.messages)}
            return all(ids >= wanted for ids in got.values())

        await clock.jump_until(all_delivered, what="every alert on every sink")

        async def states() -> bool:
            return all([await store.alert_state(a) == "delivered" for a in wanted])

        await eventually_async(states, what="every alert marked delivered", within=20)
    finally:
        stop.set()
        await task
        for r in receivers.values():
            r.stop()
        mail.stop()
    async with store._db.execute("SELECT sink, detail FROM alert_deliveries") as cur:
        records = [f"{s} {d}" for s, d in await cur.fetchall()]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "not delivered" in logged
    assert "delivered to" in logged
    for secret in SECRETS:
        assert secret not in logged
        assert not any(secret in r for r in records)


# ------------------------------------------------------------------ drill, every type


def test_drill_reaches_every_sink_type(ca: LocalCA, tmp_path: Path) -> None:
    https = {kind: HttpsReceiver(ca).start() for kind in ("slack", "teams", "pagerduty", "jsm")}
    mail = SmtpReceiver(ca, password=SMTP_PASSWORD).start()
    webhook = WebhookReceiver().start()
    udp, tcp_all = SyslogListener("udp").start(), SyslogListener("tcp").start()
    script, hook_out = command_hook(tmp_path / "hook")
    ca_file = str(ca.ca)
    sinks: list[dict[str, object]] = [
        {
            "type": "webhook",
            "url": webhook.url,
            "secret_file": str(write_secret(tmp_path / "hook.secret", SECRET.decode())),
        },
        {"type": "syslog", "address": udp.address},
        {"type": "syslog", "address": tcp_all.address, "events": "all"},
        {"type": "command", "argv": [str(script)]},
        {
            "type": "slack",
            "url_file": str(write_secret(tmp_path / "s.url", https["slack"].url("/s/T/B/X"))),
            "ca_file": ca_file,
        },
        {
            "type": "teams",
            "url_file": str(write_secret(tmp_path / "t.url", https["teams"].url("/t"))),
            "ca_file": ca_file,
        },
        {
            "type": "pagerduty",
            "routing_key_file": str(write_secret(tmp_path / "pd.key", ROUTING_KEY)),
            "url": https["pagerduty"].url("/v2/enqueue"),
            "ca_file": ca_file,
        },
        {
            "type": "jsm",
            "api_key_file": str(write_secret(tmp_path / "jsm.key", API_KEY)),
            "url": https["jsm"].url("/jsm/ops/integration/v2/alerts"),
            "ca_file": ca_file,
        },
        {
            "type": "email",
            "host": "127.0.0.1",
            "port": mail.port,
            "auth_file": str(write_secret(tmp_path / "smtp.auth", f"alerts\n{SMTP_PASSWORD}")),
            "from": "breakglass@example.com",
            "to": ["oncall@example.com"],
            "ca_file": ca_file,
        },
    ]
    config = config_with(tmp_path / "proxy", sinks)
    try:
        assert run_cli(config, "config", "check").returncode == 0
        result = run_cli(config, "drill", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        doc = json.loads(result.stdout)
        assert doc["ok"] is True
        assert len(doc["sinks"]) == len(sinks)
        assert all(s["ok"] for s in doc["sinks"])
        aid = doc["alert_id"]
        (slack,) = https["slack"].received()
        check_slack_drill = [t for t, _, _ in strings(slack.json())]
        assert any(aid in t for t in check_slack_drill)
        (teams,) = https["teams"].received()
        assert any(aid in t for t, _, _ in strings(teams.json()))
        (pd,) = https["pagerduty"].received()
        assert pd.json()["dedup_key"] == aid
        assert pd.json()["payload"]["severity"] == "info"
        (jsm,) = https["jsm"].received()
        assert jsm.json()["alias"] == aid
        assert "test" in jsm.json()["tags"]
        (msg,) = mail.messages
        assert msg["X-Breakglass-Alert-Id"] == aid
        assert str(msg["Subject"]).strip().startswith("[breakglass TEST] ")
        assert webhook.wait_for(lambda d: d["alert_id"] == aid).doc()["test"] is True
        assert syslog_json(udp.wait_for(aid))["alert_id"] == aid
        assert syslog_json(tcp_all.wait_for(aid))["alert_id"] == aid
        assert [d["alert_id"] for d in hook_payloads(hook_out)] == [aid]
    finally:
        for r in https.values():
            r.stop()
        mail.stop()
        webhook.stop()
        udp.stop()
        tcp_all.stop()
