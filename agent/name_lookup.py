"""Connect to ``host:port`` within a deadline that covers the name lookup too.

``socket.create_connection`` bounds the connect, not the lookup: the
system resolver has no time limit of ours, and one that does not answer holds the caller for
glibc's own (5 s per try, two tries per name server, up to three servers: 30 s). So a name is
looked up in a daemon thread and the caller waits for it only until its deadline; past it the
thread is left to end on its own and the caller fails. One lookup per name at a time: callers of
a name still being looked up wait for that one, so a resolver that never answers costs one thread
per name, not one per export. Address literals are not looked up.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

from tracehouse.agent.forklocks import renew_in_child

__all__ = ["connect", "resolve"]


class _Lookup:
    def __init__(self, key: tuple[str, int]):
        self.key = key
        self.done = threading.Event()
        self.infos: list = []
        self.error: OSError | None = None
        threading.Thread(target=self._run, name="tracehouse-resolve", daemon=True).start()

    def _run(self) -> None:
        try:
            self.infos = socket.getaddrinfo(*self.key, type=socket.SOCK_STREAM)
        except OSError as exc:
            self.error = exc
        except Exception as exc:  # UnicodeError of an unencodable name, say
            self.error = OSError(f"{self.key[0]!r}: {exc!r}")
        finally:
            with _lock:
                if _pending.get(self.key) is self:
                    del _pending[self.key]
            self.done.set()


_lock = threading.Lock()
_pending: dict[tuple[str, int], _Lookup] = {}


def _forget() -> None:
    _pending.clear()  # the parent's lookups have no thread in the child


renew_in_child(globals(), "_lock", then=_forget)


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 scope (fe80::1%eth0) is a literal too
    except ValueError:
        return False
    return True


def resolve(host: str, port: int, timeout: float) -> list:
    """``getaddrinfo(host, port)`` for a stream socket within ``timeout`` seconds; raises
    ``OSError`` (``TimeoutError`` when the resolver did not answer in time)."""
    if _literal(host):
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    key = (host, port)
    with _lock:
        lookup = _pending.get(key)
        if lookup is None:
            try:
                lookup = _pending[key] = _Lookup(key)
            except RuntimeError as exc:  # no thread to be had: the host is at its limit
                raise OSError(f"cannot look up {host!r}: {exc}") from None
    if not lookup.done.wait(max(0.0, timeout)):
        raise TimeoutError(f"no answer from the resolver for {host!r} within {timeout:.3g} s")
    if lookup.error is not None:
        raise lookup.error
    return lookup.infos


def connect(address: tuple[str, int], *, deadline: float) -> socket.socket:
    """``socket.create_connection`` with the lookup and every connect attempt within ``deadline``
    (``time.monotonic()``); the socket's timeout is what was left of it when it connected."""
    host, port = address
    infos = resolve(host, port, deadline - time.monotonic())
    error: OSError | None = None
    for *_, sockaddr in infos:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            return socket.create_connection(sockaddr[:2], left)
        except OSError as exc:
            error = exc
    raise error or TimeoutError(f"no connection to {host}:{port} before the deadline")
