"""The rule model: one alerting rule, parsed and validated from a YAML/JSON mapping.

Every rule kind shares the lifecycle fields (``for``, ``keep_firing_for``, labels, annotations,
action); the kind-specific fields are checked here so a bad rule is refused when it is loaded
(or posted through the API), never when it is evaluated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tracehouse.storage import InvalidParameter, Store, parse_duration

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
    "group_by", "target", "nodata_state", "enabled", "limit", "query_offset",
}


MAX_QUERY_OFFSET_S = 3600.0  # how far a rule's window may end before the evaluation time
MAX_DURATION_S = 366 * 86400  # a rule's interval, for, keep_firing_for and window at most
#: Rows a rule's query may return (more is an evaluation error, never a silent cut), and so the
#: largest ``limit``.
MAX_ROWS = Store.RULE_MAX_ROWS
#: Alert instances (label sets meeting the condition) one evaluation of a rule may make, unless the
#: rule's ``limit`` says otherwise. More fails the evaluation, as Prometheus's rule ``limit`` does: a
#: rule that suddenly matches thousands of label sets is almost always a label of too many values,
#: and would otherwise page once per value.
DEFAULT_LIMIT = 1_000


#: longest duration text: ``1h30m`` forms are short, and the longer a text the longer ``_PART`` scans it
MAX_DURATION_CHARS = 64


def duration(value: Any, what: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise RuleError(f"{what}: negative duration")
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_DURATION_CHARS:  # _PART.findall is quadratic in a run of digits: 30,000 took 45 s
            raise RuleError(f"{what}: a duration is at most {MAX_DURATION_CHARS} characters (e.g. 5m or 1h30m)")
        parts = _PART.findall(text)
        try:
            if parts and "".join(n + u for n, u in parts) == text:  # Prometheus style: 1h30m, 5m10s
                seconds = sum(parse_duration(n + u) for n, u in parts)
            else:
                seconds = parse_duration(text)
        except InvalidParameter as e:
            raise RuleError(f"{what}: {e}") from None
    else:
        raise RuleError(f"{what}: a duration is a number of seconds or a text such as 5m or 1h30m")
    if not seconds <= MAX_DURATION_S:  # NaN too
        raise RuleError(f"{what}: longer than 366 days")
    return seconds


def sound_values(v: Any, what: str) -> None:
    """Every number in a rule or silence is finite (JSON bodies may hold NaN and Infinity, which no
    answer can carry) and every text, keys included, is Unicode that UTF-8 can carry: a JSON or
    YAML ``\\ud800`` escape gives a lone surrogate, which was stored and then made every listing
    of the rules answer 500."""
    if isinstance(v, float) and not math.isfinite(v):
        raise RuleError(f"{what}: numbers must be finite")
    if isinstance(v, str):
        _utf8(v, what)
    elif isinstance(v, dict):
        for k, x in v.items():
            if isinstance(k, str):
                _utf8(k, what)
            sound_values(x, f"{what}.{k}")
    elif isinstance(v, list):
        for i, x in enumerate(v):
            sound_values(x, f"{what}[{i}]")


def _utf8(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RuleError(f"{what}: text must be valid Unicode (it holds a lone surrogate)") from None


def text_field(d: dict[str, Any], key: str, what: str, default: str = "") -> str:
    """A text field: absent or null is ``default``, a number is its text, anything else is refused."""
    v = d.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise RuleError(f"{what}.{key} must be a text")
    return str(v)


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
    limit: int = DEFAULT_LIMIT  # alert instances one evaluation may make (see DEFAULT_LIMIT)
    #: seconds the rule's window ends before the evaluation time, so that data still on its way
    #: (agents' batches, the collector's buffer) is not read as missing (Prometheus's
    #: ``query_offset``); None = the engine's default (``TRACEHOUSE_RULE_QUERY_OFFSET``)
    query_offset_s: float | None = None
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
               rule_id: str | None = None, query_offset: float | None = None) -> Rule:
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
    sound_values(d, name)
    group = text_field(d, "group", name, group)
    r = Rule(id=rule_id or text_field(d, "id", name) or f"{group}/{name}", alert=name, kind=kind, group=group,
             source=source, raw=dict(d))
    _timing(r, d, interval, query_offset)
    _presentation(r, d)
    _condition(r, d)
    _kind_fields(r, d)
    return r


def _timing(r: Rule, d: dict[str, Any], interval: float, query_offset: float | None) -> None:
    """How often, how long and over what window the rule looks."""
    name = r.alert
    r.interval = duration(d.get("interval", interval), f"{name}.interval")
    if r.interval < 1:
        raise RuleError(f"{name}: interval must be at least 1s")
    r.for_s = duration(d.get("for", 0), f"{name}.for")
    r.keep_firing_for_s = duration(d.get("keep_firing_for", 0), f"{name}.keep_firing_for")
    r.query_offset_s = query_offset if d.get("query_offset") is None else \
        duration(d["query_offset"], f"{name}.query_offset")
    if r.query_offset_s is not None and r.query_offset_s > MAX_QUERY_OFFSET_S:
        raise RuleError(f"{name}: query_offset must be at most 1h")
    r.window = duration(d.get("window", "1m"), f"{name}.window")
    if not 1 <= r.window <= 31 * 86400:
        raise RuleError(f"{name}: window must be between 1s and 31d")


def _presentation(r: Rule, d: dict[str, Any]) -> None:
    """Labels, annotations, action, enabled and the no-data state."""
    name = r.alert
    r.labels = _str_map(d.get("labels"), f"{name}.labels", _LABEL)
    r.annotations = _str_map(d.get("annotations"), f"{name}.annotations", _LABEL)
    r.action = _str_map(d.get("action"), f"{name}.action")
    if r.action and (set(r.action) != {"snapshot"} or r.action["snapshot"] not in SNAPSHOT_KINDS):
        raise RuleError(f"{name}: action must be {{snapshot: threads|memory}}")
    enabled = d.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RuleError(f"{name}: enabled must be true or false")
    r.enabled = enabled
    r.nodata_state = text_field(d, "nodata_state", name, "ok")
    if r.nodata_state not in NODATA_STATES:
        raise RuleError(f"{name}: nodata_state must be ok, nodata or alerting")


def _condition(r: Rule, d: dict[str, Any]) -> None:
    """What is compared, with what, for which services and series."""
    name = r.alert
    r.op = text_field(d, "op", name, ">")
    if r.op not in OPS:
        raise RuleError(f"{name}: op must be one of {OPS}")
    threshold = d.get("threshold", 0)
    if isinstance(threshold, str):
        try:
            threshold = float(threshold)
        except ValueError:
            raise RuleError(f"{name}: threshold must be a number") from None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise RuleError(f"{name}: threshold must be a finite number")
    r.threshold = float(threshold)
    r.service = text_field(d, "service", name)
    r.operation = text_field(d, "operation", name)
    group_by = d.get("group_by") or []
    if not isinstance(group_by, list) or not all(isinstance(x, str) for x in group_by):
        raise RuleError(f"{name}: group_by must be a list of label names")
    r.group_by = list(group_by)
    r.filters = _str_map(d.get("filters"), f"{name}.filters")
    limit = DEFAULT_LIMIT if d.get("limit") is None else d["limit"]
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_ROWS:
        raise RuleError(f"{name}: limit must be a whole number from 1 to {MAX_ROWS:,}")
    r.limit = limit


def _kind_fields(r: Rule, d: dict[str, Any]) -> None:
    _KIND_FIELDS[r.kind](r, d, r.alert)


def _red_fields(r: Rule, d: dict[str, Any], name: str) -> None:
    r.signal = text_field(d, "signal", name)
    if r.signal not in RED_SIGNALS:
        raise RuleError(f"{name}: red rules need signal, one of {RED_SIGNALS}")
    if r.operation and not r.service:
        raise RuleError(f"{name}: operation needs a service")


def _metric_fields(r: Rule, d: dict[str, Any], name: str) -> None:
    r.metric = text_field(d, "metric", name)
    if not r.metric:
        raise RuleError(f"{name}: metric rules need a metric name")
    r.aggregation = text_field(d, "aggregation", name, "avg")
    if r.aggregation not in AGGREGATIONS:
        raise RuleError(f"{name}: aggregation must be one of {AGGREGATIONS}")
    if not r.group_by:
        r.group_by = ["service", "instance"]


def _middleware_fields(r: Rule, d: dict[str, Any], name: str) -> None:
    r.target = text_field(d, "target", name)
    if "op" not in d:
        r.op, r.threshold = "==", 0.0


def _absence_fields(r: Rule, d: dict[str, Any], name: str) -> None:
    if not r.service:
        raise RuleError(f"{name}: absence rules need a service")
    r.signal = text_field(d, "signal", name, "any")
    if r.signal not in ABSENCE_SIGNALS:
        raise RuleError(f"{name}: absence signal must be spans, metrics or any")
    r.op, r.threshold = "==", 0.0


def _sql_fields(r: Rule, d: dict[str, Any], name: str) -> None:
    from .sqlguard import check_query

    r.query = text_field(d, "query", name)
    check_query(r.query)  # raises RuleError with the reason


#: what each kind of rule reads beyond the common fields, and checks
_KIND_FIELDS = {"red": _red_fields, "metric": _metric_fields, "middleware": _middleware_fields,
                "absence": _absence_fields, "sql": _sql_fields}
