"""The cheapest possible hop: a byte-for-byte TCP forwarder in Python on uvloop.

    python benchmarks/forwarder.py LISTEN_PORT TARGET_PORT

Listens on 127.0.0.1:LISTEN_PORT and copies bytes both ways to 127.0.0.1:TARGET_PORT,
with nothing else: no SSH, no crypto, no recording. ``benchmarks/hop_floor.py`` puts it
between an OpenSSH client and sshd to measure what one more user-space process on the
path costs by itself, the floor under anything the proxy does. Prints READY when it
listens. Flow control: a side stops reading while the other side's write buffer is
full, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

LOOPBACK = "127.0.0.1"
HIGH_WATER = 256 * 1024


class Side(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Side | None = None
        self.early: list[bytes] = []  # bytes that arrived before the peer connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance here.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
        else:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    # The peer's write buffer is full: stop reading here until it drains.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


async def main(listen_port: int, target_port: int) -> None:
    loop = asyncio.get_running_loop()
    connecting: set[asyncio.Task[None]] = set()

    def accepted() -> Side:
        client = Side()

        async def connect() -> None:
            try:
                _, upstream = await loop.create_connection(Side, LOOPBACK, target_port)
            except OSError:
                if client.transport is not None:
                    client.transport.close()
                return
            upstream.peer, client.peer = client, upstream
            # Either side may have spoken while the connect was in flight (sshd sends
            # its banner at once): hand those bytes over now, in order.
            for side in (client, upstream):
                assert side.peer is not None
                assert side.peer.transport is not None
                for data in side.early:
                    side.peer.transport.write(data)
                side.early.clear()

        task = loop.create_task(connect())
        connecting.add(task)  # a task nothing refers to may be collected mid-connect
        task.add_done_callback(connecting.discard)
        return client

    server = await loop.create_server(accepted, LOOPBACK, listen_port, backlog=1024)
    print("READY", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # the proxy runs on uvloop; without it this still works
        pass
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
