"""``breakglass replay SESSION[/N]``: the real ``asciinema`` player, made safe to run.

Owns: finding the player (the venv's ``asciinema`` beside this Python, else PATH),
writing a filtered copy of a cast to a private temporary file (0600, removed after),
and running the player on it. The filter (``core.termfilter``) removes what could act
on the auditor's terminal; the recording itself is only read, never changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from proxy.audit.verify import channel_recording_check, locate_recording
from proxy.core import events
from proxy.core.errors import BreakglassError
from proxy.core.termfilter import CastReport, replayable_cast
from proxy.core.text import escape
from proxy.core.units import format_duration
from proxy.store.base import ChannelRow, StoredEvent


class ReplayError(BreakglassError):
    reason = "replay_failed"


def asciinema_program() -> str:
    beside = Path(sys.executable).parent / "asciinema"
    if beside.exists():
        return str(beside)
    found = shutil.which("asciinema")
    if found is None:
        raise ReplayError("the asciinema player is not installed (pip install asciinema)")
    return found


def write_filtered(source: Path, fd: int) -> CastReport:
    """Filter ``source`` into the open file ``fd`` (closed on return)."""
    report = CastReport()
    with open(source, "rb") as src, os.fdopen(fd, "w", encoding="utf-8") as dst:
        lines = (raw.decode("utf-8", "replace") for raw in src)
        for line in replayable_cast(lines, report):
            dst.write(line)
    return report


def play_argv(path: Path, speed: float | None, idle_limit: float | None) -> list[str]:
    argv = [asciinema_program(), "play"]
    if speed is not None:
        argv += ["-s", repr(float(speed))]
    if idle_limit is not None:
        argv += ["-i", repr(float(idle_limit))]
    return [*argv, str(path)]


def replay(
    source: Path,
    speed: float | None = None,
    idle_limit: float | None = None,
    *,
    notice: Sequence[str] = (),
) -> int:
    """Play one recording; returns the player's exit status."""
    fd, name = tempfile.mkstemp(prefix="breakglass-replay-", suffix=".cast")
    tmp = Path(name)
    try:
        report = write_filtered(source, fd)
        for line in notice:
            print(line, file=sys.stderr)
        if report.dropped_sequences:
            print(
                f"breakglass: {report.dropped_sequences} terminal control sequence(s) that"
                " could act on this terminal (clipboard, window, reports) are not replayed",
                file=sys.stderr,
            )
        if report.cut_line is not None:
            print(
                f"breakglass: the recording stops at line {report.cut_line} (cut short);"
                " replaying everything before it",
                file=sys.stderr,
            )
        sys.stdout.flush()
        sys.stderr.flush()
        return subprocess.call(play_argv(tmp, speed, idle_limit))
    finally:
        tmp.unlink(missing_ok=True)


def replay_channels(
    channels: Sequence[ChannelRow],
    root: Path,
    speed: float | None,
    idle_limit: float | None,
    pruned: Mapping[int, StoredEvent] | None = None,
) -> int:
    """Play each channel's recording in turn, saying first whether its hash checks out.
    Exit status 0 only when every one was found and played. ``pruned``: the session's
    ``recording_pruned`` events by channel, so a cast removed by retention is told apart
    from one that went missing."""
    status = 0
    for c in channels:
        name = f"{c.session_id}/{c.n}"
        path, shown = locate_recording(c.recording, root, c.session_id, c.n)
        if path is None:
            gone = (pruned or {}).get(c.n)
            if gone is not None:
                when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(gone.time))
                pruning = gone.typed()
                assert isinstance(pruning, events.RecordingPruned)
                why = f"pruned by retention ({format_duration(pruning.retention)})"
                print(
                    f"breakglass: the recording of {name} was {why} on {when}; the trail "
                    f"keeps its sha256 {escape(str(pruning.sha256))}",
                    file=sys.stderr,
                )
            else:
                print(
                    f"breakglass: the recording of {name} is missing ({escape(shown)})",
                    file=sys.stderr,
                )
            status = 1
            continue
        check = channel_recording_check(c, root)
        what = escape(c.command or c.kind)
        notice = [f"breakglass: replaying {name} ({what}); recording hash: {check}"]
        if replay(path, speed, idle_limit, notice=notice) != 0:
            status = 1
    return status
