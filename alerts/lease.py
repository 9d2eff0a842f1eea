"""One alert evaluator per cluster: a lease that at most one engine holds at a time.

On a single server there is one engine and :class:`AlwaysHeld` stands in. On a cluster, several
``tracehouse alerts run`` (or ``serve``) processes may run; each asks for :class:`ZooKeeperLease`,
an ephemeral znode created by a maintained client (kazoo). The node lives as long as its holder's
ZooKeeper session: when the holder dies, the session expires after ``ttl`` seconds, the node goes
and a standby creates it. The holder stops evaluating as soon as its connection is suspended (the
client notices in about two thirds of the session timeout, before the server expires the session),
so two engines do not evaluate at once; a clean stop deletes the node, for an immediate handover.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any, Protocol

log = logging.getLogger("tracehouse.alerts.lease")

__all__ = ["Lease", "AlwaysHeld", "ZooKeeperLease"]


class Lease(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def held(self) -> bool:
        """True while this process may evaluate and notify."""


class AlwaysHeld:
    """The lease of a single engine: always held."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def held(self) -> bool:
        return True

    def holder(self) -> str:
        return "this process"


class ZooKeeperLease:
    """An ephemeral znode at ``path``; whoever's session owns it holds the lease."""

    def __init__(self, hosts: str, path: str, ttl: float = 10.0, identity: str = "", poll: float = 0.5):
        self.hosts, self.path, self.ttl, self.poll = hosts, path, float(ttl), poll
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}"
        self._zk: Any = None  # a KazooClient once started
        self._held = False
        self._connected = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from kazoo.client import KazooClient
        from kazoo.retry import KazooRetry

        # Retry connecting for ever (ZooKeeper may be down at start); each call has its own timeout.
        self._zk = KazooClient(hosts=self.hosts, timeout=self.ttl,
                               connection_retry=KazooRetry(max_tries=-1, max_delay=1.0),
                               command_retry=KazooRetry(max_tries=2, max_delay=0.5))
        self._zk.add_listener(self._on_state)
        self._zk.start_async()
        self._thread = threading.Thread(target=self._run, name="tracehouse-alerts-lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        zk, self._zk = self._zk, None
        was_held, self._held = self._held, False
        if zk is None:
            return
        try:
            if was_held and self._connected:
                zk.delete(self.path)  # hand over at once instead of after the session timeout
                log.info("released the alert lease %s", self.path)
        except Exception as e:  # the session ends below anyway; the node goes with it
            log.warning("could not delete the lease node %s on stop: %s", self.path, e)
        finally:
            zk.stop()
            zk.close()

    def held(self) -> bool:
        return self._held and self._connected

    def holder(self) -> str:
        """Who holds the lease ('' when nobody or when ZooKeeper cannot be asked)."""
        zk = self._zk
        try:
            data, _ = zk.get(self.path) if zk is not None else (b"", None)
            return data.decode("utf-8", "replace")
        except Exception:  # no node, or no connection: nobody known
            return ""

    # -- internals -----------------------------------------------------------------------------
    def _on_state(self, state) -> None:
        from kazoo.protocol.states import KazooState

        connected = state == KazooState.CONNECTED
        if not connected and self._held:
            log.warning("ZooKeeper connection %s: alert evaluation pauses", state.lower())
        self._connected = connected
        if not connected:
            self._held = False
        self._wake.set()

    def _on_event(self, _event) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._connected:
                self._check()
            self._wake.wait(self.poll)
            self._wake.clear()

    def _check(self) -> None:
        from kazoo.exceptions import KazooException, NodeExistsError
        from kazoo.handlers.threading import KazooTimeoutError

        zk = self._zk
        if zk is None:
            return
        try:
            stat = zk.exists(self.path, watch=self._on_event)  # one bound method: kazoo keeps a set of watchers
            if stat is None:
                try:
                    zk.create(self.path, self.identity.encode(), ephemeral=True, makepath=True)
                except NodeExistsError:
                    pass
                stat = zk.exists(self.path)
            mine = stat is not None and stat.ephemeralOwner == zk.client_id[0]
        except (KazooException, KazooTimeoutError) as e:
            log.warning("alert lease check failed: %s", e)
            mine = False
        if mine and not self._held:
            log.info("holding the alert lease %s as %s", self.path, self.identity)
        elif self._held and not mine:
            log.warning("lost the alert lease %s", self.path)
        self._held = mine and self._connected
