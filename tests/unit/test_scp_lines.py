"""Tests for proxy.core.scp (legacy scp control lines) and proxy.core.lines (stdin commands)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.lines import Line, LineSplitter
from proxy.core.scp import ScpCommand, ScpTap, match_scp

# -- the exec command ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("scp -t /tmp/x", ScpCommand("t", "/tmp/x", frozenset())),
        ("scp -f /tmp/x", ScpCommand("f", "/tmp/x", frozenset())),
        ("scp -r -p -d -t /tmp/dir/", ScpCommand("t", "/tmp/dir/", frozenset("rpd"))),
        ("scp -v -d -f -- -x", ScpCommand("f", "-x", frozenset("vd"))),
        ("scp -t '/tmp/a b'", ScpCommand("t", "/tmp/a b", frozenset())),
        ("scp -f ~/logs/*.gz", ScpCommand("f", "~/logs/*.gz", frozenset())),
    ],
)
def test_the_commands_openssh_sends_are_scp(command: str, expected: ScpCommand) -> None:
    assert match_scp(command) == expected


@pytest.mark.parametrize(
    "command",
    [
        "scp -t /x; bash",
        "scp -t /x && bash",
        "scp -t /x | sh",
        "scp -t $(id)",
        "scp -t `id`",
        "scp -t /x\nbash",
        "scp -t /x > /etc/passwd",
        "scp -t /x /y",
        "scp -t -x",
        "scp -tx /x",
        "scp -t",
        " scp -t /x",
        "scp -t /x ",
        "scp -t '/x'; bash",
        "/usr/bin/scp -t /x",
        "scp -S /bin/sh -t /x",
    ],
)
def test_anything_else_is_not_scp(command: str) -> None:
    assert match_scp(command) is None


# -- the protocol -------------------------------------------------------------------------


def tap(command: str) -> ScpTap:
    parsed = match_scp(command)
    assert parsed is not None
    return ScpTap(parsed)


def upload_session(t: ScpTap, *, split: int | None = None) -> list[dict[str, Any]]:
    """scp -t: the engineer sends, the target acks."""
    steps: list[tuple[str, bytes]] = [
        ("a", b"\0"),
        ("c", b"C0644 5 a.txt\n"),
        ("a", b"\0"),
        ("c", b"hello\0"),
        ("a", b"\0"),
        ("c", b"D0755 0 sub\n"),
        ("a", b"\0"),
        ("c", b"T1700000000 0 1700000001 0\n"),
        ("a", b"\0"),
        ("c", b"C0600 3 b\x1b[2J.txt\n"),
        ("a", b"\0"),
        ("c", b"C\n1\0"),
        ("a", b"\0"),
        ("c", b"C0644 2 denied\n"),
        ("a", b"\x01scp: /d/sub/denied: Permission denied\n"),
        ("c", b"E\n"),
        ("a", b"\0"),
    ]
    out: list[dict[str, Any]] = []
    for side, data in steps:
        feed = t.feed_control if side == "c" else t.feed_acks
        pieces = (
            [data] if split is None else [data[i : i + split] for i in range(0, len(data), split)]
        )
        for piece in pieces:
            out += feed(piece)
    return out


@pytest.mark.parametrize("split", [None, 1, 2, 5])
def test_an_upload_gives_one_event_per_file_with_path_size_and_status(split: int | None) -> None:
    events = upload_session(tap("scp -r -d -t /d"), split=split)
    assert events == [
        {
            "kind": "file_write",
            "path": "/d/a.txt",
            "name": "a.txt",
            "size": 5,
            "mode": "0644",
            "status": "ok",
            "source": "scp",
        },
        {
            "kind": "file_mkdir",
            "path": "/d/sub",
            "name": "sub",
            "mode": "0755",
            "status": "ok",
            "source": "scp",
        },
        {
            "kind": "file_write",
            "path": "/d/sub/b\x1b[2J.txt",
            "name": "b\x1b[2J.txt",
            "size": 3,
            "mode": "0600",
            "mtime": 1700000000,
            "atime": 1700000001,
            "status": "ok",
            "source": "scp",
        },
        {
            "kind": "file_write",
            "path": "/d/sub/denied",
            "name": "denied",
            "size": 2,
            "mode": "0644",
            "status": "error",
            "message": "scp: /d/sub/denied: Permission denied",
            "source": "scp",
        },
    ]


def test_one_file_to_an_explicit_name_keeps_that_name() -> None:
    t = tap("scp -t /tmp/new.sql")
    out = t.feed_acks(b"\0") + t.feed_control(b"C0644 3 dump.sql\n") + t.feed_acks(b"\0")
    out += t.feed_control(b"abc\0") + t.feed_acks(b"\0")
    assert [(e["path"], e["name"], e["status"]) for e in out] == [
        ("/tmp/new.sql", "dump.sql", "ok")
    ]


def test_a_download_reads_control_lines_from_the_target() -> None:
    t = tap("scp -f /var/log/syslog")
    out = t.feed_acks(b"\0") + t.feed_control(b"C0640 4 syslog\n") + t.feed_acks(b"\0")
    out += t.feed_control(b"abcd\0") + t.feed_acks(b"\0")
    assert out == [
        {
            "kind": "file_read",
            "path": "/var/log/syslog",
            "name": "syslog",
            "size": 4,
            "mode": "0640",
            "status": "ok",
            "source": "scp",
        }
    ]


def test_a_download_of_a_missing_file_is_an_error_event() -> None:
    t = tap("scp -f /nope")
    out = t.feed_acks(b"\0") + t.feed_control(b"\x01scp: /nope: No such file or directory\n")
    assert out == [
        {
            "kind": "file_read",
            "path": "/nope",
            "status": "error",
            "message": "scp: /nope: No such file or directory",
            "source": "scp",
        }
    ]


def test_a_recursive_download_builds_paths_from_the_directory_stack() -> None:
    t = tap("scp -r -f /etc/nginx")
    out = t.feed_acks(b"\0") + t.feed_control(b"D0755 0 nginx\n") + t.feed_acks(b"\0")
    out += t.feed_control(b"C0644 1 n.conf\n") + t.feed_acks(b"\0")
    out += t.feed_control(b"x\0") + t.feed_acks(b"\0")
    out += t.feed_control(b"E\n") + t.feed_acks(b"\0")
    assert [e["path"] for e in out] == ["/etc/nginx/n.conf"]


def test_an_unfinished_file_is_reported_at_the_end() -> None:
    t = tap("scp -t /tmp/x")
    t.feed_acks(b"\0")
    t.feed_control(b"C0644 100 x\n")
    t.feed_acks(b"\0")
    t.feed_control(b"partial")
    [ev] = t.finish()
    assert (ev["path"], ev["status"]) == ("/tmp/x", "incomplete")


@pytest.mark.parametrize("bad", [b"X123\n", b"C0644 abc name\n", b"\n", b"C" * 9000])
def test_malformed_control_lines_are_one_parse_error(bad: bytes) -> None:
    t = tap("scp -t /tmp/x")
    t.feed_acks(b"\0")
    [ev] = t.feed_control(bad)
    assert ev["kind"] == "scp_parse_error"
    assert t.feed_control(b"C0644 1 y\n") == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=200)), max_size=20))
def test_random_bytes_never_raise(chunks: list[tuple[bool, bytes]]) -> None:
    t = tap("scp -r -t /tmp")
    for control, data in chunks:
        (t.feed_control if control else t.feed_acks)(data)
    t.finish()


# -- stdin lines --------------------------------------------------------------------------


def test_lines_are_split_across_chunks_and_blank_lines_skipped() -> None:
    s = LineSplitter()
    assert s.feed(b"uptime\nsystemctl res") == [Line("uptime")]
    assert s.feed(b"tart nginx\r\n\n   \ndf -h") == [Line("systemctl restart nginx")]
    assert s.finish() == [Line("df -h")]


def test_lines_byte_by_byte_equal_lines_whole() -> None:
    script = b"echo a\nfor i in 1 2; do\n  echo $i\ndone\n\xff\x1b[31m\n"
    whole = LineSplitter().feed(script)
    s = LineSplitter()
    bytewise = [line for i in range(len(script)) for line in s.feed(script[i : i + 1])]
    assert bytewise == whole
    assert whole[-1] == Line("\\xff\x1b[31m")


def test_a_long_line_is_truncated_and_flagged() -> None:
    s = LineSplitter(max_line=10)
    out = s.feed(b"0123456789ABCDEF")
    out += s.feed(b"GHI\nnext\n")
    assert out == [Line("0123456789", truncated=True), Line("next")]
    assert LineSplitter(max_line=4).feed(b"abcdefgh\nx\n") == [Line("abcd", True), Line("x")]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(1, 50), max_size=20))
def test_chunking_never_changes_the_lines(data: bytes, cuts: list[int]) -> None:
    whole = LineSplitter(max_line=16)
    expected = whole.feed(data) + whole.finish()
    s = LineSplitter(max_line=16)
    out: list[Line] = []
    pos = 0
    for n in cuts:
        out += s.feed(data[pos : pos + n])
        pos += n
    out += s.feed(data[pos:]) + s.finish()
    assert out == expected
