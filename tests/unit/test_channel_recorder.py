"""ChannelRecorder batches data chunks: the cast's content must not change, only events."""

from __future__ import annotations

import json
from pathlib import Path

from proxy.core.errors import RecordingError
from proxy.core.recording import CastEncoder
from proxy.recorder import COALESCE_SECONDS, CastFile, ChannelRecorder


def _recorder(path: Path, max_bytes: int = 1 << 20) -> ChannelRecorder:
    def fail(exc: RecordingError) -> None:
        raise AssertionError(exc)

    enc = CastEncoder(width=80, height=24, timestamp=0, max_bytes=max_bytes)
    cast = CastFile(path, fail)
    cast.write(enc.header())
    return ChannelRecorder(enc, cast)


def _events(path: Path) -> list[list[object]]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


async def test_close_chunks_become_one_event_and_order_is_kept(tmp_path: Path) -> None:
    rec = _recorder(tmp_path / "c.cast")
    rec.data(1.0, "o", b"ab")
    rec.data(1.0 + COALESCE_SECONDS / 2, "o", b"\xc3")  # half a character
    rec.data(1.0 + COALESCE_SECONDS * 0.9, "o", b"\xa9d")
    rec.data(1.0 + COALESCE_SECONDS, "i", b"x")  # a direction change ends the batch
    rec.data(5.0, "o", b"late")  # so does a gap
    rec.flush_batch()
    rec.write(rec.encoder.exit(6.0, 0))
    await rec.aclose()
    assert _events(tmp_path / "c.cast") == [
        [1.0, "o", "ab\u00e9d"],
        [1.02, "i", "x"],
        [5.0, "o", "late"],
        [6.0, "x", "0"],
    ]


async def test_cap_is_exact_across_batches(tmp_path: Path) -> None:
    rec = _recorder(tmp_path / "c.cast", max_bytes=5)
    for i in range(4):
        rec.data(float(i), "o", b"abc")
    await rec.aclose()
    text = "".join(str(e[2]) for e in _events(tmp_path / "c.cast") if e[1] == "o")
    assert text == "abcab"
    assert rec.encoder.omitted_bytes == 7
