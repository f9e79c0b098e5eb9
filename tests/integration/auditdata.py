"""Building real audit trails for the auditor's-side tests: a real SQLite store, real
cast files written with the proxy's own encoder, and events appended the way the proxy
appends them (``issue_credential``, ``start_session``, ``append``). No SSH."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from proxy.core.credentials import Credential
from proxy.core.recording import CastEncoder
from proxy.recorder import make_private_dirs, recording_path
from proxy.store.base import NewEvent
from proxy.store.sqlite import SQLiteStore
from tests.eventdata import fill

T0 = 1_800_000_000.0

# (seconds into the channel, code, data): "o"/"i" bytes, "m" a marker label.
CastEvent = tuple[float, str, bytes | str]


@dataclass
class Chan:
    kind: str = "exec"
    command: str | None = "uptime"
    events: Sequence[CastEvent] = (
        (0.1, "o", b"hello from the target\r\n"),
        (0.2, "o", b" 12:00:00 up 1 day\r\n"),
    )
    pty: bool = False
    exit_status: int | None = 0


@dataclass
class Built:
    session_id: str
    casts: list[Path] = field(default_factory=list)


def cred(cred_id: str, person: str, t: float) -> Credential:
    return Credential(
        cred_id=cred_id,
        person=person,
        issued_by="root",
        issued_at=t,
        valid_until=t + 10 * 86400 * 365,
        window=10 * 86400 * 365,
        max_uses=0,
        uses=0,
        targets=("*",),
        max_session=None,
        activated_at=None,
        revoked_at=None,
        revoke_reason=None,
    )


def write_cast(path: Path, root: Path, chan: Chan, timestamp: int) -> tuple[str, int]:
    make_private_dirs(path, root)
    enc = CastEncoder(
        width=80, height=24, timestamp=timestamp, max_bytes=1 << 20, command=chan.command
    )
    data = bytearray(enc.header())
    t_last = 0.0
    for t, code, payload in chan.events:
        t_last = t
        if code == "o":
            assert isinstance(payload, bytes)
            data += enc.output(t, payload)
        elif code == "i":
            assert isinstance(payload, bytes)
            data += enc.input(t, payload)
        elif code == "m":
            assert isinstance(payload, str)
            data += enc.marker(t, payload)
    if chan.exit_status is not None:
        data += enc.exit(t_last, chan.exit_status)
    data += enc.finish(t_last)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest(), len(data)


class Trail:
    """A store plus a recordings folder, and helpers that add whole sessions."""

    def __init__(self, store: SQLiteStore, root: Path) -> None:
        self.store = store
        self.root = root
        self._creds: dict[str, str] = {}
        self._n = 0

    async def credential(self, person: str, t: float) -> str:
        if person not in self._creds:
            cred_id = f"C{len(self._creds):05d}"
            await self.store.issue_credential(
                cred(cred_id, person, t),
                "argon2-hash",
                NewEvent("cred_issued", t, data={"person": person}),
            )
            self._creds[person] = cred_id
        return self._creds[person]

    async def session(
        self,
        *,
        t: float = T0,
        person: str = "alice",
        target: str = "db01",
        login: str = "root",
        justification: str = "INC-1234 disk full on db01",
        channels: Sequence[Chan] = (Chan(),),
        duration: float = 30.0,
        end_reason: str | None = "client_exit",
        extra: Sequence[tuple[float, str, dict[str, object]]] = (),
        deadline: float = 3600.0,
    ) -> Built:
        from proxy.core.ids import session_id

        self._n += 1
        sid = session_id(t, self._n.to_bytes(2, "big"))
        cred_id = await self.credential(person, t - 1)
        start = NewEvent(
            "session_start",
            t,
            sid,
            None,
            {
                "person": person,
                "credential_id": cred_id,
                "source": "127.0.0.1",
                "source_port": 40000 + self._n,
                "client_version": "SSH-2.0-OpenSSH_9.2p1",
                "target": target,
                "login": login,
                "justification": justification,
                "deadline": t + deadline,
            },
        )
        decision = await self.store.start_session(cred_id, person, target, t, start)
        assert decision.ok, decision
        built = Built(sid)
        for n, chan in enumerate(channels, start=1):
            path = recording_path(self.root, sid, n)
            await self.store.append(
                [
                    NewEvent(
                        "channel_start",
                        t + n,
                        sid,
                        n,
                        {
                            "kind": chan.kind,
                            "command": chan.command,
                            "pty": chan.pty,
                            "term": "xterm" if chan.pty else None,
                            "recording": str(path),
                        },
                    )
                ]
            )
            sha, size = write_cast(path, self.root, chan, int(t))
            built.casts.append(path)
            if end_reason is None:
                continue
            await self.store.append(
                [
                    NewEvent(
                        "channel_end",
                        t + n + 1,
                        sid,
                        n,
                        {
                            "exit_status": chan.exit_status,
                            "exit_signal": None,
                            "recording_sha256": sha,
                            "recording_bytes": size,
                            "bytes_up": 10,
                            "bytes_down": size,
                        },
                    )
                ]
            )
        for dt_, type_, data in extra:
            await self.store.append([NewEvent(type_, t + dt_, sid, None, fill(type_, data))])
        if end_reason is not None:
            await self.store.append(
                [
                    NewEvent(
                        "session_end",
                        t + duration,
                        sid,
                        None,
                        {"reason": end_reason, "detail": None},
                    )
                ]
            )
        return built


async def open_trail(tmp_path: Path) -> Trail:
    root = tmp_path / "recordings"
    root.mkdir(mode=0o700, parents=True)
    store = await SQLiteStore.open(root / "audit.db")
    return Trail(store, root)


def write_config(tmp_path: Path, trail: Trail) -> Path:
    """A config file whose storage points at the trail (no targets needed)."""
    cfg = tmp_path / "proxy.yaml"
    cfg.write_text(
        "listen: {host: 127.0.0.1, port: 2222, host_key: recordings/ssh_host_ed25519_key}\n"
        f"storage: {{database: {trail.root / 'audit.db'}, recordings: {trail.root}}}\n"
        "targets: {}\n"
    )
    return cfg
