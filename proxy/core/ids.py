"""Session ids: short, unique, sortable by time (the README's "Commands").

Twelve Crockford base32 characters: nine for the millisecond timestamp (good until the
year 3084) and three random ones. Lexical order is time order, so `ORDER BY id` works.
"""

from __future__ import annotations

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_TIME_CHARS = 9
_RANDOM_CHARS = 3


def _encode(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def session_id(now: float, random_bytes: bytes) -> str:
    """``now`` in unix seconds; ``random_bytes`` at least 2 bytes from a CSPRNG."""
    if len(random_bytes) < 2:
        raise ValueError("session_id needs at least 2 random bytes")
    millis = int(now * 1000)
    rand = int.from_bytes(random_bytes[:2], "big") & ((1 << (5 * _RANDOM_CHARS)) - 1)
    return _encode(millis, _TIME_CHARS) + _encode(rand, _RANDOM_CHARS)


def is_session_id(text: str) -> bool:
    return len(text) == _TIME_CHARS + _RANDOM_CHARS and all(c in ALPHABET for c in text)
