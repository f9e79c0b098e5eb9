"""The chat sinks: a Slack incoming webhook (Block Kit) and a Microsoft Teams Workflows
webhook (an Adaptive Card).

Owns both message formats. Untrusted text (every value of the payload) goes only into
Slack ``plain_text`` objects and Teams ``TextRun``s, which neither service parses for
mentions, links or Markdown; it is also put on one line with control characters
escaped and cut to the service's limits, so it cannot break the layout either. Slack's
top-level ``text`` (the notification) holds the rule's title only, with ``mrkdwn``
off, and link unfurling is off. The webhook URL is a secret: it is read from
``url_file`` at every send and never logged (a sink is named by its file's path).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from proxy.alerts.base import Outgoing, SinkError, read_secret_text, tls_context
from proxy.alerts.http import check, post
from proxy.alerts.message import Summary, one_line, summarize

# Slack's documented limits: a header's text 150 characters, a section field 2,000,
# a text object 3,000, at most 10 fields in a section.
SLACK_HEADER = 150
SLACK_FIELD = 2000
SLACK_TEXT = 3000
SLACK_FIELDS = 10
TEAMS_TEXT = 3000  # well inside a card's 28 KB, so the card is never refused for size
JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": one_line(text, limit) or "-", "emoji": False}


def slack_message(summary: Summary) -> dict[str, Any]:
    fields = [f for f in summary.fields if f[0] != "Why"]
    why = [value for label, value in summary.fields if label == "Why"]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(summary.title, SLACK_HEADER)},
        {
            "type": "section",
            "fields": [
                _plain(f"{label}: {value}", SLACK_FIELD) for label, value in fields[:SLACK_FIELDS]
            ],
        },
    ]
    if why:
        blocks.append({"type": "section", "text": _plain(f"Why: {why[0]}", SLACK_TEXT)})
    if summary.show_command:
        blocks.append(
            {
                "type": "context",
                "elements": [_plain(f"Run on the proxy: {summary.show_command}", SLACK_TEXT)],
            }
        )
    return {
        "text": summary.title,  # the notification: our own words only
        "mrkdwn": False,
        "unfurl_links": False,
        "unfurl_media": False,
        "blocks": blocks,
    }


def _run(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextRun", "text": one_line(text, TEAMS_TEXT), **style}


def teams_message(summary: Summary) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {
            "type": "RichTextBlock",
            "inlines": [_run(summary.title, weight="Bolder", size="Medium")],
        }
    ]
    for label, value in summary.fields:
        body.append(
            {
                "type": "RichTextBlock",
                "inlines": [_run(f"{label}: ", weight="Bolder"), _run(value)],
            }
        )
    if summary.show_command:
        body.append(
            {
                "type": "RichTextBlock",
                "inlines": [
                    _run("Run on the proxy: ", weight="Bolder"),
                    _run(summary.show_command, fontType="Monospace"),
                ],
            }
        )
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


class ChatSink:
    """``kind`` "slack" or "teams": the same delivery, a different message."""

    def __init__(
        self, key: str, kind: str, url_file: Path, timeout: float, ca_file: Path | None = None
    ) -> None:
        self.key = key
        self.kind = kind
        self.url_file = url_file
        self.timeout = timeout
        self.ca_file = ca_file

    def message(self, alert: Outgoing) -> dict[str, Any]:
        summary = summarize(alert.payload())
        return slack_message(summary) if self.kind == "slack" else teams_message(summary)

    async def send(self, alert: Outgoing) -> str:
        url = read_secret_text(self.url_file, f"the {self.kind} url_file")
        if not url.startswith("https://"):
            raise SinkError(f"the {self.kind} url_file does not hold an https:// URL")
        body = json.dumps(self.message(alert), ensure_ascii=True).encode("ascii")
        response = await post(
            url, body, JSON_HEADERS, within=self.timeout, tls=tls_context(self.ca_file)
        )
        return check(response)
