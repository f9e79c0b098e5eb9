"""Tests for proxy.core.recording: asciicast v2 lines, UTF-8 handling, time, size cap."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core import recording
from proxy.core.recording import CastEncoder

LIMIT_MARK = (
    "recording limit of {n} bytes reached: further data is counted and hashed, not recorded"
)


def enc(max_bytes: int = 1 << 20, **kw: Any) -> CastEncoder:
    return CastEncoder(width=80, height=24, timestamp=1_700_000_000, max_bytes=max_bytes, **kw)


def lines(chunk: bytes) -> list[Any]:
    """Parse a returned chunk: complete lines only, each valid UTF-8 JSON, one per line."""
    if chunk == b"":
        return []
    assert chunk.endswith(b"\n")
    text = chunk.decode("utf-8")  # strict: must be valid UTF-8
    parts = text.split("\n")[:-1]
    assert text.splitlines() == parts  # no U+2028/U+0085/... breaking a line for other readers
    out = []
    for part in parts:
        assert part
        out.append(json.loads(part))
    return out


def one(chunk: bytes) -> list[Any]:
    parsed = lines(chunk)
    assert len(parsed) == 1, parsed
    event = parsed[0]
    assert isinstance(event, list)
    return event


# ---------------------------------------------------------------- header


def test_header_minimal() -> None:
    header = lines(enc().header())
    assert header == [{"version": 2, "width": 80, "height": 24, "timestamp": 1_700_000_000}]


def test_header_all_fields() -> None:
    e = CastEncoder(
        width=132,
        height=43,
        timestamp=1_700_000_123,
        max_bytes=10,
        title="alice@db1 — INC-4411",
        command="bash -lc 'uptime'",
        env={"TERM": "xterm-256color", "SHELL": "/bin/bash"},
        extra={"session": "S1", "channel": "S1/0", "justification": "db down\u2028rm -rf"},
    )
    (header,) = lines(e.header())
    assert header == {
        "version": 2,
        "width": 132,
        "height": 43,
        "timestamp": 1_700_000_123,
        "title": "alice@db1 — INC-4411",
        "command": "bash -lc 'uptime'",
        "env": {"TERM": "xterm-256color", "SHELL": "/bin/bash"},
        "breakglass": {"session": "S1", "channel": "S1/0", "justification": "db down\u2028rm -rf"},
    }
    assert list(header)[:4] == ["version", "width", "height", "timestamp"]


def test_header_is_the_same_bytes_each_time() -> None:
    e = enc(title="t")
    assert e.header() == e.header()


@pytest.mark.parametrize(("width", "height", "max_bytes"), [(0, 24, 1), (80, 0, 1), (80, 24, -1)])
def test_constructor_rejects_bad_values(width: int, height: int, max_bytes: int) -> None:
    with pytest.raises(ValueError, match="must"):
        CastEncoder(width=width, height=height, timestamp=0, max_bytes=max_bytes)


def test_constructor_rejects_unserialisable_extra() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        enc(extra={"bad": object()})
    with pytest.raises(ValueError, match="JSON"):
        enc(extra={"bad": float("nan")})


# ---------------------------------------------------------------- events


def test_event_kinds() -> None:
    e = enc()
    assert one(e.output(0.5, b"hello\r\n")) == [0.5, "o", "hello\r\n"]
    assert one(e.input(1, b"ls\r")) == [1.0, "i", "ls\r"]
    assert one(e.resize(1.5, 120, 40)) == [1.5, "r", "120x40"]
    assert one(e.marker(2, "$ uptime")) == [2.0, "m", "$ uptime"]
    assert one(e.exit(3, 0)) == [3.0, "x", "0"]
    assert one(e.exit(3, 255)) == [3.0, "x", "255"]
    assert e.finish(4) == b""


def test_line_format_is_compact_and_one_line() -> None:
    e = enc()
    assert e.output(1.25, b"a\nb") == b'[1.25, "o", "a\\nb"]\n'
    assert e.output(2, "é€".encode()) == '[2.0, "o", "é€"]\n'.encode()  # not \\u-escaped


def test_empty_data_writes_nothing() -> None:
    e = enc()
    assert e.output(1, b"") == b""
    assert e.input(1, b"") == b""
    assert e.data_bytes == 0


def test_control_characters_stay_inside_one_json_line() -> None:
    e = enc()
    data = bytes(range(0x20)) + b"\x7f" + "\x85\u2028\u2029".encode()
    event = one(e.output(1, data))
    assert event[2] == data.decode()


def test_lone_surrogate_in_label_still_gives_valid_utf8() -> None:
    e = enc()
    event = one(e.marker(1, "bad \ud800 label"))
    assert event[2] == "bad ? label"


# ---------------------------------------------------------------- UTF-8


def test_multibyte_split_across_chunks_survives() -> None:
    e = enc()
    assert e.output(1, b"\xe2\x82") == b""  # nothing decodable yet
    assert one(e.output(2, b"\xac")) == [2.0, "o", "€"]
    assert e.data_bytes == 3


def test_four_byte_char_split_byte_by_byte() -> None:
    e = enc()
    emoji = "🎉".encode()
    got = [e.output(i, emoji[i : i + 1]) for i in range(4)]
    assert got[:3] == [b"", b"", b""]
    assert one(got[3])[2] == "🎉"


def test_output_and_input_decoders_are_separate() -> None:
    e = enc()
    assert e.output(1, b"\xe2") == b""
    assert one(e.input(2, b"a\xc3")) == [2.0, "i", "a"]
    assert one(e.output(3, b"\x82\xac!")) == [3.0, "o", "€!"]
    assert one(e.input(4, b"\xa9")) == [4.0, "i", "é"]


def test_invalid_utf8_becomes_replacement_character() -> None:
    e = enc()
    assert one(e.output(1, b"a\xffb"))[2] == "a\ufffdb"
    assert one(e.output(2, b"\xed\xa0\x80"))[2] == "\ufffd\ufffd\ufffd"  # encoded surrogate
    assert one(e.output(3, b"\xe2\x82x"))[2] == "\ufffdx"  # broken sequence then ASCII


def test_finish_flushes_pending_bytes_as_replacement() -> None:
    e = enc()
    assert e.output(1, b"ok\xe2\x82") == b'[1.0, "o", "ok"]\n'
    assert e.input(2, b"\xf0\x9f") == b""
    events = lines(e.finish(5))
    assert events == [[5.0, "o", "\ufffd"], [5.0, "i", "\ufffd"]]
    assert e.finish(6) == b""  # idempotent


# ---------------------------------------------------------------- time


def test_time_is_rounded_to_microseconds() -> None:
    e = enc()
    assert one(e.output(1.23456789, b"x"))[0] == 1.234568
    assert one(e.output(2.0000004, b"x"))[0] == 2.0
    assert one(e.output(1e-7 + 3, b"x"))[0] == 3.0


def test_time_never_goes_backwards() -> None:
    e = enc()
    times = [0.0, 1.0, 0.5, 2.0, 1.9999999, -5.0, float("nan"), float("inf"), 3.0]
    got = [one(e.output(t, b"x"))[0] for t in times]
    assert got == [0.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0]
    assert got == sorted(got)
    # Every event kind shares the clock.
    assert one(e.marker(1, "late"))[0] == 3.0
    assert one(e.resize(1, 10, 10))[0] == 3.0
    assert one(e.exit(1, 1))[0] == 3.0
    assert lines(e.finish(1)) == []


def test_negative_first_time_is_clamped_to_zero() -> None:
    assert one(enc().output(-1, b"x"))[0] == 0.0


# ---------------------------------------------------------------- size cap


def test_cap_records_exactly_max_bytes_then_counts_and_hashes() -> None:
    e = enc(max_bytes=10)
    assert one(e.output(1, b"abcdef")) == [1.0, "o", "abcdef"]
    assert one(e.input(2, b"ghi")) == [2.0, "i", "ghi"]
    assert not e.capped
    cut = lines(e.output(3, b"jKLMN"))
    assert cut == [[3.0, "o", "j"], [3.0, "m", LIMIT_MARK.format(n=10)]]
    assert e.capped
    assert e.data_bytes == 10
    assert e.output(4, b"more output") == b""
    assert e.input(5, b"more input") == b""
    assert e.output(6, b"") == b""
    omitted = b"KLMN" + b"more output" + b"more input"
    assert e.omitted_bytes == len(omitted)
    assert e.omitted_sha256() == hashlib.sha256(omitted).hexdigest()
    assert e.data_bytes == 10  # unchanged past the cap
    # Non-data events are still recorded.
    assert one(e.resize(7, 100, 30)) == [7.0, "r", "100x30"]
    assert one(e.exit(8, 2)) == [8.0, "x", "2"]
    final = lines(e.finish(9))
    assert final == [
        [
            9.0,
            "m",
            f"recording limit of 10 bytes reached: {len(omitted)} bytes omitted, "
            f"sha256 {hashlib.sha256(omitted).hexdigest()}",
        ]
    ]


def test_chunk_that_exactly_fills_the_cap_is_not_capped() -> None:
    e = enc(max_bytes=5)
    assert one(e.output(1, b"12345"))[2] == "12345"
    assert not e.capped
    assert e.finish(2) == b""
    assert e.omitted_bytes == 0


def test_next_byte_after_a_full_cap_triggers_the_marker_only() -> None:
    e = enc(max_bytes=5)
    e.output(1, b"12345")
    assert lines(e.output(2, b"6")) == [[2.0, "m", LIMIT_MARK.format(n=5)]]
    assert e.omitted_bytes == 1


def test_marker_is_emitted_once() -> None:
    e = enc(max_bytes=3)
    chunks = [e.output(i, b"xxxx") for i in range(5)] + [e.input(9, b"yy")]
    markers = [ev for c in chunks for ev in lines(c) if ev[1] == "m"]
    assert len(markers) == 1
    assert e.omitted_bytes == 1 + 4 * 4 + 2
    assert e.data_bytes == 3


def test_zero_cap_records_no_data() -> None:
    e = enc(max_bytes=0)
    assert lines(e.output(1, b"secret")) == [[1.0, "m", LIMIT_MARK.format(n=0)]]
    assert e.data_bytes == 0
    assert e.omitted_bytes == 6
    assert e.omitted_sha256() == hashlib.sha256(b"secret").hexdigest()


def test_cap_inside_a_multibyte_character() -> None:
    e = enc(max_bytes=2)
    got = lines(e.output(1, "€uro".encode()))
    # "€" takes 3 bytes in the cast, more than the room: it goes with the tail.
    assert got == [[1.0, "m", LIMIT_MARK.format(n=2)]]
    assert e.data_bytes == 0
    assert e.omitted_bytes == len("€uro".encode())
    assert e.omitted_sha256() == hashlib.sha256("€uro".encode()).hexdigest()


def test_cap_counts_bytes_as_escaped_in_the_cast() -> None:
    e = enc(max_bytes=12)
    got = lines(e.output(1, b"\0\0\0\0"))  # each NUL is 6 bytes in the cast: two fit
    assert got == [[1.0, "o", "\0\0"], [1.0, "m", LIMIT_MARK.format(n=12)]]
    assert e.data_bytes == 12
    assert e.omitted_bytes == 2


def test_cap_flushes_bytes_pending_from_an_earlier_chunk() -> None:
    e = enc(max_bytes=2)
    assert e.output(1, b"\xe2") == b""
    got = lines(e.output(2, b"\x82\xac"))  # only \x82 fits: "\xe2\x82" is cut -> U+FFFD
    assert got[0] == [2.0, "o", "\ufffd"]
    assert got[1][1] == "m"


def test_uncapped_omitted_hash_is_of_nothing() -> None:
    e = enc()
    e.output(1, b"data")
    assert e.omitted_bytes == 0
    assert e.omitted_sha256() == hashlib.sha256(b"").hexdigest()
    assert not e.capped


# ---------------------------------------------------------------- the real player


def _asciinema() -> Path:
    path = Path(sys.executable).parent / "asciinema"
    assert path.exists(), f"asciinema CLI not installed next to {sys.executable}"
    return path


def _cat(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),  # keep the player's config/install-id out of the real home
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }
    return subprocess.run(
        [str(_asciinema()), "cat", str(path)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=60,
        check=False,
    )


def test_asciinema_cat_plays_the_cast(tmp_path: Path) -> None:
    e = enc(title="test", env={"TERM": "xterm"}, extra={"session": "S1"})
    chunks = [
        e.header(),
        e.output(0.1, b"hello "),
        e.output(0.2, b"\xe2\x82"),
        e.output(0.3, b"\xac world\r\n"),
        e.input(0.35, b"ls\r"),
        e.resize(0.4, 100, 30),
        e.marker(0.5, "$ ls"),
        e.output(0.6, b"bad \xff byte, sep " + "\u2028".encode() + b" end\r\n"),
        e.output(0.7, b"tail\xf0\x9f"),
        e.finish(0.8),
        e.exit(0.8, 0),
    ]
    cast = tmp_path / "s.cast"
    cast.write_bytes(b"".join(chunks))
    result = _cat(cast, tmp_path)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    expected = "hello € world\r\nbad \ufffd byte, sep \u2028 end\r\ntail\ufffd"
    assert result.stdout.decode() == expected


def test_asciinema_cat_plays_a_capped_cast(tmp_path: Path) -> None:
    e = enc(max_bytes=8)
    body = [e.header(), e.output(0.1, b"12345"), e.output(0.2, b"6789abc"), e.output(0.3, b"x")]
    body += [e.finish(0.4)]
    cast = tmp_path / "capped.cast"
    cast.write_bytes(b"".join(body))
    result = _cat(cast, tmp_path)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stdout.decode() == "12345678"


# ---------------------------------------------------------------- ASCII fast path

# Bytes that exercise every branch: the escapes the fast path handles, controls it
# leaves to the general path, a quote, a backslash, DEL, and UTF-8 lead/continuation
# bytes (a character split across chunks leaves the decoder with pending bytes).
_AWKWARD = b'ab \\"\n\r\t\x08\x0c\x1b\x00\x01\x1f\x7f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80'
_chunks = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.lists(st.sampled_from(_AWKWARD), max_size=40).map(bytes),
        st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=60).map(str.encode),
    ),
    max_size=12,
)


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=300).filter(bytes.isascii))
def test_escape_ascii_is_json_string_escaping(data: bytes) -> None:
    escaped = recording._escape_ascii(data)
    expected = encode_basestring(data.decode())[1:-1].encode()
    if escaped is None:  # only for controls it leaves to the general path
        assert any(c < 0x20 and c not in b"\n\r\t\x08\x0c\x1b" for c in data)
    else:
        assert escaped == expected


@settings(max_examples=400, deadline=None)
@given(chunks=_chunks, cap=st.integers(min_value=0, max_value=400), inputs=st.booleans())
def test_ascii_fast_path_writes_the_same_cast_as_the_general_path(
    chunks: list[bytes], cap: int, inputs: bool
) -> None:
    fast, general = enc(max_bytes=cap), enc(max_bytes=cap)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(recording, "_escape_ascii", lambda data: None)
        general_out = [
            general.input(i * 0.5, c) if inputs and i % 2 else general.output(i * 0.5, c)
            for i, c in enumerate(chunks)
        ]
        general_out.append(general.finish(99.0))
    fast_out = [
        fast.input(i * 0.5, c) if inputs and i % 2 else fast.output(i * 0.5, c)
        for i, c in enumerate(chunks)
    ]
    fast_out.append(fast.finish(99.0))
    assert fast_out == general_out
    assert (fast.data_bytes, fast.omitted_bytes, fast.capped) == (
        general.data_bytes,
        general.omitted_bytes,
        general.capped,
    )
    assert fast.omitted_sha256() == general.omitted_sha256()


def test_ascii_fast_path_is_taken_for_plain_terminal_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The property test above would pass with the fast path never taken; this one fails
    then."""
    taken: list[bytes] = []
    real = recording._escape_ascii

    def spy(data: bytes) -> bytes | None:
        taken.append(data)
        return real(data)

    monkeypatch.setattr(recording, "_escape_ascii", spy)
    e = enc()
    assert one(e.output(1.0, b'\x1b[1mok\x1b[0m "a\\b"\r\n')) == [
        1.0,
        "o",
        '\x1b[1mok\x1b[0m "a\\b"\r\n',
    ]
    e.output(1.1, b"\xc3")  # a character's first byte: pending in the decoder
    e.output(1.2, b"\xa9 plain")  # so this ASCII-free chunk and the next take the general path
    assert taken == [b'\x1b[1mok\x1b[0m "a\\b"\r\n']
