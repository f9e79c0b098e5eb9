"""What each kind of channel records (proxy.ssh.channel_audit.ChannelPolicy.of): one row
per channel kind of the module's table, with keystroke recording off and on."""

from __future__ import annotations

import pytest

from proxy.ssh.channel_audit import ChannelPolicy

SCP = "scp -t /tmp"
NOTE = "sftp: file contents are not recorded"

# kind, command, subsystem, pty -> output, input (off, on), command line, commands, tap, note
Row = tuple[
    str, str | None, str | None, bool, bool, tuple[bool, bool], bool, bool, str | None, str | None
]
ROWS: list[Row] = [
    ("shell", None, None, True, True, (False, True), False, True, None, None),
    ("shell", None, None, False, True, (True, True), False, False, "stdin", None),
    ("exec", "uptime", None, False, True, (True, True), True, False, None, None),
    ("exec", "bash -s", None, False, True, (True, True), True, False, "stdin", None),
    ("exec", "sudo -i", None, True, True, (False, True), True, True, None, None),
    ("exec", "bash -s", None, True, True, (False, True), True, True, None, None),
    ("exec", SCP, None, False, True, (True, True), True, False, "scp", None),
    ("exec", SCP, None, True, True, (False, True), True, False, "scp", None),
    ("subsystem", None, "sftp", False, False, (False, False), False, False, "sftp", NOTE),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r[0]}-{r[1] or r[2]}-pty{r[3]}")
def test_each_channel_kind_records_what_the_table_says(row: Row) -> None:
    kind, command, subsystem, pty, output, inputs, line, commands, tap, note = row
    for keystrokes, expected_input in zip((False, True), inputs, strict=True):
        policy = ChannelPolicy.of(kind, command, subsystem, pty, keystrokes)
        assert policy == ChannelPolicy(output, expected_input, line, commands, tap, note)
