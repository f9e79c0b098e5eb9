"""Cast files on disk: the I/O half of recording (the encoder is ``core.recording``).

Owns the file: created 0600 in a 0700 folder, written only in whole JSON lines, flushed
at least every second (a crash loses at most the last second and never leaves more than
one partial line, which recovery truncates), fsync'd and hashed at close. Never decides
what to record; the relay tells it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proxy.core.errors import RecordingError
from proxy.core.recording import CastEncoder

FLUSH_BYTES = 64 * 1024
FLUSH_SECONDS = 1.0


@dataclass(frozen=True)
class ClosedCast:
    path: Path
    sha256: str
    size: int


def recording_path(root: Path, session_id: str, channel: int) -> Path:
    return root / session_id[:4] / session_id / f"{channel}.cast"


def make_private_dirs(path: Path, root: Path) -> None:
    """Create ``path``'s folders 0700 (recordings are as sensitive as the audit DB)."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    parent = path.parent
    missing = []
    while parent != root and not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)


def _sync_all(fd: int, folders: list[Path]) -> None:
    os.fsync(fd)
    for folder in folders:  # the new entries: the file in its folder, each folder in its own
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class CastFile:
    """One channel's cast. ``write`` takes whole lines from the encoder."""

    def __init__(
        self,
        path: Path,
        on_error: Callable[[RecordingError], None],
        on_written: Callable[[int], None] | None = None,
    ) -> None:
        self.path = path
        self._on_error = on_error
        self._on_written = on_written
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._hash = hashlib.sha256()
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._failed: RecordingError | None = None
        self._closed = False
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise RecordingError(f"cannot create recording {path}: {exc.strerror}") from exc

    @property
    def failed(self) -> bool:
        return self._failed is not None

    def write(self, lines: bytes) -> None:
        if not lines or self._closed or self._failed is not None:
            return
        self._buffer.append(lines)
        self._buffered += len(lines)
        if self._buffered >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer or self._failed is not None:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            # Cut back what a partial write left, so the file is exactly the bytes hashed
            # (whole lines only) and still replays.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            self._failed = RecordingError(
                f"recording {self.path} could not be written: {exc.strerror}"
            )
            self._on_error(self._failed)
            return
        self._hash.update(data)
        self._size += len(data)
        if self._on_written is not None:
            self._on_written(len(data))

    async def sync_start(self, root: Path) -> None:
        """Make what was written so far (the header) durable, with the folders that
        lead to the file: called before the channel's first byte reaches the target,
        so a crash any time after leaves a cast that plays. In a worker thread, as in
        ``aclose``. Raises RecordingError when it cannot."""
        self.flush()
        if self._failed is not None:
            raise self._failed
        folders = [self.path.parent]
        while folders[-1] != root and root in folders[-1].parents:
            folders.append(folders[-1].parent)
        try:
            await asyncio.to_thread(_sync_all, self._fd, folders)
        except OSError as exc:
            raise RecordingError(
                f"recording {self.path} could not be synced: {exc.strerror}"
            ) from exc

    async def aclose(self) -> ClosedCast:
        """Flush, fsync, close; the hash covers exactly the bytes on disk. The fsync runs
        in a worker thread: it takes milliseconds, and on the event loop it would stall
        every other session's keystrokes meanwhile."""
        if not self._closed:
            self.flush()
            self._closed = True
            try:
                await asyncio.to_thread(os.fsync, self._fd)
            except OSError as exc:
                if self._failed is None:
                    self._failed = RecordingError(
                        f"recording {self.path} could not be synced: {exc.strerror}"
                    )
                    self._on_error(self._failed)
            finally:
                os.close(self._fd)
        return ClosedCast(self.path, self._hash.hexdigest(), self._size)


# Data chunks closer together than this become one event: invisible when the cast plays
# (50 frames a second), and a PTY's line-sized chunks stop costing an encode each.
COALESCE_SECONDS = 0.02
COALESCE_BYTES = 64 * 1024


class ChannelRecorder:
    """A channel's encoder and cast file, with data chunks batched before encoding.

    Output (or input) chunks that arrive within ``COALESCE_SECONDS`` of the first one of a
    batch are joined and encoded as one event stamped with the batch's first time; a
    change of direction, any other event, ``COALESCE_BYTES`` or the one-second flush
    ends a batch. Every byte reaches the encoder in order, so the cast's content and its
    size cap are exactly those of per-chunk encoding, and nothing waits in memory longer
    than the cast file's own buffer already did (the flush bound stays one second).
    """

    def __init__(self, encoder: CastEncoder, cast: CastFile) -> None:
        self.encoder = encoder
        self.cast = cast
        self._code = "o"
        self._t0 = 0.0
        self._chunks: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    def data(self, t: float, code: str, data: bytes) -> None:
        """Record ``data`` as an ``"o"`` or ``"i"`` event at ``t`` (seconds)."""
        if not data:
            return
        if self._chunks and (
            code != self._code or t - self._t0 > COALESCE_SECONDS or self._size >= COALESCE_BYTES
        ):
            self._emit()
        if not self._chunks:
            self._code, self._t0 = code, t
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._tick)
        self._chunks.append(data)
        self._size += len(data)

    def write(self, lines: bytes) -> None:
        """Lines already encoded (call ``flush_batch`` before encoding them)."""
        self.cast.write(lines)

    def flush_batch(self) -> None:
        """Encode the pending batch: before any other event is encoded, and at the end."""
        if self._chunks:
            self._emit()

    def _emit(self) -> None:
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks = []
        self._size = 0
        if self._code == "o":
            self.cast.write(self.encoder.output(self._t0, data))
        else:
            self.cast.write(self.encoder.input(self._t0, data))

    def _tick(self) -> None:
        self._timer = None
        self.flush_batch()
        self.cast.flush()

    async def aclose(self) -> ClosedCast:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush_batch()
        return await self.cast.aclose()
