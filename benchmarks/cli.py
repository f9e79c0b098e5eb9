"""``python -m benchmarks``: every metric, direct vs through the proxy, as a table + JSON.

Owns the run: argument parsing, the order of the measurements (direct and proxy
interleaved, A B A B ...), medians, the goals of issue 9, the printed table and the JSON
file in benchmarks/results/. The measuring itself is in ``transfer`` and ``interactive``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import interactive, transfer
from benchmarks.rig import Rig, descendants, pss_kib, raise_nofile, rss_kib
from benchmarks.transfer import BenchError, Sample

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
TEXT_LINE = "2024-05-01T12:00:00.000Z INFO api request handled path=/v1/items status=200 ms=12"
PATHS = ("direct", "proxy")
START = "BGSTART"  # printed by the shell right before a typed command's output
# Memory first: on a fresh proxy, before earlier sessions have grown its heap (later, the
# RSS delta would understate what a session costs).
METRICS = ("memory", "login", "download", "text", "upload", "sftp", "pty", "echo")


def parse_size(text: str) -> int:
    """``500M``, ``64K``, ``1G`` or bytes; powers of 1024 like ``head -c``."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


@dataclass
class Row:
    """One line of the table. ``ratio`` is proxy / direct of the medians."""

    metric: str
    unit: str
    direct: list[float] = field(default_factory=list)
    proxy: list[float] = field(default_factory=list)
    higher_is_better: bool = True
    goal: float | None = None  # on the ratio, or on the proxy value if ``absolute``
    absolute: bool = False
    note: str = ""
    error: str | None = None

    @staticmethod
    def _median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    @property
    def direct_median(self) -> float | None:
        return self._median(self.direct)

    @property
    def proxy_median(self) -> float | None:
        return self._median(self.proxy)

    @property
    def ratio(self) -> float | None:
        d, p = self.direct_median, self.proxy_median
        if d is None or p is None or d == 0 or math.isinf(d):
            return None
        return p / d

    @property
    def passed(self) -> bool | None:
        if self.goal is None or self.error is not None:
            return None
        value = self.proxy_median if self.absolute else self.ratio
        if value is None:
            return None
        return value >= self.goal if self.higher_is_better else value <= self.goal

    def goal_text(self) -> str:
        if self.goal is None:
            return ""
        op = ">=" if self.higher_is_better else "<="
        return f"{op} {self.goal:g}" + (f" {self.unit}" if self.absolute else "")

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            direct_median=self.direct_median,
            proxy_median=self.proxy_median,
            ratio=self.ratio,
            passed=self.passed,
        )
        return data


@dataclass
class Settings:
    runs: int
    download: int
    transfer: int
    pty: int
    echo_levels: tuple[int, ...]
    echo_seconds: float
    echo_period: float
    login_runs: int
    idle_sessions: int
    only: frozenset[str]


class Bench:
    def __init__(self, rig: Rig, settings: Settings) -> None:
        self.rig = rig
        self.s = settings
        self.rows: list[Row] = []
        self.cpu_rows: list[Row] = []

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    # -- helpers ---------------------------------------------------------------------

    def _pid(self, path: str) -> int | None:
        return self.rig.proxy_pid if path == "proxy" else None

    def _interleave(
        self, row: Row, measure: Callable[[str], Sample], value: Callable[[Sample], float]
    ) -> list[Sample]:
        """Run ``measure`` direct, proxy, direct, proxy ... ``runs`` times each."""
        proxy_samples: list[Sample] = []
        for i in range(self.s.runs):
            for path in PATHS:
                sample = measure(path)
                getattr(row, path).append(value(sample))
                if path == "proxy":
                    proxy_samples.append(sample)
                self.log(f"  {row.metric} run {i + 1} {path}: {value(sample):.2f} {row.unit}")
        return proxy_samples

    def _guard(self, row: Row, body: Callable[[], None]) -> None:
        self.rows.append(row)
        try:
            body()
        except (BenchError, subprocess.SubprocessError, OSError, TimeoutError) as exc:
            row.error = f"{type(exc).__name__}: {exc}"[:500]
            self.log(f"  {row.metric} FAILED: {row.error}")

    def _cpu_per_gb(self, label: str, samples: list[Sample]) -> None:
        cpu = [s.proxy_cpu / (s.nbytes / 1e9) for s in samples if s.proxy_cpu is not None]
        if cpu:
            self.cpu_rows.append(Row(f"proxy CPU, {label}", "s/GB", proxy=cpu))

    # -- metrics ---------------------------------------------------------------------

    def login(self) -> None:
        row = Row("login (ssh true)", "ms", higher_is_better=False, goal=1.0)

        def body() -> None:
            for i in range(self.s.login_runs):
                for path in PATHS:
                    argv = self.rig.ssh(path, "true")
                    ms = transfer.timed_run(argv, self.rig.env(path), timeout=60) * 1000
                    getattr(row, path).append(ms)
                    self.log(f"  login run {i + 1} {path}: {ms:.0f} ms")

        self._guard(row, body)

    def _stream(
        self, metric: str, label: str, command: str, size: int, *, tty: bool, shell: bool = False
    ) -> None:
        """``shell``: the command is typed at an interactive login shell in a PTY (so the
        proxy extracts commands, as in a real session) and timed from a marker it prints."""
        goal = 0.8 if tty else 1.0
        row = Row(label, "MB/s", goal=goal)
        # Split by quotes so the typed line's echo does not contain the marker.
        typed = f"stty -echo; printf '{START[:3]}''{START[3:]}\\n'; {command}; exit\n".encode()

        def measure(path: str) -> Sample:
            return transfer.read_stream(
                self.rig.ssh(path, None if shell else command, tty=tty),
                self.rig.env(path),
                pid=self._pid(path),
                timeout=transfer.rig_timeout(size),
                tty=tty,
                typed=typed if shell else None,
                start=START.encode() if shell else None,
            )

        self._guard(row, lambda: self._cpu_per_gb(metric, self._interleave(row, measure, _mbs)))

    def download(self) -> None:
        size = self.s.download
        self._stream(
            "exec download zeros",
            f"exec download zeros {_h(size)}",
            f"head -c {size} /dev/zero",
            size,
            tty=False,
        )

    def text(self) -> None:
        size = self.s.transfer
        self._stream(
            "exec download text",
            f"exec download text {_h(size)}",
            f"yes '{TEXT_LINE}' | head -c {size}",
            size,
            tty=False,
        )

    def pty(self) -> None:
        size = self.s.pty
        self._stream(
            "PTY text output",
            f"PTY shell output base64 {_h(size)}",
            f"base64 /dev/urandom | head -c {size}",
            size,
            tty=True,
            shell=True,
        )

    def upload(self) -> None:
        size = self.s.transfer
        row = Row(f"exec upload {_h(size)}", "MB/s", goal=1.0)

        def measure(path: str) -> Sample:
            return transfer.upload(
                self.rig.ssh(path, "printf READY; exec cat > /dev/null"),
                self.rig.env(path),
                size,
                pid=self._pid(path),
                timeout=transfer.rig_timeout(size),
            )

        self._guard(
            row, lambda: self._cpu_per_gb("exec upload", self._interleave(row, measure, _mbs))
        )

    def sftp(self) -> None:
        size = self.s.transfer
        source = self.rig.directory / "sftp-source"
        with source.open("wb") as f:
            block = b"\0" * (1 << 20)
            for _ in range(size // len(block)):
                f.write(block)
            f.write(b"\0" * (size % len(block)))
        for verb, command in (
            ("get", f"get {source} /dev/null"),
            ("put", f"put {source} /dev/null"),
        ):
            row = Row(f"sftp {verb} {_h(size)}", "MB/s", goal=0.95)

            def measure(path: str, command: str = command) -> Sample:
                return transfer.sftp(
                    self.rig.sftp(path),
                    self.rig.env(path),
                    command,
                    size,
                    pid=self._pid(path),
                    timeout=transfer.rig_timeout(size),
                )

            def body(row: Row = row, measure: Callable[[str], Sample] = measure) -> None:
                samples = self._interleave(row, measure, _mbs)
                self._cpu_per_gb(row.metric.rsplit(" ", 1)[0], samples)

            self._guard(row, body)

    def echo(self) -> None:
        period, seconds = self.s.echo_period, self.s.echo_seconds
        for n in self.s.echo_levels:
            p50_goal = 1.5 if n == 100 else None
            p99_goal = 2.0 if n in (100, 500) else None
            rows = {
                "p50": Row(f"echo p50 @{n} sessions", "ms", higher_is_better=False, goal=p50_goal),
                "p99": Row(f"echo p99 @{n} sessions", "ms", higher_is_better=False, goal=p99_goal),
                "rate": Row(
                    f"echo rate @{n} sessions", "echoed/sent", goal=0.95 if n == 500 else None
                ),
            }
            hz = 1 / period
            note = f"OpenSSH clients over pipes, {hz:g} Hz each, {seconds:g}s"
            rows["p50"].note = note

            cpu = Row(f"proxy CPU per echo @{n}", "us")

            def body(n: int = n, rows: dict[str, Row] = rows, cpu: Row = cpu) -> None:
                for i in range(self.s.runs):
                    for path in PATHS:
                        argv = self.rig.ssh(path, interactive.ECHO_COMMAND, tty=True)
                        level = asyncio.run(
                            interactive.echo_level(
                                argv, self.rig.env(path), n, seconds, period, pid=self._pid(path)
                            )
                        )
                        if level.cpu_per_echo_us is not None:
                            cpu.proxy.append(level.cpu_per_echo_us)
                        getattr(rows["p50"], path).append(level.percentile(50))
                        getattr(rows["p99"], path).append(level.percentile(99))
                        getattr(rows["rate"], path).append(level.rate)
                        self.log(
                            f"  echo @{n} run {i + 1} {path}: p50 {level.percentile(50):.2f} ms"
                            f" p99 {level.percentile(99):.2f} ms"
                            f" echoed {level.echoed}/{level.sent}"
                        )

            self._guard(rows["p50"], body)
            self.rows.extend([rows["p99"], rows["rate"]])
            if cpu.proxy:
                self.cpu_rows.append(cpu)
            if rows["p50"].error:
                rows["p99"].error = rows["rate"].error = rows["p50"].error

    def memory(self) -> None:
        n = self.s.idle_sessions
        row = Row(
            f"memory per idle PTY session @{n}",
            "KiB",
            higher_is_better=False,
            goal=64,
            absolute=True,
            note="proxy: RSS delta / N; direct: sshd's PSS / N, for scale",
        )
        argv = {path: self.rig.ssh(path, interactive.ECHO_COMMAND, tty=True) for path in PATHS}

        def sshd_pss() -> int:
            return pss_kib([self.rig.sshd_pid, *descendants(self.rig.sshd_pid)])

        def body() -> None:
            for path, measure in (("direct", sshd_pss), ("proxy", self._proxy_rss)):
                used = asyncio.run(
                    interactive.idle_memory(argv[path], self.rig.env(path), n, measure)
                )
                getattr(row, path).append(used.per_session_kib)
                self.log(
                    f"  memory @{n} {path}: {used.before_kib} -> {used.after_kib} KiB,"
                    f" {used.per_session_kib:.1f} KiB/session"
                )

        self._guard(row, body)

    def _proxy_rss(self) -> int:
        return rss_kib(self.rig.proxy_pid)

    def run(self) -> None:
        self.log("warm-up: one login each way")
        for path in PATHS:
            transfer.timed_run(self.rig.ssh(path, "true"), self.rig.env(path), timeout=60)
        steps: dict[str, Callable[[], None]] = {
            "login": self.login,
            "download": self.download,
            "text": self.text,
            "upload": self.upload,
            "sftp": self.sftp,
            "pty": self.pty,
            "echo": self.echo,
            "memory": self.memory,
        }
        for name in METRICS:
            if name in self.s.only:
                self.log(f"{name}:")
                steps[name]()


def _mbs(sample: Sample) -> float:
    return sample.mb_per_s


def _h(size: int) -> str:
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def table(rows: Sequence[Row]) -> str:
    header = ("metric", "unit", "direct", "proxy", "ratio", "goal", "result")
    lines = [header]
    for row in rows:
        result = {True: "PASS", False: "FAIL", None: ""}[row.passed]
        if row.error:
            result = "ERROR"
        lines.append(
            (
                row.metric,
                row.unit,
                _fmt(row.direct_median),
                _fmt(row.proxy_median),
                _fmt(row.ratio),
                row.goal_text(),
                result,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ssh_version = subprocess.run(
        ["ssh", "-V"], capture_output=True, text=True, check=False, timeout=10
    ).stderr.strip()
    import asyncssh

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "asyncssh": asyncssh.__version__,
        "openssh": ssh_version,
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False, timeout=10
        )
        return result.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="breakglass vs direct OpenSSH on 127.0.0.1 (issue 9's benchmark).",
    )
    p.add_argument("--runs", type=int, default=3, help="interleaved runs per metric (3)")
    p.add_argument("--quick", action="store_true", help="small sizes, fewer sessions (~2 min)")
    p.add_argument("--full", action="store_true", help="add 500 echo sessions, 1000 idle ones")
    p.add_argument("--size", type=parse_size, help="exec download size (500M; quick 100M)")
    p.add_argument("--transfer-size", type=parse_size, help="text/upload/sftp size (200M)")
    p.add_argument("--pty-size", type=parse_size, help="PTY output size (50M)")
    p.add_argument("--echo-seconds", type=float, help="typing time per echo level (10)")
    p.add_argument("--echo-levels", help="comma-separated session counts (1,100)")
    p.add_argument("--idle-sessions", type=int, help="sessions for the memory metric (200)")
    p.add_argument("--only", help=f"comma-separated subset of: {','.join(METRICS)}")
    p.add_argument("--profile", type=Path, help="py-spy the proxy into this file (raw format)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--no-save", action="store_true", help="do not write results JSON")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    quick, full = args.quick, args.full
    levels: tuple[int, ...] = (1, 100, 500) if full else (1, 100)
    if args.echo_levels:
        levels = tuple(int(n) for n in args.echo_levels.split(","))
    only = frozenset(args.only.split(",")) if args.only else frozenset(METRICS)
    unknown = only - set(METRICS)
    if unknown:
        raise SystemExit(f"unknown metric(s): {','.join(sorted(unknown))}")
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    return Settings(
        runs=args.runs,
        download=args.size or parse_size("100M" if quick else "500M"),
        transfer=args.transfer_size or parse_size("50M" if quick else "200M"),
        pty=args.pty_size or parse_size("10M" if quick else "50M"),
        echo_levels=levels,
        echo_seconds=args.echo_seconds or (5.0 if quick else 10.0),
        echo_period=0.1,
        login_runs=max(args.runs, 5),
        idle_sessions=args.idle_sessions or (50 if quick else 1000 if full else 200),
        only=only,
    )


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    py_spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen(
        [str(py_spy), "record", "-p", str(pid), "-f", "raw", "-r", "200", "-o", str(out)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    nofile = raise_nofile()
    if sys.version_info < (3, 12):
        # One thread per child (3.11's default watcher) is too heavy at 1000 clients.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
    started = dt.datetime.now(dt.UTC)
    rig = Rig.start(keep=args.keep)
    print(
        f"target sshd 127.0.0.1:{rig.target.port}, proxy 127.0.0.1:{rig.proxy.port}"
        f" (pid {rig.proxy_pid}), folder {rig.directory}, open-file limit {nofile}",
        file=sys.stderr,
    )
    profiler = start_profiler(rig.proxy_pid, args.profile) if args.profile else None
    bench = Bench(rig, settings)
    try:
        bench.run()
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            try:
                profiler.wait(30)
            except subprocess.TimeoutExpired:
                profiler.kill()
        proxy_log = rig.proxy.log()
        rig.stop()
    rows = bench.rows + bench.cpu_rows
    print()
    print(table(rows))
    print(
        "\nratio = proxy / direct (medians); throughput times the data phase only; "
        "echo uses OpenSSH clients over pipes on both paths"
    )
    if "Traceback" in proxy_log:
        print("the proxy logged a traceback; see the JSON", file=sys.stderr)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
        document = {
            "started": started.isoformat(),
            "command": [sys.executable, "-m", "benchmarks", *(argv or sys.argv[1:])],
            "settings": {
                k: (sorted(v) if isinstance(v, frozenset) else v)
                for k, v in asdict(settings).items()
            },
            "machine": machine(),
            "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3],
            "git": git_state(),
            "rows": [row.as_json() for row in rows],
            "proxy_log_tail": proxy_log[-4000:],
        }
        out.write_text(json.dumps(document, indent=2, default=str) + "\n")
        print(f"results: {out}")
    return 1 if any(row.error for row in rows) else 0
