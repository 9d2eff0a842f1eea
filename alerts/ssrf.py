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


def check_host(host: str, port: int, allow_private: bool) -> list[str]:
    """Resolve ``host`` and return its addresses; raise :class:`DestinationRefused` if any is private."""
    if not host:
        raise DestinationRefused("no host")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise DestinationRefused(f"cannot resolve {host!r}: {e}") from None
    addrs = sorted({str(i[4][0]).split("%")[0] for i in infos})
    if not allow_private:
        for a in addrs:
            if not _public(ipaddress.ip_address(a)):
                raise DestinationRefused(
                    f"{host} resolves to {a}, a non-public address; set notifications.allow_private_destinations "
                    "to allow it")
    return addrs


def check_url(url: str, allow_private: bool) -> list[str]:
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
    return check_host(u.hostname or "", port, allow_private)


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
