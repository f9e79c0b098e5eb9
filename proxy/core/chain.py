"""Hash chain over audit events: canonical serialisation and the link rule.

Pure: the store calls these inside its transaction; ``breakglass verify`` calls them
again over the whole log. Never reads a clock or the database itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

GENESIS = "0" * 64


def canonical(value: Mapping[str, Any]) -> str:
    """One stable text per value: sorted keys, no spaces, UTF-8 kept as is.

    Stable across Python versions and platforms, so a verifier years later recomputes
    the same hash from the stored row.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def link(
    prev_hash: str,
    seq: int,
    time: float,
    type_: str,
    session_id: str | None,
    channel: int | None,
    data_json: str,
) -> str:
    """The hash of one event, binding it to everything before it."""
    body = canonical(
        {
            "seq": seq,
            "time": time,
            "type": type_,
            "session": session_id,
            "channel": channel,
            "data": data_json,
        }
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()
