"""Exec commands the proxy refuses before they reach a target, and why.

Today one rule: ``mosh-server``. Started over SSH, it prints a key and a UDP port, and
the mosh client then talks to it directly over UDP: a full shell the proxy never sees,
so nothing of it would be recorded but the ``mosh-server new`` line itself.

This reads a command line as sh would split it, well enough to find the program run at
each command position (after ``;``, ``&&``, ``|``..., variable assignments, ``env``,
``exec``, ``nohup`` and the like, and inside ``sh -c '...'``). It is not a sandbox: a
shell on the target can start anything (from a script, a variable, a base64 blob), which
is why the README says what detached processes mean for the audit trail. It catches the
stock mosh client and its ``--server=...`` variants. Pure: no I/O.
"""

from __future__ import annotations

import shlex

MOSH_REFUSAL = (
    "breakglass: mosh is not allowed: mosh-server would run a shell over UDP that the "
    "proxy cannot see or record. Use ssh (ssh PERSON@TARGET@proxy): every byte of it is "
    "recorded."
)

_PUNCTUATION = frozenset(";&|()")
# Reserved words that leave the next word in command position (if ...; then CMD).
_KEYWORDS = frozenset({"{", "}", "!", "if", "then", "elif", "else", "do", "while", "until"})
# Programs that run the rest of their arguments as a command, and their options that
# take a value (sudo -u USER, nice -n 10, env -C DIR).
_WRAPPERS = frozenset(
    {"env", "exec", "command", "nohup", "setsid", "sudo", "doas", "nice", "stdbuf", "time"}
    | {"busybox", "timeout", "ionice", "chrt"}
)
_OPTION_VALUES = frozenset({"-u", "-g", "-n", "-C", "-p", "-U", "-D", "-c", "-s", "-k"})
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash"})
_MAX_DEPTH = 4  # sh -c "sh -c '...'" nests; a bound keeps hostile input cheap


def refused_exec(command: str) -> str | None:
    """The message to give instead of running ``command``, or None to run it."""
    return MOSH_REFUSAL if _runs(command, "mosh-server", 0) else None


def _words(command: str) -> list[str]:
    # A newline ends a command as ";" does (a newline inside quotes turning into ";"
    # only splits a word that was never a program name).
    lexer = shlex.shlex(command.replace("\n", ";"), posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError:  # unbalanced quotes: sh would refuse it; split plainly
        return command.split()


def _runs(command: str, program: str, depth: int) -> bool:
    if depth > _MAX_DEPTH:
        return False
    words = _words(command)
    at_command = True
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word and set(word) <= _PUNCTUATION:
            at_command = True
            continue
        if not at_command or word in _KEYWORDS:
            continue
        if "=" in word and not word.startswith("=") and word.split("=", 1)[0].isidentifier():
            continue  # VAR=value before the program
        name = word.rsplit("/", 1)[-1]
        if name == program:
            return True
        if name in _WRAPPERS:
            while i < len(words) and (words[i].startswith("-") or words[i][:1].isdigit()):
                i += 2 if words[i] in _OPTION_VALUES else 1  # the wrapper's own options
            continue
        if name in _SHELLS and _runs(_shell_command(words[i:]), program, depth + 1):
            return True
        at_command = False
    return False


def _shell_command(args: list[str]) -> str:
    """The string a shell runs for ``-c`` (also ``-lc``, ``-ec``...), or ""."""
    for j, arg in enumerate(args):
        if not arg.startswith("-") or arg.startswith("--"):
            return ""
        if "c" in arg[1:] and j + 1 < len(args):
            return args[j + 1]
    return ""
