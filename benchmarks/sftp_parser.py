"""Throughput of the passive SFTP parser alone: 100 MB of WRITE packets (an ``sftp put``)
and of DATA replies (an ``sftp get``), fed in SSH-channel-sized chunks, with their
acknowledgements, as the relay feeds them.

    python -m benchmarks.sftp_parser [--mb 100] [--request 32768] [--chunk 32768]
"""

from __future__ import annotations

import argparse
import time

from proxy.core.sftp import SftpTap
from tests.unit import sftpwire as w


def put(total: int, request: int, chunk: int) -> float:
    tap = SftpTap()
    tap.feed_client(w.init())
    tap.feed_server(w.version())
    tap.feed_client(w.open_(1, "/tmp/bench.bin", 0x1A))
    tap.feed_server(w.handle(1, b"h"))
    payload = b"\xa5" * request
    n = total // request
    # Windows of 64 requests in flight, as OpenSSH keeps; wire bytes built beforehand.
    window = 64
    wire: list[tuple[bytes, bytes]] = []
    for first in range(0, n, window):
        ids = range(first, min(n, first + window))
        writes = b"".join(w.write(2 + i % window, b"h", i * request, payload) for i in ids)
        wire.append((writes, b"".join(w.status(2 + i % window) for i in ids)))
    started = time.perf_counter()
    done = 0
    for writes, acks in wire:
        for i in range(0, len(writes), chunk):
            tap.feed_client(writes[i : i + chunk])
        tap.feed_server(acks)
    done = n
    events = tap.feed_client(w.close(9, b"h")) + tap.feed_server(w.status(9))
    elapsed = time.perf_counter() - started
    assert events[-1]["bytes_written"] == done * request, events
    assert events[-1]["sha256"] is not None, events
    return done * request / elapsed / 1e6


def get(total: int, request: int, chunk: int) -> float:
    tap = SftpTap()
    tap.feed_client(w.init())
    tap.feed_server(w.version())
    tap.feed_client(w.open_(1, "/tmp/bench.bin", 1))
    tap.feed_server(w.handle(1, b"h"))
    payload = b"\x5a" * request
    n = total // request
    window = 64
    wire: list[tuple[bytes, bytes]] = []
    for first in range(0, n, window):
        ids = range(first, min(n, first + window))
        reads = b"".join(w.read(2 + i % window, b"h", i * request, request) for i in ids)
        wire.append((reads, b"".join(w.data(2 + i % window, payload) for i in ids)))
    started = time.perf_counter()
    for reads, replies in wire:
        tap.feed_client(reads)
        for i in range(0, len(replies), chunk):
            tap.feed_server(replies[i : i + chunk])
    done = n
    events = tap.feed_client(w.close(9, b"h")) + tap.feed_server(w.status(9))
    elapsed = time.perf_counter() - started
    assert events[-1]["bytes_read"] == done * request, events
    assert events[-1]["read_sha256"] is not None, events
    return done * request / elapsed / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--request", type=int, default=32768)
    parser.add_argument("--chunk", type=int, default=32768)
    args = parser.parse_args()
    total = args.mb * 1_000_000
    for name, fn in (("put (WRITE)", put), ("get (DATA)", get)):
        rate = fn(total, args.request, args.chunk)
        print(
            f"{name}: {args.mb} MB, {args.request}-byte requests, {args.chunk}-byte chunks:"
            f" {rate:.0f} MB/s (incl. sha256)"
        )


if __name__ == "__main__":
    main()
