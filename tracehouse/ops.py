"""Operational endpoints shared by the server roles.

* :func:`process_registry`: one Prometheus registry per process that gathers every role's own
  registry (collector, dashboard, alerts, retention) plus the process's CPU, memory and file
  descriptors and a build-info series; each role's ``/metrics`` writes it, so any port shows the
  whole process.
* :class:`OpsApp`: ``/metrics``, ``/healthz`` and ``/readyz`` for a role without an HTTP app of its
  own (``tracehouse alerts run``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Info, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from . import __version__

__all__ = ["process_registry", "OpsApp", "Ready"]

Ready = Callable[[], "tuple[bool, str]"]


def process_registry(roles: tuple[str, ...]) -> CollectorRegistry:
    reg = CollectorRegistry()
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    Info("tracehouse_build", "The running tracehouse server.", registry=reg).info(
        {"version": __version__, "roles": ",".join(roles)})
    return reg


def include(process: CollectorRegistry, role_registry: Any) -> None:
    """Expose a role's registry through the process registry (names are prefixed per role)."""
    process.register(role_registry)


Authorize = Callable[[str | None], bool]


def metrics_authorizer(settings: Any) -> Authorize | None:
    """What ``/metrics`` of a role without a dashboard accepts: the same as the dashboard's and the
    collector's (an API or an ingest token as a bearer) whenever any credential is configured;
    None (open, as on loopback) otherwise."""
    from tracehouse.dashboard.auth import Auth

    auth = Auth(settings)
    return auth.metrics_ok if auth.protects_metrics else None


class OpsApp:
    """A plain ASGI app: ``GET /metrics`` (behind ``authorize(Authorization header)`` when given),
    ``/healthz``, ``/readyz`` (503 with the reason)."""

    def __init__(self, registry: CollectorRegistry, ready: Ready, authorize: Authorize | None = None):
        self.registry, self.ready, self.authorize = registry, ready, authorize

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                kind = msg["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method not in ("GET", "HEAD"):
            status, body, ctype = 405, b"use GET\n", b"text/plain"
        elif path == "/metrics" and self.authorize is not None and not self.authorize(_header(scope, b"authorization")):
            status, body, ctype = 401, b"authentication required\n", b"text/plain"
        elif path == "/metrics":
            status, body, ctype = 200, generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4.encode()
        elif path == "/healthz":
            status, body, ctype = 200, b"ok\n", b"text/plain"
        elif path == "/readyz":
            ok, reason = self.ready()
            status, body, ctype = (200 if ok else 503), (reason + "\n").encode(), b"text/plain"
        else:
            status, body, ctype = 404, b"not found\n", b"text/plain"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _header(scope: dict, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v.decode("latin-1")
    return None
