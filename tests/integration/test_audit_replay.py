"""``breakglass replay`` with the real asciinema player: hostile sequences never reach the
terminal, the recording is left untouched, a cast cut short by a crash still plays."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.auditdata import Chan, open_trail, write_config

BREAKGLASS = str(Path(sys.executable).parent / "breakglass")
ASCIINEMA = str(Path(sys.executable).parent / "asciinema")

HOSTILE_OUTPUT = [
    (0.1, "o", b"$ cat notes.txt\r\n"),
    (0.2, "o", b"first line\r\n\x1b]52;c;ZWNobyBwd25lZA==\x07"),
    # split across events: ESC ] 5 | 2 ; c ; ... BEL, and ESC [ | 2 1 t
    (0.3, "o", b"second line\r\n\x1b]5"),
    (0.4, "o", b"2;c;cm0gLXJmIH4=\x07\x1b["),
    (0.5, "o", b"21t\x1b[6n\x1bP$qm\x1b\\\x1b_Gf=100;AAAA\x1b\\"),
    (0.6, "o", b"\x1b[1;31mthird line\x1b[0m\r\n"),
]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def setup(tmp: Path, chans: list[Chan], end: str | None = "client_exit") -> tuple[Path, str]:
    async def run() -> tuple[Path, str]:
        trail = await open_trail(tmp)
        built = await trail.session(t=time.time() - 3600, channels=chans, end_reason=end)
        cfg = write_config(tmp, trail)
        await trail.store.close()
        return cfg, built.session_id

    return asyncio.run(run())


def replay(cfg: Path, target: str, tmp: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "TMPDIR": str(tmp / "tmpdir")}
    (tmp / "tmpdir").mkdir(exist_ok=True)
    return subprocess.run(
        [BREAKGLASS, "-c", str(cfg), "replay", target, "--speed", "50", "--idle-limit", "0.01"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=60,
        check=False,
    )


def test_replay_filters_hostile_sequences_and_leaves_the_cast_alone(tmp_path: Path) -> None:
    cfg, sid = setup(tmp_path, [Chan(kind="shell", command=None, pty=True, events=HOSTILE_OUTPUT)])
    cast = tmp_path / "recordings" / sid[:4] / sid / "1.cast"
    before = sha(cast)
    mode = cast.stat().st_mode
    run = replay(cfg, f"{sid}/1", tmp_path)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for text in (b"first line", b"second line", b"third line", b"\x1b[1;31m"):
        assert text in out
    for bad in (b"\x1b]", b"\x1b[21t", b"\x1b[6n", b"\x1bP", b"\x1b_", b"\x07"):
        assert bad not in out, bad
    err = run.stderr.decode()
    assert f"replaying {sid}/1 (shell); recording hash: ok" in err
    assert "terminal control sequence(s)" in err
    # The recording is untouched and the filtered copy is gone.
    assert sha(cast) == before
    assert cast.stat().st_mode == mode
    assert list((tmp_path / "tmpdir").iterdir()) == []


def test_unfiltered_play_would_have_sent_them(tmp_path: Path) -> None:
    """The control: the player itself passes the sequences straight to the terminal."""
    _, sid = setup(tmp_path, [Chan(kind="shell", command=None, pty=True, events=HOSTILE_OUTPUT)])
    cast = tmp_path / "recordings" / sid[:4] / sid / "1.cast"
    run = subprocess.run(
        [ASCIINEMA, "play", "-s", "50", "-i", "0.01", str(cast)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0
    assert b"\x1b]52;c;" in run.stdout
    assert b"\x1b[6n" in run.stdout


def test_crashed_cast_replays_up_to_its_last_complete_event(tmp_path: Path) -> None:
    events = [(0.1, "o", b"before the crash\r\n"), (0.2, "o", b"still here\r\n")]
    cfg, sid = setup(tmp_path, [Chan(kind="shell", command=None, events=events)], end=None)
    cast = tmp_path / "recordings" / sid[:4] / sid / "1.cast"
    with open(cast, "ab") as f:
        f.write(b'[0.3, "o", "never fini')  # a crash in the middle of a write
    before = sha(cast)
    plain = subprocess.run(
        [ASCIINEMA, "play", "-s", "50", str(cast)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert plain.returncode != 0  # the player alone dies on the cut line
    run = replay(cfg, sid, tmp_path)
    assert run.returncode == 0, run.stderr
    assert b"before the crash" in run.stdout
    assert b"still here" in run.stdout
    assert b"never fini" not in run.stdout
    err = run.stderr.decode()
    assert "recording hash: open" in err
    assert "the recording stops at line" in err
    assert sha(cast) == before


def test_replay_of_a_session_plays_every_channel_in_order(tmp_path: Path) -> None:
    cfg, sid = setup(
        tmp_path,
        [
            Chan(command="echo one", events=[(0.1, "o", b"output of one\r\n")]),
            Chan(command="echo two", events=[(0.1, "o", b"output of two\r\n")]),
        ],
    )
    run = replay(cfg, sid, tmp_path)
    assert run.returncode == 0
    out = run.stdout
    assert out.index(b"output of one") < out.index(b"output of two")


def test_replay_refuses_what_is_not_there(tmp_path: Path) -> None:
    cfg, sid = setup(tmp_path, [Chan()])
    assert replay(cfg, "nosuchsession", tmp_path).returncode == 1
    assert replay(cfg, f"{sid}/7", tmp_path).returncode == 1
    assert replay(cfg, f"{sid}/x", tmp_path).returncode == 2
    (tmp_path / "recordings" / sid[:4] / sid / "1.cast").unlink()
    run = replay(cfg, f"{sid}/1", tmp_path)
    assert run.returncode == 1
    assert b"is missing" in run.stderr
