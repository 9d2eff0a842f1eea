"""Free loopback ports for servers we start ourselves (the demo's services, test and cluster servers).

A port the kernel hands out for ``bind(0)`` comes from the ephemeral range, the same range every
outgoing connection on the machine takes its local port from. Between picking such a port and the
server binding it, a client connection (a ZooKeeper session, a health poll) can take it, and the
server fails with "Address already in use" (seen: a cluster ClickHouse node exiting 70 at start).
So ports are picked below (or above) the ephemeral range, where no connection is ever given a port,
checked free by binding them, and never handed out twice by one process.

Standard library only: deploy/cluster/loopback.py loads this file outside tracehouse's virtualenv.
"""

from __future__ import annotations

import random
import socket
import threading

RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
LOWEST = 10000  # below this sit well-known services' ports
_given: set[int] = set()
_lock = threading.Lock()
_random = random.SystemRandom()  # independent in every process, forked or not


def ephemeral_range(path: str = RANGE_FILE) -> tuple[int, int]:
    try:
        with open(path, encoding="ascii") as f:
            low, high = (int(x) for x in f.read().split()[:2])
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def candidate_ranges(low: int, high: int) -> list[tuple[int, int]]:
    """The port ranges outside ``[low, high]`` worth picking from (at least 1000 ports each)."""
    ranges = []
    if low - 1 - LOWEST >= 1000:
        ranges.append((LOWEST, low - 1))
    if 65535 - (high + 1) >= 1000:
        ranges.append((high + 1, 65535))
    return ranges


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback TCP port nothing listens on, outside the ephemeral range when the range allows."""
    ranges = candidate_ranges(*ephemeral_range())
    with _lock:
        for _ in range(500 if ranges else 0):
            low, high = _random.choice(ranges)
            port = _random.randint(low, high)
            if port not in _given and _bindable(port):
                _given.add(port)
                return port
        with socket.socket() as s:  # no room outside the ephemeral range: let the kernel pick
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        _given.add(port)
        return port
