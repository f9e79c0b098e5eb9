"""A login in flight when the proxy stops (issue 4: the login path must never fall over,
and every failure is an audit event). The proxy stops (SIGTERM in production, the stop
event here) while a login's code check is still running: the client must get an answer,
the attempt must be in the audit log, and nothing may blow up against a closed store.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.integration.conftest import TARGET, standard_targets
from tests.integration.harness import GOOD_JUSTIFICATION, SshdTarget, new_person, read_events
from tests.integration.inproc import Step, in_process_proxy, login

WRONG = "BG-ZZZZZZ-0000-0000-0000-0000-0000-0000"


async def test_a_login_in_flight_when_the_proxy_stops_is_answered_and_audited(
    tmp_path: Path,
    target: SshdTarget,
    other_target: SshdTarget,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    person = new_person()
    checking = asyncio.Event()
    release = asyncio.Event()

    async with in_process_proxy(
        tmp_path / "proxy", standard_targets(target, other_target)
    ) as proxy:
        real_verify = proxy.app.verify_code

        async def slow_verify(*args: Any) -> bool:
            checking.set()
            await release.wait()  # a check still running when the stop comes
            return await real_verify(*args)

        monkeypatch.setattr(proxy.app, "verify_code", slow_verify)
        attempt = asyncio.ensure_future(
            login(proxy.port, [Step(f"{person}@{TARGET}", WRONG, GOOD_JUSTIFICATION)])
        )
        await asyncio.wait_for(checking.wait(), 20)
        # The check finishes a moment after the stop begins, whether or not the proxy
        # waits for it (it may also cancel it, cutting the connection).
        asyncio.get_running_loop().call_later(1.0, release.set)
    # serve() has returned: the proxy is stopped and its store closed.
    _, result = await asyncio.wait_for(attempt, 30)

    assert isinstance(result, asyncssh.Error), result  # answered: refused or cut
    audited = [
        e
        for e in read_events(proxy.database)
        if e.type in ("login_failed", "login_aborted")
        and (e.data.get("person") == person or e.type == "login_aborted")
    ]
    assert audited, "the attempt left no audit event"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], "\n".join(f"{r.name}: {r.getMessage()}" for r in errors)
