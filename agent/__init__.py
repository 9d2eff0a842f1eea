"""tracehouse agent: traces, RED metrics, resource metrics, logs and dependency probes over OTLP.

Start it from code with :func:`start`, or without touching the code with
``tracehouse-agent run -- python app.py``. Importing this package does no work: the SDK, the
exporters and the instrumentations load when :func:`start` runs.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["AgentHandle", "__version__", "shutdown", "start", "stats"]


class AgentHandle:
    """What :func:`start` returns: ``shutdown()``, ``force_flush()`` and the live configuration."""

    def __init__(self, agent):
        self._agent = agent

    @property
    def config(self):
        return self._agent.config

    @property
    def resource(self):
        return self._agent.resource

    @property
    def instrumentation(self):
        return self._agent.instrumentation

    def force_flush(self, timeout: float = 5.0) -> bool:
        return self._agent.force_flush(timeout)

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Flush and stop; returns within ``timeout`` seconds whatever the collector does."""
        return self._agent.shutdown(timeout)


def start(service: str | None = None, endpoint: str | None = None, **options) -> AgentHandle:
    """Start the agent once per process (later calls return the same handle).

    ``service`` and ``endpoint`` win over ``OTEL_SERVICE_NAME``/``OTEL_EXPORTER_OTLP_ENDPOINT``
    and the ``TRACEHOUSE_*`` variables; other keyword options are the fields of
    :class:`tracehouse.agent.config.AgentConfig` (``sample_ratio``, ``metrics_interval``,
    ``probes``, ``log_level`` …). A bad argument raises ``ValueError``; nothing else does.
    Under ``OTEL_SDK_DISABLED=true`` nothing starts and nothing is checked: the handle's
    ``config``, ``resource`` and ``instrumentation`` are None.
    """
    from tracehouse.agent import environment

    if environment.get_otel_bool(environment.OTEL_SDK_DISABLED):
        # the SDK is not even imported (resolving the configuration would: its sampler), which
        # under ``tracehouse-agent run`` was 0.3 s of every process's start; nothing runs
        return AgentHandle(_Disabled())
    from tracehouse.agent import config, pipeline

    exporters = {k: options.pop(k) for k in ("span_exporter", "metric_exporter", "log_exporter",
                                             "set_global", "entry_points") if k in options}
    cfg = config.resolve(service, endpoint, **options)
    return AgentHandle(pipeline.start(cfg, **exporters))


class _Disabled:
    """The agent under ``OTEL_SDK_DISABLED=true``: no configuration, resource or instrumentation
    (all None), nothing to flush."""

    config = resource = instrumentation = None

    def force_flush(self, timeout: float = 5.0) -> bool:
        return True

    def shutdown(self, timeout: float = 5.0) -> bool:
        return True


def stats() -> dict[str, int]:
    """Counters: items exported, dropped (by reason), errors swallowed, instrumentations loaded."""
    from tracehouse.agent import counters

    return counters.snapshot()


def shutdown(timeout: float = 5.0) -> bool:
    """Stop the running agent, if any."""
    from tracehouse.agent import pipeline

    agent = pipeline.current()
    return agent.shutdown(timeout) if agent is not None else True
