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
from hypothesis import given, settings
from hypothesis import strategies as st

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


# Sequences pyte 0.8.2 raised on (each switched extraction off for the channel): a private
# form of a sequence that has none, extra parameters, a mode out of range, digits that are
# not ASCII, a number longer than int() reads.
MALFORMED = [
    b"\x1b[?A",
    b"\x1b[?m",
    b"\x1b[?1;2r",
    b"\x1b[?5n",
    b"\x1b[?@",
    b"\x1b[?X",
    b"\x1b[?3d",
    b"\x1b[1;2A",
    b"\x1b[;5B",
    b"\x1b[9K",
    b"\x1b[7J",
    b"\x1b[\xc2\xb2A",
    b"\x1b[" + b"9" * 5000 + b"m",
    b"\x9b?A",
]


@pytest.mark.parametrize("sequence", MALFORMED, ids=[repr(s[:12]) for s in MALFORMED])
def test_a_malformed_sequence_in_the_prompt_is_ignored(sequence: bytes) -> None:
    ex = CommandExtractor(80, 24)
    prompt = b"\r\n" + sequence + b"$ "
    ex.output(prompt, 0.0)
    ex.input(b"id\r", 1.0)
    events = ex.output(b"id\r\nuid=0\r\n" + prompt, 1.1)
    ex.input(b"echo next\r", 2.0)
    events += ex.output(b"echo next\r\nnext\r\n" + prompt, 2.1)
    assert [e.get("text") for e in events] == ["id", "echo next"], events
    assert not ex.disabled


def test_malformed_sequences_while_typing_are_counted_and_ignored() -> None:
    ex = CommandExtractor(80, 24)
    ex.output(PROMPT, 0.0)
    ex.input(b"l", 1.0)
    ex.output(b"l" + b"".join(MALFORMED), 1.0)
    assert ex._screen is not None
    assert ex._screen.dropped >= len(MALFORMED) - 3  # some of pyte's draw them as text
    ex.input(b"s\r", 1.1)
    events = ex.output(b"s\r\n", 1.2)
    assert [e["kind"] for e in events] == ["command"], events


_FRAGMENTS = st.sampled_from(
    [b"\x1b", b"\x1b[", b"\x9b", b"\x1b]", b"\x1b#", b"\x1b%", b"\x1b(", b"?", b";", b"$",
     b"0", b"9" * 40, b"\xc2\xb2", b"\xd9\xa3", b"1049h", b"1049l", b"\x07", b"\x18",
     b"\r", b"\n", b"\x08", b"\t", b"\xe2\x80\x8b", b"\xcc\x81", b"\xef\xbc\xa1", b"$ "]
)  # fmt: skip
_CHUNK = st.lists(st.one_of(_FRAGMENTS, st.binary(max_size=8)), max_size=12).map(b"".join)
_STEP = st.one_of(
    st.tuples(st.just("o"), _CHUNK),
    st.tuples(st.just("i"), _CHUNK),
    st.tuples(st.just("r"), st.tuples(st.integers(0, 600), st.integers(0, 300))),
)


@settings(max_examples=300, deadline=None)
@given(size=st.tuples(st.integers(0, 200), st.integers(0, 60)), steps=st.lists(_STEP))
def test_arbitrary_bytes_never_break_extraction(
    size: tuple[int, int], steps: list[tuple[str, Any]]
) -> None:
    ex = CommandExtractor(*size)
    ex.input(b"x", 0.0)  # a screen exists: output goes through pyte
    for t, (kind, data) in enumerate(steps, start=1):
        if kind == "o":
            events = ex.output(data, t)
        elif kind == "i":
            events = ex.input(data, t)
        else:
            columns, lines = data
            events = ex.resize(columns, lines, t)
        assert all(e["kind"] == "command" for e in events), events
    assert not ex.disabled
