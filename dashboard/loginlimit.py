"""Sign-in attempts per user name and per client address, in bounded memory.

A sliding window per key keeps at most ``limit`` timestamps; the keys live in an LRU of at most
``max_keys`` entries, so a flood of distinct names or addresses evicts the oldest keys instead of
growing without bound. Every attempt counts (parallel guesses cannot outrun the hash); a
successful sign-in clears its user name's window, not its address's. A user name is kept as a
16-byte digest, never itself: a name is as long as a request body allows, and a key stays in the
LRU until 10,000 newer keys push it out.

The windows of configured users' names (``attempt(..., user_exists=True)``) live apart from the
LRU and are never evicted: a flood of 10,000 made-up names (from many addresses, which IPv6 makes
cheap) would otherwise push a real user's window out, and restart the guessing of their password.
Their number is the configuration's. An IPv6 client is limited per /64 network, which one host
usually holds whole.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import time
from collections import OrderedDict, deque

__all__ = ["LoginLimiter", "address_key"]


class LoginLimiter:
    def __init__(self, per_user: int = 10, per_address: int = 30, window_s: float = 300.0, max_keys: int = 10_000,
                 clock=time.monotonic):
        self.per_user = per_user
        self.per_address = per_address
        self.window = window_s
        self.max_keys = max_keys
        self.clock = clock
        self._keys: OrderedDict[tuple[str, str | bytes], deque[float]] = OrderedDict()
        self._users: dict[tuple[str, str | bytes], deque[float]] = {}  # configured users: never evicted
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._keys) + len(self._users)

    def _wait(self, key: tuple[str, str | bytes], limit: int, now: float) -> float:
        q = self._users.get(key) or self._keys.get(key)
        if q is None:
            return 0.0
        while q and q[0] <= now - self.window:
            q.popleft()
        return q[0] + self.window - now if len(q) >= limit else 0.0

    def _record(self, key: tuple[str, str | bytes], limit: int, now: float, keep: bool = False) -> None:
        if keep:
            self._keys.pop(key, None)
            self._users.setdefault(key, deque(maxlen=limit)).append(now)
            return
        q = self._keys.get(key)
        if q is None:
            q = self._keys[key] = deque(maxlen=limit)
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        q.append(now)

    def attempt(self, user: str, address: str, user_exists: bool = False) -> float:
        """Record one attempt; 0 when it may proceed, else the seconds until it may (not recorded).
        An empty ``user`` (token sign-in) is limited by address only; ``user_exists``: ``user`` is
        a configured user, whose window is never evicted."""
        now = self.clock()
        keys = [(("a", address_key(address)), self.per_address, False)] + (
            [(_user_key(user), self.per_user, user_exists)] if user else [])
        with self._lock:
            wait = max(self._wait(k, lim, now) for k, lim, _ in keys)
            if wait > 0:
                return wait
            for k, lim, keep in keys:
                self._record(k, lim, now, keep)
            if len(self._users) > self.max_keys:  # a configuration of more users than that: oldest out
                self._users.pop(min(self._users, key=lambda k: self._users[k][-1]))
        return 0.0

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._keys.pop(_user_key(user), None)
            self._users.pop(_user_key(user), None)


def address_key(address: str) -> str:
    """An IPv4 address as it is; an IPv6 one as its /64 (an IPv4-mapped one as the IPv4 address)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return address


def _user_key(user: str) -> tuple[str, bytes]:
    return ("u", hashlib.blake2b(user.encode("utf-8", "surrogatepass"), digest_size=16).digest())
