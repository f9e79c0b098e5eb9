"""A passive SFTP (version 3, as OpenSSH speaks it) parser: relayed bytes in, file events out.

Sans-IO, like h11: the relay hands over what the engineer sent (``feed_client``) and what
the target answered (``feed_server``), in the order they passed through the proxy, and
gets back a list of finished file operations. It never holds, changes or delays a byte:
it only reads copies. Requests are matched with their replies by request id, so the
client's pipelining (64 requests in flight) is untouched.

One event per file operation, completed with the target's answer::

    {"kind": "file_close", "path": "/etc/x", "flags": ["write", "creat", "trunc"],
     "bytes_read": 0, "bytes_written": 5000, "sha256": "...", "status": "ok",
     "source": "sftp"}

Paths are stored verbatim (control characters included; callers escape whenever they
show them); bytes that are not UTF-8 become ``\\xNN`` and the event says ``"raw": true``.
A packet longer than ``MAX_PACKET`` or one that does not parse yields one
``sftp_parse_error`` event, after which the parser ignores the channel. The tables of
requests awaiting replies and of open handles are capped (``MAX_PENDING``,
``MAX_HANDLES``): past a cap the oldest entry's event is written with status
``not tracked``; the first time, an ``sftp_tracking_lost`` event (which alerts), and the
channel's end adds one ``sftp_untracked`` event with the counts.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

from proxy.core import events as catalogue
from proxy.core.text import truncate

Event = dict[str, Any]

# OpenSSH's sftp-server refuses messages over 256 KiB; a little slack for headers.
MAX_PACKET = 256 * 1024 + 4096
# Requests awaiting their reply, and open handles, tracked at most (the client picks how
# many: one that never reads its replies, or opens files it never closes, would otherwise
# grow the tables without end). OpenSSH's sftp keeps 64 requests in flight; sftp-server
# holds a handle per open file. Past a cap the oldest entry is let go: its event is
# written then, its status "not tracked", and ``finish`` reports how many went.
MAX_PENDING = 1024
MAX_HANDLES = 1024
# A path longer than Linux's PATH_MAX names no file; an event keeps this much of it.
MAX_PATH = 4096

# Packet types (draft-ietf-secsh-filexfer-02, version 3).
INIT, VERSION = 1, 2
OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT, FSETSTAT = 3, 4, 5, 6, 7, 8, 9, 10
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME = 11, 12, 13, 14, 15, 16, 17, 18
READLINK, SYMLINK = 19, 20
STATUS, HANDLE, DATA, NAME, ATTRS = 101, 102, 103, 104, 105
EXTENDED, EXTENDED_REPLY = 200, 201

STATUS_NAMES = {
    0: "ok",
    1: "eof",
    2: "no such file",
    3: "permission denied",
    4: "failure",
    5: "bad message",
    6: "no connection",
    7: "connection lost",
    8: "unsupported",
}

PFLAGS = (
    (0x01, "read"),
    (0x02, "write"),
    (0x04, "append"),
    (0x08, "creat"),
    (0x10, "trunc"),
    (0x20, "excl"),
)

ATTR_SIZE, ATTR_UIDGID, ATTR_PERMISSIONS, ATTR_ACMODTIME = 0x1, 0x2, 0x4, 0x8
ATTR_EXTENDED = 0x80000000

# Requests that only look (stat, realpath, ...): matched with their replies, no event.
_QUIET = frozenset({LSTAT, FSTAT, STAT, REALPATH})
# Extensions that only negotiate or look: no event either.
_QUIET_EXTENSIONS = frozenset(
    {
        "limits@openssh.com",
        "expand-path@openssh.com",
        "home-directory",
        "users-groups-by-id@openssh.com",
        "check-file-name",
        "check-file-handle",
    }
)

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class ParseError(Exception):
    pass


def status_name(code: int) -> str:
    return STATUS_NAMES.get(code, f"status {code}")


def flag_names(pflags: int) -> list[str]:
    names = [name for bit, name in PFLAGS if pflags & bit]
    rest = pflags & ~0x3F
    if rest:
        names.append(f"0x{rest:x}")
    return names


def decode_path(raw: bytes) -> tuple[str, bool]:
    """The path as text, verbatim; ``True`` when it was not UTF-8 (bytes shown as \\xNN)."""
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), True


class _Reader:
    """Reads one packet's fields; any overrun is a ParseError."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int, end: int) -> None:
        self.buf = buf
        self.pos = pos
        self.end = end

    def u32(self) -> int:
        p = self.pos
        if p + 4 > self.end:
            raise ParseError("truncated uint32")
        self.pos = p + 4
        value: int = _U32.unpack_from(self.buf, p)[0]
        return value

    def u64(self) -> int:
        p = self.pos
        if p + 8 > self.end:
            raise ParseError("truncated uint64")
        self.pos = p + 8
        value: int = _U64.unpack_from(self.buf, p)[0]
        return value

    def string_span(self) -> tuple[int, int]:
        n = self.u32()
        p = self.pos
        if p + n > self.end:
            raise ParseError("truncated string")
        self.pos = p + n
        return p, p + n

    def string(self) -> bytes:
        a, b = self.string_span()
        return bytes(self.buf[a:b])

    def attrs(self) -> dict[str, Any]:
        flags = self.u32()
        out: dict[str, Any] = {}
        if flags & ATTR_SIZE:
            out["size"] = self.u64()
        if flags & ATTR_UIDGID:
            out["uid"] = self.u32()
            out["gid"] = self.u32()
        if flags & ATTR_PERMISSIONS:
            out["mode"] = f"{self.u32() & 0o7777:04o}"
        if flags & ATTR_ACMODTIME:
            out["atime"] = self.u32()
            out["mtime"] = self.u32()
        if flags & ATTR_EXTENDED:
            count = self.u32()
            if count > 1024:
                raise ParseError("too many extended attributes")
            names = []
            for _ in range(count):
                names.append(decode_path(self.string())[0])
                self.string()
            out["extended"] = names
        return out


@dataclass
class _Handle:
    path: str
    raw: bool
    flags: list[str] | None  # None: a directory
    bytes_read: int = 0
    bytes_written: int = 0
    entries: int = 0
    wsha: Any = None
    wnext: int = 0  # next offset a sequential write would have
    whash_note: str | None = None
    rsha: Any = None
    rnext: int = 0
    rhash_note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Pending:
    op: str  # the event kind, or "" for a request that produces no event
    event: Event | None = None
    handle: bytes | None = None
    offset: int = 0
    length: int = 0


class SftpTap:
    """Both directions of one sftp channel. ``feed_*`` never raise."""

    def __init__(
        self,
        max_packet: int = MAX_PACKET,
        max_pending: int = MAX_PENDING,
        max_handles: int = MAX_HANDLES,
    ) -> None:
        self.max_packet = max_packet
        self.max_pending = max_pending
        self.max_handles = max_handles
        self.untracked_requests = 0
        self.untracked_handles = 0
        self.stopped = False
        self.version: int | None = None
        self._bufs = {"client": bytearray(), "server": bytearray()}
        self._pending: dict[int, _Pending] = {}
        self._handles: dict[bytes, _Handle] = {}

    # -- framing ------------------------------------------------------------------------

    def feed_client(self, data: bytes) -> list[Event]:
        """Bytes the engineer sent to the target."""
        return self._feed("client", data)

    def feed_server(self, data: bytes) -> list[Event]:
        """Bytes the target sent back."""
        return self._feed("server", data)

    def _feed(self, side: str, data: bytes) -> list[Event]:
        if self.stopped or not data:
            return []
        out: list[Event] = []
        buf = self._bufs[side]
        try:
            if not buf and len(data) >= 4:
                # Common case: whole packets in this chunk, parsed without copying.
                pos = self._frames(side, data, out)
                if pos < len(data):
                    buf += data[pos:]
                return out
            buf += data
            pos = self._frames(side, buf, out)
            if pos:
                del buf[:pos]
        except ParseError as exc:
            out.append(self._stop(side, str(exc)))
        except Exception as exc:  # never let a parser bug reach the relay
            out.append(self._stop(side, f"internal error: {type(exc).__name__}: {exc}"))
        return out

    def _frames(self, side: str, buf: bytes | bytearray, out: list[Event]) -> int:
        pos = 0
        end = len(buf)
        unpack = _U32.unpack_from
        handler = self._client_packet if side == "client" else self._server_packet
        while end - pos >= 4:
            (length,) = unpack(buf, pos)
            if length > self.max_packet:
                raise ParseError(f"packet of {length} bytes exceeds {self.max_packet}")
            if length < 1:
                raise ParseError("empty packet")
            if end - pos - 4 < length:
                break
            handler(buf, pos + 4, pos + 4 + length, out)
            pos += 4 + length
        return pos

    def _stop(self, side: str, detail: str) -> Event:
        self.stopped = True
        self._bufs = {"client": bytearray(), "server": bytearray()}
        return {
            "kind": catalogue.SftpParseError.TYPE,
            "direction": side,
            "detail": detail,
            "source": "sftp",
        }

    # -- engineer -> target -------------------------------------------------------------

    def _client_packet(
        self, buf: bytes | bytearray, start: int, end: int, out: list[Event]
    ) -> None:
        ptype = buf[start]
        r = _Reader(buf, start + 1, end)
        if ptype == INIT:
            r.u32()
            return
        rid = r.u32()
        if ptype == WRITE:
            handle = r.string()
            offset = r.u64()
            a, b = r.string_span()
            h = self._handles.get(handle)
            if h is not None:
                n = b - a
                h.bytes_written += n
                if h.whash_note is None:
                    if offset != h.wnext:
                        h.whash_note = "writes not sequential"
                        h.wsha = None
                    else:
                        if h.wsha is None:
                            h.wsha = hashlib.sha256()
                        with memoryview(buf) as view:
                            h.wsha.update(view[a:b])
                        h.wnext = offset + n
            self._expect(rid, _Pending(""), out)
            return
        if ptype == READ:
            handle = r.string()
            offset = r.u64()
            length = r.u32()
            self._expect(rid, _Pending("read", handle=handle, offset=offset, length=length), out)
            return
        if ptype == OPEN:
            path, raw = decode_path(r.string())
            pflags = r.u32()
            attrs = r.attrs()
            ev = self._event(catalogue.FileOpen.TYPE, path, raw, flags=flag_names(pflags))
            if "mode" in attrs:
                ev["mode"] = attrs["mode"]
            self._expect(rid, _Pending(catalogue.FileOpen.TYPE, ev), out)
            return
        if ptype == CLOSE:
            self._expect(rid, _Pending("close", handle=r.string()), out)
            return
        if ptype == OPENDIR:
            path, raw = decode_path(r.string())
            self._expect(
                rid, _Pending("opendir", self._event(catalogue.FileList.TYPE, path, raw)), out
            )
            return
        if ptype == READDIR:
            self._expect(rid, _Pending("readdir", handle=r.string()), out)
            return
        if ptype in (REMOVE, RMDIR, READLINK):
            kind = {
                REMOVE: catalogue.FileRemove.TYPE,
                RMDIR: catalogue.FileRmdir.TYPE,
                READLINK: catalogue.FileReadlink.TYPE,
            }[ptype]
            path, raw = decode_path(r.string())
            self._expect(rid, _Pending(kind, self._event(kind, path, raw)), out)
            return
        if ptype in (MKDIR, SETSTAT):
            kind = catalogue.FileMkdir.TYPE if ptype == MKDIR else catalogue.FileSetstat.TYPE
            path, raw = decode_path(r.string())
            ev = self._event(kind, path, raw)
            ev.update(r.attrs())
            self._expect(rid, _Pending(kind, ev), out)
            return
        if ptype == FSETSTAT:
            handle = r.string()
            ev = self._handle_event(catalogue.FileSetstat.TYPE, handle)
            ev.update(r.attrs())
            self._expect(rid, _Pending(catalogue.FileSetstat.TYPE, ev), out)
            return
        if ptype == RENAME:
            self._expect(
                rid,
                _Pending(catalogue.FileRename.TYPE, self._two_paths(catalogue.FileRename.TYPE, r)),
                out,
            )
            return
        if ptype == SYMLINK:
            # OpenSSH sends (target, link), the reverse of the draft: the link is created.
            target, traw = decode_path(r.string())
            link, lraw = decode_path(r.string())
            ev = self._event(catalogue.FileSymlink.TYPE, link, lraw or traw, target_path=target)
            self._expect(rid, _Pending(catalogue.FileSymlink.TYPE, ev), out)
            return
        if ptype in _QUIET:
            self._expect(rid, _Pending(""), out)
            return
        if ptype == EXTENDED:
            self._extended(rid, r, out)
            return
        raise ParseError(f"unknown request type {ptype}")

    def _extended(self, rid: int, r: _Reader, out: list[Event]) -> None:
        name = r.string().decode("utf-8", "backslashreplace")
        ev: Event | None
        if name == "posix-rename@openssh.com":
            ev = self._two_paths(catalogue.FileRename.TYPE, r)
        elif name == "hardlink@openssh.com":
            old, oraw = decode_path(r.string())
            new, nraw = decode_path(r.string())
            ev = self._event(catalogue.FileLink.TYPE, new, oraw or nraw, target_path=old)
        elif name in ("fsync@openssh.com", "fstatvfs@openssh.com"):
            kind = (
                catalogue.FileFsync.TYPE if name.startswith("fsync") else catalogue.FileStatvfs.TYPE
            )
            ev = self._handle_event(kind, r.string())
        elif name == "statvfs@openssh.com":
            path, raw = decode_path(r.string())
            ev = self._event(catalogue.FileStatvfs.TYPE, path, raw)
        elif name == "lsetstat@openssh.com":
            path, raw = decode_path(r.string())
            ev = self._event(catalogue.FileSetstat.TYPE, path, raw)
            ev.update(r.attrs())
        elif name == "copy-data":
            src = r.string()
            src_off = r.u64()
            length = r.u64()
            dst = r.string()
            dst_off = r.u64()
            ev = self._handle_event(catalogue.FileCopy.TYPE, src)
            to = self._handles.get(dst)
            ev["target_path"] = to.path if to is not None else None
            ev.update(offset_from=src_off, length=length, offset_to=dst_off)
        elif name in _QUIET_EXTENSIONS:
            ev = None
        else:
            ev = {"kind": catalogue.FileExtended.TYPE, "path": None, "source": "sftp"}
        if ev is not None:
            ev["extension"] = name
        self._expect(rid, _Pending("" if ev is None else str(ev["kind"]), ev), out)

    def _expect(self, rid: int, pending: _Pending, out: list[Event]) -> None:
        """Track a request until its reply; past the cap, let the oldest one go."""
        if rid not in self._pending and len(self._pending) >= self.max_pending:
            oldest = next(iter(self._pending))
            self._lost(f"more than {self.max_pending} requests awaiting replies", out)
            self.untracked_requests += 1
            self._unanswered(self._pending.pop(oldest), "not tracked", out)
        self._pending[rid] = pending

    def _track(self, handle: bytes, h: _Handle, out: list[Event]) -> None:
        """Track an open handle until it is closed; past the cap, let the oldest go."""
        if handle not in self._handles and len(self._handles) >= self.max_handles:
            oldest = next(iter(self._handles))
            self._lost(f"more than {self.max_handles} open handles", out)
            self.untracked_handles += 1
            out.append(self._close_event(self._handles.pop(oldest), None, "not tracked"))
        self._handles[handle] = h

    def _lost(self, detail: str, out: list[Event]) -> None:
        """The first entry let go: one event, which alerts (a way around the file index)."""
        if not self.untracked_requests and not self.untracked_handles:
            out.append(
                {"kind": catalogue.SftpTrackingLost.TYPE, "detail": detail, "source": "sftp"}
            )

    def _unanswered(self, p: _Pending, status: str, out: list[Event]) -> None:
        """A request whose reply will not be read: its event, with ``status``."""
        if p.op == "close" and p.handle is not None:
            h = self._handles.pop(p.handle, None)
            if h is not None:
                out.append(self._close_event(h, None, status))
        elif p.event is not None and p.op not in ("", "read", "readdir"):
            p.event["status"] = status
            out.append(p.event)

    def _two_paths(self, kind: str, r: _Reader) -> Event:
        old, oraw = decode_path(r.string())
        new, nraw = decode_path(r.string())
        return self._event(kind, old, oraw or nraw, target_path=new)

    @staticmethod
    def _event(kind: str, path: str | None, raw: bool, **more: Any) -> Event:
        target = more.get("target_path")
        if (path is not None and len(path) > MAX_PATH) or (
            isinstance(target, str) and len(target) > MAX_PATH
        ):
            # Held while the request waits (up to MAX_PENDING of them): not 256 KiB each.
            path = None if path is None else truncate(path, MAX_PATH)
            if isinstance(target, str):
                more["target_path"] = truncate(target, MAX_PATH)
            more["path_cut"] = True
        ev: Event = {"kind": kind, "path": path, **more}
        if raw:
            ev["raw"] = True
        ev["source"] = "sftp"
        return ev

    def _handle_event(self, kind: str, handle: bytes) -> Event:
        h = self._handles.get(handle)
        if h is None:
            return self._event(kind, None, False, handle=handle.hex())
        return self._event(kind, h.path, h.raw)

    # -- target -> engineer -------------------------------------------------------------

    def _server_packet(
        self, buf: bytes | bytearray, start: int, end: int, out: list[Event]
    ) -> None:
        ptype = buf[start]
        r = _Reader(buf, start + 1, end)
        if ptype == VERSION:
            self.version = r.u32()
            if self.version != 3:
                raise ParseError(f"unsupported sftp version {self.version}")
            return
        rid = r.u32()
        p = self._pending.pop(rid, None)
        if p is None:
            if ptype in (STATUS, HANDLE, DATA, NAME, ATTRS, EXTENDED_REPLY):
                return  # a reply to a request sent before the parser saw it
            raise ParseError(f"unknown reply type {ptype}")
        if ptype == DATA:
            a, b = r.string_span()
            if p.op == "read" and p.handle is not None:
                self._read_data(p, buf, a, b)
            return
        if ptype == HANDLE:
            handle = r.string()
            if p.op == catalogue.FileOpen.TYPE and p.event is not None:
                ev = p.event
                ev["status"] = "ok"
                self._track(
                    handle, _Handle(str(ev["path"]), bool(ev.get("raw")), list(ev["flags"])), out
                )
                out.append(ev)
            elif p.op == "opendir" and p.event is not None:
                ev = p.event
                self._track(handle, _Handle(str(ev["path"]), bool(ev.get("raw")), None), out)
            return
        if ptype == NAME:
            count = r.u32()
            if p.op == "readdir" and p.handle is not None:
                h = self._handles.get(p.handle)
                if h is not None:
                    h.entries += count
            elif p.op == catalogue.FileReadlink.TYPE and p.event is not None and count >= 1:
                p.event["target_path"] = decode_path(r.string())[0]
                p.event["status"] = "ok"
                out.append(p.event)
            return
        if ptype == STATUS:
            code = r.u32()
            message = ""
            if r.pos < r.end:  # version 3 servers add message and language; be lenient
                message = r.string().decode("utf-8", "backslashreplace")
            self._status(p, code, message, out)
            return
        if ptype in (ATTRS, EXTENDED_REPLY):
            if p.event is not None:
                p.event["status"] = "ok"
                out.append(p.event)
            return
        raise ParseError(f"unknown reply type {ptype}")

    def _read_data(self, p: _Pending, buf: bytes | bytearray, a: int, b: int) -> None:
        assert p.handle is not None
        h = self._handles.get(p.handle)
        if h is None:
            return
        n = b - a
        h.bytes_read += n
        if h.rhash_note is None:
            if p.offset != h.rnext:
                h.rhash_note = "reads not sequential"
                h.rsha = None
            else:
                if h.rsha is None:
                    h.rsha = hashlib.sha256()
                with memoryview(buf) as view:
                    h.rsha.update(view[a:b])
                h.rnext = p.offset + n

    def _status(self, p: _Pending, code: int, message: str, out: list[Event]) -> None:
        if p.op == "close" and p.handle is not None:
            h = self._handles.pop(p.handle, None)
            if h is not None:
                out.append(self._close_event(h, code, message))
            return
        if p.op == "opendir" and p.event is not None:
            # Opening the directory failed: the listing is the failure.
            self._finish(p.event, code, message, out)
            return
        if p.op in ("", "read", "readdir") or p.event is None:
            return
        self._finish(p.event, code, message, out)

    @staticmethod
    def _finish(ev: Event, code: int, message: str, out: list[Event]) -> None:
        ev["status"] = status_name(code)
        if code != 0 and message:
            ev["message"] = message
        out.append(ev)

    def _close_event(self, h: _Handle, code: int | None, message: str) -> Event:
        if h.flags is None:
            ev = self._event(catalogue.FileList.TYPE, h.path, h.raw, entries=h.entries)
        else:
            ev = self._event(
                catalogue.FileClose.TYPE,
                h.path,
                h.raw,
                flags=h.flags,
                bytes_read=h.bytes_read,
                bytes_written=h.bytes_written,
            )
            if h.bytes_written:
                ev["sha256"] = h.wsha.hexdigest() if h.wsha is not None else None
                if h.whash_note is not None:
                    ev["hash_note"] = h.whash_note
            if h.bytes_read:
                ev["read_sha256"] = h.rsha.hexdigest() if h.rsha is not None else None
                if h.rhash_note is not None:
                    ev["read_hash_note"] = h.rhash_note
        if code is None:
            ev["status"] = message
        else:
            self._finish(ev, code, message, [])
        return ev

    # -- end ----------------------------------------------------------------------------

    def finish(self) -> list[Event]:
        """The channel closed: what was left open or unanswered, as events."""
        out: list[Event] = []
        if self.stopped:
            return out
        for p in self._pending.values():
            self._unanswered(p, "no reply", out)
        for h in self._handles.values():
            out.append(self._close_event(h, None, "not closed"))
        if self.untracked_requests or self.untracked_handles:
            out.append(
                {
                    "kind": catalogue.SftpUntracked.TYPE,
                    "requests": self.untracked_requests,
                    "handles": self.untracked_handles,
                    "max_pending": self.max_pending,
                    "max_handles": self.max_handles,
                    "source": "sftp",
                }
            )
        self._pending.clear()
        self._handles.clear()
        self.stopped = True
        return out
