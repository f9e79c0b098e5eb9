"""Tests for proxy.core.sftp: the passive SFTP parser, fed whole, in chunks and byte by byte."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.sftp import MAX_HANDLES, MAX_PACKET, MAX_PATH, MAX_PENDING, SftpTap
from tests.unit import sftpwire as w

H = b"\x00\x00\x00\x01"
H2 = b"h2"

Step = tuple[str, bytes]  # ("c", client bytes) or ("s", server bytes)


def run(steps: Sequence[Step], *, split: int | None = None) -> list[dict[str, Any]]:
    """Feed each step whole, or cut into ``split``-byte pieces (1: byte by byte)."""
    tap = SftpTap()
    out: list[dict[str, Any]] = []
    for side, data in steps:
        feed = tap.feed_client if side == "c" else tap.feed_server
        if split is None:
            out += feed(data)
        else:
            for i in range(0, len(data), split):
                out += feed(data[i : i + split])
    return out


def start() -> list[Step]:
    return [("c", w.init()), ("s", w.version((("posix-rename@openssh.com", "1"),)))]


def upload(path: str = "/tmp/up.bin", payload: bytes = b"x" * 70000) -> list[Step]:
    steps = [*start(), ("c", w.open_(1, path, 0x1A, 0o644)), ("s", w.handle(1, H))]
    chunk = 32768
    rid = 2
    for off in range(0, len(payload), chunk):
        steps.append(("c", w.write(rid, H, off, payload[off : off + chunk])))
        rid += 1
    for r in range(2, rid):
        steps.append(("s", w.status(r)))
    steps += [("c", w.close(rid, H)), ("s", w.status(rid))]
    return steps


UPLOAD_EVENTS = [
    {
        "kind": "file_open",
        "path": "/tmp/up.bin",
        "flags": ["write", "creat", "trunc"],
        "mode": "0644",
        "source": "sftp",
        "status": "ok",
    },
    {
        "kind": "file_close",
        "path": "/tmp/up.bin",
        "flags": ["write", "creat", "trunc"],
        "bytes_read": 0,
        "bytes_written": 70000,
        "source": "sftp",
        "sha256": hashlib.sha256(b"x" * 70000).hexdigest(),
        "status": "ok",
    },
]


@pytest.mark.parametrize("split", [None, 1, 3, 4, 5, 7, 4096, 32773])
def test_an_upload_gives_open_and_close_with_bytes_and_hash(split: int | None) -> None:
    assert run(upload(), split=split) == UPLOAD_EVENTS


def test_every_byte_boundary_of_every_packet_gives_the_same_events() -> None:
    steps = upload(payload=b"abc" * 10)
    expected = run(steps)
    for i, (side, packet) in enumerate(steps):
        for cut in range(1, len(packet)):
            tap = SftpTap()
            out: list[dict[str, Any]] = []
            for j, (s2, d) in enumerate(steps):
                feed = tap.feed_client if s2 == "c" else tap.feed_server
                if j == i:
                    out += feed(d[:cut])
                    out += feed(d[cut:])
                else:
                    out += feed(d)
            assert out == expected, (i, side, cut)


def test_a_download_counts_bytes_read_by_request_id_and_hashes_them() -> None:
    payload = bytes(range(256)) * 300
    steps = [*start(), ("c", w.open_(1, "/etc/hosts", 1)), ("s", w.handle(1, H))]
    # Three pipelined reads, replies out of order, then EOF.
    steps += [
        ("c", w.read(2, H, 0, 32768)),
        ("c", w.read(3, H, 32768, 32768)),
        ("c", w.read(4, H, 65536, 32768)),
        ("s", w.data(2, payload[:32768])),
        ("s", w.data(3, payload[32768:65536])),
        ("s", w.data(4, payload[65536:])),
        ("c", w.read(5, H, len(payload), 32768)),
        ("s", w.status(5, 1, "EOF")),
        ("c", w.close(6, H)),
        ("s", w.status(6)),
    ]
    events = run(steps)
    assert events[0]["kind"] == "file_open"
    assert events[0]["flags"] == ["read"]
    close = events[1]
    assert close["kind"] == "file_close"
    assert close["bytes_read"] == len(payload)
    assert close["bytes_written"] == 0
    assert close["read_sha256"] == hashlib.sha256(payload).hexdigest()
    assert "sha256" not in close


def test_writes_out_of_order_are_counted_but_not_hashed() -> None:
    steps = [*start(), ("c", w.open_(1, "/x", 2)), ("s", w.handle(1, H))]
    steps += [("c", w.write(2, H, 10, b"b" * 10)), ("c", w.write(3, H, 0, b"a" * 10))]
    steps += [("s", w.status(2)), ("s", w.status(3)), ("c", w.close(4, H)), ("s", w.status(4))]
    close = run(steps)[-1]
    assert close["bytes_written"] == 20
    assert close["sha256"] is None
    assert close["hash_note"] == "writes not sequential"


def test_reads_out_of_order_are_counted_but_not_hashed() -> None:
    steps = [*start(), ("c", w.open_(1, "/x", 1)), ("s", w.handle(1, H))]
    steps += [("c", w.read(2, H, 100, 10)), ("s", w.data(2, b"z" * 10))]
    steps += [("c", w.close(3, H)), ("s", w.status(3))]
    close = run(steps)[-1]
    assert (close["bytes_read"], close["read_sha256"]) == (10, None)
    assert close["read_hash_note"] == "reads not sequential"


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (0, "ok"),
        (1, "eof"),
        (2, "no such file"),
        (3, "permission denied"),
        (4, "failure"),
        (5, "bad message"),
        (6, "no connection"),
        (7, "connection lost"),
        (8, "unsupported"),
        (99, "status 99"),
    ],
)
def test_status_codes_are_named_and_failures_keep_their_message(code: int, name: str) -> None:
    steps = [*start(), ("c", w.req(13, 7, w.s("/etc/shadow"))), ("s", w.status(7, code, "why"))]
    [ev] = run(steps)
    assert ev["kind"] == "file_remove"
    assert ev["status"] == name
    assert ev.get("message") == (None if code == 0 else "why")


def test_a_failed_open_is_one_event_with_the_status() -> None:
    steps = [*start(), ("c", w.open_(1, "/root/x", 1)), ("s", w.status(1, 3, "Permission denied"))]
    assert run(steps) == [
        {
            "kind": "file_open",
            "path": "/root/x",
            "flags": ["read"],
            "source": "sftp",
            "status": "permission denied",
            "message": "Permission denied",
        }
    ]


def op(ptype: int, body: bytes) -> list[Step]:
    return [*start(), ("c", w.req(ptype, 9, body)), ("s", w.status(9))]


def ext(name: str, body: bytes) -> list[Step]:
    return [*start(), ("c", w.extended(9, name, body)), ("s", w.status(9))]


ATTRS_MODE = w.u32(4) + w.u32(0o40755)


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (op(13, w.s("/a")), {"kind": "file_remove", "path": "/a"}),
        (op(14, w.s("/d") + ATTRS_MODE), {"kind": "file_mkdir", "path": "/d", "mode": "0755"}),
        (op(15, w.s("/d")), {"kind": "file_rmdir", "path": "/d"}),
        (
            op(18, w.s("/a") + w.s("/b")),
            {"kind": "file_rename", "path": "/a", "target_path": "/b"},
        ),
        # OpenSSH: SYMLINK(target, link) -- the link is what gets created.
        (
            op(20, w.s("/etc/passwd") + w.s("/tmp/l")),
            {"kind": "file_symlink", "path": "/tmp/l", "target_path": "/etc/passwd"},
        ),
        (
            op(9, w.s("/f") + w.u32(0xD) + w.u64(0) + w.u32(0o100600) + w.u32(1) + w.u32(2)),
            {
                "kind": "file_setstat",
                "path": "/f",
                "size": 0,
                "mode": "0600",
                "atime": 1,
                "mtime": 2,
            },
        ),
        (
            op(9, w.s("/f") + w.u32(2) + w.u32(0) + w.u32(0)),
            {"kind": "file_setstat", "path": "/f", "uid": 0, "gid": 0},
        ),
        (
            ext("posix-rename@openssh.com", w.s("/a") + w.s("/b")),
            {
                "kind": "file_rename",
                "path": "/a",
                "target_path": "/b",
                "extension": "posix-rename@openssh.com",
            },
        ),
        (
            ext("hardlink@openssh.com", w.s("/a") + w.s("/b")),
            {
                "kind": "file_link",
                "path": "/b",
                "target_path": "/a",
                "extension": "hardlink@openssh.com",
            },
        ),
        (
            ext("lsetstat@openssh.com", w.s("/l") + w.u32(4) + w.u32(0o777)),
            {
                "kind": "file_setstat",
                "path": "/l",
                "mode": "0777",
                "extension": "lsetstat@openssh.com",
            },
        ),
        (
            ext("statvfs@openssh.com", w.s("/")),
            {"kind": "file_statvfs", "path": "/", "extension": "statvfs@openssh.com"},
        ),
        (
            ext("x-unknown@example.com", b"whatever"),
            {"kind": "file_extended", "path": None, "extension": "x-unknown@example.com"},
        ),
    ],
)
def test_each_operation_is_one_event_with_the_targets_status(
    steps: list[Step], expected: dict[str, Any]
) -> None:
    for split in (None, 1):
        [ev] = run(steps, split=split)
        assert ev == {**expected, "source": "sftp", "status": "ok"}


@pytest.mark.parametrize("name", ["limits@openssh.com", "expand-path@openssh.com"])
def test_negotiation_and_lookups_make_no_event(name: str) -> None:
    steps = [*start(), ("c", w.extended(3, name, w.s("~"))), ("s", w.req(201, 3, b"\0" * 32))]
    steps += [("c", w.req(16, 4, w.s("."))), ("s", w.name(4, "/home/u"))]
    steps += [("c", w.req(17, 5, w.s("/etc"))), ("s", w.req(105, 5, w.u32(0)))]
    assert run(steps) == []


def test_handle_operations_name_the_file() -> None:
    steps = [*start(), ("c", w.open_(1, "/f", 2)), ("s", w.handle(1, H))]
    steps += [("c", w.open_(2, "/g", 0x1A)), ("s", w.handle(2, H2))]
    steps += [("c", w.extended(3, "fsync@openssh.com", w.s(H))), ("s", w.status(3))]
    steps += [("c", w.req(10, 4, w.s(H) + w.u32(4) + w.u32(0o600))), ("s", w.status(4))]
    body = w.s(H) + w.u64(0) + w.u64(100) + w.s(H2) + w.u64(0)
    steps += [("c", w.extended(5, "copy-data", body)), ("s", w.status(5))]
    events = run(steps)
    assert [(e["kind"], e["path"]) for e in events] == [
        ("file_open", "/f"),
        ("file_open", "/g"),
        ("file_fsync", "/f"),
        ("file_setstat", "/f"),
        ("file_copy", "/f"),
    ]
    assert events[4]["target_path"] == "/g"
    assert events[4]["length"] == 100
    assert events[3]["mode"] == "0600"


def test_a_directory_listing_is_one_event_with_the_entry_count() -> None:
    steps = [*start(), ("c", w.req(11, 1, w.s("/etc"))), ("s", w.handle(1, H))]
    steps += [("c", w.req(12, 2, w.s(H))), ("s", w.name(2, "a", "b", "c"))]
    steps += [("c", w.req(12, 3, w.s(H))), ("s", w.name(3, "d"))]
    steps += [("c", w.req(12, 4, w.s(H))), ("s", w.status(4, 1))]
    steps += [("c", w.close(5, H)), ("s", w.status(5))]
    assert run(steps) == [
        {"kind": "file_list", "path": "/etc", "entries": 4, "source": "sftp", "status": "ok"}
    ]
    failed = [*start(), ("c", w.req(11, 1, w.s("/root"))), ("s", w.status(1, 3, "denied"))]
    assert run(failed)[0]["status"] == "permission denied"


def test_readlink_gives_the_link_target() -> None:
    steps = [*start(), ("c", w.req(19, 1, w.s("/l"))), ("s", w.name(1, "/etc/passwd"))]
    assert run(steps) == [
        {
            "kind": "file_readlink",
            "path": "/l",
            "source": "sftp",
            "target_path": "/etc/passwd",
            "status": "ok",
        }
    ]


def test_hostile_paths_are_stored_verbatim() -> None:
    hostile = "/tmp/\x1b[2J\r\nfake line\u202e\x00.txt"
    [ev] = run(op(13, w.s(hostile)))
    assert ev["path"] == hostile
    [ev] = run(op(13, w.s(b"/tmp/\xff\xfe")))
    assert ev["path"] == "/tmp/\\xff\\xfe"
    assert ev["raw"] is True


def test_an_oversize_packet_is_one_parse_error_and_parsing_stops() -> None:
    tap = SftpTap()
    assert tap.feed_client(w.init()) == []
    big = w.write(1, H, 0, b"x" * MAX_PACKET)
    events = tap.feed_client(big[:100])
    assert events == [
        {
            "kind": "sftp_parse_error",
            "direction": "client",
            "detail": f"packet of {len(big) - 4} bytes exceeds {MAX_PACKET}",
            "source": "sftp",
        }
    ]
    assert tap.stopped
    assert tap.feed_client(big[100:]) == []
    assert tap.feed_server(w.status(1)) == []
    assert tap.finish() == []


@pytest.mark.parametrize(
    "bad",
    [
        w.packet(3, w.u32(1) + w.u32(1000) + b"short"),  # string longer than the packet
        w.packet(99, w.u32(1)),  # unknown request type
        w.packet(6, b"\0\0"),  # truncated id
        b"\0\0\0\0",  # empty packet
    ],
)
def test_malformed_client_packets_are_one_parse_error(bad: bytes) -> None:
    tap = SftpTap()
    events = tap.feed_client(w.init() + bad + w.open_(2, "/x", 1))
    assert [e["kind"] for e in events] == ["sftp_parse_error"]
    assert tap.stopped


def test_a_version_other_than_3_stops_parsing() -> None:
    tap = SftpTap()
    tap.feed_client(w.init())
    [ev] = tap.feed_server(w.packet(2, w.u32(6)))
    assert ev["detail"] == "unsupported sftp version 6"


def test_finish_reports_files_left_open_and_requests_unanswered() -> None:
    steps = [*start(), ("c", w.open_(1, "/f", 2)), ("s", w.handle(1, H))]
    steps += [("c", w.write(2, H, 0, b"abc")), ("c", w.req(13, 3, w.s("/gone")))]
    tap = SftpTap()
    for side, d in steps:
        (tap.feed_client if side == "c" else tap.feed_server)(d)
    events = tap.finish()
    assert [(e["kind"], e["path"], e["status"]) for e in events] == [
        ("file_remove", "/gone", "no reply"),
        ("file_close", "/f", "not closed"),
    ]
    assert events[1]["bytes_written"] == 3


def test_requests_never_answered_are_tracked_up_to_the_cap_then_the_oldest_go() -> None:
    tap = SftpTap()
    tap.feed_client(w.init())
    tap.feed_server(w.version())
    removes = b"".join(w.req(13, rid, w.s(f"/gone-{rid}")) for rid in range(5000))
    stats = b"".join(w.req(17, rid, w.s("/")) for rid in range(5000, 10_000))
    lost = tap.feed_client(removes) + tap.feed_client(stats)
    assert len(tap._pending) == MAX_PENDING
    assert lost.pop(0) == {
        "kind": "sftp_tracking_lost",
        "detail": f"more than {MAX_PENDING} requests awaiting replies",
        "source": "sftp",
    }
    # Every remove is still written once (its status says its reply was not awaited);
    # the stats make no event, they are counted.
    assert len(lost) == 5000, len(lost)
    assert {(e["kind"], e["status"]) for e in lost} == {("file_remove", "not tracked")}
    assert [e["path"] for e in lost[:2]] == ["/gone-0", "/gone-1"]  # the oldest first
    # A reply to a request still tracked completes it as usual.
    assert tap.feed_server(w.status(9999)) == []
    assert len(tap._pending) == MAX_PENDING - 1
    end = tap.finish()
    assert end[-1] == {
        "kind": "sftp_untracked",
        "requests": 10_000 - MAX_PENDING,
        "handles": 0,
        "max_pending": MAX_PENDING,
        "max_handles": MAX_HANDLES,
        "source": "sftp",
    }


def test_handles_never_closed_are_tracked_up_to_the_cap_then_the_oldest_go() -> None:
    tap = SftpTap()
    tap.feed_client(w.init())
    tap.feed_server(w.version())
    count = MAX_HANDLES + 300
    events: list[dict[str, Any]] = []
    for rid in range(count):
        events += tap.feed_client(w.open_(rid, f"/f{rid}", 1))
        events += tap.feed_server(w.handle(rid, b"h%d" % rid))
    assert len(tap._handles) == MAX_HANDLES
    assert [e["detail"] for e in events if e["kind"] == "sftp_tracking_lost"] == [
        f"more than {MAX_HANDLES} open handles"
    ]
    opens = [e for e in events if e["kind"] == "file_open"]
    closes = [e for e in events if e["kind"] == "file_close"]
    assert len(opens) == count
    assert [(e["path"], e["status"]) for e in closes[:2]] == [
        ("/f0", "not tracked"),
        ("/f1", "not tracked"),
    ]
    assert len(closes) == 300
    # A handle still tracked is closed as usual.
    done = tap.feed_client(w.close(count, b"h%d" % (count - 1)))
    done += tap.feed_server(w.status(count))
    assert [(e["kind"], e["path"], e["status"]) for e in done] == [
        ("file_close", f"/f{count - 1}", "ok")
    ]
    end = tap.finish()
    assert len([e for e in end if e.get("status") == "not closed"]) == MAX_HANDLES - 1
    assert (end[-1]["handles"], end[-1]["requests"]) == (300, 0), end[-1]


def test_a_path_longer_than_path_max_is_held_cut() -> None:
    tap = SftpTap()
    long = "/" + "p" * 200_000
    tap.feed_client(w.init() + w.req(13, 1, w.s(long)))
    [ev] = tap.feed_server(w.status(1, 2, "no such file"))
    assert len(ev["path"]) == MAX_PATH, len(ev["path"])
    assert ev["path_cut"] is True
    assert ev["status"] == "no such file"


def test_replies_to_requests_never_seen_are_ignored() -> None:
    tap = SftpTap()
    assert tap.feed_server(w.status(42) + w.data(43, b"x") + w.handle(44, b"h")) == []
    assert not tap.stopped


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=20))
def test_random_bytes_never_raise(chunks: list[tuple[bool, bytes]]) -> None:
    tap = SftpTap()
    for client, data in chunks:
        events = (tap.feed_client if client else tap.feed_server)(data)
        assert all(isinstance(e, dict) for e in events)
    tap.finish()


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_truncated_and_mutated_real_sessions_never_raise(data: st.DataObject) -> None:
    steps = upload(payload=b"q" * 100) + op(18, w.s("/a") + w.s("/b"))
    tap = SftpTap()
    for side, d in steps:
        cut = data.draw(st.integers(0, len(d)))
        flip = data.draw(st.integers(0, max(0, len(d) - 1)))
        mutated = bytearray(d[:cut])
        if mutated and data.draw(st.booleans()):
            mutated[min(flip, len(mutated) - 1)] ^= 0xFF
        (tap.feed_client if side == "c" else tap.feed_server)(bytes(mutated))
    tap.finish()
