"""Load from the official OpenTelemetry SDK exporter (OTLP/HTTP, with its own retries), in
threads that remember which spans each export call reported as delivered."""

from __future__ import annotations

import logging
import threading
import time

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind

SERVICES = ("front", "orders", "payments")


class _Keep(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list = []

    def on_end(self, span) -> None:
        self.spans.append(span)


def make_batches(n_batches: int, per_batch: int, seed: int = 0) -> list[list]:
    """Finished SDK spans in batches: traces of a server span calling a database and a service."""
    keep = _Keep()
    providers = {s: TracerProvider(resource=Resource.create({"service.name": s})) for s in SERVICES}
    for p in providers.values():
        p.add_span_processor(keep)
    out = []
    for b in range(n_batches):
        start = len(keep.spans)
        while len(keep.spans) - start < per_batch:
            svc = SERVICES[(seed + b + len(keep.spans)) % len(SERVICES)]
            tracer = providers[svc].get_tracer("load")
            with tracer.start_as_current_span(f"GET /r{seed % 5}", kind=SpanKind.SERVER,
                                              attributes={"http.route": f"/r{seed % 5}", "n": seed}):
                with tracer.start_as_current_span("SELECT t", kind=SpanKind.CLIENT,
                                                  attributes={"db.system": "postgresql", "db.name": "shop"}):
                    pass
                with tracer.start_as_current_span("call", kind=SpanKind.CLIENT,
                                                  attributes={"server.address": "pay", "server.port": 80}):
                    pass
        out.append(keep.spans[start:start + per_batch])
        del keep.spans[start + per_batch:]
    return out


class SdkLoad:
    """``threads`` exporters, each sending a fresh batch of ``per_batch`` spans every ``pause``
    seconds until stopped."""

    def __init__(self, url: str, per_batch: int = 150, threads: int = 3, pause: float = 0.05,
                 timeout: float = 40.0):
        self.url = url + "/v1/traces"
        self.per_batch = per_batch
        self.pause_s = pause
        self._made = 0
        self.lock = threading.Lock()
        self.acked: list[int] = []  # span ids an export call reported delivered: stored exactly once
        self.unknown: list[int] = []  # export calls that failed: stored at most once
        self.running = threading.Event()
        self.running.set()
        self._done = threading.Event()
        self._timeout = timeout
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.busy = 0
        logging.getLogger("opentelemetry.exporter.otlp.proto.http").setLevel(logging.CRITICAL)
        logging.getLogger("opentelemetry.exporter.otlp.common").setLevel(logging.CRITICAL)

    def start(self) -> SdkLoad:
        for t in self._threads:
            t.start()
        return self

    def _next(self):
        with self.lock:
            self._made += 1
            seed = self._made
        return make_batches(1, self.per_batch, seed)[0]

    def _run(self) -> None:
        exporter = OTLPSpanExporter(endpoint=self.url, timeout=self._timeout)
        try:
            while not self._done.is_set():
                self.running.wait(0.2)
                if not self.running.is_set():
                    continue
                batch = self._next()
                if batch is None:
                    return
                with self.lock:
                    self.busy += 1
                try:
                    ok = exporter.export(batch) == SpanExportResult.SUCCESS
                finally:
                    with self.lock:
                        self.busy -= 1
                ids = [s.context.span_id for s in batch]
                with self.lock:
                    (self.acked if ok else self.unknown).extend(ids)
                self._done.wait(self.pause_s)
        finally:
            exporter.shutdown()

    def pause(self, timeout: float = 60.0) -> None:
        """Stop taking new batches and wait for those in flight."""
        self.running.clear()
        deadline = time.monotonic() + timeout
        while self.busy and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not self.busy, "exports still in flight"

    def resume(self) -> None:
        self.running.set()

    def stop(self) -> None:
        self._done.set()
        self.running.set()
        for t in self._threads:
            t.join(60)
