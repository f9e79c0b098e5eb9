"""The event catalogue: decoding checks every field in one place, encoding gives back the
stored bytes, and the README's table of event types is the catalogue's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core import chain, events
from proxy.core.events import ABSENT, CATALOGUE, EventDataError, decode

README = Path(__file__).resolve().parents[2] / "README.md"
JSON_LEAF: dict[type, st.SearchStrategy[Any]] = {
    str: st.text(max_size=20),
    int: st.integers(min_value=-(2**53), max_value=2**53),
    float: st.floats(allow_nan=False, allow_infinity=False, width=64),
    bool: st.booleans(),
    type(None): st.none(),
    list: st.lists(st.one_of(st.text(max_size=8), st.integers()), max_size=4),
    dict: st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
}


def _value(allowed: tuple[type, ...] | None, *, null: bool) -> st.SearchStrategy[Any]:
    types = [t for t in (allowed or tuple(JSON_LEAF)) if null or t is not type(None)]
    return st.one_of(*(JSON_LEAF[t] for t in types))


@st.composite
def stored(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """Data as an emitter stores it: required fields always, a None-defaulted field
    absent or not null, an ABSENT-defaulted one absent or any value (null too)."""
    type_ = draw(st.sampled_from(sorted(CATALOGUE)))
    data: dict[str, Any] = {}
    for spec in CATALOGUE[type_]._SPECS:
        if not spec.required and draw(st.booleans()):
            continue
        data[spec.name] = draw(_value(spec.allowed, null=spec.omit is not None))
    return type_, data


@settings(max_examples=600, deadline=None)
@given(stored())
def test_encoding_a_decoded_event_gives_back_its_bytes(case: tuple[str, dict[str, Any]]) -> None:
    type_, data = case
    ev = decode(type_, data)
    assert chain.canonical(ev.data()) == chain.canonical(data)
    assert decode(type_, ev.data()) == ev
    assert type_ == ev.TYPE


def test_a_missing_field_fails_with_one_message_naming_it() -> None:
    with pytest.raises(EventDataError, match=r"^session_end event: missing field\(s\) reason$"):
        decode("session_end", {"detail": None})


def test_an_unknown_field_fails_with_one_message_naming_it() -> None:
    data = {"reason": "idle", "detial": "typo"}
    with pytest.raises(EventDataError, match=r"^session_end event: unknown field\(s\) detial$"):
        decode("session_end", data)


def test_missing_and_unknown_fields_are_said_together() -> None:
    with pytest.raises(EventDataError) as caught:
        decode("cred_used", {"credential_id": "C1", "uses": 2})
    assert str(caught.value) == (
        "cred_used event: missing field(s) person, use; unknown field(s) uses"
    )


@pytest.mark.parametrize(
    ("type_", "data", "said"),
    [
        ("proxy_started", {"pid": "12"}, "field pid is a string, expected a number"),
        ("proxy_started", {"pid": True}, "field pid is a boolean, expected a number"),
        ("session_warning", {"remaining": None}, "field remaining is null, expected a number"),
        ("config_reloaded", {"targets": "db01", "needs_restart": []}, "is a string"),
        ("channel_start", {"kind": "shell", "pty": 1, "recording": None}, "pty is a number"),
    ],
)
def test_a_value_of_the_wrong_json_type_fails(type_: str, data: dict[str, Any], said: str) -> None:
    with pytest.raises(EventDataError, match=said):
        decode(type_, data)


def test_an_unknown_type_fails_and_non_objects_too() -> None:
    with pytest.raises(EventDataError, match="unknown event type 'sesion_start'"):
        decode("sesion_start", {})
    with pytest.raises(EventDataError, match="its data is an array, not an object"):
        decode("proxy_stopped", [])  # type: ignore[arg-type]


def test_a_field_absent_and_a_field_stored_as_null_stay_apart() -> None:
    absent = decode("file_close", {"path": "/x", "source": "sftp", "offset": 1.0})
    null = decode("file_close", {"path": "/x", "source": "sftp", "offset": 1.0, "sha256": None})
    assert isinstance(absent, events.FileClose)
    assert isinstance(null, events.FileClose)
    assert (absent.sha256, null.sha256) == (ABSENT, None)
    assert "sha256" not in absent.data()
    assert null.data()["sha256"] is None


def test_the_first_releases_fields_decode() -> None:
    # What 2e87b4e wrote: no source_port on a session start, no detail on some ends,
    # no command or term on a channel start (tests/integration/test_care_migrations).
    start = {
        "person": "alice",
        "credential_id": "ABCD1234",
        "source": "127.0.0.1",
        "client_version": "SSH-2.0-OpenSSH_9.2",
        "target": "db01",
        "login": "root",
        "justification": "INC-1 the disk is full again",
        "deadline": 1_700_003_610.0,
    }
    ev = decode("session_start", start)
    assert isinstance(ev, events.SessionStart)
    assert ev.source_port is ABSENT
    assert chain.canonical(ev.data()) == chain.canonical(start)
    assert decode("session_end", {"reason": "client_closed"}).data() == {"reason": "client_closed"}
    assert decode("channel_start", {"kind": "shell", "pty": True, "recording": "/r/1"})


def test_every_type_is_a_frozen_dataclass_registered_once() -> None:
    assert len(CATALOGUE) == len({cls for cls in CATALOGUE.values()})
    ev = events.ProxyStarted(pid=1)
    with pytest.raises(AttributeError):
        ev.pid = 2  # type: ignore[misc]
    assert {t for t in CATALOGUE if t.startswith("file_")} == events.FILE_TYPES


def test_the_readme_table_of_event_types_is_the_catalogues() -> None:
    text = README.read_text()
    found = re.search(r"<!-- event-types:begin.*?-->\n(.*?)<!-- event-types:end -->", text, re.S)
    assert found is not None, "README has no generated event-type table"
    assert found.group(1) == events.markdown_table(), (
        "README's event table differs from proxy/core/events.py: regenerate it with"
        " `python -m proxy.core.events` and paste it between the markers"
    )


def test_an_event_the_store_cut_to_its_bound_still_decodes_to_its_bytes() -> None:
    from proxy.core.limits import bound_data

    for big in (
        events.RequestRefused("env", "x" * 100_000),
        events.Command(source="stdin", offset=1.0, text="y" * 100_000, truncated=True),
    ):
        cut, text = bound_data(big.data())
        assert "truncated" in cut
        ev = decode(big.TYPE, cut)
        assert chain.canonical(ev.data()) == text
