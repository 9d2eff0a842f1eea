"""The alerting rule's state machine, in the manner of Prometheus's ``rules/alerting.go``.

Per series (fingerprint of its labels): inactive → pending → firing → resolved, with ``for``
counted from the first evaluation where the condition held (firing at the first evaluation with
``now - active_at >= for``), ``keep_firing_for`` counted from the first evaluation where it no
longer held, and resolved alerts kept for ``RESOLVED_RETENTION_S`` so notifiers and the API can
see them. A query error, or more label sets meeting the condition than the rule's ``limit``, leaves
every alert as it was (no false resolve) and marks the rule's health ``err``; a rule that returns no
rows is ``nodata`` (and can be made to alert).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any

from . import clockstep
from .bounded import BoundedCalls
from .expr import NS, QueryFunc, Sample, evaluate
from .rules import MAX_ROWS, Rule, compare
from .templates import render_all

log = logging.getLogger("tracehouse.alerts")

RESOLVED_RETENTION_S = 15 * 60
#: A pending alert not evaluated for longer (the server stopped, the machine slept) starts its
#: ``for`` again: the condition was not watched meanwhile (Prometheus's
#: ``rules.alert.for-outage-tolerance``, 1h).
FOR_OUTAGE_TOLERANCE_S = 3600
#: How often a pending alert's last evaluation is written to the store, so that a restarted engine
#: knows how long nobody watched it (far below the tolerance).
PENDING_SAVE_S = 300
SnapshotFunc = Callable[[str, str, dict], "str | None"]


def fingerprint(labels: dict[str, str]) -> str:
    return hashlib.sha1(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Alert:
    rule_id: str
    fingerprint: str
    labels: dict[str, str]
    state: str  # pending | firing | resolved
    value: float = 0.0
    annotations: dict[str, str] = field(default_factory=dict)
    extra_annotations: dict[str, str] = field(default_factory=dict)
    active_at_ns: int = 0
    fired_at_ns: int = 0
    resolved_at_ns: int = 0
    keep_firing_since_ns: int = 0
    last_eval_ns: int = 0

    def body(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("rule_id", "fingerprint", "labels", "state"):
            d.pop(k)
        if d["value"] != d["value"]:
            d["value"] = None
        return d

    @classmethod
    def from_row(cls, rule_id: str, fp: str, state: str, labels: dict, body: dict) -> Alert:
        body = dict(body)
        if body.get("value") is None:
            body["value"] = float("nan")
        known = {k: v for k, v in body.items() if k in cls.__dataclass_fields__}
        return cls(rule_id=rule_id, fingerprint=fp, labels=labels, state=state, **known)

    def to_dict(self) -> dict[str, Any]:
        d = self.body()
        d.update(rule_id=self.rule_id, fingerprint=self.fingerprint, labels=self.labels, state=self.state,
                 annotations=dict(self.annotations, **self.extra_annotations))
        d.pop("extra_annotations")
        return d


@dataclass
class Transition:
    alert: Alert
    from_state: str
    to_state: str


class AlertingRule:
    """One rule, its alerts, and its health. ``eval`` is called by the group loop."""

    def __init__(self, rule: Rule, dashboard_url: str = "", request_snapshot: SnapshotFunc | None = None,
                 query_offset_s: float = 0.0, actions: BoundedCalls | None = None):
        self.rule = rule
        #: runs the snapshot actions of alerts that started firing: outside the engine's lock, and
        #: within a time limit (a hung target holds neither readers of the alerts nor evaluation)
        self.actions = actions or BoundedCalls()
        self._actions_due: list[tuple[Alert, str, str, dict[str, Any]]] = []
        #: the rule's query_offset, else the engine's: the window ends this long before ``now``
        self.query_offset_s = rule.query_offset_s if rule.query_offset_s is not None else query_offset_s
        self.dashboard_url = dashboard_url
        self.request_snapshot = request_snapshot
        self.alerts: dict[str, Alert] = {}
        self.health = "unknown"  # unknown | ok | err
        self.last_error = ""
        self.last_eval_ns = 0
        self.last_duration_s = 0.0
        self.nodata = False
        self.store_unavailable = False  # the last error was the store out of reach (not the rule's own)
        self.last_samples: list[Sample] = []
        #: alerts to write to the store without a transition (a pending alert's last evaluation)
        self.touched: list[Alert] = []
        self._saved_ns: dict[str, int] = {}

    @property
    def state(self) -> str:
        """The rule's summary state: error, firing, pending, nodata or inactive."""
        if self.health == "err":
            return "error"
        states = {a.state for a in self.alerts.values()}
        for s in ("firing", "pending"):
            if s in states:
                return s
        return "nodata" if self.nodata else "inactive"

    def eval(self, now_ns: int, query: QueryFunc, db: str, sql_query: QueryFunc | None = None,
             guard: AbstractContextManager[Any] | None = None) -> tuple[list[Transition], str | None]:
        """Evaluate at ``now_ns``. Returns the alert transitions and a health change (or None).

        The query runs outside ``guard`` (the engine's lock), the change of state inside it: readers
        of the alerts (the API, ``/metrics``) never wait for a query, which a hung store holds for
        as long as the connection's timeout."""
        t0 = time.perf_counter()
        try:
            samples = evaluate(self.rule, query, db, now_ns - int(self.query_offset_s * NS), sql_query)
        except Exception as e:
            from tracehouse.storage import StorageUnavailable

            failure = _public_error(self.rule.id, e)
            with guard or contextlib.nullcontext():
                before = self.health
                self.health, self.last_error = "err", failure
                self.store_unavailable = isinstance(e, StorageUnavailable)
                self.last_eval_ns, self.last_duration_s = now_ns, time.perf_counter() - t0
            return [], ("error" if before != "err" else None)
        with guard or contextlib.nullcontext():
            out, health = self._apply(now_ns, samples, t0)
            due, self._actions_due = self._actions_due, []
        if due:  # not under the lock, and bounded: the snapshot target may hang
            self._run_actions(due, guard)
        return out, health

    def _apply(self, now_ns: int, samples: list[Sample], t0: float) -> tuple[list[Transition], str | None]:
        before = self.health
        self.store_unavailable = False
        duplicate = self._duplicate_labels(samples)
        if duplicate is not None:  # which row would alert is up to row order: an error, alerts stay
            self.health, self.last_error = "err", duplicate
            self.last_eval_ns, self.last_duration_s = now_ns, time.perf_counter() - t0
            return [], ("error" if before != "err" else None)
        self.health, self.last_error = "ok", ""
        self.last_samples = samples
        self.nodata = not samples and self.rule.kind != "absence"
        active = [s for s in samples if compare(self.rule.op, s.value, self.rule.threshold)]
        if len(active) > self.rule.limit:  # an error like a failed query: every alert stays as it was
            self.health = "err"
            self.last_error = (f"{len(active):,} label sets meet the condition, over the rule's limit of "
                               f"{self.rule.limit:,} (set limit, up to {MAX_ROWS:,}, or aggregate)")
            self.last_eval_ns, self.last_duration_s = now_ns, time.perf_counter() - t0
            return [], ("error" if before != "err" else None)
        if self.nodata and self.rule.nodata_state == "alerting":
            active = [Sample({"nodata": "true"}, float("nan"))]
        out = self._advance(now_ns, active)
        self.last_eval_ns, self.last_duration_s = now_ns, time.perf_counter() - t0
        return out, ("ok" if before == "err" else None)

    def _duplicate_labels(self, samples: list[Sample]) -> str | None:
        """The error for a query giving one label set (after the rule's labels) twice, else None:
        as Prometheus's "vector contains metrics with the same labelset after applying alert labels"."""
        seen: set[str] = set()
        for s in samples:
            labels = self.labels_for(s)
            fp = fingerprint(labels)
            if fp in seen:
                shown = ", ".join(f"{k}={v!r}" for k, v in sorted(labels.items()) if k != "alertname")[:300]
                return (f"the query gave the same labels twice ({shown or 'no labels'}), after the rule's "
                        "labels are applied: group by every label column, and give label columns names "
                        "the rule's labels do not use")
            seen.add(fp)
        return None

    def labels_for(self, sample: Sample) -> dict[str, str]:
        labels = dict(sample.labels)
        labels.update(self.rule.labels)
        labels["alertname"] = self.rule.alert
        return labels

    def _advance(self, now_ns: int, active: list[Sample]) -> list[Transition]:
        out: list[Transition] = []
        seen = set()
        for s in active:
            seen.add(self._met(now_ns, s, out))
        for fp, a in list(self.alerts.items()):
            if fp not in seen:
                self._not_met(now_ns, fp, a, out)
        return out

    def _met(self, now_ns: int, s: Sample, out: list[Transition]) -> str:
        """A series the query gave: its alert starts pending, or stays, or starts firing; its
        fingerprint."""
        r = self.rule
        labels = self.labels_for(s)
        fp = fingerprint(labels)
        a = self.alerts.get(fp)
        if a is None or a.state == "resolved":
            a = Alert(r.id, fp, labels, "pending", active_at_ns=now_ns)
            self.alerts[fp] = a
            out.append(Transition(a, "inactive", "pending"))
            self._saved_ns[fp] = now_ns  # saved with its transition
        elif a.state == "pending" and now_ns - a.last_eval_ns > FOR_OUTAGE_TOLERANCE_S * NS:
            a.active_at_ns = now_ns  # not watched for over the tolerance: `for` counts again
            self._saved_ns[fp] = 0
        if a.keep_firing_since_ns:  # held by keep_firing_for, and met again: stored, for a restart
            self.touched.append(a)
        a.value, a.last_eval_ns, a.keep_firing_since_ns = s.value, now_ns, 0
        a.active_at_ns = clockstep.not_after(a.active_at_ns, now_ns)  # the clock stepped back
        a.annotations = render_all(r.annotations, s.value, labels, self.dashboard_url, r.id)
        if a.state == "pending" and now_ns - a.active_at_ns >= int(r.for_s * NS):
            a.state, a.fired_at_ns = "firing", now_ns
            self._on_firing(a)
            out.append(Transition(a, "pending", "firing"))
        elif a.state == "pending" and now_ns - self._saved_ns.get(fp, 0) >= PENDING_SAVE_S * NS:
            self.touched.append(a)
            self._saved_ns[fp] = now_ns
        if a.state != "pending":
            self._saved_ns.pop(fp, None)
        return fp

    def _not_met(self, now_ns: int, fp: str, a: Alert, out: list[Transition]) -> None:
        """An alert whose series the query no longer gives: dropped while pending, resolved when
        firing (after ``keep_firing_for``), deleted when resolved past its retention."""
        if a.state == "pending":
            del self.alerts[fp]
            self._saved_ns.pop(fp, None)
            out.append(Transition(a, "pending", "inactive"))
        elif a.state == "firing":
            if self._kept_firing(now_ns, a):
                return
            a.state, a.resolved_at_ns, a.last_eval_ns = "resolved", now_ns, now_ns
            out.append(Transition(a, "firing", "resolved"))
        elif _expired(a, now_ns):
            del self.alerts[fp]
            out.append(Transition(a, "resolved", "deleted"))

    def _kept_firing(self, now_ns: int, a: Alert) -> bool:
        """Whether ``keep_firing_for`` still holds a firing alert whose condition ended."""
        keep = self.rule.keep_firing_for_s
        if keep <= 0:
            return False
        if not a.keep_firing_since_ns:
            a.keep_firing_since_ns = now_ns
            self.touched.append(a)  # stored, so that a restart counts from here too
        a.keep_firing_since_ns = clockstep.not_after(a.keep_firing_since_ns, now_ns)
        if now_ns - a.keep_firing_since_ns < int(keep * NS):
            a.last_eval_ns = now_ns
            return True
        return False

    def sweep_disabled(self, now_ns: int) -> list[Transition]:
        """What evaluation does for a disabled rule: nothing of it stays active (a firing alert is
        resolved, a pending one dropped: the rule was disabled while the server was down, or by
        another engine), and its resolved alerts go when their retention runs out, as an enabled
        rule's do, instead of staying listed until the rule is enabled again or deleted."""
        out = self.retire(now_ns)
        for fp, a in list(self.alerts.items()):
            if _expired(a, now_ns):
                del self.alerts[fp]
                out.append(Transition(a, "resolved", "deleted"))
        return out

    def retire(self, now_ns: int) -> list[Transition]:
        """End every alert of this rule's current definition, because the rule was edited,
        disabled or deleted (see :func:`retire`)."""
        return retire(self.alerts, now_ns)

    def _on_firing(self, a: Alert) -> None:
        """Queue the rule's action for an alert that starts firing; ``eval`` runs it after the change
        of state, outside the engine's lock (see ``_run_actions``)."""
        kind = self.rule.action.get("snapshot")
        if not kind or self.request_snapshot is None:
            return
        reason = {"rule_id": self.rule.id, "alertname": self.rule.alert, "labels": a.labels, "value": a.value}
        self._actions_due.append((a, a.labels.get("service", self.rule.service), kind, reason))

    def _run_actions(self, due: list[tuple[Alert, str, str, dict[str, Any]]],
                     guard: AbstractContextManager[Any] | None) -> None:
        """Request the snapshots, within the time limit of ``actions`` in all, and note on each alert
        the snapshot asked for or why there is none (before the alert is written to the store)."""
        request = self.request_snapshot
        assert request is not None
        calls: list[Callable[[], Any]] = [functools.partial(request, service, kind, reason)
                                          for _, service, kind, reason in due]
        results = self.actions.run(calls)
        with guard or contextlib.nullcontext():
            for (a, *_), (ok, value) in zip(due, results, strict=True):
                if not ok:
                    log.warning("%s: snapshot action failed: %s", self.rule.id, value)
                    a.extra_annotations["snapshot_error"] = str(value)[:300]
                elif value:
                    a.extra_annotations["snapshot_id"] = str(value)
                    if self.dashboard_url:
                        a.extra_annotations["snapshot"] = f"{self.dashboard_url.rstrip('/')}/snapshots/{value}"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.rule.to_dict(), state=self.state, health=self.health, last_error=self.last_error,
                    last_eval_ns=self.last_eval_ns, last_duration_s=round(self.last_duration_s, 6),
                    alerts=[a.to_dict() for a in self.alerts.values()])


def _expired(a: Alert, now_ns: int) -> bool:
    """A resolved alert kept past ``RESOLVED_RETENTION_S``."""
    return a.state == "resolved" and now_ns - clockstep.not_after(a.resolved_at_ns, now_ns) > RESOLVED_RETENTION_S * NS


def retire(alerts: dict[str, Alert], now_ns: int) -> list[Transition]:
    """End ``alerts`` (by fingerprint, changed in place) because their rule was edited, disabled or
    deleted: a firing alert becomes resolved (so receivers that were told it fires are told it
    ended, as Alertmanager resolves an alert its rule no longer sends), a pending one is dropped.
    Resolved alerts stay until their retention runs out."""
    out: list[Transition] = []
    for fp, a in list(alerts.items()):
        if a.state == "pending":
            del alerts[fp]
            out.append(Transition(a, "pending", "inactive"))
        elif a.state == "firing":
            a.state, a.resolved_at_ns, a.last_eval_ns, a.keep_firing_since_ns = "resolved", now_ns, now_ns, 0
            out.append(Transition(a, "firing", "resolved"))
    return out


def _public_error(rule_id: str, e: Exception) -> str:
    """A rule's error as viewers see it: our own messages as they are; the database's text only in the
    server log, under an id the message carries."""
    from tracehouse.storage import QueryLimitExceeded, QueryTimeout, StorageError

    if not isinstance(e, StorageError):
        return str(e)[:2000]
    import uuid

    error_id = uuid.uuid4().hex[:16]
    log.warning("rule %s failed (error id %s): %s", rule_id, error_id, e)
    known: dict[type, str] = {
        QueryTimeout: "ran past its time limit",
        QueryLimitExceeded: "hit a limit of rows read, rows returned or memory: narrow, filter or aggregate it"}
    what = known.get(type(e), f"failed: {type(e).__name__}")
    return f"the rule's query {what} (error id {error_id}; details in the server log)"
