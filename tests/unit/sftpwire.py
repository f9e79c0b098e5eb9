"""Building SFTP v3 packets for the parser's tests and benchmark."""

from __future__ import annotations

import struct


def s(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return struct.pack(">I", len(raw)) + raw


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def packet(ptype: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, ptype) + body


def req(ptype: int, rid: int, body: bytes = b"") -> bytes:
    return packet(ptype, u32(rid) + body)


def init() -> bytes:
    return packet(1, u32(3))


def version(extensions: tuple[tuple[str, str], ...] = ()) -> bytes:
    return packet(2, u32(3) + b"".join(s(k) + s(v) for k, v in extensions))


def status(rid: int, code: int = 0, message: str = "") -> bytes:
    return req(101, rid, u32(code) + s(message) + s(""))


def handle(rid: int, h: bytes) -> bytes:
    return req(102, rid, s(h))


def data(rid: int, payload: bytes) -> bytes:
    return req(103, rid, s(payload))


def name(rid: int, *names: str) -> bytes:
    body = u32(len(names)) + b"".join(s(n) + s("-rw " + n) + u32(0) for n in names)
    return req(104, rid, body)


def open_(rid: int, path: bytes | str, pflags: int, mode: int | None = None) -> bytes:
    attrs = u32(4) + u32(mode) if mode is not None else u32(0)
    return req(3, rid, s(path) + u32(pflags) + attrs)


def write(rid: int, h: bytes, offset: int, payload: bytes) -> bytes:
    return req(6, rid, s(h) + u64(offset) + s(payload))


def read(rid: int, h: bytes, offset: int, length: int) -> bytes:
    return req(5, rid, s(h) + u64(offset) + u32(length))


def close(rid: int, h: bytes) -> bytes:
    return req(4, rid, s(h))


def extended(rid: int, ext: str, body: bytes = b"") -> bytes:
    return req(200, rid, s(ext) + body)
