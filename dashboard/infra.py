"""The infrastructure page's grouping of the latest infra metrics (``storage.queries_infra``) by
host and container: pure."""

from __future__ import annotations

from typing import Any


def group_infra(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pure: latest rows → {hosts: [{host, metrics{name: row}, services}], containers: [...]}."""
    hosts: dict[str, dict[str, Any]] = {}
    containers: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["container"]:
            c = containers.setdefault(r["container"], {"id": r["container"], "name": r["container_name"],
                                                       "host": r["host"], "metrics": {}, "services": set()})
            c["metrics"][r["name"]] = r
            c["services"].update(r["services"])
        else:
            h = hosts.setdefault(r["host"] or "(unknown host)", {"host": r["host"] or "(unknown host)",
                                                                "metrics": {}, "services": set()})
            h["metrics"][r["name"]] = r
            h["services"].update(r["services"])
    for d in (*hosts.values(), *containers.values()):
        d["services"] = sorted(d["services"])
    return {"hosts": sorted(hosts.values(), key=lambda h: h["host"]),
            "containers": sorted(containers.values(), key=lambda c: c["id"])}
