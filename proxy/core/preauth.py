"""What may be kept of text a client sent before it proved anything.

Owns two rules for unauthenticated input that goes into the audit trail:

- a typed secret never does: anything in the text that looks like a break-glass code
  (``BG`` then the id and at least most of the secret, with any separators, case or
  confusable letters; or, without ``BG``, the id and most of the secret dashed as
  printed or run together) keeps its public id and loses the rest. A right code typed at the
  wrong prompt, or beside a misspelled target, would otherwise sit in the store still
  usable;
- text is cut to its policy maximum (the username's longest valid shape, the
  justification's ``max_bytes``) and its full length is kept beside it, so a 200 KB
  answer costs the store a few hundred bytes and the auditor still sees its size.

Pure: strings in, strings out.
"""

from __future__ import annotations

import re

from proxy.core.credentials import ID_LEN, SECRET_LEN, parse_code

# The longest username parse_username accepts: PERSON@LOGIN@TARGET of 64 characters each.
MAX_USERNAME = 3 * 64 + 2
# A stored code id is cut to this many characters, whatever was typed.
MAX_CODE_ID = 16
REDACTED = "[secret removed]"

# "BG", then the id and the secret's characters: dashes anywhere (as a code is printed
# and pasted), or spaces between groups of four (as one is read out). Two thirds of the
# secret is enough to be redacted: a code with a typo is still mostly the secret. Plain
# words never match ("BGP routing" has spaces between short words), and every failed
# match stops within a few dozen characters, so a 256 KiB answer costs linear time.
_MIN_RUN = ID_LEN + (2 * SECRET_LEN) // 3
# A code may also be typed without its "BG" (the login accepts that): then the id and
# at least four groups of the secret, dashed as printed or run together, standing alone
# (no letter or digit on either side, so a longer hash or a UUID's 8-4-4-4-12 shape is
# left alone; words separated by spaces never match without the prefix).
_BARE_GROUPS = (2 * SECRET_LEN) // 3 // 4
_CODE_LIKE = re.compile(
    rf"B-?G(?:-?[0-9A-Z]){{{_MIN_RUN},}}"
    rf"|B[\s-]*G[\s-]+[0-9A-Z]{{{ID_LEN}}}(?:[\s-]+[0-9A-Z]{{4}}){{4,}}"
    rf"|(?<![0-9A-Z-])[0-9A-Z]{{{ID_LEN}}}(?:-?[0-9A-Z]{{4}}){{{_BARE_GROUPS},{SECRET_LEN // 4}}}"
    r"(?![0-9A-Z])",
    re.IGNORECASE,
)


def redact_codes(text: str) -> str:
    """``text`` with the secret part of every code-like run replaced by ``REDACTED``."""
    return _CODE_LIKE.sub(_redact_one, text)


def _redact_one(match: re.Match[str]) -> str:
    parsed = parse_code(match.group(0))
    if parsed is not None:
        return f"BG-{parsed[0]}-{REDACTED}"
    # Not a valid code (a typo, too long): keep only what cannot be secret.
    return f"BG-?-{REDACTED}"


def cut_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8, never inside a character."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", "ignore")


def kept_text(text: str, max_bytes: int) -> tuple[str, int]:
    """What the store keeps of an unauthenticated answer, and its full length in
    characters: redacted first (a cut must not leave half a secret behind), then cut."""
    return cut_utf8(redact_codes(text), max_bytes), len(text)


def kept_code_id(cred_id: str) -> str | None:
    """The public id of a typed code as stored: cut, never longer than an id can be."""
    return cred_id[:MAX_CODE_ID] or None
