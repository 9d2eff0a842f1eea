"""Rollups recomputed from the raw spans, to compare with what the materialized views hold."""

from __future__ import annotations

from tracehouse.storage.schema import render_views

# per rollup: its key columns and the counts that must match (merge functions over its states)
_CHECKS = {
    "red_1m": ("toUInt32(minute), service, name, kind, is_entry", "countMerge(calls), sumMerge(errors), sumMerge(duration_sum)"),
    "edges_1m": ("toUInt32(minute), service, target, target_kind", "countMerge(calls), sumMerge(errors)"),
    "service_endpoints": ("toUInt32(minute), address, service", "countMerge(hits)"),
    "trace_summary": ("toUInt32(hour), hex(trace_id)", "countMerge(span_count), minMerge(first_start_ns), maxMerge(last_end_ns)"),
}


def rollup_mismatches(store) -> dict[str, tuple[int, int, list]]:
    """For each rollup whose merged counts differ from the same rollup computed from ``spans``
    now: (rows in the table, rows computed, a few differing keys)."""
    selects = {}
    for stmt in render_views(store.db, "", store.caps):  # the views as created: the SELECT after "TO <table> AS"
        head, select = stmt.split(" AS ", 1)
        selects[head.rsplit(".", 1)[1]] = select
    out = {}
    for table, (keys, counts) in _CHECKS.items():
        stored = store.query(f"SELECT {keys}, {counts} FROM {store.t(table)} GROUP BY {keys} ORDER BY {keys}").rows
        computed = store.query(f"SELECT {keys}, {counts} FROM ({selects[table]}) GROUP BY {keys} ORDER BY {keys}").rows
        if stored != computed:
            diff = sorted(set(map(repr, stored)) ^ set(map(repr, computed)))[:6]
            out[table] = (len(stored), len(computed), diff)
    return out


def span_totals(store) -> tuple[int, int]:
    """(rows, distinct span ids) in spans."""
    row = store.query(f"SELECT count(), uniqExact(span_id) FROM {store.t('spans')}").rows[0]
    return int(row[0]), int(row[1])
