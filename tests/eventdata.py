"""Complete event data for fixtures that care about a few fields only.

The store and its readers check every event against the catalogue, so a fixture that
sets ``{"reason": "idle"}`` on a ``session_end`` is fine but one that leaves out a
required field is refused. ``fill`` adds each missing required field with an empty
value of its type (null where the catalogue allows null), keeping what the test set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.core import events

_EMPTY: list[tuple[type, Any]] = [
    (type(None), None),
    (str, ""),
    (float, 0.0),
    (int, 0),
    (bool, False),
    (list, []),
    (dict, {}),
]


def fill(type_: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with every required field of ``type_`` present."""
    out = dict(data)
    for spec in events.CATALOGUE[type_]._SPECS:
        if not spec.required or spec.name in out:
            continue
        allowed = spec.allowed or (type(None),)
        out[spec.name] = next(v for t, v in _EMPTY if t in allowed)
    return out


def typed(type_: str, data: Mapping[str, Any]) -> events.Event:
    """The catalogue event for ``data``, with the fields the test does not care about empty."""
    return events.decode(type_, fill(type_, data))
