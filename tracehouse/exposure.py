"""What a server role may expose, decided once at start and enforced on every request of every port.

* :func:`check` refuses to start a role that listens on a non-loopback address without
  authentication (collector: ingest tokens; dashboard: users or API tokens), unless the operator
  opted out with ``--insecure-allow-open`` / ``TRACEHOUSE_INSECURE_ALLOW_OPEN=1``, which is logged
  loudly at every start.
* :func:`guard` wraps a listener's ASGI app in :class:`HostGuard`: the ``Host`` header must name an
  allowed host (``settings.allowed_hosts``; by default the loopback names when the role listens on
  loopback), so a page whose DNS name was rebound to 127.0.0.1 cannot talk to the server.
* :func:`uvicorn_options`: ``X-Forwarded-Proto``/``-For`` are believed only from
  ``settings.trusted_proxies`` (uvicorn believes 127.0.0.1 by default; here nobody unless declared).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any

__all__ = ["LISTENERS", "ExposureError", "HostGuard", "check", "guard", "is_loopback", "missing_auth",
           "uvicorn_options"]

log = logging.getLogger("tracehouse.exposure")

LOOPBACK_NAMES = ("localhost", "*.localhost", "127.0.0.1", "::1")


class ExposureError(RuntimeError):
    """A role would listen on a non-loopback address without authentication."""


def _collector_auth(s: Any) -> bool:
    return bool([t for t in getattr(s, "ingest_tokens", None) or [] if t])


def _dashboard_auth(s: Any) -> bool:
    return bool(getattr(s, "users", None) or [t for t in getattr(s, "api_tokens", None) or [] if t])


#: role → (its port setting, does the configuration authenticate it?, what to set otherwise).
#: ``alerts run`` listens for /metrics, /healthz and /readyz only: any token protects its /metrics.
LISTENERS: dict[str, tuple[str, Callable[[Any], bool], str]] = {
    "collector": ("otlp_port", _collector_auth, "TRACEHOUSE_INGEST_TOKENS (OTLP, agent commands, /metrics)"),
    "dashboard": ("http_port", _dashboard_auth, "dashboard users (YAML `users:`) or TRACEHOUSE_API_TOKENS"),
    "alerts": ("http_port", lambda s: _collector_auth(s) or _dashboard_auth(s),
               "TRACEHOUSE_INGEST_TOKENS or TRACEHOUSE_API_TOKENS (for its /metrics)"),
}


def is_loopback(host: str) -> bool:
    """True when every address ``host`` stands for is a loopback address (names are resolved)."""
    h = (host or "").strip().strip("[]").lower()
    if not h:
        return False  # '' binds every interface
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h.split("%")[0]).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(h, None)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


def missing_auth(settings: Any, roles: tuple[str, ...] | list[str]) -> list[str]:
    """The roles among ``roles`` that listen and have no authentication configured, as sentences."""
    out = []
    for role in roles:
        spec = LISTENERS.get(role)
        if spec is not None and not spec[1](settings):
            port = getattr(settings, spec[0], "?")
            out.append(f"{role} (port {port}) has no authentication: set {spec[2]}")
    return out


def check(settings: Any, roles: tuple[str, ...] | list[str]) -> None:
    """Raise :class:`ExposureError` when a role of ``roles`` would listen openly off loopback."""
    host = getattr(settings, "host", "127.0.0.1")
    if is_loopback(host):
        return
    missing = missing_auth(settings, roles)
    if not missing:
        return
    if getattr(settings, "insecure_allow_open", False):
        for line in missing:
            log.warning("INSECURE: listening on %s and %s; anyone who can reach it can read and change "
                        "everything (started with --insecure-allow-open / TRACEHOUSE_INSECURE_ALLOW_OPEN)",
                        host, line)
        return
    raise ExposureError(
        f"refusing to listen on {host!r}, which is not a loopback address, without authentication:\n  "
        + "\n  ".join(missing)
        + "\nListen on 127.0.0.1 (--host 127.0.0.1), configure the credentials above, or pass "
          "--insecure-allow-open (TRACEHOUSE_INSECURE_ALLOW_OPEN=1) to run open on purpose.")


# ---- Host header allow-list -----------------------------------------------------------------------


def allowed_hosts(settings: Any) -> list[str] | None:
    """The Host names a listener accepts; None = any (a non-loopback listener without a setting)."""
    configured = [h.strip().lower() for h in getattr(settings, "allowed_hosts", None) or [] if h.strip()]
    if configured:
        return None if "*" in configured else configured
    host = (getattr(settings, "host", "127.0.0.1") or "").strip().strip("[]").lower()
    if is_loopback(host):
        return sorted(set(LOOPBACK_NAMES) | {host})
    return None


def host_name(value: str) -> str:
    """The name part of a Host header value: ``[::1]:8080`` → ``::1``, ``Example.com:80`` → ``example.com``."""
    v = value.strip().lower()
    if v.startswith("["):
        return v[1:v.find("]")] if "]" in v else ""
    return v.rsplit(":", 1)[0] if v.count(":") == 1 else v


def host_allowed(name: str, allowed: list[str], loopback_literals: bool = False) -> bool:
    """``name`` matches an entry of ``allowed`` (``*.x`` matches x's subdomains); with
    ``loopback_literals`` any loopback IP literal matches too (a literal cannot be a rebound name)."""
    if not name:
        return False
    for a in allowed:
        if name == a or (a.startswith("*.") and name.endswith(a[1:])):
            return True
    if loopback_literals:
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False
    return False


class HostGuard:
    """ASGI wrapper answering 400 to a request whose Host header is not allowed (lifespan passes)."""

    def __init__(self, app: Any, allowed: list[str]):
        self.app = app
        self.allowed = allowed
        self.loopback_literals = "127.0.0.1" in allowed or "::1" in allowed

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        host = b""
        for k, v in scope.get("headers", ()):
            if k == b"host":
                host = v
                break
        if host_allowed(host_name(host.decode("latin-1")), self.allowed, self.loopback_literals):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = (b"host not allowed: this server answers only to the names in TRACEHOUSE_ALLOWED_HOSTS "
                b"(by default the loopback names)\n")
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def guard(app: Any, settings: Any) -> Any:
    """``app`` behind the Host allow-list the settings call for (unchanged when any host is allowed)."""
    allowed = allowed_hosts(settings)
    return app if allowed is None else HostGuard(app, allowed)


def uvicorn_options(settings: Any) -> dict[str, Any]:
    """Proxy-header handling for uvicorn: believed only from the declared trusted proxies."""
    trusted = [p.strip() for p in getattr(settings, "trusted_proxies", None) or [] if p.strip()]
    if not trusted:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": trusted}
