"""Commands typed at an interactive shell, read from a PTY channel's bytes.

The main fixture is a real bash 5.2 (readline, TERM=xterm) recorded on a local PTY by
record_bash_session.py: every input chunk, output chunk and resize, replayed here.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyte
import pytest

from proxy.core import commands
from proxy.core.commands import CommandExtractor

SESSION = Path(__file__).parent / "data" / "bash_session.json"


def replay(events: list[list[Any]], ex: CommandExtractor | None = None) -> list[dict[str, Any]]:
    ex = ex or CommandExtractor(80, 24)
    out: list[dict[str, Any]] = []
    for t, kind, text in events:
        data = text.encode("latin-1")
        if kind == "o":
            out += ex.output(data, t)
        elif kind == "i":
            out += ex.input(data, t)
        else:
            cols, rows = map(int, text.split("x"))
            out += ex.resize(cols, rows, t)
    return out + ex.flush(events[-1][0] + 5)


@pytest.fixture(scope="module")
def recorded() -> list[dict[str, Any]]:
    events: list[list[Any]] = json.loads(SESSION.read_text())["events"]
    return replay(events)


def test_every_scenario_of_the_recorded_bash_session(recorded: list[dict[str, Any]]) -> None:
    texts = [e.get("text", "<redacted>") for e in recorded]
    assert texts == [
        "echo hello",  # plain, in one chunk
        "echo typed",  # typed one key at a time
        "echo world",  # echo wrld, three cursor-lefts, o
        "cat unique-file.txt",  # unique tab completion
        "cat report-2024.txt",  # ambiguous: rep<Tab><Tab>4<Tab>
        "cat report-2024.txt",  # history: up arrow
        "echo world",  # Ctrl-R wor
        "echo " + "x" * 60 + " " + "y" * 40,  # wraps past 80 columns
        "for i in 1 2 3",  # a pasted loop, one event per line the shell read
        "do echo item $i",
        "done",
        "echo right",  # echo wrong, ^U, echo right
        "sleep 30",  # then ^C while it runs: nothing more
        # echo discarded ^C: nothing
        "vim -u NONE -i NONE notes.txt",  # its keystrokes (ihello..., :wq) are not commands
        "less -X report-2023.txt",  # no alternate screen; its q is not a command
        "less report-2024.txt",  # alternate screen; /x Enter inside it is not a command
        "echo resized",  # echo resi, window resized to 100x30, zed
        "read -s -p 'Password: ' pw; echo; echo len=${#pw}",
        "<redacted>",  # hunter2 at the no-echo prompt
        "exit 7",
    ]
    assert all(e["kind"] == "command" and e["source"] == "pty" for e in recorded)
    secret = [e for e in recorded if e["redacted"]]
    assert secret == [{"kind": "command", "redacted": True, "source": "pty", "offset": 38.8758}]
    assert "hunter2" not in json.dumps(recorded)


def test_offsets_are_the_enter_keystroke(recorded: list[dict[str, Any]]) -> None:
    assert recorded[0]["offset"] == 1.0014
    offsets = [e["offset"] for e in recorded]
    assert offsets == sorted(offsets)


PROMPT = b"user@db01:~$ "


def test_enter_before_the_echo_of_the_last_keys() -> None:
    ex = CommandExtractor(80, 24)
    ex.output(PROMPT, 0.0)
    assert ex.input(b"l", 1.0) == []
    assert ex.output(b"l", 1.0) == []
    assert ex.input(b"s\r", 1.1) == []  # Enter arrives before "s" is echoed
    events = ex.output(b"s\r\nfile\r\n" + PROMPT, 1.2)
    assert [e["text"] for e in events] == ["ls"]


def test_no_echoed_newline_commits_at_the_next_keystroke_or_after_a_second() -> None:
    ex = CommandExtractor(80, 24)
    ex.output(PROMPT, 0.0)
    ex.input(b"true", 1.0)
    ex.output(b"true", 1.0)
    assert ex.input(b"\r", 2.0) == []
    assert [e["text"] for e in ex.output(b"", 3.5)] == ["true"]
    ex.input(b"x", 4.0)
    ex.output(b"x", 4.0)
    ex.input(b"\r", 4.1)
    assert [e["text"] for e in ex.input(b"y", 4.2)] == ["x"]


def test_typed_ahead_of_the_login_messages_is_read_from_its_echo() -> None:
    # The Enter reaches the extractor before sshd's motd does; the motd's newlines are
    # not the echo of the line, the kernel's echo (and readline's redisplay) come later.
    ex = CommandExtractor(80, 24)
    assert ex.input(b"echo a > /tmp/f\r", 0.5) == []
    assert ex.output(b"Linux db01 6.1.0 x86_64\r\n\r\nThe programs included", 0.6) == []
    assert ex.output(b" with Debian are free software.\r\n", 0.6) == []
    events = ex.output(b"echo a > /tmp/f\r\n" + PROMPT + b"echo a > /tmp/f\r\n", 0.7)
    assert events == [
        {
            "kind": "command",
            "redacted": False,
            "source": "pty",
            "offset": 0.5,
            "text": "echo a > /tmp/f",
        }
    ]
    ex.input(b"id\r", 2.0)
    assert [e["text"] for e in ex.output(b"id\r\nuid=0\r\n" + PROMPT, 2.1)] == ["id"]


def test_a_found_line_ending_in_what_was_typed_keeps_its_start() -> None:
    # Ctrl-R "ls" finds `echo a > ls`: only "ls" was typed, the line is the screen's.
    ex = CommandExtractor(80, 24)
    ex.output(PROMPT, 0.0)
    ex.input(b"\x12", 1.0)
    ex.output(b"\r(reverse-i-search)`': ", 1.0)
    ex.input(b"ls", 1.5)
    ex.output(b"\r(reverse-i-search)`ls': echo a > ls", 1.5)
    ex.input(b"\r", 2.0)
    assert [e["text"] for e in ex.output(b"\r\n", 2.1)] == ["echo a > ls"]


def test_typed_ahead_and_never_echoed_is_redacted() -> None:
    ex = CommandExtractor(80, 24)
    ex.input(b"hunter2\r", 0.5)
    events = []
    for i in range(30):  # a long motd: the wait for the echo ends after a screenful
        events += ex.output(b"line %d of the motd\r\n" % i, 0.6)
        assert events == [] or i >= 24
    events += ex.output(PROMPT, 0.7) + ex.flush(0.8)
    assert events == [{"kind": "command", "redacted": True, "source": "pty", "offset": 0.5}]
    assert ex.input(b"x", 0.9) == []


def test_a_no_echo_read_without_a_prompt_is_redacted_within_a_second() -> None:
    ex = CommandExtractor(80, 24)
    ex.output(PROMPT, 0.0)
    ex.input(b"read -s pw; echo; echo done\r", 1.0)
    ex.output(b"read -s pw; echo; echo done\r\n", 1.1)
    ex.input(b"s3cr3t\r", 2.0)
    assert ex.output(b"\r\ndone\r\n" + PROMPT, 2.1) == []  # waiting for an echo
    events = ex.output(b"", 3.5)
    assert events == [{"kind": "command", "redacted": True, "source": "pty", "offset": 2.0}]


def test_control_keys_alone_start_nothing() -> None:
    ex = CommandExtractor(80, 24)
    ex.output(PROMPT, 0.0)
    for key in (b"\x03", b"\x04", b"\x1a", b"\x1c", b"\r", b"\r\r"):
        assert ex.input(key, 1.0) == []
    assert ex._screen is None


def test_a_password_at_sudo_is_redacted_and_never_read_from_input() -> None:
    ex = CommandExtractor(80, 24)
    ex.output(b"[sudo] password for ops: ", 0.0)
    ex.input(b"s3cr3t-pw", 1.0)
    ex.input(b"\r", 1.5)
    events = ex.output(b"\r\n" + PROMPT, 1.6)
    assert events == [{"kind": "command", "redacted": True, "source": "pty", "offset": 1.5}]


def test_a_paste_line_not_echoed_is_redacted() -> None:
    ex = CommandExtractor(80, 24)
    ex.output(PROMPT, 0.0)
    ex.input(b"read -s x\rhunter2\r", 1.0)
    events = ex.output(b"read -s x\r\n" + PROMPT, 1.1)
    assert [e.get("text") for e in events] == ["read -s x"]
    events += ex.output(b"", 3.0)
    assert events[1] == {"kind": "command", "redacted": True, "source": "pty", "offset": 1.0}


def test_bulk_output_between_commands_never_reaches_pyte(monkeypatch: pytest.MonkeyPatch) -> None:
    fed = 0
    feed = pyte.Stream.feed

    def counting(self: Any, data: str) -> None:
        nonlocal fed
        fed += len(data)
        feed(self, data)

    monkeypatch.setattr(pyte.Stream, "feed", counting)
    ex = CommandExtractor(80, 24)
    ex.output(PROMPT, 0.0)
    ex.input(b"cat big\r", 1.0)
    assert [e["text"] for e in ex.output(b"cat big\r\n", 1.0)] == ["cat big"]
    line = b"0123456789" * 7 + b"\r\n"
    for _ in range(20000):  # 1.4 MB
        ex.output(line, 2.0)
    ex.output(PROMPT, 3.0)
    assert fed < 20000
    assert len(ex._tail) <= 2 * commands.TAIL_BYTES
    ex.input(b"id\r", 4.0)
    assert [e["text"] for e in ex.output(b"id\r\nuid=0\r\n", 4.0)] == ["id"]
    assert fed < 40000


def test_typing_ahead_into_a_flood_gives_up_on_that_line() -> None:
    ex = CommandExtractor(80, 24)
    ex.output(PROMPT, 0.0)
    ex.input(b"x", 1.0)
    line = b"y" * 78 + b"\r\n"
    for _ in range(commands.TYPING_OUTPUT_LIMIT // len(line) + 2):
        ex.output(line, 1.0)
    assert ex._screen is None


def test_an_internal_error_gives_one_event_and_disables(monkeypatch: pytest.MonkeyPatch) -> None:
    ex = CommandExtractor(80, 24)

    def broken(self: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(CommandExtractor, "_start_typing", broken)
    ex.output(PROMPT, 0.0)
    events = ex.input(b"ls\r", 1.0)
    assert events == [
        {
            "kind": "command_extraction_error",
            "detail": "RuntimeError: boom",
            "source": "pty",
            "offset": 1.0,
        }
    ]
    assert ex.disabled
    assert ex.input(b"ls\r", 2.0) == []
    assert ex.output(b"ls\r\n", 2.0) == []


def test_random_bytes_never_raise() -> None:
    rng = random.Random(5)
    alphabet = b"\x1b[?1049hl;\r\n\x03\x08\t abc\xff\xc3\xa9\x15\x12"
    for _ in range(200):
        ex = CommandExtractor(rng.randint(0, 120), rng.randint(0, 40))
        for step in range(40):
            data = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
            choice = rng.random()
            if choice < 0.45:
                events = ex.output(data, step)
            elif choice < 0.9:
                events = ex.input(data, step)
            else:
                events = ex.resize(rng.randint(0, 200), rng.randint(0, 60), step)
            assert all(e["kind"] == "command" for e in events), events
