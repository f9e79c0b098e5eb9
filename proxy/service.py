"""Wiring: the running proxy. Config, store, host key, listener, sessions, shutdown.

Owns the process's life: start (recover what a crash left, open the store, load or
generate the host key, listen), the set of live sessions, and a graceful stop on
SIGTERM/SIGINT that tells every session, finalises every recording and writes every
session's end before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import asyncssh
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proxy.alerts.raiser import Alerts
from proxy.alerts.runtime import AlertRuntime
from proxy.audit.checkpoint import checkpoint_loop, key_path, load_or_generate, write_checkpoint
from proxy.config import (
    Config,
    RateRule,
    RecordingConfig,
    TargetConfig,
    load_config,
    unresolved_hosts,
)
from proxy.core import events
from proxy.core.credentials import CodeHasher
from proxy.core.errors import ConfigError, StoreError
from proxy.core.throttle import FailureCounter, LoginThrottle, ThrottleRule
from proxy.failurelog import FailureLog
from proxy.loginslots import LoginSlots
from proxy.logs import LineBudget
from proxy.recovery import recover_unfinished
from proxy.retention import retention_loop
from proxy.sdnotify import Notifier, watchdog_interval
from proxy.ssh import compat, upstream, wire
from proxy.ssh.server import ConnectionHandler
from proxy.ssh.session import LiveSession
from proxy.store.base import LoginStore, NewEvent, Store
from proxy.store.factory import CREATE, open_store
from proxy.tasks import TaskOwner

if TYPE_CHECKING:
    from proxy.fleet.codes import FleetCodes

log = logging.getLogger("breakglass")

SERVER_VERSION = "proxy"  # neutral: no product or library version for scanners
# The ML-KEM hybrid first (post-quantum), then curve25519, then the large DH groups for
# clients with neither. No NIST P-curve ECDH: scanners (ssh-audit) fail a server that
# offers it, and every client that has it also has curve25519 or the DH groups.
KEX_ALGS = [
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
]
# AEAD only (issue: no CTR/CBC); GCM costs half of chacha20's CPU in asyncssh.
SERVER_ENCRYPTION_ALGS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]
# Offered too with listen.chacha20, for clients without AES-GCM (Dropbear).
CHACHA20 = "chacha20-poly1305@openssh.com"
SERVER_MAC_ALGS = ["hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"]
# New TCP connections per source before the SSH handshake: a flood from one address is
# cut at the door (a human opens a few a minute, Ansible tens at once, not hundreds).
CONNECTION_RATE = ThrottleRule(count=120, window=10.0)
# Default throttles when the config turns the matching alert rule off.
DEFAULT_THROTTLE = RateRule(count=5, window=600.0)


def supported_kex() -> list[str]:
    from asyncssh.kex import get_kex_algs

    available = {a.decode() for a in get_kex_algs()}
    return [a for a in KEX_ALGS if a in available]


def ensure_host_key(path: Path) -> asyncssh.SSHKey:
    """Load the proxy's host key, generating an Ed25519 one (0600) on first start."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = asyncssh.generate_private_key("ssh-ed25519")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_private_key())
        pub = path.with_name(path.name + ".pub")
        pub.write_bytes(key.export_public_key())
        log.info("generated host key %s", path)
        return key
    return asyncssh.read_private_key(path)


class App:
    """What sessions and connection handlers share. One per running proxy."""

    failure_delay_base = 1.0

    def __init__(
        self,
        config: Config,
        store: Store,
        hasher: CodeHasher,
        checkpoint_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.config = config
        self.checkpoint_key = checkpoint_key
        self._store = store
        # With a fleet: spending codes in its ledger (set by serve once it runs).
        self.fleet_codes: FleetCodes | None = None
        self.hasher = hasher
        self.tasks = TaskOwner("proxy")
        self.sessions: set[LiveSession] = set()
        self._keys: dict[str, upstream.UpstreamKeys] = {}
        rules = config.alerts.rules
        self.failures_by_source = FailureCounter(_throttle(rules.failed_logins_per_source))
        self.failures_by_person = FailureCounter(_throttle(rules.failed_logins_per_person))
        self.login_throttle = LoginThrottle(self.failures_by_source, self.failures_by_person)
        # One argon2 check at a time: each takes 64 MiB and most of a core, so a burst
        # of logins queues here instead of starving live sessions or the memory.
        self.hash_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argon2")
        # Connections still logging in: cut first at shutdown, before the store closes.
        self.logins: set[ConnectionHandler] = set()
        self.connections_by_source = FailureCounter(CONNECTION_RATE)
        self._rate_refused = 0
        self._alerts = Alerts(config.alerts, store)
        # Unauthenticated slots (fair share when full) and argon2 turns between sources.
        # An Ansible control node fanning out with forks=50 is one source: the per-source
        # share leaves it room. Sizes are fixed at start, like the listener.
        self.slots = LoginSlots(
            lambda: self._alerts,
            self.tasks,
            self.hash_executor,
            config.policy.max_unauthenticated,
            config.policy.max_unauthenticated_per_source,
        )
        # Log lines an unauthenticated stranger can cause at will, capped per kind.
        self.stranger_lines = LineBudget()
        self.failure_log = FailureLog(
            lambda: self._alerts,
            self.tasks,
            lambda: self.free_space(),
            lambda: self.config.storage.min_free + self.config.storage.failure_reserve,
        )

    def free_space(self) -> int:
        """Bytes free for us on the store's and the recordings' filesystems (the lower)."""
        storage = self.config.storage
        free = []
        for folder in (storage.database.parent, storage.recordings):
            try:
                st = os.statvfs(folder)
            except OSError:
                return 0
            free.append(st.f_bavail * st.f_frsize)
        return min(free)

    def apply_config(self, config: Config) -> None:
        """New logins see ``config``; sessions and connections keep the one they began with."""
        self.config = config
        self._keys.clear()
        self._alerts.apply_config(config.alerts)

    def admit(self, source: str, conn: ConnectionHandler) -> bool:
        """Take an unauthenticated slot for ``conn``; False when over the per-source rate
        or share. When every slot is taken, the heaviest source's oldest connection is
        cut to make room."""
        if self.connections_by_source.record(source, time.monotonic()) > CONNECTION_RATE.count:
            # Counted, not audited one by one: a flood must not flood the store too.
            self._rate_refused += 1
            if self._rate_refused in (1, 10, 100) or self._rate_refused % 1000 == 0:
                log.warning(
                    "%d connection(s) refused by the per-source rate limit (latest %s)",
                    self._rate_refused,
                    source,
                )
            return False
        ok, evict = self.slots.admit(source, conn, time.time())
        if isinstance(evict, ConnectionHandler):
            evict.cut_for_room()
        return ok

    def release(self, conn: ConnectionHandler) -> None:
        self.slots.release(conn)

    async def verify_code(
        self, encoded: str | None, cred_id: str, secret: str, source: str = ""
    ) -> bool:
        """One argon2 check, in turn with the other sources' checks."""
        return await self.slots.check(source, lambda: self.hasher.verify(encoded, cred_id, secret))

    # SessionHost -----------------------------------------------------------------------
    @property
    def store(self) -> Store:
        return self._store

    @property
    def login_store(self) -> LoginStore:
        """The store as a login sees it: the code, then one use of it with the start."""
        return self._store

    @property
    def recordings(self) -> Path:
        return self.config.storage.recordings

    @property
    def recording(self) -> RecordingConfig:
        return self.config.recording

    @property
    def warn_before(self) -> tuple[float, ...]:
        return self.config.policy.warn_before

    @property
    def idle_timeout(self) -> float | None:
        return self.config.policy.idle_timeout

    @property
    def max_channels(self) -> int:
        return self.config.policy.max_channels

    @property
    def channel_open_rate(self) -> tuple[int, int]:
        return self.config.policy.channel_open_burst, self.config.policy.channel_open_rate

    def upstream_keys(self, target: TargetConfig) -> upstream.UpstreamKeys:
        keys = self._keys.get(target.name)
        if keys is None:
            keys = self._keys[target.name] = upstream.load_keys(target)
        return keys

    @property
    def alerts(self) -> Alerts:
        return self._alerts

    def find_session(self, session_id: str) -> LiveSession | None:
        return next((s for s in self.sessions if s.info.id == session_id), None)

    def session_started(self, session: LiveSession) -> None:
        self.sessions.add(session)

    def session_ended(self, session: LiveSession) -> None:
        self.sessions.discard(session)
        if self.checkpoint_key is not None:
            # A signed head at every session end: a rewrite of that session's history
            # after this point is detectable against any copy of the checkpoint.
            self.tasks.spawn(
                write_checkpoint(self.store, self.checkpoint_key, time.time()), "checkpoint write"
            )

    async def append_quietly(self, event: NewEvent) -> None:
        try:
            await self.store.append([event])
        except StoreError as exc:
            log.critical("audit store write failed (%s): %s", event.type, exc)
            self.alerts.store_failed(f"cannot write a {event.type} event: {exc}")

    def handler(self) -> ConnectionHandler:
        return ConnectionHandler(self)


def _throttle(rule: RateRule | None) -> ThrottleRule:
    rule = rule or DEFAULT_THROTTLE
    return ThrottleRule(count=rule.count, window=rule.window)


async def stop_sessions(app: App, reason: str, message: str) -> None:
    """Close every live session and wait until each has written its end."""
    sessions = list(app.sessions)
    for session in sessions:
        session.close(reason, message)
    waits = [session.wait_finished() for session in sessions]
    try:
        await asyncio.wait_for(asyncio.gather(*waits), app.config.policy.shutdown_grace)
    except TimeoutError:
        log.error("sessions did not finish in the grace period; cutting them")
        for session in sessions:
            session.conn.abort()
        waits = [session.wait_finished() for session in sessions]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), 5)
        except TimeoutError:
            log.critical("sessions could not be ended cleanly; the next start recovers them")
    await app.tasks.wait()


async def serve(
    config: Config,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[App], None] | None = None,
) -> None:
    """Run the proxy until ``stop`` is set or SIGTERM/SIGINT arrives; SIGHUP reloads.

    ``on_ready`` sees the running App once the listener accepts connections (tests run
    the proxy in-process through it and read its counters)."""
    notifier = Notifier()
    store = await open_store(config, CREATE)
    try:
        config.storage.recordings.mkdir(mode=0o700, parents=True, exist_ok=True)
        checkpoint_key = load_or_generate(key_path(config.storage.recordings))
        recovered = await recover_unfinished(store, config.storage.recordings, time.time())
        if recovered:
            log.warning("marked %d session(s) interrupted by a crash", recovered)
            # Signed now, not at the next checkpoint: the repaired tail (and whatever the
            # crashed run wrote after its last checkpoint) is covered before anything new.
            await write_checkpoint(store, checkpoint_key, time.time())
        host_key = ensure_host_key(config.listen.host_key)
        app = App(config, store, CodeHasher(), checkpoint_key)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(
            signal.SIGHUP, lambda: app.tasks.spawn(reload(app, notifier), "reload")
        )
        server = await listen(app, host_key)
        log.info(
            "listening on %s:%d (%d target(s))",
            config.listen.host,
            config.listen.port,
            len(config.targets),
        )
        await app.append_quietly(NewEvent.of(events.ProxyStarted(os.getpid()), time.time()))
        notifier.ready(f"listening on {config.listen.host}:{config.listen.port}")
        app.tasks.spawn(warn_unresolved(config), "resolve targets")
        app.tasks.spawn(_disk_monitor(app, stop), "disk monitor")
        app.tasks.spawn(
            checkpoint_loop(store, checkpoint_key, CHECKPOINT_INTERVAL, stop), "checkpoints"
        )
        app.tasks.spawn(retention_loop(store, lambda: app.config.storage, stop), "retention")
        app.tasks.spawn(app.failure_log.run(stop), "failure summaries")
        app.tasks.spawn(app.slots.run(stop), "login slots")
        interval = watchdog_interval()
        if interval is not None:
            app.tasks.spawn(_watchdog(notifier, interval, stop), "watchdog")
        alert_tasks = AlertRuntime(app.alerts, store, app.find_session)
        alert_tasks.start()
        shipper = None
        if config.fleet is not None:
            # Imported here: without a fleet the proxy never loads the PostgreSQL driver.
            from proxy.fleet import shipper as fleet
            from proxy.fleet.codes import FleetCodes

            app.fleet_codes = FleetCodes(config.fleet, store, app.alerts.record)
            # Its first round settles what a crash left pending (by use_id).
            app.tasks.spawn(app.fleet_codes.run(stop), "fleet codes")
            shipper = fleet.start(
                config.fleet, store, config.storage.recordings, checkpoint_key, app.alerts.record
            )
        if on_ready is not None:
            on_ready(app)
        try:
            await stop.wait()
        finally:
            notifier.stopping(f"stopping: {len(app.sessions)} live session(s)")
            log.info("stopping: %d live session(s)", len(app.sessions))
            server.close()
            for login in list(app.logins):
                # Cancels its check in progress; its login_aborted is written below.
                login.cut("the proxy is shutting down")
            await asyncio.sleep(0)  # let asyncssh report each cut connection lost
            await stop_sessions(app, "proxy_shutdown", "the proxy is shutting down")
            await app.failure_log.close()
            await app.append_quietly(NewEvent.of(events.ProxyStopped(), time.time()))
            await write_checkpoint(store, checkpoint_key, time.time())
            if app.fleet_codes is not None:
                await app.fleet_codes.close()
            if shipper is not None:
                await shipper.close()  # ships the stop and its checkpoint, bounded
            await alert_tasks.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            app.hash_executor.shutdown(wait=False, cancel_futures=True)
    finally:
        await store.close()


async def listen(app: App, host_key: asyncssh.SSHKey) -> asyncssh.SSHAcceptor:
    config = app.config
    wire.install()
    compat.install()
    return await asyncssh.listen(
        config.listen.host,
        config.listen.port,
        server_factory=app.handler,
        server_host_keys=[host_key],
        server_version=SERVER_VERSION,
        encoding=None,
        line_editor=False,
        agent_forwarding=False,
        x11_forwarding=False,
        allow_scp=False,
        config=None,
        gss_host=None,
        login_timeout=config.policy.login_timeout,
        keepalive_interval=30,
        keepalive_count_max=4,
        kex_algs=supported_kex(),
        encryption_algs=[*SERVER_ENCRYPTION_ALGS, *([CHACHA20] if config.listen.chacha20 else [])],
        mac_algs=SERVER_MAC_ALGS,
        compression_algs=["none"],
    )


DISK_CHECK_INTERVAL = 10.0
CHECKPOINT_INTERVAL = 300.0


async def _disk_monitor(app: App, stop: asyncio.Event) -> None:
    """Warn before the disk fills (like auditd's space_left), once per crossing."""
    level = "ok"
    while not stop.is_set():
        storage = app.config.storage
        free = app.free_space()
        now_level = (
            "critical" if free < storage.min_free else "low" if free < storage.warn_free else "ok"
        )
        if now_level != level:
            level = now_level
            say = log.info if level == "ok" else log.error if level == "critical" else log.warning
            say("disk space %s: %d MiB free for the audit store and recordings", level, free >> 20)
            await app.alerts.record(NewEvent.of(events.disk_space(level, free), time.time()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), DISK_CHECK_INTERVAL)


async def _watchdog(notifier: Notifier, interval: float, stop: asyncio.Event) -> None:
    # Sent from the event loop itself: a wedged loop stops the pings and systemd
    # restarts the service.
    while not stop.is_set():
        notifier.watchdog()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def warn_unresolved(config: Config) -> None:
    """Log each target whose host name does not resolve now. Only a warning: names are
    resolved at each connect, so a DNS outage never stops the proxy or a reload, and the
    targets given as addresses keep working. In a thread: the resolver blocks."""
    for warning in await asyncio.to_thread(unresolved_hosts, config):
        log.warning("%s", warning)


async def reload(app: App, notifier: Notifier) -> None:
    """SIGHUP: new targets, policy and alerts for new logins; live sessions untouched.

    A bad file keeps the old config in force, says why in the log and the audit trail.
    The listener, the store and the shipper cannot move under a running process: changes to
    ``listen``, ``storage`` or ``fleet`` are reported and wait for a restart.
    """
    notifier.reloading()
    old = app.config
    try:
        new = await asyncio.to_thread(load_config, old.source)
    except ConfigError as exc:
        problems = [str(p) for p in exc.problems]
        log.error("reload refused, keeping the running config: %s", "; ".join(problems))
        await app.alerts.record(NewEvent.of(events.ConfigReloadFailed(problems), time.time()))
        notifier.ready("reload refused: the config file has errors; old config in force")
        return
    # The shipper runs with the fleet settings it started with, like the listener.
    restart = ("listen", "storage", "fleet")
    pending = [name for name in restart if getattr(new, name) != getattr(old, name)]
    if pending:
        log.warning("config changes to %s take effect at the next restart", ", ".join(pending))
        new = dataclasses.replace(new, listen=old.listen, storage=old.storage, fleet=old.fleet)
    app.apply_config(new)
    log.info("config reloaded: %d target(s)", len(new.targets))
    app.tasks.spawn(warn_unresolved(new), "resolve targets")
    await app.append_quietly(
        NewEvent.of(events.ConfigReloaded(sorted(new.targets), pending), time.time())
    )
    notifier.ready(f"listening on {old.listen.host}:{old.listen.port}; config reloaded")
