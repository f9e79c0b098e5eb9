"""Durations and sizes: parse_duration, format_duration, parse_size."""

from __future__ import annotations

import pytest

from proxy.core.units import format_duration, parse_duration, parse_size

DURATION_HELP = "use e.g. 30s, 15m, 4h, 90d"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90d", 90 * 86400.0),
        ("4h", 14400.0),
        ("15m", 900.0),
        ("30s", 30.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("2w", 14 * 86400.0),
        ("1d2h3m4s5ms", 86400 + 7200 + 180 + 4 + 0.005),
        ("0.5s", 0.5),
        ("1.5h", 5400.0),
        ("0s", 0.0),
        ("  10m ", 600.0),
        ("1h 30m", 5400.0),
    ],
)
def test_parse_duration_reads_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "30",  # bare number: seconds or minutes?
        "-5m",
        "+5m",
        "5y",
        "5min",
        "5 minutes",
        "1H",
        "m",
        "1h30",  # trailing bare number
        "30m1h",  # smallest unit first
        "1m1m",  # repeated unit
        "1.h",
        ".5s",
        "1e3s",
        "inf",
        "nan",
        "1h-30m",
    ],
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration") as info:
        parse_duration(text)
    assert str(info.value) == f"bad duration {text!r}: {DURATION_HELP}"


def test_parse_duration_refuses_non_strings() -> None:
    with pytest.raises(ValueError, match="bad duration 30"):
        parse_duration(30)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5400, "1h30m"),
        (45, "45s"),
        (0.5, "0.5s"),
        (86400, "1d"),
        (0, "0s"),
        (60, "1m"),
        (3600, "1h"),
        (90 * 86400, "90d"),
        (86400 + 1, "1d1s"),
        (90.25, "1m30.25s"),
        (1.001, "1.001s"),
        (0.0004, "0s"),  # below a millisecond
        (7 * 86400, "7d"),
        (3661, "1h1m1s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.001, 0.5, 59, 61.5, 3600, 5400, 86399.999, 8e6])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize("seconds", [-1, float("inf"), float("nan")])
def test_format_duration_refuses(seconds: float) -> None:
    with pytest.raises(ValueError, match="cannot format duration"):
        format_duration(seconds)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("64MiB", 64 * 1024 * 1024),
        ("1GiB", 1024**3),
        ("512KiB", 512 * 1024),
        ("10MB", 10_000_000),
        ("100B", 100),
        ("2TiB", 2 * 1024**4),
        ("3TB", 3 * 10**12),
        ("1kb", 1000),
        ("64mib", 64 * 1024 * 1024),
        ("1.5KiB", 1536),
        ("1.1GiB", 1181116006),  # exact: 1.1 * 2**30 rounded down
        ("0B", 0),
        ("4096", 4096),
        (" 8 MiB ", 8 * 1024 * 1024),
        (0, 0),
        (1048576, 1048576),
    ],
)
def test_parse_size(value: str | int, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    "value", ["", "MiB", "-1MiB", "10XB", "10 mega", "1.5", "1,5MiB", "1e3", -1, True]
)
def test_parse_size_refuses(value: str | int) -> None:
    with pytest.raises(ValueError, match="bad size") as info:
        parse_size(value)
    assert str(info.value) == (
        f"bad size {value!r}: use e.g. 64MiB, 1GiB, 512KiB, 10MB or a number of bytes"
    )


def test_parse_size_refuses_other_types() -> None:
    with pytest.raises(ValueError, match=r"bad size 1\.5"):
        parse_size(1.5)  # type: ignore[arg-type]


def test_format_size() -> None:
    from proxy.core.units import format_size

    assert format_size(100) == "100B"
    assert format_size(1536) == "1.5KiB"
    assert format_size(64 * 1024 * 1024) == "64MiB"
    assert format_size(2 * 1024**3) == "2GiB"
    assert format_size(3 * 1024**4) == "3072GiB"
