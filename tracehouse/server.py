"""Composition of the tracehouse server: one process runs the collector (OTLP port), the dashboard
and JSON API (HTTP port) and the alert engine over one Store. Roles can also run alone."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from . import exposure
from .accept_errors import AcceptErrors
from .config import Settings
from .connection_cap import ConnectionCap, default_limit
from .fd_limit import raise_fd_limit
from .http_protocol import with_head_timeout

log = logging.getLogger("tracehouse.server")


class _Server:
    """A uvicorn server whose signals are handled by the composition, not by itself."""

    def __init__(self, app: Any, host: str, port: int, log_level: str = "warning", **options: Any):
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):  # the composition owns SIGINT/SIGTERM
                yield

        self.server = Quiet(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                           access_log=False, lifespan="on", timeout_graceful_shutdown=10,
                                           **options))

    async def serve(self) -> None:
        await self.server.serve()

    def stop(self) -> None:
        self.server.should_exit = True

    @property
    def started(self) -> bool:
        return self.server.started


def open_store(settings: Settings):
    store = _store(settings)
    try:
        prepare_store(store, settings)
    except BaseException:
        store.close()
        raise
    return store


def _store(settings: Settings):
    """The configured store with the settings' limits, not connected yet (see ``prepare_store``)."""
    from tracehouse.storage import Store
    from tracehouse.storage.limits import QueryLimits

    Store.prefer_low_memory(settings.storage)
    store = Store.open(settings.storage, connect=False)
    store.limits = QueryLimits.from_settings(settings)
    store.rules_url = settings.rules_storage
    return store


def prepare_store(store: Any, settings: Settings) -> None:
    """Connect, migrate and apply the configured retention (raises ``StorageUnavailable`` while the
    store cannot be reached)."""
    from tracehouse.storage import InvalidParameter, retention

    store.migrate(retention=settings.retention or None)
    try:  # TRACEHOUSE_RETENTION takes effect when it changes (not over a later change made in the UI)
        changed = retention.apply_configured(store, settings.retention)
        if changed:
            log.info("retention from the configuration applied: %s", changed)
    except InvalidParameter as e:
        log.error("ignoring the configured retention %r: %s", settings.retention, e)
    store.release_startup_memory()


def _open_or_wait(settings: Settings, roles: tuple[str, ...]) -> tuple[Any, Any]:
    """The store, prepared; or, for the collector alone when the store cannot be reached, the store
    and the ``StoreWait`` that prepares it later (the collector buffers meanwhile). Every other role
    needs the store to do anything, and stops with ``StorageUnavailable`` (the CLI's one line)."""
    from tracehouse.storage.errors import StorageUnavailable, one_line

    store = _store(settings)
    try:
        prepare_store(store, settings)
        return store, None
    except StorageUnavailable as e:
        if roles != ("collector",):
            store.close()
            raise
        from .store_wait import StoreWait

        where = store.url.redacted()
        log.warning("the store at %s cannot be reached (%s): the collector starts, buffers what it receives in %s "
                    "(up to %d bytes) and connects again with waits doubling up to 5 s", where, one_line(e),
                    settings.resolved_buffer_dir, settings.buffer_max_bytes)
        return store, StoreWait(lambda: prepare_store(store, settings), one_line(e), where)
    except BaseException:
        store.close()
        raise


def _observer(settings: Settings, registry: Any):
    """The self-observer sending to this process's own collector (``--self-observe``)."""
    from .self_observe import SelfObserver

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    headers = {}
    if settings.ingest_tokens:
        name = settings.ingest_token_header.lower()
        token = settings.ingest_tokens[0]
        headers[name] = f"Bearer {token}" if name == "authorization" else token
    return SelfObserver(f"http://{host}:{settings.otlp_port}", registry, headers,
                        interval_s=settings.self_observe_interval)


async def run(settings: Settings, roles: tuple[str, ...] = ("collector", "dashboard", "alerts"),
              on_started: Callable[[], Awaitable[None] | None] | None = None) -> None:
    """Run the given roles until SIGINT/SIGTERM. Raises :class:`~tracehouse.exposure.ExposureError`
    before anything starts when a role would listen openly on a non-loopback address. Every role's
    metrics go into one process registry (each port's ``/metrics`` writes it); the writing roles run
    the retention job."""
    from .ops import process_registry

    exposure.check(settings, roles)
    raise_fd_limit()  # connections and the engine's part files: up to what the system allows
    listen = exposure.uvicorn_options(settings)
    store, store_wait = _open_or_wait(settings, roles)
    registry = process_registry(roles)
    # every HTTP server: a request head must arrive within the client timeout (slowloris), and the
    # servers hold at most so many connections (after the store is open: the engine raises the limit)
    cap = ConnectionCap(connection_limit(settings, roles), registry)
    listen["http"] = with_head_timeout(settings.client_timeout_seconds, cap=cap)
    servers: list[_Server] = []
    background: list[Any] = []  # objects with start()/stop() run beside the servers
    observer = _observer(settings, registry) if settings.self_observe and "collector" in roles else None
    tracer = observer.tracer if observer is not None else None
    store.tracer = tracer
    try:
        if "collector" in roles:
            _add_collector(settings, store, registry, tracer, listen, servers, background, cap.limit, store_wait)
        # built before the dashboard, which is given the engine; started below
        engines = _alert_engines(settings, store, registry, tracer) if "alerts" in roles else []
        background.extend(engines)
        if "dashboard" in roles:
            servers.append(_dashboard(settings, store, engines, registry, tracer, listen))
        if observer is not None:
            background.append(observer)  # stopped first: nothing more to send once the servers stop
        for b in background:
            b.start()
        # Start-up touched more of the engine's library (schema checks, the first queries of the
        # dashboard and alerts): give those pages back again, as after opening the store.
        store.release_startup_memory()
        # Long-lived objects built so far (modules, schema, app) need no more collection passes:
        # fewer and shorter GC pauses under the dashboard's big query results.
        gc.collect()
        gc.freeze()
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(AcceptErrors(registry=registry))  # before any server accepts a connection

        def stop(*_: Any) -> None:
            for s in servers:
                s.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop)
        tasks = [asyncio.create_task(s.serve()) for s in servers]
        if on_started is not None:
            await _when_started(servers, tasks, on_started)
        await asyncio.gather(*tasks)
    finally:
        for b in reversed(background):
            try:
                b.stop()
            except Exception:
                log.exception("error stopping %s", b)
        store.close()


def connection_limit(settings: Settings, roles: tuple[str, ...]) -> int:
    """The connections the HTTP servers may hold, and the OTLP/gRPC port apart: the setting, or
    the default (``connection_cap.default_limit``) halved between the two when both listen."""
    if settings.max_connections:
        return settings.max_connections
    grpc = "collector" in roles and bool(settings.otlp_grpc_port)
    return max(1, default_limit() // (2 if grpc else 1))


def _add_collector(settings: Settings, store: Any, registry: Any, tracer: Any, listen: dict,
                   servers: list, background: list, max_connections: int, store_wait: Any = None) -> None:
    """The collector's servers (OTLP/HTTP, and OTLP/gRPC and Zipkin when their ports are set), its
    background work and the retention job (with ``store_wait``: the writer and the retention job
    start once the store can be used)."""
    from tracehouse.collector import build_collector, cors
    from tracehouse.storage.retention import RetentionJob

    collector_app, collector_bg = build_collector(settings, store, store_wait)
    collector_app.m.exposed = registry
    registry.register(collector_app.m.registry)
    servers.append(_Server(exposure.guard(cors.wrap(collector_app, settings), settings), settings.host,
                           settings.otlp_port, **listen))
    background.extend(collector_bg)
    job = RetentionJob(store, settings.retention_interval, registry=registry)
    job.tracer = tracer
    (background if store_wait is None else store_wait.then).append(job)
    if settings.otlp_grpc_port:
        from tracehouse.collector.grpc_receiver import GrpcReceiver

        servers.append(GrpcReceiver(collector_app.core, settings.host, settings.otlp_grpc_port,
                                    settings.max_decompressed_bytes, max_connections=max_connections))
    if settings.zipkin_port:
        from tracehouse.collector.zipkin_app import ZipkinApp

        servers.append(_Server(exposure.guard(cors.wrap(ZipkinApp(collector_app.core), settings), settings),
                               settings.host, settings.zipkin_port, **listen))


def _alert_engines(settings: Settings, store: Any, registry: Any, tracer: Any) -> list[Any]:
    from tracehouse.alerts import build_engine

    engines = build_engine(settings, store)
    for engine in engines:
        engine.tracer = tracer
        registry.register(engine.metrics.registry)
    return engines


def _dashboard(settings: Settings, store: Any, engines: list, registry: Any, tracer: Any, listen: dict) -> _Server:
    from tracehouse.alerts import alerts_router
    from tracehouse.dashboard import create_app, require_role

    engine = engines[0] if engines else None
    # without the engine in this process (a dashboard alone) the alerts API answers 503
    api = alerts_router(engine, require_role, previews_per_minute=settings.rule_previews_per_minute)
    dash = create_app(settings, store, alerts=engine, routers=[api],
                      ready_checks=[e.ready for e in engines], registry=registry, tracer=tracer)
    return _Server(exposure.guard(dash, settings), settings.host, settings.http_port, **listen)


async def _when_started(servers: list, tasks: list, on_started: Callable[[], Awaitable[None] | None]) -> None:
    """Call ``on_started`` once every server listens (or one of them ended: it failed to start)."""
    while not all(s.started for s in servers) and not any(t.done() for t in tasks):
        await asyncio.sleep(0.05)
    r = on_started()
    if asyncio.iscoroutine(r):
        await r
