"""Disk use, read from ``system.parts``: bytes on disk, rows and compression per table and per day.

Days come from partition ids (``toDate`` partitions are ``YYYYMMDD``, ``toYYYYMM`` ones ``YYYYMM``);
tables without a time partition show as one ``all`` row. On a cluster these are the parts of the
node the store is connected to (its ``_local`` tables, named here without the suffix).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["Partition", "partitions", "disk_usage", "day_of"]

_DAY = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_MONTH = re.compile(r"^(\d{4})(\d{2})$")

Partition = dict[str, Any]  # table, partition_id, day, parts, rows, bytes_on_disk, compressed_bytes, uncompressed_bytes


def day_of(partition_id: str) -> str | None:
    """'20240501' → '2024-05-01', '202405' → '2024-05', anything else → None."""
    m = _DAY.match(partition_id)
    if m:
        return "-".join(m.groups())
    m = _MONTH.match(partition_id)
    return "-".join(m.groups()) if m else None


def partitions(store, query=None) -> list[Partition]:
    """Active partitions of every table of the store's database, oldest first within a table
    (``query``: run on another server than the store's, one replica of a shard, say)."""
    res = (query or store.query)(
        "SELECT table, partition_id, count() AS n_parts, sum(rows) AS n_rows, sum(bytes_on_disk) AS disk, "
        "sum(data_compressed_bytes) AS compressed, sum(data_uncompressed_bytes) AS uncompressed "
        "FROM system.parts WHERE database = {db:String} AND active "
        "GROUP BY table, partition_id ORDER BY table, partition_id",
        {"db": store.db},
    )
    out = []
    for r in res.dicts():
        table = str(r["table"])
        if store.url.cluster and table.endswith("_local"):
            table = table[: -len("_local")]
        pid = str(r["partition_id"])
        out.append({"table": table, "partition_id": pid, "day": day_of(pid), "parts": int(r["n_parts"]),
                    "rows": int(r["n_rows"]), "bytes_on_disk": int(r["disk"]),
                    "compressed_bytes": int(r["compressed"]), "uncompressed_bytes": int(r["uncompressed"])})
    return out


def _ratio(uncompressed: int, compressed: int) -> float | None:
    return round(uncompressed / compressed, 2) if compressed else None


def _totals(rows: list[Partition]) -> dict[str, Any]:
    t = {k: sum(r[k] for r in rows) for k in ("parts", "rows", "bytes_on_disk", "compressed_bytes",
                                                  "uncompressed_bytes")}
    t["compression_ratio"] = _ratio(t["uncompressed_bytes"], t["compressed_bytes"])
    return t


def disk_usage(store, parts: list[Partition] | None = None) -> dict[str, Any]:
    """Per table (with its days) and per day (all time-partitioned tables together), plus totals."""
    parts = partitions(store) if parts is None else parts
    by_table: dict[str, list[Partition]] = {}
    by_day: dict[str, list[Partition]] = {}
    for p in parts:
        by_table.setdefault(p["table"], []).append(p)
        if p["day"] and len(p["day"]) == 10:
            by_day.setdefault(p["day"], []).append(p)
    tables = []
    for name, rows in by_table.items():
        days = [dict(_totals([r]), day=r["day"] or "all", partition_id=r["partition_id"]) for r in rows]
        dated = [r["day"] for r in rows if r["day"]]
        tables.append(dict(_totals(rows), table=name, oldest_day=min(dated) if dated else None,
                           newest_day=max(dated) if dated else None, days=days))
    tables.sort(key=lambda t: -t["bytes_on_disk"])
    days = [dict(_totals(rows), day=d, tables={r["table"]: r["bytes_on_disk"] for r in rows})
            for d, rows in sorted(by_day.items(), reverse=True)]
    return {"totals": _totals(parts), "tables": tables, "days": days}
