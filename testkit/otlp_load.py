"""Realistic OTLP trace bodies and retrying senders, for load through real collectors.

Bodies carry whole traces (multi-service trees from ``spangen``, with resources, attributes and
error events); senders post them with the retry behaviour of an OTLP exporter: a 200 is final, a
429/503 with Retry-After or any other failure is retried until it succeeds. A body whose attempt
ended without an answer (connection lost, a 502/504 or a proxy's bare 503) may have been stored
by the collector that died: those bodies are remembered, since a retry of one is the only way a
span may legitimately arrive twice.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from dataclasses import dataclass, field

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from testkit.spangen import Gen, generate
from tracehouse.storage.attrs import decode_map


def kv(key: str, value) -> KeyValue:
    v = AnyValue()
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        v.int_value = value
    elif isinstance(value, float):
        v.double_value = value
    elif isinstance(value, bytes):
        v.bytes_value = value
    elif isinstance(value, list):
        v.array_value.values.extend(kv("", x).value for x in value)
    elif isinstance(value, dict):
        v.kvlist_value.values.extend(kv(k, x) for k, x in value.items())
    else:
        v.string_value = value
    return KeyValue(key=key, value=v)



@dataclass
class Body:
    data: bytes
    span_ids: list[bytes]
    trace_ids: set[bytes]


@dataclass
class Workload:
    bodies: list[Body]
    spans_per_trace: dict[bytes, int]

    @property
    def span_count(self) -> int:
        return sum(self.spans_per_trace.values())


def workload(n_spans: int, start_ns: int, spread_ns: int, spans_per_body: int = 400, seed: int = 7) -> Workload:
    """About ``n_spans`` spans in whole traces, packed into OTLP protobuf bodies."""
    cols, _ = generate(n_spans, start_ns, spread_ns, Gen(rng=random.Random(seed)))
    n = len(cols["span_id"])
    by_trace: dict[bytes, list[int]] = {}
    for i in range(n):
        by_trace.setdefault(cols["trace_id"][i], []).append(i)
    bodies: list[Body] = []
    pending: list[int] = []
    for rows in by_trace.values():
        pending.extend(rows)
        if len(pending) >= spans_per_body:
            bodies.append(_body(cols, pending))
            pending = []
    if pending:
        bodies.append(_body(cols, pending))
    return Workload(bodies, {t: len(r) for t, r in by_trace.items()})


def _body(cols: dict, rows: list[int]) -> Body:
    req = ExportTraceServiceRequest()
    by_service: dict[str, list[int]] = {}
    for i in rows:
        by_service.setdefault(cols["service"][i], []).append(i)
    for idx in by_service.values():
        rs = req.resource_spans.add()
        first = idx[0]
        rs.resource.attributes.extend(kv(k, v) for k, v in zip(cols["resource_keys"][first], cols["resource_values"][first]))
        ss = rs.scope_spans.add()
        ss.scope.name, ss.scope.version = cols["scope_name"][first], cols["scope_version"][first]
        for i in idx:
            s = ss.spans.add()
            s.trace_id, s.span_id = cols["trace_id"][i], cols["span_id"][i]
            if cols["parent_span_id"][i] != b"\x00" * 8:
                s.parent_span_id = cols["parent_span_id"][i]
            s.name, s.kind = cols["name"][i], cols["kind"][i]
            s.start_time_unix_nano = cols["start_ns"][i]
            s.end_time_unix_nano = cols["start_ns"][i] + cols["duration_ns"][i]
            attrs = decode_map(list(cols["attr_keys"][i]), list(cols["attr_values"][i]), list(cols["attr_types"][i]))
            s.attributes.extend(kv(k, v) for k, v in attrs.items())
            if cols["status_code"][i]:
                s.status.code = cols["status_code"][i]
                s.status.message = cols["status_message"][i]
            for t, name in zip(cols["events_time_ns"][i], cols["events_name"][i]):
                e = s.events.add()
                e.time_unix_nano, e.name = t, name
                e.attributes.extend([kv("exception.type", "TimeoutError"), kv("exception.message", "timed out")])
    return Body(req.SerializeToString(), [cols["span_id"][i] for i in rows], {cols["trace_id"][i] for i in rows})


@dataclass
class Senders:
    """``threads`` senders posting ``bodies`` to ``url`` until each is acknowledged."""

    url: str
    bodies: list[Body]
    threads: int = 2
    retry_pause: float = 0.2  # shorter than Retry-After, to keep tests quick
    acked: list[Body] = field(default_factory=list)
    uncertain: list[Body] = field(default_factory=list)  # an attempt ended without an answer
    statuses: dict[int, int] = field(default_factory=dict)
    retry_after_missing: int = 0  # a collector's 429/503 without Retry-After (a bug)

    def __post_init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        for b in self.bodies:
            self._queue.put(b)
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._run, daemon=True, name=f"sender-{i}")
                         for i in range(self.threads)]
        self.started = self.finished = 0.0

    def start(self) -> Senders:
        self.started = time.monotonic()
        for w in self._workers:
            w.start()
        return self

    @property
    def acked_spans(self) -> int:
        with self._lock:
            return sum(len(b.span_ids) for b in self.acked)

    def wait_acked_spans(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.acked_spans < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.acked_spans} spans acknowledged of {n}; statuses {self.statuses}")
            time.sleep(0.05)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for w in self._workers:
            w.join(max(0.1, deadline - time.monotonic()))
        assert not any(w.is_alive() for w in self._workers), (
            f"senders still busy after {timeout}s: {len(self.acked)} of {len(self.bodies)} bodies acknowledged; "
            f"statuses {self.statuses}")
        self.finished = time.monotonic()

    def _count(self, code: int) -> None:
        with self._lock:
            self.statuses[code] = self.statuses.get(code, 0) + 1

    def _run(self) -> None:
        headers = {"content-type": "application/x-protobuf"}
        with httpx.Client(timeout=httpx.Timeout(30.0, connect=3.0)) as client:
            while True:
                try:
                    body = self._queue.get_nowait()
                except queue.Empty:
                    return
                uncertain = False
                while True:
                    try:
                        r = client.post(self.url + "/v1/traces", content=body.data, headers=headers)
                    except httpx.HTTPError:
                        self._count(0)
                        uncertain = True
                        time.sleep(self.retry_pause)
                        continue
                    self._count(r.status_code)
                    if r.status_code == 200:
                        break
                    if r.status_code in (429, 503) and "retry-after" in r.headers:
                        time.sleep(self.retry_pause)
                        continue
                    if r.status_code in (429, 503) and r.headers.get("content-type", "").startswith(
                            "application/x-protobuf"):
                        with self._lock:
                            self.retry_after_missing += 1
                    if r.status_code in (502, 503, 504):  # from the proxy: the collector may have it
                        uncertain = True
                        time.sleep(self.retry_pause)
                        continue
                    raise AssertionError(f"unexpected {r.status_code}: {r.content[:300]!r}")
                with self._lock:
                    self.acked.append(body)
                    if uncertain:
                        self.uncertain.append(body)
