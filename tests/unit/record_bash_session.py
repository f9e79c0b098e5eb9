"""Records a real interactive bash (readline, TERM=xterm, 80x24) on a local PTY as the
fixture for test_commands.py: every input chunk, output chunk and resize, in order.

    python tests/unit/record_bash_session.py tests/unit/data/bash_session.json
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import sys
import tempfile
import termios
import time

STEPS: list[tuple[str, list[bytes | tuple[int, int]]]] = [
    ("plain", [b"echo hello\r"]),
    ("typed char by char", [bytes([c]) for c in b"echo typed\r"]),
    ("cursor-left edit", [b"echo wrld", b"\x1b[D", b"\x1b[D", b"\x1b[D", b"o", b"\r"]),
    ("tab unique", [b"cat uni", b"\t", b"\r"]),
    ("tab ambiguous", [b"cat rep", b"\t", b"\t", b"4", b"\t", b"\r"]),
    ("history", [b"\x1b[A", b"\r"]),
    ("reverse search", [b"\x12", b"w", b"o", b"r", b"\r"]),
    ("wrap", [b"echo " + b"x" * 60 + b" " + b"y" * 40 + b"\r"]),
    ("paste", [b"for i in 1 2 3\rdo echo item $i\rdone\r"]),
    ("line kill", [b"echo wrong", b"\x15", b"echo right\r"]),
    ("ctrl-c running", [b"sleep 30\r", b"\x03"]),
    ("ctrl-c typing", [b"echo discarded", b"\x03"]),
    ("vim", [b"vim -u NONE -i NONE notes.txt\r", b"ihello from vim\x1b", b":wq\r"]),
    ("less", [b"less -X report-2023.txt\r", b"q"]),
    ("less alt", [b"less report-2024.txt\r", b"/x\r", b"q"]),
    ("resize", [b"echo resi", (100, 30), b"zed\r"]),
    ("secret", [b"read -s -p 'Password: ' pw; echo; echo len=${#pw}\r", b"hunter2\r"]),
    ("exit", [b"exit 7\r"]),
]


def main() -> None:
    out_path = sys.argv[1]
    work = tempfile.mkdtemp(prefix="bgrec-")
    for name in ("report-2023.txt", "report-2024.txt", "unique-file.txt"):
        with open(os.path.join(work, name), "w") as f:
            f.write("\n".join(f"line {i}" for i in range(60)) + "\n")
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(work)
        env = {
            "TERM": "xterm",
            "PATH": "/usr/bin:/bin",
            "HOME": work,
            "PS1": r"user@db01:\W\$ ",
            "LESSHISTFILE": "-",
            "INPUTRC": "/dev/null",
            "HISTFILE": "/dev/null",
        }
        os.execve("/bin/bash", ["bash", "--norc", "--noprofile", "-i"], env)
    events: list[list[object]] = []
    start = time.monotonic()
    cols, rows = 80, 24
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            r, _, _ = select.select([fd], [], [], left)
            if r:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    return
                if not data:
                    return
                events.append([round(time.monotonic() - start, 4), "o", data.decode("latin-1")])

    pump(0.5)
    events.append([round(time.monotonic() - start, 4), "r", f"{cols}x{rows}"])
    # No bracketed paste, so the paste step behaves like a fast typist / old terminal.
    os.write(fd, b"bind 'set enable-bracketed-paste off'; clear\r")
    pump(0.5)
    events.clear()
    events.append([0.0, "r", f"{cols}x{rows}"])
    for _name, chunks in STEPS:
        for chunk in chunks:
            t = round(time.monotonic() - start, 4)
            if isinstance(chunk, tuple):
                cols, rows = chunk
                fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
                events.append([t, "r", f"{cols}x{rows}"])
            else:
                os.write(fd, chunk)
                events.append([t, "i", chunk.decode("latin-1")])
            pump(0.6)
        pump(0.3)
    pump(1.0)
    with open(out_path, "w") as f:
        json.dump({"steps": [s[0] for s in STEPS], "events": events}, f, indent=0)
        f.write("\n")
    os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
