"""asyncssh to asyncssh in one process, stock vs proxy/ssh/wire.py, CPU per GB.

Isolates what the wire changes do to asyncssh's own packet path, without sshd, the
OpenSSH client or the relay: a server sends ``--size`` MB of channel data in 64 KiB
writes to a client over 127.0.0.1, AES-128-GCM on the connection, and the process's
CPU time (both ends) is divided by the bytes. Each mode runs in its own interpreter
(the patches are process-wide), alternating, ``--runs`` times; medians printed.

    .venv/bin/python benchmarks/wire_inproc.py [--runs 3] [--size 100] [--cipher chacha20]

Modes: ``stock`` (asyncssh as installed), ``filler`` (only the empty-IGNORE change),
``fast`` (``wire.install()``: everything). ``--cipher chacha20`` runs the same modes on
chacha20-poly1305, what ``listen.chacha20`` lets a client choose (the fast path is
AES-GCM's only, so its ``fast`` is the empty-IGNORE change alone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = ("stock", "filler", "fast")
CHUNK = b"x" * 65536
CIPHERS = {
    "aes128-gcm": "aes128-gcm@openssh.com",
    "chacha20": "chacha20-poly1305@openssh.com",
}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _transfer(chunks: int, cipher: str) -> tuple[float, float]:
    import asyncssh

    class Open(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return False

    async def send(process: asyncssh.SSHServerProcess[bytes]) -> None:
        for _ in range(chunks):
            process.stdout.write(CHUNK)
            await process.stdout.drain()
        process.exit(0)

    algs = [cipher]
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        server_factory=Open,
        process_factory=send,
        encryption_algs=algs,
        encoding=None,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, known_hosts=None, username="u", encryption_algs=algs
        ) as conn:
            cpu, wall = _cpu(), time.perf_counter()
            result = await asyncio.wait_for(conn.run("x", encoding=None), timeout=600)
            wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    finally:
        server.close()
        await server.wait_closed()
    if len(result.stdout or b"") != chunks * len(CHUNK):
        raise SystemExit("short transfer")
    return cpu, wall


def _child(mode: str, size_mb: int, cipher: str) -> None:
    from proxy.ssh import wire

    if mode == "fast":
        wire.install()
    elif mode == "filler":
        wire._drop_ignore_filler()
    chunks = size_mb * 1_000_000 // len(CHUNK)
    cpu, wall = asyncio.run(_transfer(chunks, cipher))
    gb = chunks * len(CHUNK) / 1e9
    print(json.dumps({"cpu_s_per_gb": cpu / gb, "mb_per_s": gb * 1000 / wall}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=100, help="MB per transfer (100)")
    parser.add_argument("--cipher", choices=sorted(CIPHERS), default="aes128-gcm")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.size, CIPHERS[args.cipher])
        return
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for run in range(args.runs):
        for mode in MODES:
            out = subprocess.run(
                [
                    *(sys.executable, __file__, "--child", mode),
                    *("--size", str(args.size), "--cipher", args.cipher),
                ],
                capture_output=True,
                text=True,
                timeout=900,
                check=True,
            ).stdout
            results[mode].append(json.loads(out.strip().splitlines()[-1]))
            print(f"  run {run + 1} {mode}: {results[mode][-1]}", flush=True)
    print(f"{'mode':8} {'CPU s/GB':>9} {'MB/s':>7}   ({args.cipher}, medians of {args.runs})")
    for mode in MODES:
        cpu = statistics.median(r["cpu_s_per_gb"] for r in results[mode])
        rate = statistics.median(r["mb_per_s"] for r in results[mode])
        print(f"{mode:8} {cpu:9.2f} {rate:7.0f}")


if __name__ == "__main__":
    main()
