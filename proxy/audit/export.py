"""``breakglass export SESSION --html FILE``: one self-contained page for an auditor.

Owns the HTML: the vendored asciinema-player (``vendor/``, Apache-2.0, its licence kept
beside it and named in the page) playing each channel's cast, the command timeline as
clickable markers (each command and file operation once: the cast's own marker, or the
audit event's when the cast has none at that moment), the session's audit details
beside it, and the result of checking the session against the chain, with when.
Opens from a file with no server and no network.

Safety: every untrusted string is HTML-escaped (``core.markup.html_text``); the casts
and markers travel as JSON in a ``<script type="application/json">`` element with ``<``
``>`` ``&`` escaped, so nothing in a cast can close the element; a Content Security
Policy allows only this page's own scripts and styles (by hash), WebAssembly for the
player's terminal emulator, and nothing else: no network, no images, no inline
handlers. The player emulates the terminal
inside the page, so casts need no escape-sequence filter here (unlike ``replay``); a
cut-short last line is dropped, since the player would refuse the whole cast.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from proxy.audit.facts import Resource, SessionFacts
from proxy.audit.sessioncheck import SessionCheck, check_text
from proxy.audit.verify import locate_recording
from proxy.audit.views import data_pairs, rfc3339
from proxy.core.markup import html_text, script_json
from proxy.core.termfilter import CastReport, complete_lines
from proxy.core.units import format_duration
from proxy.store.base import ChannelRow, StoredEvent

VENDOR = Path(__file__).parent / "vendor"
PLAYER_VERSION = "3.18.0"

PAGE_SCRIPT = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("bg-data").textContent);
  var body = document.body;
  var players = [];
  data.channels.forEach(function (ch, i) {
    var el = document.getElementById("bg-player-" + i);
    var player = AsciinemaPlayer.create({data: ch.cast}, el, {
      markers: ch.markers, fit: "width", idleTimeLimit: 2, preload: true,
      terminalFontSize: "small"
    });
    players.push(player);
    player.addEventListener("play", function () {
      el.setAttribute("data-bg-state", "playing");
      body.setAttribute("data-bg-started", String(i));
    });
    player.addEventListener("marker", function (ev) {
      body.setAttribute("data-bg-marker", i + ":" + ev.index);
    });
  });
  function seek(button) {
    var i = Number(button.getAttribute("data-channel"));
    var t = Number(button.getAttribute("data-time"));
    var player = players[i];
    if (!player) { return; }
    player.seek(t).then(function () {
      var now = player.getCurrentTime();
      body.setAttribute("data-bg-seeked", i + ":" + now.toFixed(3));
      document.querySelectorAll("button.bg-marker").forEach(function (b) {
        b.removeAttribute("aria-current");
      });
      button.setAttribute("aria-current", "true");
    });
  }
  document.querySelectorAll("button.bg-marker").forEach(function (button) {
    button.addEventListener("click", function () { seek(button); });
  });
  // Links into the page: #play=C starts channel C, #marker=C:M seeks to its marker M.
  var hash = window.location.hash.slice(1);
  var m = /^marker=(\\d+):(\\d+)$/.exec(hash);
  if (m) {
    var b = document.getElementById("bg-marker-" + m[1] + "-" + m[2]);
    if (b) { b.click(); }
  }
  var p = /^play=(\\d+)$/.exec(hash);
  if (p && players[Number(p[1])]) { players[Number(p[1])].play(); }
  body.setAttribute("data-bg-ready", "1");
})();
"""

PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1d1d1f; background: #fafafa; }
h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
.bg-sub { color: #555; margin: 0 0 1rem; }
.bg-layout { display: flex; gap: 1.5rem; align-items: flex-start; flex-wrap: wrap; }
.bg-main { flex: 3 1 640px; min-width: 0; }
.bg-side { flex: 1 1 320px; }
.bg-channel { margin-bottom: 2rem; }
.bg-channel h2 { font-size: 1rem; font-family: ui-monospace, monospace; }
.bg-markers { list-style: none; padding: 0; margin: .5rem 0; max-height: 22rem; overflow: auto; }
.bg-markers li { margin: 0; }
button.bg-marker { font: inherit; font-family: ui-monospace, monospace; font-size: .85rem;
  background: none; border: 0; padding: .15rem .3rem; cursor: pointer; text-align: left;
  width: 100%; white-space: pre-wrap; word-break: break-all; }
button.bg-marker:hover, button.bg-marker[aria-current] { background: #e4ecff; }
.bg-t { color: #666; margin-right: .6rem; }
table.bg-details { border-collapse: collapse; width: 100%; font-size: .9rem; }
table.bg-details th { text-align: left; vertical-align: top; padding: .3rem .6rem .3rem 0;
  white-space: nowrap; color: #444; }
table.bg-details td { padding: .3rem 0; word-break: break-word; white-space: pre-wrap; }
.bg-check-ok { color: #11772d; } .bg-check-bad { color: #b00020; font-weight: bold; }
footer { margin-top: 2rem; font-size: .8rem; color: #666; }
"""


@dataclass(frozen=True)
class ChannelCast:
    channel: ChannelRow
    text: str  # the cast, complete lines only
    markers: list[tuple[float, str]]
    report: CastReport


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _cast_markers(text: str) -> list[tuple[float, str]]:
    out: list[tuple[float, str]] = []
    for line in text.splitlines()[1:]:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, list) and len(ev) == 3 and ev[1] == "m":
            out.append((float(ev[0]), str(ev[2])))
    return out


def load_cast(channel: ChannelRow, facts: SessionFacts, root: Path) -> ChannelCast | None:
    path, _ = locate_recording(channel.recording, root, channel.session_id, channel.n)
    if path is None:
        return None
    report = CastReport()
    with open(path, "rb") as f:
        lines = (raw.decode("utf-8", "replace") for raw in f)
        text = "".join(complete_lines(lines, report))
    markers = _cast_markers(text)
    # The relay marks each command and file operation in the cast at the offset its
    # audit event carries: an event adds a marker only where the cast has none (a cast
    # from before markers, or one cut short). The channel's own command is its heading.
    marked = sorted(t for t, _ in markers)
    for r in facts.resources:
        if r.channel != channel.n or not r.text or r.offset is None or r.kind in _CHANNEL_KINDS:
            continue
        if not _near(marked, r.offset):
            markers.append((r.offset, _resource_label(r)))
    markers.sort(key=lambda m: m[0])
    return ChannelCast(channel, text, markers, report)


_CHANNEL_KINDS = frozenset({"exec", "subsystem", "shell"})
_SAME_MOMENT = 0.002  # the cast's times have 6 decimals, the event's offset too


def _near(sorted_times: list[float], t: float) -> bool:
    i = bisect.bisect_left(sorted_times, t - _SAME_MOMENT)
    return i < len(sorted_times) and sorted_times[i] <= t + _SAME_MOMENT


def _resource_label(r: Resource) -> str:
    way = f" ({r.direction})" if r.direction else ""
    return f"{r.kind}: {r.text}{way}"


def _mmss(t: float) -> str:
    whole = int(t)
    return f"{whole // 60:02d}:{whole % 60:02d}"


def _details(facts: SessionFacts) -> list[tuple[str, str]]:
    s = facts.session
    duration = "-" if s.ended_at is None else format_duration(round(s.ended_at - s.started_at))
    rows = [
        ("Session", s.id),
        ("Person", f"{s.person} (code {s.credential_id})"),
        ("Source", f"{s.source}, client {s.client_version}"),
        ("Target", f"{s.login}@{s.target}"),
        ("Justification", s.justification),
        ("Started", rfc3339(s.started_at) or ""),
        ("Ended", f"{rfc3339(s.ended_at) or 'live'} ({duration})"),
        ("Deadline", rfc3339(s.deadline) or ""),
        ("End reason", (s.end_reason or "live") + (f": {s.end_detail}" if s.end_detail else "")),
    ]
    for c in s.channels:
        status = f"signal {c.exit_signal}" if c.exit_signal else f"exit {c.exit_status}"
        rows.append(
            (
                f"Channel {c.n}",
                f"{c.kind}{' (pty)' if c.pty else ''} {c.command or ''}".rstrip()
                + f", {status}, {c.bytes_up} B up, {c.bytes_down} B down",
            )
        )
        rows.append(
            (
                f"Recording {c.n}",
                f"{facts.recording_checks.get(c.n, '-')}: {c.recording or '-'}"
                f" sha256 {c.recording_sha256 or '-'}",
            )
        )
    for label, items in (("Alert", facts.alerts), ("Flag", facts.flags)):
        for e in items:
            rows.append((label, f"{rfc3339(e.time)} {_data(e)}"))
    for e in facts.overrides:
        rows.append(("Override", f"{rfc3339(e.time)} {e.type} {_data(e)}"))
    for rv in facts.reviews:
        rows.append(("Review", f"{rfc3339(rv.time)} {rv.by}: {rv.note}"))
    if not facts.reviews:
        rows.append(("Review", "not reviewed"))
    return rows


def _data(e: StoredEvent) -> str:
    return data_pairs(e.data)


def render_html(
    facts: SessionFacts,
    casts: Sequence[ChannelCast],
    generated_at: float,
    check: SessionCheck | None = None,
) -> str:
    s = facts.session
    player_js = (VENDOR / "asciinema-player.min.js").read_text(encoding="utf-8")
    player_css = (VENDOR / "asciinema-player.css").read_text(encoding="utf-8")
    payload = {
        "session": s.id,
        "channels": [
            {
                "id": f"{s.id}/{c.channel.n}",
                "cast": c.text,
                "markers": [[t, label] for t, label in c.markers],
            }
            for c in casts
        ],
    }
    # A literal "</script" or "<!--" inside the vendored code would end the element
    # early; the release has none, and this keeps a future one from slipping through.
    if "</script" in player_js.lower() or "<!--" in player_js:
        raise ValueError("the vendored player contains '</script' or '<!--'")
    csp = "; ".join(
        [
            "default-src 'none'",
            # WebAssembly: the player's terminal emulator is a wasm module it carries.
            f"script-src {_csp_hash(player_js)} {_csp_hash(PAGE_SCRIPT)} 'wasm-unsafe-eval'",
            # The player styles its cells through the CSSOM, which CSP allows; no
            # style attribute or element other than these two is honoured.
            f"style-src {_csp_hash(player_css)} {_csp_hash(PAGE_STYLE)}",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )
    channels_html: list[str] = []
    for i, c in enumerate(casts):
        ch = c.channel
        what = ch.command or ch.kind
        note = ""
        if c.report.cut_line is not None:
            note = (
                f'<p class="bg-sub">The recording stops at line {c.report.cut_line}'
                " (cut short by a crash); everything before it plays.</p>"
            )
        items = "\n".join(
            f'<li><button type="button" class="bg-marker" id="bg-marker-{i}-{j}"'
            f' data-channel="{i}" data-time="{t:.6f}"><span class="bg-t">{_mmss(t)}</span>'
            f"{html_text(label)}</button></li>"
            for j, (t, label) in enumerate(c.markers)
        )
        channels_html.append(
            f'<section class="bg-channel">\n<h2>{html_text(f"{s.id}/{ch.n}")}'
            f" {html_text(ch.kind)}: {html_text(what)}</h2>\n{note}"
            f'<div class="bg-player" id="bg-player-{i}"></div>\n'
            f"<h3>Timeline</h3>\n"
            f'<ol class="bg-markers">\n{items or "<li>(no markers)</li>"}\n</ol>\n</section>'
        )
    missing = [ch for ch in s.channels if ch.n not in {c.channel.n for c in casts} and ch.recording]
    for ch in missing:
        channels_html.append(
            f'<section class="bg-channel"><h2>{html_text(f"{s.id}/{ch.n}")}</h2>'
            "<p>The recording is missing.</p></section>"
        )
    rows = "\n".join(
        f"<tr><th>{html_text(k)}</th><td{_check_class(k, v)}>{html_text(v)}</td></tr>"
        for k, v in _details(facts)
    )
    resources = "\n".join(
        f"<li>{html_text(rfc3339(r.time))} {html_text(f'{s.id}/{r.channel}')}"
        f" {html_text(_resource_label(r))}</li>"
        for r in facts.resources
        if r.text
    )
    if check is None:
        checked = '<p class="bg-check-bad" id="bg-check">Not checked against the audit chain.</p>'
    else:
        css = "bg-check-ok" if check.ok else "bg-check-bad"
        checked = f'<p class="{css}" id="bg-check">{html_text(check_text(check))}</p>'
    title = f"breakglass session {s.id}: {s.person} on {s.login}@{s.target}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{html_text(csp)}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html_text(title)}</title>
<style>{player_css}</style>
<style>{PAGE_STYLE}</style>
</head>
<body>
<h1>{html_text(title)}</h1>
<p class="bg-sub">Exported {html_text(rfc3339(generated_at))} by breakglass. Opens offline;
nothing is fetched. The player emulates the terminal inside this page.</p>
<div class="bg-layout">
<div class="bg-main">
{chr(10).join(channels_html) or "<p>No recordings.</p>"}
</div>
<aside class="bg-side">
<h2>Audit details</h2>
{checked}
<table class="bg-details">
{rows}
</table>
<h2>Resources accessed</h2>
<ul>
{resources or "<li>(none recorded)</li>"}
</ul>
</aside>
</div>
<footer>Player: asciinema-player {PLAYER_VERSION} (Apache-2.0, by Marcin Kulik;
licence text in breakglass's proxy/audit/vendor/LICENSE-asciinema-player).</footer>
<script type="application/json" id="bg-data">{script_json(payload)}</script>
<script>{player_js}</script>
<script>{PAGE_SCRIPT}</script>
</body>
</html>
"""


def _check_class(key: str, value: str) -> str:
    if not key.startswith("Recording"):
        return ""
    if value.startswith("ok"):
        return ' class="bg-check-ok"'
    return ' class="bg-check-bad"'


def write_html(path: Path, html: str) -> None:
    """Write the page 0600: it holds the whole session, as sensitive as the recordings."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(html)
