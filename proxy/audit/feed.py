"""Every audit event as one line of ASCII JSON: what ``breakglass events`` prints and
what the syslog forwarder sends.

Owns the line's fields: ``cursor`` (hand it back with ``--after`` to resume; read from
the fleet's ledger, the whole fleet's, and a ``node`` field names the event's node), ``seq``,
``time`` (RFC 3339 UTC, milliseconds), ``ts`` (the stored time, exact: with ``data``,
``prev_hash`` and ``seq`` it recomputes ``hash``), ``type``, ``session``, ``channel``
(the channel's number in its session, or null), ``data`` (verbatim) and the chain's
``prev_hash`` and ``hash``. ASCII only, one line whatever the data holds: JSON escapes
every control character and ``ensure_ascii`` the rest, so no field can forge a line or
reach a terminal as an escape sequence. Pure formatting: no I/O.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.audit.views import rfc3339
from proxy.core.chaincheck import ChainRow
from proxy.core.cursor import Cursor, FleetCursor
from proxy.core.text import escape, json_terminal_safe


def event_doc(row: ChainRow) -> dict[str, Any]:
    return {
        "cursor": str(Cursor(row.seq)),
        "seq": row.seq,
        "time": rfc3339(row.time),
        "ts": row.time,
        "type": row.type,
        "session": row.session_id,
        "channel": row.channel,
        "data": json.loads(row.data_json),
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


def event_line(row: ChainRow) -> str:
    """The JSON line, without its newline."""
    return json.dumps(event_doc(row), ensure_ascii=True, separators=(",", ":"))


def event_text(row: ChainRow) -> str:
    """For a person at a terminal: seq, time, type, SESSION/N and the data, escaped."""
    where = row.session_id or "-"
    if row.session_id and row.channel is not None:
        where = f"{row.session_id}/{row.channel}"
    stamp = rfc3339(row.time)
    data = json_terminal_safe(row.data_json)  # stored JSON: C0 escaped, the rest made safe
    return f"{row.seq:>8}  {stamp}  {escape(row.type):<22} {escape(where)}  {data}"


def fleet_event_doc(node: str, row: ChainRow, cursor: FleetCursor) -> dict[str, Any]:
    """A fleet's event (the ledger's): ``cursor`` is the whole fleet's after this event,
    ``node`` the node whose chain it is in; the rest as one node's (``session`` as
    stored: with ``seq`` and ``prev_hash`` it recomputes ``hash``)."""
    doc = event_doc(row)
    return {"cursor": str(cursor), "node": node, **{k: v for k, v in doc.items() if k != "cursor"}}


def fleet_event_line(node: str, row: ChainRow, cursor: FleetCursor) -> str:
    return json.dumps(fleet_event_doc(node, row, cursor), ensure_ascii=True, separators=(",", ":"))


def fleet_event_text(node: str, row: ChainRow) -> str:
    """``event_text`` after the node's name (its seq is the node's own)."""
    return f"{escape(node):<12} {event_text(row)}"
