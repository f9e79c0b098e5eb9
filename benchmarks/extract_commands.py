"""Throughput of command extraction (proxy.core.commands) on PTY output.

    python -m benchmarks.extract_commands [MEGABYTES]

Feeds MEGABYTES (default 50) of ``ls``-like coloured line output in 16 KiB chunks,
with a command typed and echoed every ~1 MB, and prints MB/s with and without
extraction (the relay moves ~20-30 MB/s of PTY text on the reference machine).
"""

from __future__ import annotations

import sys
import time

from proxy.core.commands import CommandExtractor

PROMPT = b"\x1b[01;32muser@db01\x1b[00m:\x1b[01;34m~\x1b[00m$ "
LINE = b"-rw-r--r-- 1 root root  4096 Jan  1 00:00 \x1b[01;34msome-directory-name\x1b[0m\r\n"


def run(megabytes: int, extract: bool) -> tuple[float, int]:
    chunk = LINE * (16384 // len(LINE))
    total = megabytes * 1024 * 1024
    ex = CommandExtractor(120, 40)
    found = 0
    fed = 0
    n = 0
    start = time.perf_counter()
    while fed < total:
        if n % 64 == 0:  # every ~1 MB: a prompt, a command typed key by key, Enter
            command = f"ls -l /var/log/dir{n}".encode()
            if extract:
                ex.output(PROMPT, fed)
                for i in range(len(command)):
                    ex.input(command[i : i + 1], fed)
                    ex.output(command[i : i + 1], fed)
                ex.input(b"\r", fed)
                found += len(ex.output(b"\r\n", fed))
        if extract:
            ex.output(chunk, fed)
        fed += len(chunk)
        n += 1
    elapsed = time.perf_counter() - start
    return fed / elapsed / 1e6, found


def main() -> None:
    megabytes = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    off, _ = run(megabytes, extract=False)
    on, found = run(megabytes, extract=True)
    print(f"{megabytes} MB of PTY output, commands found: {found}")
    print(f"extraction on: {on:.0f} MB/s (loop alone: {off:.0f} MB/s)")


if __name__ == "__main__":
    main()
