"""Writing to a ClickHouse cluster: rows go straight to the shards' local tables.

A Distributed table would accept an insert before the shards have it (asynchronous by default) or
make the whole insert wait for every shard; either way a retry cannot know what reached where. The
store therefore does the sharding itself, with the same function the Distributed table declares
(``cityHash64(trace_id)`` for spans, so a trace and its summary live on one shard):

- a batch is cut by day and by shard; every piece is one deterministic block tagged with its own
  batch id, written to one replica of its shard (another replica when that one fails);
- a retry, a failover or a replay after a crash writes the same pieces again, identical byte for
  byte, and ClickHouse's replicated deduplication drops the ones that already landed;
- pieces that this process saw acknowledged are not sent again on a retry.

Reads go through the Distributed tables. Statements that must run once per shard (dropping
partitions for retention) go to one live replica of each shard.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from .errors import ConfigError, StorageUnavailable

log = logging.getLogger("tracehouse.storage.cluster")

_MASK64 = (1 << 64) - 1
_KMUL = 0x9DDFEA08EB382D69
_KEY = re.compile(r"^cityHash64\(([A-Za-z_][A-Za-z0-9_]*(?:\s*,\s*[A-Za-z_][A-Za-z0-9_]*)*)\)$")


@dataclass(frozen=True)
class Shard:
    num: int
    weight: int
    replicas: tuple[tuple[str, int], ...]


def read_topology(query: Callable[..., Any], cluster: str) -> list[Shard]:
    """The shards of ``cluster`` as the server it asks knows them (``system.clusters``)."""
    res = query(
        "SELECT shard_num, shard_weight, replica_num, host_name, port FROM system.clusters "
        "WHERE cluster = {c:String} ORDER BY shard_num, replica_num",
        {"c": cluster},
    )
    shards: dict[int, tuple[int, list[tuple[str, int]]]] = {}
    for num, weight, _rep, host, port in res.rows:
        shards.setdefault(int(num), (int(weight), []))[1].append((str(host), int(port)))
    if not shards:
        raise ConfigError(f"cluster {cluster!r} is not in the server's remote_servers (system.clusters)")
    return [Shard(n, w, tuple(r)) for n, (w, r) in sorted(shards.items())]


def _hash128to64(lo: int, hi: int) -> int:
    a = ((lo ^ hi) * _KMUL) & _MASK64
    a ^= a >> 47
    b = ((hi ^ a) * _KMUL) & _MASK64
    b ^= b >> 47
    return (b * _KMUL) & _MASK64


def _bytes(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8")
    raise TypeError(f"cannot hash {type(v).__name__} for sharding")


class Sharder:
    """Which shard each row goes to: ``cityHash64(columns) % total weight``, slots given to shards
    by weight in order, exactly as ClickHouse's Distributed engine does."""

    def __init__(self, shards: list[Shard]):
        from clickhouse_cityhash.cityhash import CityHash64

        self._hash = CityHash64
        self.slots: list[int] = []
        for i, s in enumerate(shards):
            self.slots.extend([i] * max(0, s.weight))
        if not self.slots:
            raise ConfigError("every shard of the cluster has weight 0")

    @staticmethod
    def key_columns(shard_key: str) -> list[str]:
        m = _KEY.match(shard_key.strip())
        if not m:
            raise ConfigError(f"cannot shard by {shard_key!r} in the client: only cityHash64(columns)")
        return [c.strip() for c in m.group(1).split(",")]

    def route(self, shard_key: str, names: list[str], ordered: list[Sequence[Any]]) -> list[int]:
        """Shard index of every row."""
        cols = [ordered[names.index(c)] for c in self.key_columns(shard_key)]
        h, slots, n = self._hash, self.slots, len(self.slots)
        if len(cols) == 1:
            return [slots[h(_bytes(v)) % n] for v in cols[0]]
        out = []
        for values in zip(*cols):
            acc = h(_bytes(values[0]))
            for v in values[1:]:
                acc = _hash128to64(acc, h(_bytes(v)))
            out.append(slots[acc % n])
        return out


class ShardWriter:
    """Connections to every replica of every shard, and the pieces acknowledged recently."""

    def __init__(self, shards: list[Shard], backend_for: Callable[[tuple[str, int]], Any], remember: int = 4096):
        self.shards = shards
        self.sharder = Sharder(shards)
        self._backend_for = backend_for
        self._backends: dict[tuple[str, int], Any] = {}
        self._preferred = [0] * len(shards)
        self._done: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._remember = remember
        self._lock = threading.Lock()

    def backend(self, node: tuple[str, int]) -> Any:
        with self._lock:
            b = self._backends.get(node)
            if b is None:
                b = self._backends[node] = self._backend_for(node)
            return b

    def acknowledged(self, target: str, piece_id: int) -> bool:
        with self._lock:
            return (target, piece_id) in self._done

    def remember(self, target: str, piece_id: int) -> None:
        with self._lock:
            self._done[(target, piece_id)] = None
            while len(self._done) > self._remember:
                self._done.popitem(last=False)

    def on_shard(self, index: int, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(backend)`` on a replica of shard ``index``: the one that answered last, then the
        others in turn. Raises StorageUnavailable when none can."""
        shard = self.shards[index]
        n = len(shard.replicas)
        errors = []
        for k in range(n):
            r = (self._preferred[index] + k) % n
            node = shard.replicas[r]
            try:
                out = fn(self.backend(node))
            except StorageUnavailable as e:
                errors.append(f"{node[0]}:{node[1]}: {e}")
                continue
            if k:
                log.info("shard %d: replica %s:%d answers (after %d failed)", shard.num, node[0], node[1], k)
            self._preferred[index] = r
            return out
        raise StorageUnavailable(f"shard {shard.num} of the cluster: no replica can do it now: " + "; ".join(errors))

    def close(self) -> None:
        with self._lock:
            backends, self._backends = list(self._backends.values()), {}
        for b in backends:
            b.close()


def split_rows(route: list[int], columns: list[Sequence[Any]], shards: int) -> list[list[Sequence[Any]] | None]:
    """The columns of each shard's rows, in their original order (None for a shard with no row)."""
    out: list[list[Sequence[Any]] | None] = [None] * shards
    if len(set(route)) == 1:
        out[route[0]] = columns
        return out
    idx: list[list[int]] = [[] for _ in range(shards)]
    for i, s in enumerate(route):
        idx[s].append(i)
    for s, rows in enumerate(idx):
        if len(rows) == 1:
            out[s] = [[col[rows[0]]] for col in columns]
        elif rows:
            take = itemgetter(*rows)  # C-level gathering: ~40% faster than a comprehension per column
            out[s] = [list(take(col)) for col in columns]
    return out
