"""The engine: rules grouped by (group, interval), a scheduling loop in a background thread, the
notification loop in another, state persisted in ClickHouse and reloaded on start.

Collaborators are passed in (Prometheus's rule manager takes a QueryFunc, a NotifyFunc and a
clock): ``store`` for persistence, ``query`` (default ``store.query``), ``clock`` (ns), and
``request_snapshot`` for the ``action: {snapshot: ...}`` of a rule. Tests call
:meth:`Engine.run_once` with explicit times; ``start()``/``stop()`` run the same code on threads.

``lease`` (see ``lease.py``) decides whether this engine evaluates: on a cluster several engines
run and only the lease holder evaluates and notifies. An engine that takes the lease over first
reloads what the previous holder persisted (alert states, and what each notification group last
sent), so a handover sends nothing twice; a standby reloads now and then so its API answers stay
current.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from tracehouse.storage import StorageError, Store, statefile

from . import clockstep, persist
from .bounded import BoundedCalls
from .config import AlertConfig
from .errors import ReadOnlyRule
from .expr import NS, QueryFunc, evaluate
from .groupruns import GroupRuns
from .lease import AlwaysHeld, Lease
from .metrics import AlertMetrics
from .notify import Dispatcher
from .notify_state import NotifyLog
from .rules import VOCABULARY, Rule, RuleError, compare, parse_rule
from .silences import Silence, parse_silence, silence_from_doc
from .state import Alert, AlertingRule, SnapshotFunc, Transition, retire
from .templates import check
from .unsaved import Unsaved

log = logging.getLogger("tracehouse.alerts")
#: how long the snapshot actions of one rule's evaluation may take in all (the agent command queue
#: is the store: a hung store, or another target, holds a rule this long at most, and never the API)
SNAPSHOT_TIMEOUT_S = 5.0
#: the file, in the engine's state_dir, of the changes of state the store did not take
UNSAVED_FILE = "unsaved-alert-changes.json"
#: the file, in the engine's state_dir, of the notification records the store did not take
UNRECORDED_FILE = "unrecorded-notifications.json"
_RULE_ID = re.compile(r"[A-Za-z0-9_.:/-]{1,200}")


def _valid_id(rid: Any) -> bool:
    """An id for a rule made through the API: it is a segment of the rule's page URL, so a line
    break (``$`` matched before one, and PUT took any id), and ".", ".." (which browsers resolve
    away) and "new" (the new-rule page) are refused."""
    return isinstance(rid, str) and _RULE_ID.fullmatch(rid) is not None and rid not in (".", "..", "new")


class Engine:
    #: the choices of each enumerated rule field (kinds, signals, ops, ...), for rule editors
    vocabulary = VOCABULARY

    def __init__(self, store: Store, config: AlertConfig | None = None, clock: Callable[[], int] = time.time_ns,
                 query: QueryFunc | None = None, dashboard_url: str = "", request_snapshot: SnapshotFunc | None = None,
                 rng: random.Random | None = None, backoff_base_s: float = 1.0, backoff_max_s: float = 300.0,
                 metrics: AlertMetrics | None = None, lease: Lease | None = None, standby_reload_s: float = 5.0,
                 sql_query: QueryFunc | None = None, query_offset_s: float = 0.0, state_dir: str = ""):
        self.store, self.config = store, config or AlertConfig()
        #: how long before the evaluation time the windows of rules without query_offset end
        self.query_offset_s = query_offset_s
        self.metrics = metrics or AlertMetrics()
        self.tracer: Any = None  # an OpenTelemetry tracer when the server observes itself
        self.clock = clock
        #: where the built-in kinds of rule query, within the store's limits and the rule time limit
        #: (a hung server is given that and a margin, not the connection's receive timeout)
        self.query = query or store.rule_query
        #: where SQL rules run (read-only, limited; see Store.rule_reader), opened on first use
        self.sql_query = sql_query or (lambda sql, params: store.rule_reader().query(sql, params))
        self.db = store.db
        self.dashboard_url, self.request_snapshot = dashboard_url, request_snapshot
        #: where snapshot actions run: outside the engine's lock, SNAPSHOT_TIMEOUT_S for one rule's at most
        self.actions = BoundedCalls(SNAPSHOT_TIMEOUT_S, name="tracehouse-alerts-snapshot",
                                    on_failure=lambda: self.metrics.action_failures.labels(action="snapshot").inc())
        self._lock = threading.RLock()  # rules and alerts in memory; never held across a store call
        self._evaluating = threading.Lock()
        # changes of state the store has not taken yet; with a state_dir, also in a file there, so a
        # restart during a store outage starts from them
        self._unsaved = Unsaved(path=os.path.join(state_dir, UNSAVED_FILE) if state_dir else "")
        self._load_failures = 0  # reads of the persisted state failed in a row on taking the lease
        self.rules: dict[str, AlertingRule] = {}
        self._next_due: dict[tuple[str, float], int] = {}
        self._silences: list[Silence] = []
        self._orphans: dict[str, dict[str, Alert]] = {}
        self.dispatcher = Dispatcher(self.config.route, self.config.receivers, self.config.inhibit_rules,
                                     lambda: self._silences, dashboard_url, backoff_base_s, backoff_max_s, rng,
                                     state=NotifyLog(store), metrics=self.metrics)
        self.metrics.watch(self.current_alerts)
        self.lease: Lease = lease or AlwaysHeld()
        self.leading = False  # evaluating under the lease (set by the evaluation loop)
        self.standby_reload_s = standby_reload_s
        self._attach_unrecorded(state_dir)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._runs = GroupRuns()  # the background loop's group evaluations
        self._missing: set[tuple[str, float]] = set()  # groups that missed a turn, logged
        for r in self.config.rules:
            self._add(r)
        self._replay_unsaved()
        self.reload()
        if len(self._unsaved):
            try:
                self._unsaved.write(self.store)
            except StorageError as e:  # kept, and written with the next change the store takes
                log.warning("alert changes from before the restart could not be written yet: %s", e)
            self._unsaved.sync_file()

    def _attach_unrecorded(self, state_dir: str) -> None:
        """Notification records the store did not take, kept in a file of ``state_dir`` and taken
        from it at a start. Only for an engine that evaluates alone (as ``_replay_unsaved``)."""
        if not state_dir:
            return
        path = os.path.join(state_dir, UNRECORDED_FILE)
        if not isinstance(self.lease, AlwaysHeld):
            if os.path.exists(path):
                log.warning("notification records in %s are dropped: under a lease, the holder decides from "
                            "the store", path)
                try:
                    statefile.remove(path)
                except OSError as e:
                    log.error("could not remove %s: %s", path, e)
            return
        self.dispatcher.attach_file(path)

    def _replay_unsaved(self) -> None:
        """Take the changes of state a previous run of this engine decided and the store never took
        (see ``Unsaved.sync_file``). Only for an engine that evaluates alone: under a lease another
        engine may have evaluated since from what the store had, and its decisions are the newer."""
        path = self._unsaved.path
        if path and not isinstance(self.lease, AlwaysHeld):  # no file under a lease: it would never be read
            self._unsaved.path = ""
            if os.path.exists(path):
                log.warning("alert changes in %s are dropped: under a lease, the holder decides from the store", path)
                self._unsaved.drop_file(path)
            return
        if not path or not os.path.exists(path):
            return
        n = self._unsaved.load_file()
        if n:
            log.warning("%d alert changes the store did not take before the restart are taken from %s", n, path)

    # -- loading ---------------------------------------------------------------------------------
    def _add(self, rule: Rule) -> AlertingRule:
        ar = AlertingRule(rule, self.dashboard_url, self.request_snapshot, self.query_offset_s, self.actions)
        old = self.rules.get(rule.id)
        if old is not None:
            ar.alerts = old.alerts
        self.rules[rule.id] = ar
        return ar

    def reload(self, replace: bool = False) -> None:
        """Read API rules, silences and persisted alert state from the store (the groups created
        now start from what they last sent, see ``notify_state``). With ``replace`` (taking the
        lease over, or a standby catching up), the persisted alerts replace the ones in memory
        instead of adding to them, and the notification groups start afresh from the store."""
        docs = self.store.documents("alert_rules")  # read before taking the lock: the store may hang
        stored = persist.load_alerts(self.store)
        silences = [silence_from_doc(d) for d in self.store.documents("silences")]
        with self._lock:
            if replace:  # API rules deleted by the engine that held the lease are gone here too
                stored_ids = {doc.get("id") for doc in docs}
                for rid in [rid for rid, ar in self.rules.items() if not ar.rule.read_only and rid not in stored_ids]:
                    del self.rules[rid]
            for doc in docs:
                try:
                    self._add(parse_rule(doc["rule"], rule_id=doc["id"], source="api"))
                except (RuleError, KeyError) as e:
                    log.error("stored rule %s is invalid: %s", doc.get("id"), e)
            # alerts of rules this engine no longer has (removed or renamed in a rule file while the
            # server was down): the next evaluation resolves them (see _resolve_orphans)
            self._orphans = {rid: alerts for rid, alerts in stored.items() if rid not in self.rules}
            for rule_id, ar in self.rules.items():
                if replace:
                    ar.alerts = dict(stored.get(rule_id, {}))
                else:
                    ar.alerts.update(stored.get(rule_id, {}))
            for a, deleted in self._unsaved.alerts():  # decided here, newer than what the store has
                owner = self.rules.get(a.rule_id)
                held = owner.alerts if owner is not None else self._orphans.setdefault(a.rule_id, {})
                if deleted:
                    held.pop(a.fingerprint, None)
                else:
                    held[a.fingerprint] = a
            self._orphans = {rid: alerts for rid, alerts in self._orphans.items() if alerts}
            self._silences = silences
            if replace:
                self.dispatcher.reset(keep_unrecorded=isinstance(self.lease, AlwaysHeld))
            alerts = self.current_alerts()
        self.dispatcher.update(alerts, self.clock())  # reads what each new group last sent: not under the lock

    def reload_silences(self) -> None:
        self._silences = [silence_from_doc(d) for d in self.store.documents("silences")]

    # -- evaluation ------------------------------------------------------------------------------
    def eval_rule(self, ar: AlertingRule, now_ns: int) -> list[Transition]:
        """Evaluate one rule and persist what changed; queries and writes run without the engine's
        lock (only the change of state takes it), so readers never wait for the store."""
        transitions, health = ar.eval(now_ns, self.query, self.db, self.sql_query, guard=self._lock)
        if health is not None and not (health == "error" and ar.store_unavailable):
            # (a store out of reach would hold this write as long as it held the query; its
            # error shows in the rule's health and metrics, and the return as error -> ok)
            pseudo = Alert(ar.rule.id, "", {"alertname": ar.rule.alert}, health, annotations={"error": ar.last_error})
            persist.record_history(self.store, [Transition(pseudo, "ok" if health == "error" else "error", health)],
                                   now_ns)
        touched = [a for a in ar.touched if all(a is not t.alert for t in transitions)]
        ar.touched = []
        if transitions:
            self._unsaved.add(transitions, now_ns)
        if touched:
            self._unsaved.touch(touched)
        try:
            if len(self._unsaved) and not ar.store_unavailable:  # this change, and any the store could not take before
                self._unsaved.write(self.store)
        finally:
            self._unsaved.sync_file()  # what the store did not take, on disk; no file once it took all
        return transitions

    def run_once(self, now_ns: int | None = None, force: bool = False) -> list[Transition]:
        """Evaluate every group that is due at ``now_ns`` (all of them with ``force``), one after the
        other, then notify. (The background loop evaluates each group on its own thread instead.)"""
        now = self.clock() if now_ns is None else now_ns
        out: list[Transition] = []
        with self._evaluating:  # one evaluation at a time; the engine's lock only around changes of state
            with self._lock:
                due_groups = [(key, members) for key, members in self._groups().items()
                              if self._take_turn(key, now, force)]
            for key, members in due_groups:
                out.extend(self._eval_group(key, members, now))
            out.extend(self._sweep_disabled(now))
            alerts = self.current_alerts() + self._resolve_orphans(now)
        self.dispatcher.update(alerts, now)
        self.dispatcher.tick(now)
        return out

    def _groups(self) -> dict[tuple[str, float], list[AlertingRule]]:
        """Under the lock: the enabled rules by (group, interval)."""
        groups: dict[tuple[str, float], list[AlertingRule]] = {}
        for ar in self.rules.values():
            if ar.rule.enabled:
                groups.setdefault((ar.rule.group, ar.rule.interval), []).append(ar)
        return groups

    def _take_turn(self, key: tuple[str, float], now: int, force: bool = False) -> bool:
        """Under the lock: whether the group ``key`` is due at ``now`` (or ``force``); if so its next
        turn is set."""
        if not force and now < clockstep.due(self._next_due.get(key, 0), now, int(key[1] * NS)):
            return False
        self._next_due[key] = now + int(key[1] * NS)
        return True

    def _eval_group(self, key: tuple[str, float], members: list[AlertingRule], now: int) -> list[Transition]:
        out: list[Transition] = []
        with self._span(f"alerts group {key[0]}"):
            for ar in members:
                t0 = time.perf_counter()
                with self._span(f"alerts rule {ar.rule.id}") as span:
                    try:
                        out.extend(self.eval_rule(ar, now))
                        failed = ar.health == "err"
                    except Exception:  # persistence failure: keep evaluating the others
                        log.exception("evaluating %s", ar.rule.id)
                        failed = True
                    if failed and span is not None:
                        from opentelemetry.trace import Status, StatusCode

                        span.set_status(Status(StatusCode.ERROR, ar.last_error[:200]))
                self.metrics.evaluated(ar.rule.group, time.perf_counter() - t0, failed)
        return out

    def _start_due(self) -> None:
        """The background loop's turn: every due group starts on its own thread (``GroupRuns``), so
        a slow one holds back only itself; one still running when due again misses that turn."""
        now = self.clock()
        with self._lock:
            for key, members in self._groups().items():
                step = int(key[1] * NS)
                if now < clockstep.due(self._next_due.get(key, 0), now, step):
                    continue
                if self._runs.running(key):  # due again while its last evaluation runs on: a missed turn
                    self._next_due[key] = now + step
                    self.metrics.missed.labels(group=key[0]).inc()
                    if key not in self._missing:  # a line when it starts missing, not one a turn
                        self._missing.add(key)
                        log.warning("rule group %s is still being evaluated at its next turn (interval %gs): "
                                    "turns are skipped until it ends (counted in "
                                    "tracehouse_alerts_rule_group_iterations_missed)", key[0], key[1])
                    continue
                if self._runs.start(key, functools.partial(self._run_group, key, members, now)):
                    self._next_due[key] = now + step  # (every turn taken: it starts at a next pass)
                    self._missing.discard(key)
        with self._evaluating:
            changed = self._sweep_disabled(now)
            orphans = self._resolve_orphans(now)
        if changed or orphans:
            self.dispatcher.update(self.current_alerts() + orphans, now)

    def _run_group(self, key: tuple[str, float], members: list[AlertingRule], now: int) -> None:
        self._eval_group(key, members, now)
        self.dispatcher.update(self.current_alerts(), self.clock())
        self.dispatcher.tick(self.clock())

    def _sweep_disabled(self, now: int) -> list[Transition]:
        """Disabled rules are not evaluated, but their alerts do not stand still: one still firing or
        pending (disabled in its file while the server was down, or through another engine) is
        resolved or dropped, and resolved ones are deleted when their retention runs out, so the
        alerts API lists what a disabled rule left no longer than an enabled rule's."""
        with self._lock:
            changed = [t for ar in self.rules.values() if not ar.rule.enabled and ar.alerts
                       for t in ar.sweep_disabled(now)]
        if changed:
            self._unsaved.add(changed, now)
            try:
                self._unsaved.write(self.store)
            except StorageError as e:  # kept, and written with the next change the store takes
                log.warning("the alerts of disabled rules could not be written: %s", e)
            self._unsaved.sync_file()
        return changed

    def _resolve_orphans(self, now: int) -> list[Alert]:
        """Resolve, once, the stored alerts of rules that no longer exist (a rule file changed while
        the server was down): firing ones become resolved, so receivers told that they fire are told
        that they ended (Alertmanager resolves an alert no rule sends any more); all are deleted
        from the store. Returns them for the notification groups. Done by the evaluating engine
        only (``run_once``), never by a standby."""
        if not self._orphans:
            return []
        orphans, self._orphans = self._orphans, {}
        transitions = [t for alerts in orphans.values() for t in retire(alerts, now)]
        gone = [a for alerts in orphans.values() for a in alerts.values()]
        try:
            persist.save_alerts(self.store, [(a, True) for a in gone] +
                                [(t.alert, True) for t in transitions if t.to_state == "inactive"])
            persist.record_history(self.store, transitions, now)
        except Exception:
            log.exception("resolving the alerts of removed rules")
            self._orphans = orphans  # tried again at the next evaluation
            return []
        return [a for a in gone if a.state == "resolved"]

    def _span(self, name: str):
        """A span of the server's own traces when it observes itself (``tracer`` set), else nothing."""
        if self.tracer is None:
            return contextlib.nullcontext()
        return self.tracer.start_as_current_span(name)

    def ready(self) -> tuple[bool, str]:
        """For ``/readyz``: the loops run and the store answers."""
        if not self._threads or not all(t.is_alive() for t in self._threads):
            return False, "alert engine stopped"
        if not self.store.ping():
            return False, "store unreachable"
        return True, "ready"

    def next_due_ns(self) -> int:
        with self._lock:
            return min(self._next_due.values(), default=0)

    def current_alerts(self) -> list[Alert]:
        with self._lock:
            return [a for ar in self.rules.values() for a in ar.alerts.values()]

    # -- background ------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self.lease.start()
        for name, fn in (("tracehouse-alerts-eval", self._eval_loop), ("tracehouse-alerts-notify", self._notify_loop)):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)
        self._threads.clear()
        self._runs.join(15)
        self.leading = False
        self.lease.stop()

    def _follow_lease(self) -> bool:
        """Whether to evaluate now; takes over (reloading the persisted state) on gaining the lease."""
        if not self.lease.held():
            if self.leading:
                log.warning("alert lease lost: evaluation and notification pause")
                self.leading = False
                if len(self._unsaved):  # the next holder decides from what the store has now
                    log.warning("alert lease lost: %d changes of state the store did not take are dropped",
                                len(self._unsaved))
                    self._unsaved.clear()
                    self._unsaved.sync_file()
            return False
        if not self.leading:
            try:
                self.reload(replace=True)
            except StorageError as e:
                self._not_loaded(e)
                return False
            self._load_failures = 0
            self._next_due.clear()
            self.leading = True
            log.info("alert lease held: evaluating %d rules", len(self.rules))
        return True

    def _not_loaded(self, e: Exception) -> None:
        """Holding the lease, the persisted state could not be read: nothing is evaluated (it would
        fire and notify again what was fired before), and every rule says why."""
        self._load_failures += 1
        reason = f"the alert state could not be loaded from the store ({type(e).__name__}); evaluation waits for it"
        with self._lock:
            rules = list(self.rules.values())
            for ar in rules:
                ar.health, ar.last_error = "err", reason
        for ar in rules:
            self.metrics.evaluated(ar.rule.group, 0.0, True)
        if self._load_failures == 1:
            log.warning("%s: %s", reason, e)

    def _eval_loop(self) -> None:
        last_silences = 0.0
        last_standby = 0.0
        while not self._stop.is_set():
            try:
                if not self._follow_lease():
                    if self._load_failures:  # held, but the state is not loaded: again after a doubling wait
                        self._stop.wait(min(30.0, 0.5 * 2 ** min(self._load_failures, 6)))
                        continue
                    if time.monotonic() - last_standby > self.standby_reload_s:
                        self.reload(replace=True)
                        last_standby = time.monotonic()
                    self._stop.wait(0.2)
                    continue
                if time.monotonic() - last_silences > 30:
                    last_silences = time.monotonic()
                    try:
                        self.reload_silences()
                    except StorageError as e:  # the last ones read stay in force; rules are evaluated all the same
                        log.warning("silences could not be read again, the last ones read stay in force: %s", e)
                self._start_due()
            except Exception:
                log.exception("alert evaluation loop")
            wait = (self.next_due_ns() - self.clock()) / NS
            self._stop.wait(min(1.0, max(0.05, wait)))

    def _notify_loop(self) -> None:
        while not self._stop.wait(0.5):
            if not (self.leading and self.lease.held()):
                continue
            try:
                self.dispatcher.tick(self.clock())
            except Exception:
                log.exception("alert notification loop")

    # -- API operations --------------------------------------------------------------------------
    def list_rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [ar.to_dict() for ar in self.rules.values()]

    def get_rule(self, rule_id: str) -> AlertingRule | None:
        return self.rules.get(rule_id)

    def put_rule(self, body: dict[str, Any], rule_id: str | None = None) -> AlertingRule:
        """Create or replace an API rule (raises RuleError for a bad rule, ReadOnlyRule for a YAML one)."""
        given = body.get("id") if rule_id is None else rule_id
        if given is not None and not _valid_id(given):
            raise RuleError("a rule's id is a text of 1-200 letters, digits and _ . : / -, other than "
                            "'.', '..' and 'new' (which name other pages)")
        rid = given or uuid.uuid4().hex[:16]
        self._refuse_read_only(rid)
        body = {k: v for k, v in body.items() if k not in ("id", "source", "read_only")}
        rule = parse_rule(body, group=str(body.get("group", "api")), rule_id=rid, source="api")
        for text in rule.annotations.values():
            check(text)
        self.store.put_document("alert_rules", rid, {"rule": body})  # not under the lock: the store may hang
        with self._lock:
            old = self.rules.get(rid)
            retired = None
            if old is not None and old.rule.raw != rule.raw and (
                    not rule.enabled or (old.rule.alert, old.rule.labels) != (rule.alert, rule.labels)):
                # alerts of another name or labels, or none: what the old rule fired is resolved, not
                # forgotten. Same name and labels keep their alerts, and the next evaluation of the new
                # expression decides (Prometheus's CopyState): no resolve and re-fire for an edit.
                retired = self._retire(old)
            added = self._add(rule)
        if retired is not None:
            self._record_retired(*retired)
        return added

    def _refuse_read_only(self, rule_id: str) -> None:
        old = self.rules.get(rule_id)
        if old is not None and old.rule.read_only:
            raise ReadOnlyRule(f"rule {rule_id} comes from {old.rule.source[5:]} and is read-only")

    def delete_rule(self, rule_id: str) -> bool:
        if rule_id not in self.rules:
            return False
        self._refuse_read_only(rule_id)
        self.store.put_document("alert_rules", rule_id, {}, deleted=True)  # not under the lock
        with self._lock:
            ar = self.rules.pop(rule_id, None)
            if ar is None:
                return True
            retired = self._retire(ar, deleted=True)
        self._record_retired(*retired)
        return True

    def _retire(self, ar: AlertingRule, deleted: bool = False) -> tuple[list[Transition], list, int]:
        """Resolve, in memory (under the engine's lock), the alerts of a rule that was edited,
        disabled or deleted (see ``AlertingRule.retire``); ``_record_retired`` then records them
        outside the lock (the store may hang)."""
        now = self.clock()
        transitions = ar.retire(now)
        changed = [(t.alert, deleted or t.to_state == "inactive") for t in transitions]
        if deleted:  # the rule's resolved alerts too: nothing of it comes back at a restart
            changed += [(a, True) for a in ar.alerts.values() if a.state == "resolved" and
                        all(a is not t.alert for t in transitions)]
        return transitions, changed, now

    def _record_retired(self, transitions: list[Transition], changed: list, now: int) -> None:
        """The retired alerts in the store and the history, and handed to the notification groups,
        so a receiver told that an alert fires is told that it ended, once."""
        persist.save_alerts(self.store, changed)
        persist.record_history(self.store, transitions, now)
        self.dispatcher.update([t.alert for t in transitions if t.to_state == "resolved"], now)

    def preview(self, body: dict[str, Any], now_ns: int | None = None) -> dict[str, Any]:
        rule = parse_rule(dict(body), rule_id="preview", source="api")
        now = self.clock() if now_ns is None else now_ns
        offset = rule.query_offset_s if rule.query_offset_s is not None else self.query_offset_s
        samples = evaluate(rule, self.query, self.db, now - int(offset * NS), self.sql_query)
        return {"now_ns": now, "op": rule.op, "threshold": rule.threshold, "samples": [
            {"labels": s.labels, "value": s.value if s.value == s.value else None,
             "matches": compare(rule.op, s.value, rule.threshold)} for s in samples]}

    def silences(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [s.to_dict(now) for s in self._silences]

    def add_silence(self, body: dict[str, Any]) -> dict[str, Any]:
        s = parse_silence(body, self.clock())
        doc = s.to_dict()
        self.store.put_document("silences", s.id, doc, starts_ns=s.starts_ns, ends_ns=s.ends_ns)
        self.reload_silences()
        return s.to_dict(self.clock())

    def delete_silence(self, silence_id: str) -> bool:
        if not any(s.id == silence_id for s in self._silences):
            return False
        self.store.put_document("silences", silence_id, {}, deleted=True, starts_ns=0, ends_ns=0)
        self.reload_silences()
        return True

    def history(self, rule_id: str = "", limit: int = 200) -> list[dict[str, Any]]:
        return persist.history(self.store, rule_id, limit)

    def alerts(self) -> list[dict[str, Any]]:
        now = self.clock()
        firing = [a.labels for a in self.current_alerts() if a.state == "firing"]
        out = []
        for a in self.current_alerts():
            d = a.to_dict()
            d["muted"] = self.dispatcher.muted(a, firing, self._silences, now)
            out.append(d)
        return out

    def router(self, require_role: Callable[[str], Any] | None = None, previews_per_minute: float = 20):
        from .api import alerts_router

        return alerts_router(self, require_role, previews_per_minute)
