"""The notification path, after Alertmanager's ``dispatch`` and ``notify``: routing, grouping by
labels (group_wait, group_interval, repeat_interval), silences and inhibition, resolved
notifications, and retries with exponential backoff and jitter.

A group holds the latest state of its alerts, so a retry sends what is true *now*: when a
receiver comes back after an outage each group sends one message (at its own jittered time),
never the backlog of every missed one.

With a :class:`~.notify_state.NotifyLog`, what each group last sent is kept in the store: a group
created after a restart (or in another engine process) starts from it, and it is read again just
before a send, so a notification already sent is not sent again. A record the store did not take
is kept and written again; with a file (``attach_file``: the engine's data directory, when it
evaluates alone) it is kept on local disk too, so a restart during the outage starts from it and
does not send the same notification a second time.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from tracehouse.storage import StorageError, statefile

from . import clockstep
from .notifiers import Notifier, NotifyError
from .notify_state import NotifyLog, Sent
from .rules import RuleError, duration
from .silences import InhibitRule, Matcher, Silence, inhibited, parse_matcher
from .state import Alert

log = logging.getLogger("tracehouse.alerts.notify")
NS = 1_000_000_000
#: seconds between attempts to record a send the store did not take, and how many groups are kept
RECORD_RETRY_S = 2.0
MAX_UNRECORDED = 10_000
#: the file of records the store did not take (written whole; past this size it is not written)
MAX_FILE_BYTES = 8 << 20
_FORMAT = 1


def _kept_from_file(key: Any, v: Any) -> tuple[Sent | None, int]:
    """One entry of the file of records the store did not take; ValueError or TypeError when it is
    not of the shape this version writes (the file is read as untrusted input)."""
    if not isinstance(key, str) or len(key) > 64 * 1024 or not isinstance(v, dict):
        raise ValueError("an entry of the wrong shape")
    forget, firing, last, at = v.get("forget"), v.get("firing"), v.get("last_sent_ns"), v.get("at_ns")
    if type(forget) is not bool or not isinstance(firing, list) or not all(isinstance(f, str) for f in firing) \
            or type(last) is not int or type(at) is not int or not 0 <= last < 2**63 or not 0 <= at < 2**63:
        raise ValueError("an entry of the wrong shape")
    return (None if forget else Sent(set(firing), last)), at


def rfc3339(ns: int) -> str:
    if not ns:
        return "0001-01-01T00:00:00Z"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // NS)) + f".{(ns % NS) // 1_000_000:03d}Z"


@dataclass
class Route:
    receiver: str
    group_by: list[str] = field(default_factory=lambda: ["alertname"])
    group_wait: float = 10.0
    group_interval: float = 60.0
    repeat_interval: float = 4 * 3600.0
    matchers: list[Matcher] = field(default_factory=list)
    continue_: bool = False
    routes: list[Route] = field(default_factory=list)

    def match(self, labels: dict[str, str]) -> list[Route]:
        """The routes an alert goes to (Alertmanager: first matching child unless ``continue``)."""
        if not all(m.matches(labels) for m in self.matchers):
            return []
        out: list[Route] = []
        for child in self.routes:
            hit = child.match(labels)
            out.extend(hit)
            if hit and not child.continue_:
                break
        return out or [self]


#: the keys of an Alertmanager route this engine follows; any other (mute_time_intervals, a typo) is
#: refused when the configuration loads rather than ignored, since an ignored matcher sends every
#: alert down that route
ROUTE_KEYS = {"receiver", "group_by", "group_wait", "group_interval", "repeat_interval", "continue", "match",
              "match_re", "matchers", "routes"}


def parse_route(d: Any, parent: Route | None = None) -> Route:
    if not isinstance(d, dict):
        raise RuleError("route must be a mapping")
    unknown = set(d) - ROUTE_KEYS
    if unknown:
        raise RuleError(f"route: unsupported keys {sorted(map(str, unknown))} (known: {sorted(ROUTE_KEYS)})")
    for key in ("match", "match_re"):
        if not isinstance(d.get(key) or {}, dict):
            raise RuleError(f"route.{key} must be a mapping of label names to values")
    p = parent or Route(receiver="")
    r = Route(
        receiver=str(d.get("receiver") or p.receiver),
        group_by=[str(x) for x in d.get("group_by", p.group_by)],
        group_wait=duration(d.get("group_wait", p.group_wait), "route.group_wait"),
        group_interval=duration(d.get("group_interval", p.group_interval), "route.group_interval"),
        repeat_interval=duration(d.get("repeat_interval", p.repeat_interval), "route.repeat_interval"),
        continue_=bool(d.get("continue", False)),
    )
    if not r.receiver:
        raise RuleError("route needs a receiver")
    r.matchers = [parse_matcher({"name": k, "value": str(v)}) for k, v in (d.get("match") or {}).items()]
    r.matchers += [parse_matcher({"name": k, "value": str(v), "isRegex": True})
                   for k, v in (d.get("match_re") or {}).items()]
    r.matchers += [parse_matcher(m) for m in d.get("matchers") or []]
    r.routes = [parse_route(c, r) for c in d.get("routes") or []]
    return r


@dataclass
class Group:
    receiver: str
    route: Route
    labels: dict[str, str]
    next_flush_ns: int
    alerts: dict[str, Alert] = field(default_factory=dict)
    notified_firing: set[str] = field(default_factory=set)
    last_sent_ns: int = 0
    attempts: int = 0
    next_attempt_ns: int = 0
    last_error: str = ""
    #: The receiver's notifiers (by position) that have the message being retried, and what that
    #: message held (firing and resolved fingerprints): a retry goes only to the others while the
    #: content is the same, and to every notifier again once it changed.
    delivered: set[int] = field(default_factory=set)
    delivered_for: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())

    @property
    def key(self) -> str:
        return self.receiver + ":" + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(self.labels.items())) + "}"


class Dispatcher:
    def __init__(self, route: Route | None, receivers: dict[str, list[Notifier]],
                 inhibit_rules: list[InhibitRule] | None = None,
                 silences: Callable[[], list[Silence]] | None = None, external_url: str = "",
                 backoff_base_s: float = 1.0, backoff_max_s: float = 300.0, rng: random.Random | None = None,
                 state: NotifyLog | None = None, metrics: Any = None):
        self.route, self.receivers = route, receivers
        self.state, self.metrics = state, metrics
        self.inhibit_rules = inhibit_rules or []
        self.silences = silences or (lambda: [])
        self.external_url = external_url
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.rng = rng or random.Random()
        self.groups: dict[str, Group] = {}
        self._lock = threading.RLock()
        self._sending = threading.Lock()
        #: group key → the record the store did not take after a send (None: the group ended, its
        #: record is to be deleted) and when it was made: written again (_retry_records)
        self._unrecorded: dict[str, tuple[Sent | None, int]] = {}
        self._retry_records_at = 0.0
        #: where ``_unrecorded`` is kept on disk ('' = nowhere); changes since the last write of it
        self.path = ""
        self._changes = self._synced = 0
        self._file_lock = threading.Lock()  # one writer of the file at a time, in the order of changes

    def reset(self, keep_unrecorded: bool = False) -> None:
        """Forget every group (an engine taking the cluster's lease over starts from the store), and
        the records the store did not take unless ``keep_unrecorded`` (an engine evaluating alone: they
        are newer than the store's, and still to be written)."""
        with self._lock:
            self.groups.clear()
            if not keep_unrecorded and self._unrecorded:
                self._unrecorded.clear()
                self._changes += 1
        self.sync_file()

    def update(self, alerts: list[Alert], now_ns: int) -> None:
        """Take the current alerts (firing and recently resolved) of every rule. What a new group last
        sent is read from the store without the lock (a hung store holds neither ``status`` nor a tick)."""
        if self.route is None:
            return
        with self._lock:
            new = {key for key in self._group_keys(alerts) if key not in self.groups}
        records = {key: self._load(key) for key in sorted(new)}
        with self._lock:
            for a in alerts:
                if a.state not in ("firing", "resolved"):
                    continue
                for r in self.route.match(a.labels):
                    labels = {k: a.labels.get(k, "") for k in r.group_by}
                    g = Group(r.receiver, r, labels, now_ns + int(r.group_wait * NS))
                    if g.key not in self.groups:
                        self._adopt(g, records.get(g.key))
                    g = self.groups.setdefault(g.key, g)
                    held = g.alerts.get(a.fingerprint)
                    if a.state == "resolved" and held is not None and held.state == "firing" and \
                            held.rule_id != a.rule_id:
                        continue  # another rule makes the same alert and it still fires (Alertmanager merges)
                    # a resolved alert goes out once if its firing was notified (here or before a restart)
                    if a.state == "firing" or a.fingerprint in g.alerts or a.fingerprint in g.notified_firing:
                        g.alerts[a.fingerprint] = a

    def _group_keys(self, alerts: list[Alert]) -> set[str]:
        assert self.route is not None
        keys = set()
        for a in alerts:
            if a.state in ("firing", "resolved"):
                for r in self.route.match(a.labels):
                    keys.add(Group(r.receiver, r, {k: a.labels.get(k, "") for k in r.group_by}, 0).key)
        return keys

    def _load(self, key: str) -> Sent | None:
        """What group ``key`` last sent: the store's record, or the one it did not take yet when that
        is newer (a send during an outage, kept across a restart by the file). A store read: never
        under the lock."""
        if self.state is None:
            return None
        try:
            rec = self.state.load(key)
        except StorageError as e:
            log.warning("cannot read the notification state of %s: %s", key, e)
            rec = None
        with self._lock:
            kept = self._unrecorded.get(key)
        if kept is None:
            return rec
        sent, at_ns = kept
        if rec is not None and rec.last_sent_ns > at_ns:
            return rec
        return sent  # None: the group ended after the store's record was made

    @staticmethod
    def _adopt(g: Group, rec: Sent | None) -> bool:
        """Take what the store said this group last sent, when that is newer than what we know."""
        if rec is None or rec.last_sent_ns <= g.last_sent_ns:
            return False
        g.notified_firing, g.last_sent_ns = set(rec.notified_firing), rec.last_sent_ns
        return True

    def _record(self, g: Group, forget: bool = False, sent: Sent | None = None) -> None:
        """Write what ``g`` sent (``sent``: as it was when sent) to the store: never under the lock."""
        if self.state is None:
            return
        record = None if forget else (sent or Sent(set(g.notified_firing), g.last_sent_ns))
        try:
            self._write_record(g.key, record)
        except StorageError as e:
            log.warning("cannot record the notification state of %s (written again later): %s", g.key, e)
            with self._lock:
                if len(self._unrecorded) < MAX_UNRECORDED or g.key in self._unrecorded:
                    self._unrecorded[g.key] = (record, time.time_ns() if record is None else record.last_sent_ns)
                    self._changes += 1
                self._retry_records_at = time.monotonic() + RECORD_RETRY_S
        else:
            with self._lock:  # an older record kept for this group must not replace this one later
                if self._unrecorded.pop(g.key, None) is not None:
                    self._changes += 1
        self.sync_file()

    def _write_record(self, key: str, record: Sent | None) -> None:
        assert self.state is not None
        if record is None:
            self.state.forget(key)
        else:
            self.state.save(key, record)

    def _retry_records(self) -> None:
        """Write again what the store did not take after a send (else a restarted engine, or one
        taking the lease over, would send it a second time); every RECORD_RETRY_S at most."""
        with self._lock:
            if not self._unrecorded or time.monotonic() < self._retry_records_at:
                return
            pending = dict(self._unrecorded)
        try:
            for key, entry in pending.items():
                try:
                    self._write_record(key, entry[0])
                except StorageError as e:
                    log.warning("cannot record the notification state of %s yet: %s", key, e)
                    with self._lock:
                        self._retry_records_at = time.monotonic() + RECORD_RETRY_S
                    return
                with self._lock:
                    if self._unrecorded.get(key) is entry:
                        del self._unrecorded[key]
                        self._changes += 1
        finally:
            self.sync_file()

    # -- the file of records the store did not take ----------------------------------------------
    def attach_file(self, path: str) -> int:
        """Keep the records the store did not take in ``path`` too, and take those a previous run
        kept there (written to the store at the next tick). Returns how many were taken. A file that
        cannot be read is ignored (logged, and left for inspection until a record replaces it)."""
        self.path = path
        n = self._load_file()
        if n >= 0:  # read: the file says what is kept now (entries left out of it are gone from it)
            with self._lock:
                self._changes += 1
            self.sync_file()
        return max(n, 0)

    def sync_file(self) -> None:
        """Make the file hold the records kept now (none: no file). Errors are logged, never raised:
        the file only narrows what a restart during an outage would send again."""
        if not self.path:
            return
        with self._file_lock:
            self._sync_file()

    def _sync_file(self) -> None:
        with self._lock:
            if self._changes == self._synced:
                return
            changes = self._changes
            groups = {key: {"forget": sent is None, "firing": sorted(sent.notified_firing) if sent else [],
                            "last_sent_ns": sent.last_sent_ns if sent else 0, "at_ns": at_ns}
                      for key, (sent, at_ns) in self._unrecorded.items()}
        try:
            statefile.put(self.path, {"format": _FORMAT, "groups": groups} if groups else None, MAX_FILE_BYTES)
        except (OSError, ValueError) as e:
            log.error("notification records the store did not take: could not write %s: %s", self.path, e)
            try:  # an older file would be taken at a restart as newer than what was sent since
                statefile.remove(self.path)
            except OSError as gone:
                log.error("notification records the store did not take: could not remove %s: %s", self.path, gone)
            return
        with self._lock:
            self._synced = max(self._synced, changes)

    def _load_file(self) -> int:
        try:
            doc = statefile.read_json(self.path, MAX_FILE_BYTES)
            if doc is None:
                return 0
            if not isinstance(doc, dict) or doc.get("format") != _FORMAT or not isinstance(doc.get("groups"), dict):
                raise ValueError("not a file of notification records this version writes")
        except (OSError, ValueError) as e:
            log.error("notification records the store did not take: %s is unreadable and ignored: %s", self.path, e)
            return -1
        taken, bad = {}, 0
        for key, v in doc["groups"].items():
            try:
                taken[key] = _kept_from_file(key, v)
            except (TypeError, ValueError):
                bad += 1
        if bad:
            log.error("notification records the store did not take: %d entries of %s of the wrong shape ignored",
                      bad, self.path)
        with self._lock:
            for key, entry in list(taken.items())[:MAX_UNRECORDED]:
                self._unrecorded.setdefault(key, entry)  # anything recorded since the start is newer
            self._retry_records_at = 0.0
        if taken:
            log.warning("%d notification records the store did not take before the restart are taken from %s",
                        len(taken), self.path)
        return len(taken)

    def muted(self, a: Alert, firing: list[dict[str, str]], silences: list[Silence], now_ns: int) -> str:
        if any(s.mutes(a.labels, now_ns) for s in silences):
            return "silenced"
        if inhibited(a.labels, firing, self.inhibit_rules):
            return "inhibited"
        return ""

    def tick(self, now_ns: int) -> int:
        """Flush the groups that are due; return the number of messages sent. Receivers are called
        without the dispatcher's lock, so neither the evaluation loop (``update``) nor the API
        (``status``) waits on a slow receiver; one thread sends at a time, and a tick that finds
        another sending returns at once (that one flushes what is due)."""
        if not self._sending.acquire(blocking=False):
            return 0
        try:
            self._retry_records()
            with self._lock:
                silences = self.silences()
                firing = [a.labels for g in self.groups.values() for a in g.alerts.values() if a.state == "firing"]
                for g in self.groups.values():  # the clock stepped back: not an hour's silence
                    wait = int(max(g.route.group_wait, g.route.group_interval) * NS)
                    g.next_flush_ns = clockstep.due(g.next_flush_ns, now_ns, wait)
                    g.next_attempt_ns = clockstep.due(g.next_attempt_ns, now_ns, int(self.backoff_max_s * NS))
                    g.last_sent_ns = clockstep.not_after(g.last_sent_ns, now_ns)
                due = [g for g in self.groups.values() if g.next_flush_ns <= now_ns and g.next_attempt_ns <= now_ns]
            sent = 0
            for g in due:
                sent += self._flush(g, now_ns, firing, silences)
                with self._lock:
                    gone = not g.alerts and self.groups.get(g.key) is g
                    if gone:
                        self.groups.pop(g.key, None)
                if gone:
                    self._record(g, forget=True)
            return sent
        finally:
            self._sending.release()

    def _due(self, g: Group, now_ns: int, firing_labels: list[dict[str, str]], silences: list[Silence]):
        """Under the lock: the group's unmuted alerts, the firing ones, and ``to_send()``."""
        live = {fp: a for fp, a in g.alerts.items() if not self.muted(a, firing_labels, silences, now_ns)}
        firing = {fp for fp, a in live.items() if a.state == "firing"}

        def to_send() -> tuple[set[str], bool]:
            resolved = {fp for fp, a in g.alerts.items() if a.state == "resolved" and fp in g.notified_firing}
            repeat = bool(firing) and now_ns - g.last_sent_ns >= int(g.route.repeat_interval * NS)
            return resolved, bool(firing - g.notified_firing or resolved or repeat)

        return live, firing, to_send

    def _flush(self, g: Group, now_ns: int, firing_labels: list[dict[str, str]], silences: list[Silence]) -> int:
        rec = None
        if self.state is not None:  # read again just before a send, without the lock (ticks are one at a time)
            with self._lock:
                due = self._due(g, now_ns, firing_labels, silences)[2]()[1]
            if due:
                rec = self._load(g.key)
        with self._lock:
            live, firing, to_send = self._due(g, now_ns, firing_labels, silences)
            resolved, due = to_send()
            if due and self._adopt(g, rec):  # another engine process, or this one before a restart, sent since
                resolved, due = to_send()
            if not due:
                self._done(g, now_ns, firing, sent=False)
                return 0
            msg = self.message(g, [live[fp] for fp in sorted(firing)] + [g.alerts[fp] for fp in sorted(resolved)])
            content = (frozenset(firing), frozenset(resolved))
            if g.delivered_for != content:  # not the message some notifiers already have: to all of them
                g.delivered, g.delivered_for = set(), content
            skip = set(g.delivered)
        failures = self._send(g.receiver, msg, skip)
        with self._lock:
            g.delivered |= set(range(len(self.receivers.get(g.receiver, [])))) - set(failures)
            retry = {i: e for i, e in failures.items() if e.retryable}
            if failures:
                g.last_error = "; ".join(self._describe(g.receiver, i, e) for i, e in sorted(failures.items()))
            if retry:
                g.attempts += 1
                delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (g.attempts - 1))
                delay = delay * (0.5 + 0.5 * self.rng.random())
                asked = max((e.retry_after or 0.0) for e in retry.values())
                if asked:  # the receiver said when (Slack's and others' 429 Retry-After)
                    delay = max(delay, min(self.backoff_max_s, asked))
                g.next_attempt_ns = now_ns + int(delay * NS)
                g.delivered |= set(failures) - set(retry)  # refused for good: not sent again
                log.warning("notification to %s failed (attempt %d, next in %.1fs): %s", g.receiver,
                            g.attempts, (g.next_attempt_ns - now_ns) / NS, g.last_error)
                return 0
            g.delivered, g.delivered_for = set(), (frozenset(), frozenset())
            record = self._done(g, now_ns, firing, sent=True)
            if failures:
                log.error("notification to %s refused, not retried: %s", g.receiver, g.last_error)
            else:
                g.last_error = ""
        self._record(g, sent=record)  # outside the lock: a hung store holds neither status nor update
        return 0 if failures else 1

    def _send(self, receiver: str, msg: dict[str, Any], skip: set[int]) -> dict[int, NotifyError]:
        """Every notifier of ``receiver`` but those in ``skip``, each on its own: one that fails (a
        Slack outage) neither stops the others (the email) nor, once they have the message, makes
        them get it again at its retries, as Alertmanager's integrations are independent. Returns
        the failures by the notifier's position."""
        failures: dict[int, NotifyError] = {}
        for i, n in enumerate(self.receivers.get(receiver, [])):
            if i in skip:
                continue
            try:
                n.notify(msg)
            except NotifyError as e:
                self._count("failed", receiver, n)
                failures[i] = e
                continue
            except Exception as e:  # a notifier's own failure (e.g. smtplib and a non-ASCII password):
                # this group's failed attempt, backed off like any other, never the end of the tick
                log.exception("notifier %s of %s failed", getattr(n, "integration", type(n).__name__), receiver)
                self._count("failed", receiver, n)
                # the type only: the text may quote what it failed on (a character of the password)
                failures[i] = NotifyError(f"{type(e).__name__} in the notifier (see the server log)")
                continue
            self._count("sent", receiver, n)
        return failures

    def _describe(self, receiver: str, i: int, e: NotifyError) -> str:
        notifiers = self.receivers.get(receiver, [])
        if len(notifiers) < 2:
            return str(e)
        return f"{getattr(notifiers[i], 'integration', type(notifiers[i]).__name__)} #{i + 1}: {e}"

    def _count(self, outcome: str, receiver: str, notifier: Notifier) -> None:
        if self.metrics is not None:
            self.metrics.notification(outcome, receiver, getattr(notifier, "integration", type(notifier).__name__))

    def _done(self, g: Group, now_ns: int, firing: set[str], sent: bool) -> Sent | None:
        """Under the lock. With ``sent``, what the caller records (``_record``) once it let the lock go."""
        record = None
        if sent:
            g.notified_firing, g.last_sent_ns = set(firing), now_ns
            record = Sent(set(firing), now_ns)
        g.attempts, g.next_attempt_ns = 0, 0
        g.next_flush_ns = now_ns + int(g.route.group_interval * NS)
        for fp in [fp for fp, a in g.alerts.items() if a.state == "resolved"]:
            if sent or fp not in g.notified_firing:
                g.alerts.pop(fp)
                g.notified_firing.discard(fp)
        return record

    def message(self, g: Group, alerts: list[Alert]) -> dict[str, Any]:
        """Alertmanager's webhook payload (version 4)."""
        items: list[dict[str, Any]] = []
        for a in alerts:
            items.append({
                "status": "firing" if a.state == "firing" else "resolved",
                "labels": dict(a.labels),
                "annotations": dict(a.annotations, **a.extra_annotations),
                "startsAt": rfc3339(a.fired_at_ns or a.active_at_ns),
                "endsAt": rfc3339(a.resolved_at_ns if a.state == "resolved" else 0),
                "generatorURL": f"{self.external_url.rstrip('/')}/alerts?{urlencode({'rule': a.rule_id})}"
                if self.external_url else "",
                "fingerprint": a.fingerprint,
                # NaN and ±inf have no JSON spelling (json.dumps writes NaN/Infinity, which strict
                # receivers refuse): null, like NaN always was; the annotations show +Inf
                "value": a.value if math.isfinite(a.value) else None,
            })

        def common(key: str) -> dict[str, str]:
            if not items:
                return {}
            first = items[0][key]
            return {k: v for k, v in first.items() if all(i[key].get(k) == v for i in items)}

        return {
            "version": "4", "groupKey": g.key, "truncatedAlerts": 0,
            "status": "firing" if any(i["status"] == "firing" for i in items) else "resolved",
            "receiver": g.receiver, "groupLabels": dict(g.labels), "commonLabels": common("labels"),
            "commonAnnotations": common("annotations"), "externalURL": self.external_url, "alerts": items,
        }

    def status(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"key": g.key, "receiver": g.receiver, "labels": g.labels, "alerts": sorted(g.alerts),
                     "last_sent_ns": g.last_sent_ns, "attempts": g.attempts, "last_error": g.last_error}
                    for g in self.groups.values()]
