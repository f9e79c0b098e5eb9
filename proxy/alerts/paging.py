"""The paging sinks: PagerDuty (Events API v2) and Jira Service Management (the
operations alerts API that replaces Opsgenie's).

Owns both request formats. Each alert is one ``trigger`` (PagerDuty) or one create
(JSM) whose de-duplication key is the ``alert_id`` (``dedup_key``, ``alias``): a repeat
of an at-least-once delivery is dropped by the service itself. Severity follows the
rule (proxy.alerts.message.severity). The routing key and the API key are read from
their files at every send and never logged; a sink is named by its key file's path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from proxy.alerts.base import Outgoing, SinkError, read_secret_text, tls_context
from proxy.alerts.http import check, post
from proxy.alerts.message import Severity, Summary, one_line, summarize, text_body

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
JSM_URL = "https://api.atlassian.com/jsm/ops/integration/v2/alerts"
# PagerDuty: summary up to 1,024 characters. JSM: message 130, alias 512, description
# 15,000, source 100, a detail's key 50 and value (kept well under the total) 500.
PD_SUMMARY = 1024
JSM_MESSAGE = 130
JSM_DESCRIPTION = 15000
JSM_SOURCE = 100
JSM_DETAIL = 500
JSM_PRIORITY: dict[Severity, str] = {
    "critical": "P1",
    "error": "P2",
    "warning": "P3",
    "info": "P5",
}
JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


def pagerduty_event(summary: Summary, payload: dict[str, Any], routing_key: str) -> dict[str, Any]:
    source = str(payload.get("proxy") or "breakglass")
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": summary.alert_id,
        "client": "breakglass",
        "payload": {
            "summary": one_line(summary.headline(str), PD_SUMMARY),
            "source": one_line(source, 255),
            "severity": summary.severity,
            "class": summary.rule,
            "group": "breakglass",
            "custom_details": payload,
        },
    }
    if payload.get("time"):
        event["payload"]["timestamp"] = str(payload["time"])
    if summary.target:
        event["payload"]["component"] = one_line(summary.target, 255)
    return event


def jsm_alert(summary: Summary, payload: dict[str, Any]) -> dict[str, Any]:
    details = {
        key[:50]: one_line(value if isinstance(value, str) else json.dumps(value), JSM_DETAIL)
        for key, value in payload.items()
        if value is not None
    }
    alert: dict[str, Any] = {
        "message": one_line(summary.headline(str), JSM_MESSAGE),
        "alias": summary.alert_id,
        "description": text_body(summary, lambda v: one_line(v, JSM_DESCRIPTION))[:JSM_DESCRIPTION],
        "source": one_line(f"breakglass on {payload.get('proxy') or '?'}", JSM_SOURCE),
        "priority": JSM_PRIORITY[summary.severity],
        "tags": ["breakglass", summary.rule] + (["test"] if summary.test else []),
        "details": details,
    }
    if summary.target:
        alert["entity"] = one_line(summary.target, 512)
    return alert


def _header_safe(secret: str, what: str) -> str:
    """A key goes into a header (JSM) or a JSON string: printable ASCII only, so a
    stray character in the file cannot add a header."""
    if not secret.isascii() or not secret.isprintable():
        raise SinkError(f"{what} holds characters a key cannot have")
    return secret


class PagerDutySink:
    def __init__(
        self,
        key: str,
        routing_key_file: Path,
        timeout: float,
        url: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.key = key
        self.routing_key_file = routing_key_file
        self.timeout = timeout
        self.url = url or PAGERDUTY_URL
        self.ca_file = ca_file

    async def send(self, alert: Outgoing) -> str:
        what = "the pagerduty routing_key_file"
        routing_key = _header_safe(read_secret_text(self.routing_key_file, what), what)
        payload = alert.payload()
        event = pagerduty_event(summarize(payload), payload, routing_key)
        body = json.dumps(event, ensure_ascii=True).encode("ascii")
        tls = tls_context(self.ca_file)
        return check(await post(self.url, body, JSON_HEADERS, within=self.timeout, tls=tls))


class JsmSink:
    def __init__(
        self,
        key: str,
        api_key_file: Path,
        timeout: float,
        url: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.key = key
        self.api_key_file = api_key_file
        self.timeout = timeout
        self.url = url or JSM_URL
        self.ca_file = ca_file

    async def send(self, alert: Outgoing) -> str:
        what = "the jsm api_key_file"
        api_key = _header_safe(read_secret_text(self.api_key_file, what), what)
        payload = alert.payload()
        body = json.dumps(jsm_alert(summarize(payload), payload), ensure_ascii=True)
        headers = {**JSON_HEADERS, "Authorization": f"GenieKey {api_key}"}
        tls = tls_context(self.ca_file)
        response = await post(self.url, body.encode("ascii"), headers, within=self.timeout, tls=tls)
        return check(response)
