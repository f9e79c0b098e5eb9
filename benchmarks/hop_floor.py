"""What one more hop costs by itself: direct vs a bare TCP forwarder vs the proxy.

Issue 9's echo goals (p50 <= 1.5x, p99 <= 2x direct at 100 sessions) and bulk goals
(>= 1.0x) compare the proxy, a process that terminates SSH on both sides, with no process
at all. This script measures the floor under any such proxy: the same OpenSSH client
and sshd with only a byte-for-byte forwarder between them, no SSH, no crypto, no
recording. Paths, interleaved per run:

* ``direct``: client -> sshd;
* ``pyfwd``: client -> ``benchmarks/forwarder.py`` (Python on uvloop, like the proxy)
  -> sshd;
* ``socat``: client -> ``socat`` (C, one process per connection) -> sshd, when socat is
  installed (``apt-get install socat``);
* ``proxy``: client -> ``breakglass serve`` (recording on) -> sshd.

    .venv/bin/python benchmarks/hop_floor.py [--runs 3] [--levels 1,100] [--size 200M]

Prints keystroke echo p50/p99 (the same open-loop OpenSSH-over-pipes measurement as
``benchmarks/run``), exec download and sftp get throughput, each with its ratio to
direct; the whole machine's busy cores over each measurement; the middle process's CPU
per GB, and the proxy's per echo. 127.0.0.1 only; every process it starts is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import interactive, transfer  # noqa: E402
from benchmarks.cli import parse_size  # noqa: E402
from benchmarks.rig import Rig, busy_seconds, cpu_seconds, raise_nofile  # noqa: E402
from tests.integration.harness import LOOPBACK, free_port  # noqa: E402


class Hop:
    """A forwarder process in front of the rig's sshd."""

    def __init__(self, name: str, argv: list[str], port: int) -> None:
        self.name, self.port = name, port
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def wait_ready(self) -> None:
        if self.name == "pyfwd":
            assert self.process.stdout is not None
            if self.process.stdout.readline().strip() != b"READY":
                raise RuntimeError("forwarder did not start")
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex((LOOPBACK, self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen")

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_hops(sshd_port: int) -> dict[str, Hop]:
    hops: dict[str, Hop] = {}
    port = free_port()
    forwarder = str(ROOT / "benchmarks" / "forwarder.py")
    hops["pyfwd"] = Hop("pyfwd", [sys.executable, forwarder, str(port), str(sshd_port)], port)
    socat = shutil.which("socat")
    if socat:
        port = free_port()
        listen = f"TCP-LISTEN:{port},bind={LOOPBACK},reuseaddr,fork,backlog=1024"
        hops["socat"] = Hop("socat", [socat, listen, f"TCP:{LOOPBACK}:{sshd_port}"], port)
    for hop in hops.values():
        hop.wait_ready()
    return hops


def argv_for(
    rig: Rig, hops: dict[str, Hop], path: str, command: str | None, tty: bool
) -> list[str]:
    """ssh's argv for ``path``; ``command`` None: sftp's."""
    if path == "proxy":
        return rig.sftp("proxy") if command is None else rig.ssh("proxy", command, tty=tty)
    argv = rig.sftp("direct") if command is None else rig.ssh("direct", command, tty=tty)
    if path in hops:
        flag = "-P" if command is None else "-p"
        argv[argv.index(flag) + 1] = str(hops[path].port)
    return argv


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--levels", default="1,100", help="echo session counts")
    p.add_argument("--seconds", type=float, default=10.0, help="typing time per level")
    p.add_argument("--size", default="200M", help="download and sftp get size (0: skip)")
    p.add_argument("--paths", help="a subset of direct,pyfwd,socat,proxy (all)")
    args = p.parse_args()
    raise_nofile(20000)
    rig = Rig.start()
    hops: dict[str, Hop] = {}
    try:
        hops = start_hops(rig.target.port)
        paths = ["direct", *hops, "proxy"]
        if args.paths:
            paths = [p for p in paths if p in args.paths.split(",")]
        print(f"paths: {', '.join(paths)}; sshd 127.0.0.1:{rig.target.port}", file=sys.stderr)
        results: dict[str, dict[str, list[float]]] = {}

        def add(metric: str, path: str, value: float) -> None:
            results.setdefault(metric, {}).setdefault(path, []).append(value)

        for n in [int(x) for x in args.levels.split(",") if x]:
            for run in range(args.runs):
                for path in paths:
                    argv = argv_for(rig, hops, path, interactive.ECHO_COMMAND, True)
                    env = rig.env("proxy" if path == "proxy" else "direct")
                    pid = rig.proxy_pid if path == "proxy" else None
                    level = asyncio.run(
                        interactive.echo_level(argv, env, n, args.seconds, 0.1, pid=pid)
                    )
                    add(f"echo p50 @{n} (ms)", path, level.percentile(50))
                    add(f"echo p99 @{n} (ms)", path, level.percentile(99))
                    add(f"echo @{n}: busy cores", path, level.busy_cores)
                    if level.cpu_per_echo_us is not None:
                        add(f"echo @{n}: proxy us/echo", path, level.cpu_per_echo_us)
                    print(
                        f"  echo @{n} run {run + 1} {path}: p50 {level.percentile(50):.3f}"
                        f" p99 {level.percentile(99):.3f} ms, {level.echoed}/{level.sent},"
                        f" {level.busy_cores:.2f} cores busy",
                        file=sys.stderr,
                    )
        size = parse_size(args.size)
        source = rig.directory / "sftp-source"
        if size:
            with source.open("wb") as f:
                f.truncate(size)  # sparse zeros: sftp-server reads them from the page cache
        transfers = ("download zeros", "sftp get") if size else ()
        for name in transfers:
            for run in range(args.runs):
                for path in paths:
                    env = rig.env("proxy" if path == "proxy" else "direct")
                    pid = rig.proxy_pid if path == "proxy" else None
                    # The forwarder's own CPU (socat's per-connection children are gone
                    # by the time it could be read).
                    before = hops[path].cpu() if path == "pyfwd" else None
                    busy0, wall0 = busy_seconds(), time.monotonic()
                    if name == "sftp get":
                        sample = transfer.sftp(
                            argv_for(rig, hops, path, None, False),
                            env,
                            f"get {source} /dev/null",
                            size,
                            pid=pid,
                            timeout=transfer.rig_timeout(size),
                        )
                    else:
                        sample = transfer.read_stream(
                            argv_for(rig, hops, path, f"head -c {size} /dev/zero", False),
                            env,
                            pid=pid,
                            timeout=transfer.rig_timeout(size),
                            tty=False,
                        )
                    busy = (busy_seconds() - busy0) / (time.monotonic() - wall0)
                    add(f"{name} (MB/s)", path, sample.mb_per_s)
                    add(f"{name}: busy cores", path, busy)
                    cpu = sample.proxy_cpu
                    if before is not None:
                        cpu = hops[path].cpu() - before  # includes the login: an upper bound
                    if cpu is not None:
                        add(f"{name}: middle s/GB", path, cpu / (sample.nbytes / 1e9))
                    print(
                        f"  {name} run {run + 1} {path}: {sample.mb_per_s:.0f} MB/s,"
                        f" {busy:.2f} cores busy",
                        file=sys.stderr,
                    )
    finally:
        for hop in hops.values():
            hop.stop()
        rig.stop()

    header = f"{'metric':<24}" + "".join(f"{p:>16}" for p in paths)
    print(header)
    print("-" * len(header))
    for metric, by_path in results.items():
        cells = []
        direct = statistics.median(by_path["direct"]) if "direct" in by_path else None
        for path in paths:
            if path not in by_path:
                cells.append(f"{'':>16}")
                continue
            value = statistics.median(by_path[path])
            ratio = f" ({value / direct:.2f}x)" if direct and path != "direct" else ""
            cells.append(f"{value:.3g}{ratio}".rjust(16))
        print(f"{metric:<24}" + "".join(cells))
    print(
        "median of runs; (Nx) = path / direct; busy cores: the whole machine's non-idle CPU"
        " over the client's run (login included); middle s/GB: the forwarder's or the"
        " proxy's own CPU per GB (socat's per-connection children are not counted)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
