"""How long the proxy takes to refuse a login, case by case (issue 4, "no enumeration").

Runs the proxy in-process (``serve()``, the real listener, store and argon2 hasher) with
throttling and the per-connection failure delay turned off, and an asyncssh client that
answers the code prompt. Each try is one connection; what is timed is the server's
answer: from the keyboard-interactive response leaving the client to the
USERAUTH_FAILURE arriving (the kex and the prompt are not in the figure). The cases are
interleaved, in a new random order each round, so load drift hits all of them alike.

    .venv/bin/python benchmarks/login_timing.py [--tries 200]

Prints median, p10 and p90 per case, the argon2 checks per try, and for each case the
probability that one of its tries is slower than one of the reference case's ("P(slower)":
0.5 means indistinguishable; this is the Mann-Whitney U statistic over n*n). The cases
marked "verified" typed the right secret: they are told what is wrong, one banner more. Asserts
nothing about time (tests never do); tests/integration/test_hostile_enumeration.py
counts the work instead.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncssh  # noqa: E402

from tests.integration.harness import GOOD_JUSTIFICATION, generate_key  # noqa: E402
from tests.integration.inproc import (  # noqa: E402
    InProcessProxy,
    ScriptedClient,
    Step,
    connect,
    in_process_proxy,
)

REFERENCE = "wrong secret"


@dataclass(frozen=True)
class Case:
    name: str
    username: str
    code: str


async def make_cases(proxy: InProcessProxy) -> list[Case]:
    """The cases the client must not tell apart: every refusal without a verified secret
    (the id of a revoked code, another person's name, a target the code does not allow,
    no code at all, no username at all). Then two with a verified secret, which are told
    what is wrong (issue 18) and may differ by that one banner; the work is the same.
    (The test checks more cases for the same work; timing them all takes too long.)"""
    good = await proxy.quick_code("alice")
    revoked = await proxy.quick_code("alice")
    await proxy.revoke(revoked)
    db01_only = await proxy.quick_code("alice", targets=["db01"])

    def wrong(code: str) -> str:
        return f"BG-{code.split('-')[1]}-{'0' * 24}"

    return [
        Case(REFERENCE, "alice@db01", wrong(good)),
        Case("unknown person", "ghost@db01", wrong(good)),
        Case("unknown code id", "alice@db01", "BG-ZZZZZZ-" + good.split("-", 2)[2]),
        Case("revoked code", "alice@db01", wrong(revoked)),
        Case("target not allowed", "alice@web01", wrong(db01_only)),
        Case("not a code", "alice@db01", "hunter2"),
        Case("bad username", "alice", wrong(good)),
        Case("verified: revoked", "alice@db01", revoked),
        Case("verified: no target", "alice@dmeo", good),
    ]


async def one_try(proxy: InProcessProxy, case: Case, n: int) -> float:
    client = ScriptedClient([Step(case.username, case.code, GOOD_JUSTIFICATION)])
    # From one of 250 loopback addresses in turn: the proxy limits connections per
    # source (120 per 10 s), and its throttles are off here anyway.
    source = f"127.0.7.{n % 250 + 1}"
    try:
        conn = await connect(proxy.port, client, local_addr=source)
    except asyncssh.PermissionDenied:
        pass
    else:
        conn.close()
        raise SystemExit(f"case {case.name!r} logged in")
    # failed_at[0] is the answer to asyncssh's initial "none" request.
    if len(client.answered_at) != 1 or len(client.failed_at) != 2:
        raise SystemExit(f"case {case.name!r}: unexpected exchange {client.failures}")
    return client.failed_at[1] - client.answered_at[0]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def p_slower(a: list[float], b: list[float]) -> float:
    """P(X > Y) + P(X = Y)/2 for X from ``a``, Y from ``b`` (U / (n*m))."""
    wins = sum((x > y) + 0.5 * (x == y) for x in a for y in b)
    return wins / (len(a) * len(b))


async def run(tries: int, seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bg-login-timing-") as tmp:
        directory = Path(tmp)
        host_pub = generate_key(directory / "target_host_key", "unused-target")
        generate_key(directory / "proxy_key", "unused-proxy-key")
        targets = {
            name: {
                "host": "127.0.0.1",
                "port": 9,  # never contacted: every try is refused before that
                "login": "root",
                "logins": ["root"],
                "identity_file": str(directory / "proxy_key"),
                "host_key": host_pub,
            }
            for name in ("db01", "web01")
        }
        async with in_process_proxy(directory / "proxy", targets, failure_delay_base=0.0) as proxy:
            cases = await make_cases(proxy)
            times: dict[str, list[float]] = {case.name: [] for case in cases}
            rng = random.Random(seed)
            checks = proxy.app.hasher.checks
            started = time.monotonic()
            for round_ in range(tries):
                order = list(cases)
                rng.shuffle(order)
                for i, case in enumerate(order):
                    n = round_ * len(order) + i
                    times[case.name].append(await one_try(proxy, case, n))
                if round_ % 20 == 19:
                    print(
                        f"  {round_ + 1}/{tries} rounds, {time.monotonic() - started:.0f}s",
                        file=sys.stderr,
                    )
            per_try = (proxy.app.hasher.checks - checks) / (tries * len(cases))
    print(
        f"login_timing: {tries} tries per case, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}, argon2 checks per try {per_try:.2f}, "
        f"{time.monotonic() - started:.0f}s"
    )
    print(f"{'case':22} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8}  P(slower than {REFERENCE})")
    reference = times[REFERENCE]
    for name, values in times.items():
        ms = [v * 1000 for v in values]
        print(
            f"{name:22} {statistics.median(ms):10.1f} {percentile(ms, 0.1):8.1f} "
            f"{percentile(ms, 0.9):8.1f}  {p_slower(values, reference):.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=200, help="tries per case (200)")
    parser.add_argument("--seed", type=int, default=4, help="shuffle seed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # not one "login failed" line per try
    asyncio.run(run(args.tries, args.seed))


if __name__ == "__main__":
    main()
