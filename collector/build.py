"""Composition of the collector from settings: WAL, writer, app, metrics."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from tracehouse.storage import ConfigError, Store

from .app import CollectorApp
from .auth import TokenCheck
from .commands import CommandEndpoint
from .convert import Limits
from .dedup import RecentRequests
from .ingest import Ingest
from .metrics import Registry
from .parse_gate import ParseGate
from .ratelimit import RateLimiter
from .redact import Redactor
from .wal import Wal
from .writer import NATIVE_MIN_ITEMS, Writer

__all__ = ["Collector", "build_collector"]


@dataclass
class Collector:
    app: CollectorApp
    wal: Wal
    writer: Writer
    metrics: Registry
    #: what starts the writer once the store can be used, when it could not be at start (a
    #: ``tracehouse.store_wait.StoreWait``: ``waiting``, ``reason()``, ``then``, ``start()``/``stop()``)
    store_wait: Any = None

    @property
    def background(self) -> list[Any]:
        # Stopped in reverse order by the server: the writer drains first, then the WAL closes.
        return [self.wal, self.writer if self.store_wait is None else self.store_wait]


def native_decoder(settings: Any, store: Store, redactor: Redactor, limits: Limits | None) -> Any:
    """The native decoders (traces, logs) the settings ask for, or None (Python). ``auto`` takes
    them where the store is the embedded engine; ``native`` insists (an error where they cannot run)."""
    choice = getattr(settings, "decoder", "auto")
    if choice not in ("auto", "native", "python"):
        raise ConfigError(f"decoder must be auto, native or python, not {choice!r}")
    if choice == "python":
        return None
    from .native import NativeTraces, native_supported
    from .native_logs import NativeLogs

    if not native_supported(store):
        if choice == "native":
            raise ConfigError("TRACEHOUSE_DECODER=native needs embedded chDB storage (chdb://); with a ClickHouse "
                              "server, use auto or python")
        return None
    schemas = os.path.join(settings.resolved_buffer_dir, "schemas")
    lanes = int(getattr(settings, "ingest_lanes", 0) or 0) or None
    return [cls(store, redactor, limits or Limits(), schemas, lanes=lanes) for cls in (NativeTraces, NativeLogs)]


def create_collector(settings: Any, store: Store, *, segment_bytes: int = 64 << 20, max_batch_items: int = 15_000,
                     max_batch_age: float = 1.0, grace: float = 10.0, limits: Limits | None = None,
                     retry_delay: float = 0.2, store_wait: Any = None) -> Collector:
    metrics = Registry()
    wal = Wal(settings.resolved_buffer_dir, segment_bytes=segment_bytes)
    red = Redactor(settings.redact_keys)
    recent = RecentRequests(settings.resolved_buffer_dir, window_s=settings.dedup_window_seconds,
                            max_entries=settings.dedup_max_requests, source=wal.digests)
    wal.on_delete = recent.persist
    gate = ParseGate()  # the decode threads' and the writer's parsed requests, together
    writer = Writer(wal, store, metrics, red, limits, max_items=max_batch_items, max_age=max_batch_age,
                    grace=grace, native=native_decoder(settings, store, red, limits), retry_delay=retry_delay,
                    native_min_items=NATIVE_MIN_ITEMS if getattr(settings, "decoder", "auto") == "auto" else 0,
                    parse_gate=gate)
    metrics.gauge("tracehouse_collector_dead_letter_bytes", writer.dead.size)
    metrics.gauge("tracehouse_collector_buffer_bytes", wal.pending_bytes)
    metrics.gauge("tracehouse_collector_buffer_max_bytes", lambda: settings.buffer_max_bytes)
    metrics.gauge("tracehouse_collector_buffer_age_seconds", wal.oldest_age)
    metrics.gauge("tracehouse_collector_wal_fsyncs_total", lambda: wal.fsyncs)
    metrics.gauge("tracehouse_collector_wal_records_total", lambda: wal.records)
    metrics.gauge("tracehouse_collector_store_waiting", lambda: float(store_wait is not None and store_wait.waiting))
    if store_wait is not None:
        store_wait.then.insert(0, writer)  # the writer starts once the store answers and is migrated

    def ready() -> tuple[bool, str]:
        """Whether the collector takes data: a store that cannot be reached is no reason to refuse
        it (the buffer holds it until the store is back), so a collector waiting for its store
        stays ready, saying so, until the buffer is full. (A load balancer, or Kubernetes, that
        took every collector out while ClickHouse restarts would turn away what the buffers are
        for.) Its own faults (buffer closed or full, writer stopped or failing on an error of its
        own) make it not ready."""
        if wal.closed:
            return False, "buffer closed"
        if wal.pending_bytes() >= settings.buffer_max_bytes:
            return False, "buffer full"
        if store_wait is not None and store_wait.waiting:
            return True, f"ready, buffering: {store_wait.reason()}"
        if not writer.running:
            return False, "writer stopped"
        if writer.failing:
            return False, f"writer failing: {writer.failing}"
        if not store.ping():
            return True, "ready, buffering: store unreachable"
        return True, "ready"

    tokens = TokenCheck(settings.ingest_tokens, settings.ingest_token_header)
    core = Ingest(wal, metrics, tokens, RateLimiter(settings.rate_limit_per_service), settings.max_body_bytes,
                  settings.max_decompressed_bytes, settings.buffer_max_bytes, recent=recent,
                  max_concurrent=settings.max_concurrent_requests,
                  body_timeout=getattr(settings, "client_timeout_seconds", 60.0),
                  max_inflight_bytes=getattr(settings, "max_inflight_bytes", 256 << 20), parse_gate=gate)
    app = CollectorApp(core, ready=ready, commands=CommandEndpoint(store, tokens))
    metrics.gauge("tracehouse_collector_inflight_bytes", lambda: app.core.inflight_bytes)
    return Collector(app, wal, writer, metrics, store_wait)


def build_collector(settings: Any, store: Store, store_wait: Any = None) -> tuple[CollectorApp, list[Any]]:
    """The ASGI app and the background services (``start()``/``stop()``) for ``tracehouse serve``;
    with ``store_wait``, the writer starts once it has found the store usable."""
    c = create_collector(settings, store, store_wait=store_wait)
    return c.app, c.background
