"""Fixtures for the integration tests: sshd targets, a proxy per module, a person per test.

The sshd targets live for the whole run (nothing changes them). Each test module gets its
own proxy, config and audit store; each test its own person name, so tests sharing a
proxy never see each other's codes, sessions or failures. When a test fails, the proxy's
log lines written during that test are attached to the report.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import (
    Deployment,
    SshAgent,
    SshdTarget,
    free_port,
    new_person,
)

# Target names in the standard config.
TARGET = "db01"  # the sshd target; logins: the current user and "nobody"
SECOND = "web01"  # the same sshd under a second name (for --targets tests)
DOWN = "down01"  # a port nothing listens on
BADKEY = "badkey01"  # the sshd target, pinned to another target's host key


def standard_targets(target: SshdTarget, other: SshdTarget) -> dict[str, dict[str, object]]:
    return {
        TARGET: target.target_entry(logins=[target.login, "nobody"]),
        SECOND: target.target_entry(),
        DOWN: target.target_entry(port=free_port()),
        BADKEY: target.target_entry(host_key=other.host_pub),
    }


@pytest.fixture(scope="session")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdTarget]:
    sshd = SshdTarget.start(tmp_path_factory.mktemp("target"))
    yield sshd
    sshd.stop()


@pytest.fixture(scope="session")
def other_target(
    tmp_path_factory: pytest.TempPathFactory, target: SshdTarget
) -> Iterator[SshdTarget]:
    """A second sshd with a different host key (same proxy key)."""
    sshd = target.sibling(tmp_path_factory.mktemp("other-target"))
    yield sshd
    sshd.stop()


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, target: SshdTarget, other_target: SshdTarget
) -> Iterator[Deployment]:
    """The proxy with the standard targets, shared by one test module."""
    running = Deployment.start(
        tmp_path_factory.mktemp("proxy"),
        standard_targets(target, other_target),
        sshd_targets={TARGET: target, SECOND: target, BADKEY: target},
    )
    yield running
    running.stop()


@pytest.fixture
def private_deployment(
    tmp_path: Path, target: SshdTarget, other_target: SshdTarget
) -> Iterator[Deployment]:
    """A proxy of the test's own, for tests that damage it (store failures...)."""
    running = Deployment.start(
        tmp_path / "proxy",
        standard_targets(target, other_target),
        sshd_targets={TARGET: target, SECOND: target, BADKEY: target},
        database=tmp_path / "store" / "audit.db",
    )
    yield running
    running.stop()


@pytest.fixture
def person() -> str:
    """A person name unique to this test."""
    return new_person()


@pytest.fixture(scope="module")
def ssh_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshAgent]:
    agent = SshAgent(tmp_path_factory.mktemp("agent"))
    yield agent
    agent.stop()


# ------------------------------------------------------------ proxy log on failure

_LOG_START = pytest.StashKey[tuple[Deployment, int]]()
_DEPLOYMENT_FIXTURES = ("deployment", "private_deployment")


@pytest.fixture(autouse=True)
def _remember_proxy_log_offset(request: pytest.FixtureRequest) -> None:
    for name in _DEPLOYMENT_FIXTURES:
        if name in request.fixturenames:
            running = request.getfixturevalue(name)
            assert isinstance(running, Deployment)
            request.node.stash[_LOG_START] = (running, running.proxy.log_size())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed and _LOG_START in item.stash:
        running, offset = item.stash[_LOG_START]
        text = running.proxy.log_since(offset)
        status = (
            "running" if running.proxy.alive() else f"exited {running.proxy.process.returncode}"
        )
        report.sections.append((f"breakglass serve log during this test ({status})", text[-8000:]))
    return report
