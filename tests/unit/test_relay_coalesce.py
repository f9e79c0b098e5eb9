"""The relay's target -> engineer coalescing (proxy.ssh.relay.ChannelBridge.from_target):
the chunks one socket read delivers go on as one write, in order, split where the data
type changes or a packet's worth is held, and always before what must follow them.

A bridge without a session or channels (object.__new__): only the attributes the
target -> engineer path reads are set; the channel records what it was asked to send,
and a channel audit (proxy.ssh.channel_audit) built the same way what it recorded.
The end of a socket read is simulated with proxy.ssh.wire's own hook."""

from __future__ import annotations

import types
from typing import Any

import pytest

from proxy.ssh import channel_audit, relay, wire


class Channel:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, bytes | str]] = []

    def write(self, data: bytes, datatype: Any = None) -> None:
        self.sent.append((datatype, data))

    def write_eof(self) -> None:
        self.sent.append(("eof", b""))

    def exit(self, status: int) -> None:
        self.sent.append(("exit", str(status)))

    def write_stderr(self, data: bytes) -> None:
        self.sent.append((1, data))


class Recorder:
    def __init__(self) -> None:
        self.recorded: list[bytes] = []

    def data(self, t: float, code: str, data: bytes) -> None:
        self.recorded.append(data)


def bridge() -> tuple[relay.ChannelBridge, Channel]:
    b = object.__new__(relay.ChannelBridge)
    chan = Channel()
    b.session = types.SimpleNamespace(last_activity=0.0)  # type: ignore[assignment]
    b._chan = chan  # type: ignore[assignment]
    b.audit = None
    b._closing = False
    b._target_eof = False
    b._exit = (None, None)
    b._started = 0.0
    b.kind = "shell"
    b.bytes_down = 0
    b._down, b._down_type, b._down_len = [], None, 0
    return b, chan


def read(callback: Any) -> None:
    """What wire's data_received does around one socket read."""
    callbacks: list[Any] = []
    wire._after_read = callbacks
    try:
        callback()
    finally:
        wire._after_read = None
    for cb in callbacks:
        cb()


def test_chunks_of_one_read_go_on_as_one_write_in_order() -> None:
    b, chan = bridge()

    def packets() -> None:
        for n in range(10):
            b.from_target(b"line %d\r\n" % n, None)
        assert chan.sent == []  # held to the end of the read

    read(packets)
    assert chan.sent == [(None, b"".join(b"line %d\r\n" % n for n in range(10)))]
    assert b.bytes_down == len(chan.sent[0][1])


def test_a_data_type_change_and_a_full_packet_split_the_batch() -> None:
    b, chan = bridge()
    big = b"x" * (relay.COALESCE_BYTES - 10)

    def packets() -> None:
        b.from_target(b"out1", None)
        b.from_target(b"err1", 1)
        b.from_target(b"err2", 1)
        b.from_target(big, None)
        b.from_target(b"y" * 20, None)  # would pass a packet's worth
        b.from_target(b"z" * relay.COALESCE_BYTES, None)  # bulk: on at once

    read(packets)
    assert chan.sent == [
        (None, b"out1"),
        (1, b"err1err2"),
        (None, big),
        (None, b"y" * 20),
        (None, b"z" * relay.COALESCE_BYTES),
    ]


def test_outside_a_read_data_goes_on_at_once() -> None:
    b, chan = bridge()
    b.from_target(b"now", None)
    assert chan.sent == [(None, b"now")]


@pytest.mark.parametrize("last", ["eof", "closed", "input"])
def test_held_data_goes_before_what_follows_it(last: str) -> None:
    b, chan = bridge()
    b._up_chan = types.SimpleNamespace(write=lambda data, datatype: chan.sent.append(("up", data)))  # type: ignore[assignment]
    b.bytes_up = 0

    def packets() -> None:
        b.from_target(b"bye\r\n", None)
        if last == "eof":
            b.target_eof()
        elif last == "closed":
            up = types.SimpleNamespace(exit_signal=None, exit_status=0)
            b.target_closed(up, None)  # type: ignore[arg-type]
        else:
            b.data_received(b"q", None)
        # Sent by the event itself, not at the end of the read: first, and only once.
        assert chan.sent[0] == (None, b"bye\r\n")

    read(packets)
    assert len([s for s in chan.sent if s[1] == b"bye\r\n"]) == 1


def test_once_the_proxy_cuts_a_channel_what_the_target_still_sends_is_not_recorded() -> None:
    """A session cut at its recording limit (or its time limit, a kill) must not keep
    growing its cast with what is still in flight from the target: the cast is what the
    engineer saw. What was held from before the cut is recorded and sent first."""
    b, chan = bridge()
    rec = Recorder()
    audit = object.__new__(channel_audit.ChannelAudit)  # a shell's, without a PTY
    audit.policy = channel_audit.ChannelPolicy.of("shell", None, None, False, False)
    audit._rec = audit._rec_out = rec  # type: ignore[assignment]
    audit._cmds = audit._tap = None
    audit._cut = False
    audit._started = 0.0
    b.audit = audit
    b.pty = None
    b._opener = None
    up_closed: list[bool] = []
    b._up_chan = types.SimpleNamespace(close=lambda: up_closed.append(True))  # type: ignore[assignment]

    def packets() -> None:
        b.from_target(b"before the cut\n", None)
        b.terminate("breakglass: limit reached; closing.")
        b.from_target(b"in flight after the cut\n", None)

    read(packets)
    notice = b"\r\nbreakglass: limit reached; closing.\r\n"
    assert rec.recorded == [b"before the cut\n", notice]
    assert chan.sent == [(None, b"before the cut\n"), (1, notice), ("exit", "255")]
    assert up_closed == [True]
