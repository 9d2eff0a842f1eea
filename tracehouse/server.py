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

from .config import Settings

log = logging.getLogger("tracehouse.server")


class _Server:
    """A uvicorn server whose signals are handled by the composition, not by itself."""

    def __init__(self, app: Any, host: str, port: int, log_level: str = "warning"):
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):  # the composition owns SIGINT/SIGTERM
                yield

        self.server = Quiet(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                           access_log=False, lifespan="on", timeout_graceful_shutdown=10))

    async def serve(self) -> None:
        await self.server.serve()

    def stop(self) -> None:
        self.server.should_exit = True

    @property
    def started(self) -> bool:
        return self.server.started


def open_store(settings: Settings):
    from tracehouse.storage import Store

    Store.prefer_low_memory(settings.storage)
    store = Store.open(settings.storage)
    store.migrate(retention=settings.retention or None)
    store.release_startup_memory()
    return store


async def run(settings: Settings, roles: tuple[str, ...] = ("collector", "dashboard", "alerts"),
              on_started: Callable[[], Awaitable[None] | None] | None = None) -> None:
    """Run the given roles until SIGINT/SIGTERM."""
    store = open_store(settings)
    servers: list[_Server] = []
    background: list[Any] = []  # objects with start()/stop() run beside the servers
    try:
        if "collector" in roles:
            from tracehouse.collector import build_collector

            collector_app, collector_bg = build_collector(settings, store)
            servers.append(_Server(collector_app, settings.host, settings.otlp_port))
            background.extend(collector_bg)
        if "dashboard" in roles:
            from tracehouse.dashboard import create_app
            from tracehouse.dashboard.api_snapshots import snapshots_router

            dash = create_app(settings, store)
            dash.include_router(snapshots_router(lambda request: request.app.state.store,
                                                 getattr(dash.state, "require_editor", None)))
            from tracehouse.alerts import alerts_router, get_engine

            # answers 503 until the engine exists (alone, a dashboard has no engine in-process)
            dash.include_router(alerts_router(get_engine))
            dash.state.alert_engine_getter = get_engine
            servers.append(_Server(dash, settings.host, settings.http_port))
        if "alerts" in roles:
            from tracehouse.alerts import build_engine
            from tracehouse.storage.queries_snapshots import queue_request

            def snapshot_hook(service: str, kind: str, reason: str) -> str:
                return queue_request(store, service, kind, reason, requested_by="alert")

            background.extend(build_engine(settings, store, request_snapshot=snapshot_hook))
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

        def stop(*_: Any) -> None:
            for s in servers:
                s.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop)
        tasks = [asyncio.create_task(s.serve()) for s in servers]
        if on_started is not None:
            while not all(s.started for s in servers) and not any(t.done() for t in tasks):
                await asyncio.sleep(0.05)
            r = on_started()
            if asyncio.iscoroutine(r):
                await r
        await asyncio.gather(*tasks)
    finally:
        for b in reversed(background):
            try:
                b.stop()
            except Exception:
                log.exception("error stopping %s", b)
        store.close()
