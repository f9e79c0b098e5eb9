"""The replay filter: hostile sequences removed however they are split; screen painting kept."""

from __future__ import annotations

import json
import random

import pytest

from proxy.core.termfilter import CastReport, TermFilter, filter_text, replayable_cast

ESC = "\x1b"
ST = ESC + "\\"

# Each of these could act beyond the screen of the auditor's terminal.
HOSTILE = {
    "osc52 clipboard (BEL)": ESC + "]52;c;ZWNobyBwd25lZA==\x07",
    "osc52 clipboard (ST)": ESC + "]52;c;ZWNobyBwd25lZA==" + ST,
    "osc52 8-bit": "\x9d52;c;ZWNobyBwd25lZA==\x9c",
    "osc title": ESC + "]0;innocent title\x07",
    "osc 2 title": ESC + "]2;$(reboot)" + ST,
    "osc hyperlink": ESC + "]8;;https://evil.example/" + ST,
    "osc colour query": ESC + "]10;?\x07",
    "title report": ESC + "[21t",
    "window move": ESC + "[3;0;0t",
    "window resize": ESC + "[8;100;300t",
    "iconify": ESC + "[2t",
    "dsr status": ESC + "[5n",
    "dsr cursor": ESC + "[6n",
    "dsr private": ESC + "[?6n",
    "da1": ESC + "[c",
    "da1 zero": ESC + "[0c",
    "da2": ESC + "[>c",
    "da3": ESC + "[=c",
    "8-bit csi dsr": "\x9b6n",
    "decreqtparm": ESC + "[1x",
    "xtversion": ESC + "[>0q",
    "decrqm": ESC + "[?2026$p",
    "decrqm ansi": ESC + "[4$p",
    "decrqlp": ESC + "[1'|",
    "xtsmgraphics": ESC + "[?1;1;0S",
    "kitty keyboard query": ESC + "[?u",
    "xtmodkeys": ESC + "[>4;2m",
    "decrqss": ESC + "P$qm" + ST,
    "xtgettcap": ESC + "P+q544e" + ST,
    "dcs 8-bit": "\x90$qm\x9c",
    "sixel": ESC + "Pq#0;2;0;0;0#1!6~" + ST,
    "kitty graphics": ESC + "_Gf=100,a=T;iVBORw0KGgo=" + ST,
    "apc 8-bit": "\x9fGa=d\x9c",
    "pm": ESC + "^private message" + ST,
    "sos": ESC + "Xstart of string" + ST,
    "decid": ESC + "Z",
    "enq answerback": "\x05",
    "mouse tracking": ESC + "[?1000h",
    "mouse sgr": ESC + "[?1006;1000h",
    "focus events": ESC + "[?1004h",
    "x10 mouse": ESC + "[?9h",
    "overlong csi": ESC + "[" + "1;" * 200 + "m",
}

# Painting the screen: kept byte for byte.
SAFE = {
    "sgr colour": ESC + "[1;31m",
    "sgr reset": ESC + "[0m",
    "truecolour": ESC + "[38;2;10;20;30m",
    "cursor position": ESC + "[12;40H",
    "erase display": ESC + "[2J",
    "erase line": ESC + "[K",
    "scroll region": ESC + "[1;20r",
    "alt screen": ESC + "[?1049h",
    "hide cursor": ESC + "[?25l",
    "bracketed paste": ESC + "[?2004h",
    "charset": ESC + "(B",
    "dec line drawing": ESC + "(0",
    "save cursor": ESC + "7",
    "restore cursor": ESC + "8",
    "keypad": ESC + "=",
    "decaln": ESC + "#8",
    "insert lines": ESC + "[3L",
}

TEXT = "user@db01:~$ ls -l\r\ntotal 0 \u00e9\u20ac\U0001f600\r\n"


def split_every_way(text: str, parts: int, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), min(parts - 1, len(text) - 1)))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def feed_all(chunks: list[str]) -> str:
    f = TermFilter()
    return "".join(f.feed(c) for c in chunks) + f.flush()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_sequence_is_removed_and_text_around_it_kept(name: str) -> None:
    seq = HOSTILE[name]
    assert filter_text("before" + seq + "after") == "beforeafter"


@pytest.mark.parametrize("name", sorted(SAFE))
def test_screen_painting_is_kept(name: str) -> None:
    seq = SAFE[name]
    assert filter_text("a" + seq + "b") == "a" + seq + "b"


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_sequence_split_at_every_position_is_still_removed(name: str) -> None:
    text = "x" + HOSTILE[name] + "y" + SAFE["sgr colour"] + "z"
    expected = "xy" + SAFE["sgr colour"] + "z"
    for cut in range(1, len(text)):
        assert feed_all([text[:cut], text[cut:]]) == expected, cut
    # One character per event: the worst split there is.
    assert feed_all(list(text)) == expected


def test_random_mixture_split_randomly_equals_one_shot() -> None:
    rng = random.Random(20240611)
    pieces = [*HOSTILE.values(), *SAFE.values(), TEXT, "plain", "\r\n"]
    for _ in range(300):
        stream = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 25)))
        whole = filter_text(stream)
        assert filter_text(whole) == whole  # what survives is only what is allowed
        for parts in (2, 5, 17):
            assert feed_all(split_every_way(stream, parts, rng)) == whole
        for bad in ("]52;", "[6n", "[21t", "P$q", "_G", "[c", "[>c", "\x9d", "\x90", "\x05"):
            if bad in whole:
                # Only possible as plain text, never after an ESC or as a C1 control.
                assert ESC + bad not in whole
                assert bad[0] not in "\x9d\x90\x05"


def test_unterminated_string_swallows_until_terminator_and_only_that() -> None:
    f = TermFilter()
    assert f.feed("ok" + ESC + "]52;c;AAAA") == "ok"
    assert f.feed("BBBB more payload") == ""
    assert f.feed("\x07visible") == "visible"


def test_esc_inside_string_ends_it_and_starts_a_sequence() -> None:
    # DEC parser: ESC inside an OSC ends the string; "[31m" is then a CSI of its own.
    assert filter_text(ESC + "]0;title" + ESC + "[31mred") == ESC + "[31mred"


def test_can_and_sub_abort_sequences() -> None:
    assert filter_text(ESC + "[12\x18after") == "after"
    assert filter_text(ESC + "]52;c;AA\x1aafter") == "after"


def test_unfinished_sequence_at_the_end_is_dropped_not_emitted() -> None:
    f = TermFilter()
    assert f.feed("text" + ESC + "[6") == "text"
    assert f.flush() == ""
    assert f.dropped == 1


def test_c0_controls_inside_csi_still_act() -> None:
    assert filter_text(ESC + "[1\r;31m") == "\r" + ESC + "[1;31m"


def test_eight_bit_csi_is_normalised_to_seven_bit() -> None:
    assert filter_text("\x9b1;32m") == ESC + "[1;32m"


def test_plain_text_passes_unchanged() -> None:
    assert filter_text(TEXT) == TEXT


def cast_text(events: list[list[object]]) -> list[str]:
    lines = [json.dumps({"version": 2, "width": 80, "height": 24}) + "\n"]
    lines += [json.dumps(e) + "\n" for e in events]
    return lines


def test_replayable_cast_filters_split_sequences_across_events() -> None:
    lines = cast_text(
        [
            [0.1, "o", "a" + ESC + "]5"],
            [0.2, "o", "2;c;QUFB"],
            [0.3, "o", "QQ==\x07b" + ESC + "["],
            [0.4, "o", "6nc"],
            [0.5, "r", "100x30"],
            [0.6, "m", "command: ls"],
            [0.7, "i", ESC + "[6n"],
        ]
    )
    report = CastReport()
    out = list(replayable_cast(lines, report))
    events = [json.loads(line) for line in out[1:]]
    assert [e[2] for e in events] == ["a", "", "b", "c", "100x30", "command: ls", ""]
    assert report.events == 7
    assert report.dropped_sequences == 3
    assert report.cut_line is None
    assert all(line.endswith("\n") for line in out)


def test_replayable_cast_drops_a_truncated_last_line() -> None:
    lines = [*cast_text([[0.1, "o", "one\r\n"], [0.2, "o", "two\r\n"]]), '[0.3, "o", "thr']
    report = CastReport()
    out = list(replayable_cast(lines, report))
    assert len(out) == 3
    assert report.cut_line == 4


def test_replayable_cast_stops_at_a_damaged_line() -> None:
    lines = [*cast_text([[0.1, "o", "one"]]), "not json\n", *cast_text([[0.2, "o", "x"]])[1:]]
    report = CastReport()
    out = list(replayable_cast(lines, report))
    assert len(out) == 2
    assert report.cut_line == 3


def test_replayable_cast_rejects_a_bad_header() -> None:
    report = CastReport()
    assert list(replayable_cast(["[1, 2]\n", '[0.1, "o", "x"]\n'], report)) == []
    assert report.cut_line == 1
