"""The SSRF guard: a notifier calls only its configured destination, and only if every address
the host resolves to is public. Loopback, link-local (cloud metadata 169.254.169.254), private,
shared (100.64/10), multicast, reserved and unspecified addresses are refused unless
``notifications.allow_private_destinations`` is true. Odd spellings (``2130706433``,
``0x7f000001``, ``[::1]``, ``::ffff:127.0.0.1``) are caught because the check runs on what the
resolver returns, not on the text. Redirects are never followed (see notifiers).

No second resolution: :func:`check_url` returns the addresses it checked, and the notifiers
connect to one of those (the request keeps the name in its Host header and, over TLS, in SNI and
the certificate check), so a DNS answer that changes after the check (rebinding) is never used.
6to4 (2002::/16, which embeds any IPv4 address), Teredo, NAT64 prefixes and the deprecated
site-local range (fec0::/10) count as private: the standard library calls some of them global.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

from .errors import DestinationRefused

_TUNNELS = tuple(ipaddress.ip_network(n) for n in ("2002::/16", "2001::/32", "64:ff9b::/96", "64:ff9b:1::/48"))


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.is_site_local or any(ip in n for n in _TUNNELS):
            return False
    return ip.is_global and not (ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_reserved
                                 or ip.is_multicast or ip.is_unspecified)


#: resolutions that may wait at once; past that a notification fails (retryably) instead of queueing
MAX_RESOLVING = 4
_resolving = threading.BoundedSemaphore(MAX_RESOLVING)


def _getaddrinfo(host: str, port: int, timeout: float) -> list:
    """``socket.getaddrinfo`` within ``timeout`` seconds. The system resolver has no time limit of
    its own (glibc: 5 s per try, two tries per server, up to three servers): it runs in a thread
    of its own, left to finish by itself when the time is up, at most MAX_RESOLVING at once."""
    if not _resolving.acquire(blocking=False):
        raise DestinationRefused(f"cannot resolve {host!r}: {MAX_RESOLVING} earlier resolutions are still waiting "
                                 "for the resolver", transient=True)
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except BaseException as e:  # handed to the caller
            box["error"] = e
        finally:
            _resolving.release()
            done.set()

    threading.Thread(target=run, name="tracehouse-resolve", daemon=True).start()
    if not done.wait(timeout):
        raise DestinationRefused(f"cannot resolve {host!r}: no answer from the resolver within {timeout:g} s",
                                 transient=True)
    if "error" in box:
        raise box["error"]
    return box["infos"]


def check_host(host: str, port: int, allow_private: bool, timeout: float = 5.0) -> list[str]:
    """Resolve ``host`` (within ``timeout`` seconds) and return its addresses; raise
    :class:`DestinationRefused` if any is private, or it cannot be resolved."""
    if not host:
        raise DestinationRefused("no host")
    try:
        infos = _getaddrinfo(host, port, timeout)
    except socket.gaierror as e:
        raise DestinationRefused(f"cannot resolve {host!r}: {e}", transient=e.errno == socket.EAI_AGAIN) from None
    except UnicodeError as e:
        raise DestinationRefused(f"cannot resolve {host!r}: {e}") from None
    addrs = sorted({str(i[4][0]).split("%")[0] for i in infos})
    if not allow_private:
        for a in addrs:
            if not _public(ipaddress.ip_address(a)):
                raise DestinationRefused(
                    f"{host} resolves to {a}, a non-public address; set notifications.allow_private_destinations "
                    "to allow it")
    return addrs


def check_url(url: str, allow_private: bool, timeout: float = 5.0) -> list[str]:
    """Check an http(s) URL's destination; return the addresses to connect to (see :func:`pinned`)."""
    try:
        u = urlsplit(url)
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError as e:
        raise DestinationRefused(f"bad URL (not quoted: it may hold a secret): {e}") from None
    if u.scheme not in ("http", "https"):
        raise DestinationRefused(f"only http and https destinations are allowed, not {u.scheme!r}")
    if u.username or u.password:
        pass  # credentials in the URL are allowed (basic auth); the host is what matters
    return check_host(u.hostname or "", port, allow_private, timeout)


def pinned(url: str, address: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """(URL to ``address``, headers, request extensions) for a request to ``url`` that connects to
    the checked ``address`` while the server still sees the name: Host header, and over TLS the SNI
    and certificate name (httpx's ``sni_hostname`` extension)."""
    import httpx

    u = httpx.URL(url)
    host = u.host
    netloc = f"[{host}]" if ":" in host else host
    if u.port is not None:
        netloc += f":{u.port}"
    extensions = {"sni_hostname": host} if u.scheme == "https" else {}
    return str(u.copy_with(host=address)), {"Host": netloc}, extensions
