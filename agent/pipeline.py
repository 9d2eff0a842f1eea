"""Build, run and stop the agent: providers, exporters, instrumentations, metrics, probes.

One agent per process. In a forked child (gunicorn/uWSGI workers) the after-fork hook gives the
process a new ``service.instance.id`` and ``process.pid``, drops inherited buffers, and restarts
the probe thread; the span batch processor, the SDK's log processor and metric reader restart their own threads, and
the guarded exporters build fresh HTTP sessions on first use in the child.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid

from tracehouse.agent import counters, errors
from tracehouse.agent.config import AgentConfig
from tracehouse.agent.forklocks import renew_in_child

_log = logging.getLogger("tracehouse.agent")


class _RateLimit(logging.Filter):
    """At most one record per logger and message every minute (the exporters' own lines)."""

    def __init__(self):
        super().__init__()
        self._seen: dict = {}

    def filter(self, record):
        key = (record.name, record.msg)
        now = time.monotonic()
        if now - self._seen.get(key, -1e9) < 60:
            return False
        self._seen[key] = now
        return True


_EXPORT_LOGGERS = ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                   "opentelemetry.exporter.otlp.proto.http.metric_exporter",
                   "opentelemetry.exporter.otlp.proto.http._log_exporter",
                   "opentelemetry.exporter.otlp.common.http",
                   "opentelemetry.sdk._shared_internal")


class Agent:
    """The running agent; :meth:`shutdown` stops it within a bounded time."""

    def __init__(self, config: AgentConfig, *, span_exporter=None, metric_exporter=None, log_exporter=None,
                 set_global: bool = True, entry_points=None):
        from opentelemetry.sdk.resources import Resource

        from tracehouse.agent import export, resource

        self.config = config
        self.resource = Resource(resource.attributes(config.service, config.resource_attributes))
        factories = export.otlp_factories(config.exports, resource=lambda: self.resource)
        self._closers: list = []
        self.tracer_provider = self.meter_provider = self.logger_provider = None
        self.instrumentation = None
        self.probes = None
        self.gc_timer = None
        self._log_handler = None
        self.snapshots = None
        self._pid = os.getpid()
        self._shut = False
        try:
            self._begin(factories, span_exporter, metric_exporter, log_exporter, set_global, entry_points)
        except BaseException:
            # what did start (threads, global providers, the log hook) must not outlive a failed start
            self.shutdown(1.0)
            raise

    def _begin(self, factories, span_exporter, metric_exporter, log_exporter, set_global, entry_points):
        from tracehouse.agent import export

        config = self.config
        for name in _EXPORT_LOGGERS:
            logging.getLogger(name).addFilter(_RateLimit())
        os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
        from tracehouse.agent import propagation

        try:
            propagation.install(config.propagators)
        except Exception as exc:
            errors.swallow("set propagators", exc)

        if config.traces:
            self._start_traces(span_exporter or export.GuardedSpanExporter(factories["spans"]), set_global)
        if config.metrics:
            from tracehouse.agent.otlp_exporters import metric_preferences

            self._start_metrics(metric_exporter or export.GuardedMetricExporter(
                factories["metrics"], *metric_preferences()), set_global)
        if config.logs and (config.log_level is not None or config.snapshots):
            self._start_logs(log_exporter or export.GuardedLogExporter(factories["logs"]), set_global)
        from tracehouse.agent import http_server

        http_server.configure(http_server.Instruments(self.tracer_provider, self.meter_provider,
                                                      config.exemplar_filter))
        if config.instrument:
            from tracehouse.agent import instrument

            self.instrumentation = instrument.load_all(self.tracer_provider, self.meter_provider,
                                                       config.disabled_instrumentations, entry_points)
        if config.snapshots and self.logger_provider is not None:
            try:
                self._start_snapshots()
            except Exception as exc:
                errors.swallow("start snapshots", exc)

    # -- signals -------------------------------------------------------------------------------
    def _start_traces(self, exporter, set_global):
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        from tracehouse.agent import export
        from tracehouse.agent.batching import LeanBatchSpanProcessor
        from tracehouse.agent.sampling import ErrorKeepingProcessor, keeps_errors, make_sampler

        cfg = self.config
        tp = TracerProvider(resource=self.resource, sampler=make_sampler(cfg.sample_ratio, cfg.sampler),
                            shutdown_on_exit=False)
        # Batches of 512 as before: 1024-2048-span batches measured slightly worse at p50 (longer GIL bursts).
        encoder = None
        if isinstance(exporter, export.GuardedSpanExporter):  # the agent's own OTLP exporter
            from tracehouse.agent.otlp_exporters import span_encoder

            encoder = span_encoder()
        batch = LeanBatchSpanProcessor(exporter, max_queue_size=self.config.queue_size,
                                       max_export_batch_size=self.config.batch_size, encoder=encoder)
        self.error_keeper = None
        if keeps_errors(cfg.sampler, cfg.sample_ratio):
            self.error_keeper = ErrorKeepingProcessor(batch)
            tp.add_span_processor(self.error_keeper)
        else:
            tp.add_span_processor(batch)
        self.span_processor = batch
        self.tracer_provider = tp
        if set_global:
            trace.set_tracer_provider(tp)

    def _start_metrics(self, exporter, set_global):
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        from tracehouse.agent import metrics_cgroup, metrics_host, metrics_process, pools, probes

        # OTEL_METRIC_EXPORT_TIMEOUT bounds a collection and its export (the exporter's own timeout is within it)
        bound = getattr(self.config.exports.get("metrics"), "processor_timeout", None)
        reader = PeriodicExportingMetricReader(
            exporter, export_interval_millis=self.config.metrics_interval * 1000,
            export_timeout_millis=(self.config.export_timeout if bound is None else bound) * 1000)
        from tracehouse.agent import sdk_private

        sdk_private.guard_collection_against_fork(reader)  # a forked worker never inherits held SDK locks
        from opentelemetry.sdk.metrics import (
            AlwaysOffExemplarFilter,
            AlwaysOnExemplarFilter,
            TraceBasedExemplarFilter,
        )

        # The request-duration histogram keeps its exemplars itself (see .duration); this filter
        # applies to the other synchronous instruments (stock instrumentations' client metrics).
        exemplar_filter = {"always_on": AlwaysOnExemplarFilter, "always_off": AlwaysOffExemplarFilter}.get(
            self.config.exemplar_filter, TraceBasedExemplarFilter)()
        mp = MeterProvider(resource=self.resource, metric_readers=[reader], shutdown_on_exit=False,
                           exemplar_filter=exemplar_filter)
        self.metric_reader = reader
        self.meter_provider = mp
        meter = mp.get_meter("tracehouse.agent.resources")
        self.gc_timer = metrics_process.GcTimer().install()
        for register in (lambda: metrics_cgroup.register(meter, self.config.cgroup_root),
                         lambda: metrics_process.register(meter, self.gc_timer),
                         lambda: metrics_host.register(meter),
                         lambda: (pools.install(), pools.register(meter))):
            try:
                register()
            except Exception as exc:
                errors.swallow("register resource metrics", exc)
        if self.config.probes:
            self.probes = probes.ProbeRunner(self.config.probes, self.config.probe_interval,
                                             self.config.probe_timeout)
            self.probes.register(meter)
            self.probes.start()
        if set_global:
            metrics.set_meter_provider(mp)

    def _start_logs(self, exporter, set_global):
        from opentelemetry.sdk._logs import LoggerProvider

        from tracehouse.agent import environment as env
        from tracehouse.agent import logs, sdk_private

        lp = LoggerProvider(resource=self.resource, shutdown_on_exit=False)
        delay = env.get_float(env.OTEL_BLRP_SCHEDULE_DELAY, 1000.0, lo=1.0, hi=86_400_000.0)
        lp.add_log_record_processor(sdk_private.counting_log_processor()(
            exporter, max_queue_size=self.config.log_queue_size, max_export_batch_size=self.config.log_batch_size,
            export_timeout_millis=self.config.export_timeout * 1000,
            schedule_delay_millis=1000.0 if delay is None else delay))
        self.logger_provider = lp
        if set_global:
            from opentelemetry._logs import set_logger_provider

            set_logger_provider(lp)
        if self.config.log_level is not None:
            self._log_handler = logs.install(lp, self.config.log_level)

    def _start_snapshots(self):
        from tracehouse.agent.snapshots import Snapshots

        def identity():
            attrs = self.resource.attributes
            return str(attrs.get("service.name", self.config.service)), str(attrs.get("service.instance.id", ""))

        self.snapshots = Snapshots(self.config, self.logger_provider, identity).start()

    # -- lifecycle -----------------------------------------------------------------------------
    def after_fork(self) -> None:
        """Run in a forked child: new instance id, fresh buffers and threads."""
        from opentelemetry.sdk.resources import Resource

        errors.reset()
        counters.reset()
        changed = Resource({"service.instance.id": str(uuid.uuid4()), "process.pid": os.getpid(),
                            "process.parent_pid": os.getppid()})
        self.resource = self.resource.merge(changed)
        from tracehouse.agent import sdk_private

        for provider in (self.tracer_provider, self.logger_provider):
            if provider is not None:
                sdk_private.update_resource(provider, changed)
        if getattr(self, "error_keeper", None) is not None:
            self.error_keeper.after_fork()
        if self.probes is not None:
            self.probes.after_fork()
        if self.snapshots is not None:
            self.snapshots.after_fork()
        self._pid = os.getpid()

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Flush every signal at once; returns within ``timeout`` seconds (False if any is not done):
        the SDK's log and metric processors wait for an export in flight whatever timeout they get,
        and one after another the three took up to three times the export timeout."""
        return _bounded(lambda p, budget: bool(p.force_flush(int(budget * 1000))), self._providers(), timeout,
                        "force_flush")

    def _providers(self) -> list:
        return [p for p in (self.tracer_provider, self.meter_provider, self.logger_provider) if p is not None]

    def shutdown(self, timeout: float = 5.0, unload: bool = True) -> bool:
        """Stop everything; returns within ``timeout`` seconds even with a hung collector.

        ``unload=False`` (at exit) leaves the instrumented libraries as they are: the host's other
        threads and ``atexit`` handlers still run with them, and some cannot be undone cleanly (the
        stock ``logging`` one leaves its trace-context log format on the root logger, and every
        record made without its fields afterwards failed to format, a traceback on stderr)."""
        if self._shut:
            return True
        self._shut = True
        if self.probes is not None:
            self.probes.stop(0.2)
        if self.snapshots is not None:
            self.snapshots.stop(0.2)
        if self._log_handler is not None:
            from tracehouse.agent import logs

            logs.uninstall(self._log_handler)
        if self.gc_timer is not None:
            self.gc_timer.uninstall()
        from tracehouse.agent import http_server

        http_server.configure(None)
        if self.instrumentation is not None:
            from tracehouse.agent import instrument

            if unload:
                instrument.unload(self.instrumentation)
            else:
                instrument.stop_waiting(self.instrumentation)
        done = _bounded(_shutdown_provider, self._providers(), max(0.1, timeout - 0.1), "shutdown")
        if not done:
            counters.add("shutdown.timed_out")
        return done


_running_lock = threading.Lock()
_running: dict[tuple[str, int], threading.Thread] = {}  # (what, id(provider)) -> its last thread


def _bounded(call, providers: list, budget: float, what: str) -> bool:
    """``call(provider, budget)`` for every provider, each on a thread of its own, waiting for them
    all until ``budget`` seconds have passed; True when all returned True in time. A thread that
    cannot be started (the host's thread limit) counts as not done, without a traceback.

    A provider whose last ``what`` is still running (the SDK's log and metric processors wait for
    an export in flight, whatever their timeout) gets no second thread: the call waits for that
    one and counts as not done. A host flushing at every request while the collector hung left two
    threads per call waiting (100 flushes: 207 threads)."""
    results: list[bool] = []
    threads = []
    pending = 0
    for p in providers:
        key = (what, id(p))
        with _running_lock:
            previous = _running.get(key)
        if previous is not None and previous.is_alive():
            threads.append(previous)
            pending += 1
            continue

        def run(p=p) -> None:
            try:
                results.append(call(p, budget) is not False)
            except Exception as exc:
                errors.swallow(what, exc)
                results.append(False)

        t = threading.Thread(target=run, daemon=True, name=f"tracehouse-{what}")
        try:
            t.start()
        except RuntimeError as exc:  # can't start new thread
            errors.swallow(what, exc)
            continue
        with _running_lock:
            _running[key] = t
        threads.append(t)
    deadline = time.monotonic() + budget
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return not pending and len(threads) == len(providers) and not any(t.is_alive() for t in threads) \
        and all(results)


def _shutdown_provider(provider, budget: float) -> bool:
    try:
        provider.shutdown(timeout_millis=budget * 1000)
    except TypeError:
        provider.shutdown()
    return True


renew_in_child(globals(), "_running_lock", then=_running.clear)  # the parent's threads are not the child's

_lock = threading.Lock()
_agent: Agent | None = None
_fork_hook_registered = False


def start(config: AgentConfig, **kwargs) -> Agent:
    global _agent, _fork_hook_registered
    with _lock:
        if _agent is not None and not _agent._shut:
            return _agent
        _check_uwsgi()
        _agent = Agent(config, **kwargs)
        if not _fork_hook_registered and hasattr(os, "register_at_fork"):
            from tracehouse.agent import mp_children

            os.register_at_fork(after_in_child=_after_fork)
            atexit.register(_at_exit)
            mp_children.install(_at_exit)  # forked multiprocessing children skip atexit
            _fork_hook_registered = True
        return _agent


def _check_uwsgi() -> None:
    """Say clearly when uWSGI workers forked from this process would share its identity."""
    try:
        import uwsgi  # only importable inside a uWSGI process
    except ImportError:
        return
    opt = getattr(uwsgi, "opt", {}) or {}

    def on(name: str) -> bool:
        v = opt.get(name)
        return v not in (None, False, b"0", b"false", "0", "false")

    if getattr(uwsgi, "worker_id", lambda: 0)() == 0 and not (on("lazy-apps") or on("lazy")) and \
            not on("py-call-osafterfork") and not on("py-call-uwsgi-fork-hooks"):
        _log.warning("tracehouse: the agent started in the uWSGI master and uWSGI will fork the workers without "
                     "running Python's after-fork hooks, so the workers would share one instance id and have no "
                     "export threads (their telemetry would not be sent). Start uWSGI with --py-call-osafterfork (what "
                     "tracehouse-agent run sets) or --lazy-apps.")
        counters.add("uwsgi.unsupported_fork")


def current() -> Agent | None:
    return _agent


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()
    agent = _agent
    if agent is not None and not agent._shut:
        try:
            agent.after_fork()
        except Exception as exc:
            errors.swallow("after fork", exc)


def _at_exit() -> None:
    agent = _agent
    if agent is not None and not agent._shut:
        agent.shutdown(timeout=5.0, unload=False)
