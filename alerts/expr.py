"""Rule expressions → SQL → samples: a rule's fields become the arguments of storage's statement
builders (``tracehouse.storage.queries_rules``, where the SQL, its units and windows are
described), and one ``evaluate`` runs them. A sample is ``(labels, value)``; the comparison with
the threshold is done in Python so that a preview can show every value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tracehouse.storage import queries_rules

from .errors import EvaluationError
from .rules import MAX_ROWS, Rule
from .sqlguard import prepare

NS = 1_000_000_000
QueryFunc = Callable[..., Any]  # (sql, params, settings=None) -> storage Result


@dataclass
class Sample:
    labels: dict[str, str]
    value: float


def red_sql(rule: Rule, db: str, now_s: int) -> tuple[str, dict[str, Any], float]:
    return queries_rules.red_sql(db, now_s, int(rule.window), rule.signal, rule.service, rule.operation)


def metric_sql(rule: Rule, db: str, now_s: int) -> tuple[str, dict[str, Any]]:
    filters = dict(rule.filters)
    group_by = list(rule.group_by)
    if rule.kind == "middleware":
        group_by = ["service", "probe.target", "probe.kind"]
        if rule.target:
            filters["probe.target"] = rule.target
    if rule.service:
        filters.setdefault("service", rule.service)
    agg = "last" if rule.kind == "middleware" else rule.aggregation
    return queries_rules.metric_sql(db, now_s, int(rule.window), rule.metric or "tracehouse.probe.up", filters,
                                    group_by, agg)


def absence_sql(rule: Rule, db: str, now_s: int) -> tuple[str, dict[str, Any]]:
    return queries_rules.absence_sql(db, now_s, int(rule.window), rule.service, rule.signal or "any")


def _label_value(v: Any) -> str:
    if isinstance(v, bytes):
        return v.hex()
    return "" if v is None else str(v)


def _rows_to_samples(res: Any, names: list[str] | None = None, skip: tuple[str, ...] = ()) -> list[Sample]:
    cols = list(res.names)
    if "value" not in cols:
        raise EvaluationError("the query returned no column named value")
    vi = cols.index("value")
    if len(res.rows) > MAX_ROWS:
        raise EvaluationError(f"the query returned more than {MAX_ROWS:,} rows: filter or aggregate it "
                              "(every row is a label set the rule would follow)")
    out = []
    for row in res.rows:
        labels = {}
        for i, c in enumerate(cols):
            if i == vi or c in skip:
                continue
            name = names[i] if names else c
            labels[name] = _label_value(row[i])
        v = row[vi]
        try:
            value = float(v) if v is not None else math.nan
        except (TypeError, ValueError):
            raise EvaluationError(f"value column is not numeric: {v!r}") from None
        out.append(Sample(labels, value))
    return out


def evaluate(rule: Rule, query: QueryFunc, db: str, now_ns: int, sql_query: QueryFunc | None = None) -> list[Sample]:
    """Run ``rule``'s expression at ``now_ns``; return every sample (condition not applied).
    ``sql_query(sql, params)`` runs a SQL rule's checked text where user SQL runs
    (``Store.rule_reader().query``: read-only, the store's database by default, limited)."""
    now_s = now_ns // NS
    if rule.kind == "red":
        sql, params, _ = red_sql(rule, db, now_s)
        res = query(sql, params)
        samples = []
        for s in _rows_to_samples(res, skip=("n_calls",)):
            labels = {"service": s.labels["service"]}
            if "name" in s.labels:
                labels["operation"] = s.labels["name"]
            samples.append(Sample(labels, s.value))
        return samples
    if rule.kind in ("metric", "middleware"):
        sql, params = metric_sql(rule, db, now_s)
        res = query(sql, params)
        group_by = ["service", "target", "probe_kind"] if rule.kind == "middleware" else \
            [g.replace(".", "_") for g in rule.group_by]
        names = [*group_by, "value"]
        return _rows_to_samples(res, names)
    if rule.kind == "absence":
        sql, params = absence_sql(rule, db, now_s)
        res = query(sql, params)
        return [Sample({"service": rule.service}, float(res.scalar() or 0))]
    if rule.kind == "sql":
        if sql_query is None:
            raise EvaluationError("SQL rules run through a rule reader (Store.rule_reader); none was given")
        sql = prepare(rule.query, db)
        start = now_s - int(rule.window)
        all_params = {"start": start, "end": now_s, "start_ns": start * NS, "end_ns": now_s * NS}
        used = {k: v for k, v in all_params.items() if "{" + k + ":" in sql}
        return _rows_to_samples(sql_query(sql, used))
    raise EvaluationError(f"unknown rule kind {rule.kind}")
