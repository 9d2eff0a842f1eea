"""The rule model: one alerting rule, parsed and validated from a YAML/JSON mapping.

Every rule kind shares the lifecycle fields (``for``, ``keep_firing_for``, labels, annotations,
action); the kind-specific fields are checked here so a bad rule is refused when it is loaded
(or posted through the API), never when it is evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tracehouse.storage import InvalidParameter, parse_duration

from .errors import RuleError

KINDS = ("red", "metric", "sql", "absence", "middleware")
RED_SIGNALS = ("rate", "error_rate", "p50", "p95", "p99")
AGGREGATIONS = ("avg", "max", "min", "sum", "last", "count")
OPS = (">", ">=", "<", "<=", "==", "!=")
ABSENCE_SIGNALS = ("any", "spans", "metrics")
NODATA_STATES = ("ok", "nodata", "alerting")
SNAPSHOT_KINDS = ("threads", "memory")
# The choices of each enumerated rule field, for editors (the dashboard's rule form reads them through
# the engine: one vocabulary, defined here beside the validation that enforces it).
VOCABULARY: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "kinds": KINDS, "signals": RED_SIGNALS, "absence_signals": ABSENCE_SIGNALS, "aggregations": AGGREGATIONS,
    "ops": OPS, "nodata_states": NODATA_STATES, "snapshot_kinds": SNAPSHOT_KINDS,
})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_:.\-]*$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KNOWN = {
    "alert", "kind", "id", "group", "interval", "service", "operation", "signal", "window", "op", "threshold",
    "for", "keep_firing_for", "labels", "annotations", "action", "query", "metric", "filters", "aggregation",
    "group_by", "target", "nodata_state", "enabled",
}


def duration(value: Any, what: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise RuleError(f"{what}: negative duration")
        return float(value)
    text = str(value).strip()
    parts = _PART.findall(text)
    if parts and "".join(n + u for n, u in parts) == text:  # Prometheus style: 1h30m, 5m10s
        return sum(parse_duration(n + u) for n, u in parts)
    try:
        return parse_duration(text)
    except InvalidParameter as e:
        raise RuleError(f"{what}: {e}") from None


def compare(op: str, value: float, threshold: float) -> bool:
    if value != value:  # NaN never satisfies a condition
        return False
    return {
        ">": value > threshold, ">=": value >= threshold, "<": value < threshold,
        "<=": value <= threshold, "==": value == threshold, "!=": value != threshold,
    }[op]


@dataclass
class Rule:
    """An alerting rule. ``source`` is ``file:<path>`` for YAML rules (read-only) or ``api``."""

    id: str
    alert: str
    kind: str
    group: str = "default"
    interval: float = 10.0
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    op: str = ">"
    threshold: float = 0.0
    window: float = 60.0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    service: str = ""
    operation: str = ""
    signal: str = ""
    query: str = ""
    metric: str = ""
    filters: dict[str, str] = field(default_factory=dict)
    aggregation: str = "avg"
    group_by: list[str] = field(default_factory=list)
    target: str = ""
    action: dict[str, str] = field(default_factory=dict)
    nodata_state: str = "ok"  # ok | nodata | alerting: what a rule returning no rows means
    source: str = "api"
    enabled: bool = True
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def read_only(self) -> bool:
        return self.source != "api"

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw, id=self.id, group=self.group, source=self.source, read_only=self.read_only)


def _str_map(v: Any, what: str, keys: re.Pattern | None = None) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise RuleError(f"{what} must be a mapping")
    out = {}
    for k, val in v.items():
        if keys is not None and not keys.match(str(k)):
            raise RuleError(f"{what}: bad name {k!r}")
        if isinstance(val, (dict, list)):
            raise RuleError(f"{what}.{k} must be a scalar")
        out[str(k)] = "" if val is None else str(val)
    return out


def parse_rule(d: Any, group: str = "default", interval: float = 10.0, source: str = "api",
               rule_id: str | None = None) -> Rule:
    """Validate one rule mapping and return a :class:`Rule` (raises :class:`RuleError`)."""
    if not isinstance(d, dict):
        raise RuleError("a rule must be a mapping")
    unknown = set(d) - _KNOWN
    if unknown:
        raise RuleError(f"rule {d.get('alert', '?')!r}: unknown fields {sorted(unknown)}")
    name = d.get("alert")
    if not isinstance(name, str) or not _NAME.match(name):
        raise RuleError(f"rule needs an 'alert' name made of letters, digits, _ : . - (got {name!r})")
    kind = d.get("kind", "red")
    if kind not in KINDS:
        raise RuleError(f"{name}: kind must be one of {KINDS}")
    group = str(d.get("group", group))
    r = Rule(id=rule_id or str(d.get("id") or f"{group}/{name}"), alert=name, kind=kind, group=group,
             source=source, raw=dict(d))
    r.interval = duration(d.get("interval", interval), f"{name}.interval")
    if r.interval < 1:
        raise RuleError(f"{name}: interval must be at least 1s")
    r.for_s = duration(d.get("for", 0), f"{name}.for")
    r.keep_firing_for_s = duration(d.get("keep_firing_for", 0), f"{name}.keep_firing_for")
    r.window = duration(d.get("window", "1m"), f"{name}.window")
    if not 1 <= r.window <= 31 * 86400:
        raise RuleError(f"{name}: window must be between 1s and 31d")
    r.labels = _str_map(d.get("labels"), f"{name}.labels", _LABEL)
    r.annotations = _str_map(d.get("annotations"), f"{name}.annotations", _LABEL)
    r.action = _str_map(d.get("action"), f"{name}.action")
    if r.action and (set(r.action) != {"snapshot"} or r.action["snapshot"] not in SNAPSHOT_KINDS):
        raise RuleError(f"{name}: action must be {{snapshot: threads|memory}}")
    r.enabled = bool(d.get("enabled", True))
    r.nodata_state = str(d.get("nodata_state", "ok"))
    if r.nodata_state not in NODATA_STATES:
        raise RuleError(f"{name}: nodata_state must be ok, nodata or alerting")
    r.op = str(d.get("op", ">"))
    if r.op not in OPS:
        raise RuleError(f"{name}: op must be one of {OPS}")
    try:
        r.threshold = float(d.get("threshold", 0))
    except (TypeError, ValueError):
        raise RuleError(f"{name}: threshold must be a number") from None
    r.service = str(d.get("service") or "")
    r.operation = str(d.get("operation") or "")
    r.group_by = [str(x) for x in (d.get("group_by") or [])]
    r.filters = _str_map(d.get("filters"), f"{name}.filters")
    _kind_fields(r, d)
    return r


def _kind_fields(r: Rule, d: dict[str, Any]) -> None:
    name = r.alert
    if r.kind == "red":
        r.signal = str(d.get("signal", ""))
        if r.signal not in RED_SIGNALS:
            raise RuleError(f"{name}: red rules need signal, one of {RED_SIGNALS}")
        if r.operation and not r.service:
            raise RuleError(f"{name}: operation needs a service")
    elif r.kind == "metric":
        r.metric = str(d.get("metric") or "")
        if not r.metric:
            raise RuleError(f"{name}: metric rules need a metric name")
        r.aggregation = str(d.get("aggregation", "avg"))
        if r.aggregation not in AGGREGATIONS:
            raise RuleError(f"{name}: aggregation must be one of {AGGREGATIONS}")
        if not r.group_by:
            r.group_by = ["service", "instance"]
    elif r.kind == "middleware":
        r.target = str(d.get("target") or "")
        if "op" not in d:
            r.op, r.threshold = "==", 0.0
    elif r.kind == "absence":
        if not r.service:
            raise RuleError(f"{name}: absence rules need a service")
        r.signal = str(d.get("signal", "any"))
        if r.signal not in ABSENCE_SIGNALS:
            raise RuleError(f"{name}: absence signal must be spans, metrics or any")
        r.op, r.threshold = "==", 0.0
    elif r.kind == "sql":
        from .sqlguard import check_query

        r.query = str(d.get("query") or "")
        check_query(r.query)  # raises RuleError with the reason
