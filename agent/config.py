"""Agent settings: argument, then ``OTEL_*``, then ``TRACEHOUSE_*``, then default."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tracehouse.agent import environment as env
from tracehouse.agent.config_otlp import SignalExport, resolve_exports

DEFAULT_ENDPOINT = "http://127.0.0.1:4318"
DAY_S = 86400.0  # the longest interval taken: past TIMEOUT_MAX a thread's Event.wait raises OverflowError
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}


@dataclass(frozen=True)
class AgentConfig:
    service: str
    endpoint: str = DEFAULT_ENDPOINT
    headers: dict[str, str] = field(default_factory=dict)
    resource_attributes: dict[str, str] = field(default_factory=dict)
    sample_ratio: float = 1.0
    sampler: str = "parentbased_always_on"
    propagators: tuple[str, ...] = ("tracecontext", "baggage")
    exemplar_filter: str = "trace_based"
    exports: dict[str, SignalExport] = field(default_factory=dict)
    metrics_interval: float = 15.0
    export_timeout: float = 3.0
    queue_size: int = 2048
    #: spans / log records per export, and the log records' queue (``OTEL_BSP_*``, ``OTEL_BLRP_*``)
    batch_size: int = 512
    log_queue_size: int = 2048
    log_batch_size: int = 512
    log_level: int | None = logging.WARNING
    probes: tuple[str, ...] = ()
    probe_interval: float = 15.0
    probe_timeout: float = 2.0
    cgroup_root: str = "/sys/fs/cgroup"
    disabled_instrumentations: frozenset[str] = frozenset()
    traces: bool = True
    metrics: bool = True
    logs: bool = True
    instrument: bool = True
    snapshots: bool = True
    snapshot_slow_ms: float = 5000.0
    snapshot_memory_mb: float | None = None
    snapshot_locals: bool = False
    snapshot_memory_window_s: float = 2.0
    snapshot_max_bytes: int = 262144
    command_poll_s: float = 5.0


def _count(*names: str, default: int) -> int:
    """The first of ``names`` set to a count (1 to a million), else ``default``; a bad one is logged."""
    for name in names:
        value = env.get_float(name, float(default), lo=1, hi=1e6)
        if value is not None:
            return int(value)
    return default


def _queues() -> dict[str, int]:
    """Queue and batch sizes: ``OTEL_BSP_*`` (spans) and ``OTEL_BLRP_*`` (log records) first, then
    ``TRACEHOUSE_QUEUE_SIZE`` for both queues; a batch is at most its queue."""
    spans = _count(env.OTEL_BSP_MAX_QUEUE_SIZE, env.TRACEHOUSE_QUEUE_SIZE, default=2048)
    logs = _count(env.OTEL_BLRP_MAX_QUEUE_SIZE, env.TRACEHOUSE_QUEUE_SIZE, default=2048)
    return {"queue_size": spans, "batch_size": min(spans, _count(env.OTEL_BSP_MAX_EXPORT_BATCH_SIZE, default=512)),
            "log_queue_size": logs,
            "log_batch_size": min(logs, _count(env.OTEL_BLRP_MAX_EXPORT_BATCH_SIZE, default=512))}


def export_headers() -> dict[str, str]:
    """The headers every export sends: ``OTEL_EXPORTER_OTLP_HEADERS``, plus ``TRACEHOUSE_TOKEN``
    as a bearer token unless those headers carry an authorization already."""
    headers = env.get_pairs(env.OTEL_EXPORTER_OTLP_HEADERS, headers=True)
    token = env.get_str(env.TRACEHOUSE_TOKEN)
    if token and not env.sendable(token):  # http.client would raise at every export: nothing sent
        logging.getLogger("tracehouse.agent").warning(
            "tracehouse: ignoring %s (a line break, a control character or a character past latin-1, which HTTP "
            "cannot send); exporting without it", env.TRACEHOUSE_TOKEN)
        token = None
    if token and not any(k.lower() == "authorization" for k in headers):
        headers["authorization"] = f"Bearer {token}"
    return headers


def _check_endpoint(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"endpoint must be an http(s) URL, got {url!r}")
    return url.rstrip("/")


def _log_level(raw: str | None) -> int | None:
    if raw is None:
        return logging.WARNING
    if raw.lower() in ("off", "none", "disabled"):
        return None
    if raw.isascii() and raw.isdigit():  # "²".isdigit() is true, and int() refuses it
        return int(raw)
    if raw.lower() in _LEVELS:
        return _LEVELS[raw.lower()]
    logging.getLogger("tracehouse.agent").warning(
        "tracehouse: ignoring %s=%r; using WARNING", env.TRACEHOUSE_LOG_LEVEL, raw)
    return logging.WARNING


def _default(value, fallback):
    return fallback if value is None else value


def resolve(service: str | None = None, endpoint: str | None = None, *, sample_ratio: float | None = None,
            metrics_interval: float | None = None, probes: list[str] | None = None,
            log_level: int | str | None = None, **overrides) -> AgentConfig:
    """Build the configuration. Bad arguments raise ``ValueError``; bad env values fall back."""
    env.drop_invalid_sdk_limits()  # before anything imports the SDK, which raises on them
    base: str | None = None
    base_is_argument = endpoint is not None
    if endpoint is not None:
        endpoint = base = _check_endpoint(endpoint)
    else:
        raw = env.get_str(env.OTEL_EXPORTER_OTLP_ENDPOINT, env.TRACEHOUSE_ENDPOINT)
        try:
            endpoint = base = _check_endpoint(raw) if raw else None
        except ValueError:
            logging.getLogger("tracehouse.agent").warning(
                "tracehouse: ignoring endpoint %r; using %s", raw, DEFAULT_ENDPOINT)
        endpoint = endpoint or DEFAULT_ENDPOINT
    if sample_ratio is not None and not 0.0 <= sample_ratio <= 1.0:
        raise ValueError("sample_ratio must be within 0..1")
    if metrics_interval is not None and metrics_interval <= 0:
        raise ValueError("metrics_interval must be > 0")

    headers = export_headers()

    attrs = {}
    if v := env.get_str(env.TRACEHOUSE_ENVIRONMENT):
        attrs["deployment.environment"] = v
    if v := env.get_str(env.TRACEHOUSE_SERVICE_VERSION):
        attrs["service.version"] = v
    attrs.update(env.get_pairs(env.OTEL_RESOURCE_ATTRIBUTES, for_sdk=True))
    # the OTEL_* ones first: service.name in OTEL_RESOURCE_ATTRIBUTES lost to TRACEHOUSE_SERVICE
    service = (service or env.get_str(env.OTEL_SERVICE_NAME) or attrs.get("service.name")
               or env.get_str(env.TRACEHOUSE_SERVICE) or _program_name())

    from tracehouse.agent.sampling import resolve_sampler

    sampler, ratio = resolve_sampler(sample_ratio)

    interval = metrics_interval
    if interval is None:
        interval = env.get_float(env.OTEL_METRIC_EXPORT_INTERVAL, 15.0, lo=0.001, hi=DAY_S, scale=0.001)
    if interval is None:
        interval = _default(env.get_float(env.TRACEHOUSE_METRICS_INTERVAL, 15.0, lo=0.05, hi=DAY_S), 15.0)

    if isinstance(log_level, str):
        level = _log_level(log_level)
    elif log_level is not None:
        level = log_level
    else:
        level = _log_level(env.get_str(env.TRACEHOUSE_LOG_LEVEL))

    timeout = _default(env.get_float(env.TRACEHOUSE_EXPORT_TIMEOUT, 3.0, lo=0.05, hi=60), 3.0)
    cfg = dict(
        service=service, endpoint=endpoint, headers=headers, resource_attributes=attrs,
        sample_ratio=ratio, sampler=sampler, metrics_interval=interval,
        export_timeout=timeout,
        exports=resolve_exports(base, base_is_argument, headers, timeout),
        propagators=_propagators(), exemplar_filter=_exemplar_filter(),
        **_queues(),
        log_level=level,
        probes=tuple(probes if probes is not None else env.get_list(env.TRACEHOUSE_PROBES)),
        probe_interval=_default(env.get_float(env.TRACEHOUSE_PROBE_INTERVAL, 15.0, lo=0.05, hi=DAY_S), 15.0),
        probe_timeout=_default(env.get_float(env.TRACEHOUSE_PROBE_TIMEOUT, 2.0, lo=0.01, hi=60), 2.0),
        cgroup_root=env.get_str(env.TRACEHOUSE_CGROUP_ROOT, default="/sys/fs/cgroup"),
        disabled_instrumentations=frozenset(
            env.get_list(env.OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, env.TRACEHOUSE_DISABLED_INSTRUMENTATIONS)),
        **_snapshot_settings(),
    )
    cfg.update(overrides)
    return AgentConfig(**cfg)


def _propagators() -> tuple[str, ...]:
    from tracehouse.agent.propagation import resolve_names

    return resolve_names(os.environ.get(env.OTEL_PROPAGATORS))


def _exemplar_filter() -> str:
    raw = (env.get_str(env.OTEL_METRICS_EXEMPLAR_FILTER) or "trace_based").lower()
    if raw in ("trace_based", "always_on", "always_off"):
        return raw
    env.warn_once(f"exemplar filter {raw}", f"tracehouse: {env.OTEL_METRICS_EXEMPLAR_FILTER}={raw!r} is not "
                  "supported (trace_based, always_on, always_off); using trace_based")
    return "trace_based"


def _snapshot_settings() -> dict:
    switch = (env.get_str(env.TRACEHOUSE_SNAPSHOTS) or "on").lower()
    return dict(
        snapshots=switch not in ("0", "false", "no", "off"),
        snapshot_slow_ms=_default(env.get_float(env.TRACEHOUSE_SNAPSHOT_SLOW_MS, 5000.0, lo=0, hi=DAY_S * 1000), 5000.0),
        snapshot_memory_mb=env.get_float(env.TRACEHOUSE_SNAPSHOT_MEMORY_MB, None, lo=1, hi=1 << 30) or None,
        snapshot_locals=env.get_bool(env.TRACEHOUSE_SNAPSHOT_LOCALS),
        snapshot_memory_window_s=_default(env.get_float(env.TRACEHOUSE_SNAPSHOT_MEMORY_WINDOW_S, 2.0, lo=0, hi=60),
                                          2.0),
        snapshot_max_bytes=int(_default(env.get_float(env.TRACEHOUSE_SNAPSHOT_MAX_BYTES, 262144, lo=4096,
                                                      hi=4 << 20), 262144)),
        command_poll_s=_default(env.get_float(env.TRACEHOUSE_COMMAND_POLL_S, 5.0, lo=0, hi=3600), 5.0),
    )


def _program_name() -> str:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    name = os.path.basename(argv0)
    if name in ("", "-c", "-m", "__main__.py") or name.endswith(".py") is False and name == "python":
        return "unknown_service:python"
    return name.removesuffix(".py") or "unknown_service:python"
