"""Every environment variable the agent reads, declared once.

The standard ``OTEL_*`` variables are honoured first; the ``TRACEHOUSE_*`` ones fill what OTel
has no variable for (or act as a fallback). Nothing is read at import: :mod:`.config` calls
the typed readers below when the agent starts. A value that does not parse is logged once
and the default is used (a bad *argument* to :func:`tracehouse.agent.start` raises instead).
"""

from __future__ import annotations

import logging
import os
import re

_log = logging.getLogger("tracehouse.agent")

OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
"""Service name (``service.name``). Falls back to ``TRACEHOUSE_SERVICE``, then the program name."""

OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
"""Base OTLP/HTTP URL; ``/v1/traces`` etc. are appended. Default ``http://127.0.0.1:4318``."""

OTEL_EXPORTER_OTLP_HEADERS = "OTEL_EXPORTER_OTLP_HEADERS"
"""``key=value,key2=value2`` headers sent with every export: where the ingestion token goes."""

OTEL_EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
"""``http/protobuf`` (default) or ``grpc`` (``pip install "tracehouse[grpc]"``). The per-signal
``OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_{PROTOCOL,ENDPOINT,HEADERS,TIMEOUT,COMPRESSION,
CERTIFICATE,INSECURE}`` variables are honoured too (see :mod:`.config_otlp`)."""

OTEL_PROPAGATORS = "OTEL_PROPAGATORS"
"""Context propagation formats: ``tracecontext``, ``baggage``, ``b3``, ``b3multi``, ``none`` (plus
any installed ``opentelemetry_propagator`` entry point). Default ``tracecontext,baggage``."""

OTEL_TRACES_SAMPLER = "OTEL_TRACES_SAMPLER"
"""``always_on``, ``always_off``, ``traceidratio``, ``parentbased_always_on`` (default),
``parentbased_always_off``, ``parentbased_traceidratio``; others are logged and the default used."""

OTEL_METRICS_EXEMPLAR_FILTER = "OTEL_METRICS_EXEMPLAR_FILTER"
"""``trace_based`` (default: exemplars from sampled requests), ``always_on`` or ``always_off``."""

OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
"""``key=value,...`` extra resource attributes (e.g. ``deployment.environment=prod``)."""

OTEL_TRACES_SAMPLER_ARG = "OTEL_TRACES_SAMPLER_ARG"
"""Ratio of root traces sampled, 0..1. Falls back to ``TRACEHOUSE_SAMPLE_RATIO``; default 1."""

OTEL_METRIC_EXPORT_INTERVAL = "OTEL_METRIC_EXPORT_INTERVAL"
"""Metric export interval in milliseconds. Falls back to ``TRACEHOUSE_METRICS_INTERVAL`` (s)."""

OTEL_BLRP_SCHEDULE_DELAY = "OTEL_BLRP_SCHEDULE_DELAY"
OTEL_BSP_MAX_QUEUE_SIZE = "OTEL_BSP_MAX_QUEUE_SIZE"
OTEL_BSP_MAX_EXPORT_BATCH_SIZE = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"
OTEL_BLRP_MAX_QUEUE_SIZE = "OTEL_BLRP_MAX_QUEUE_SIZE"
OTEL_BLRP_MAX_EXPORT_BATCH_SIZE = "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE"
"""Milliseconds between log exports (default 1000). Read by the agent, not left to the SDK's log
processor: it raised 0 or a negative value into ``start()`` and let a value past a day kill its
export thread (``OverflowError``), so no log or snapshot left the process."""

OTEL_BSP_EXPORT_TIMEOUT = "OTEL_BSP_EXPORT_TIMEOUT"
OTEL_BLRP_EXPORT_TIMEOUT = "OTEL_BLRP_EXPORT_TIMEOUT"
OTEL_METRIC_EXPORT_TIMEOUT = "OTEL_METRIC_EXPORT_TIMEOUT"
"""Milliseconds one export of spans, log records or metrics may take, as a whole (retries
included); when set, each bounds its signal's exports below the exporter's own timeout
(``OTEL_EXPORTER_OTLP_*TIMEOUT``). Not left to the SDK: the span processor is the agent's own, the
SDK's log processor reads its variable and never uses it, and its metric reader reads its variable
only when given no timeout (the agent gives one)."""

OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"
"""``true`` (any case) turns the agent into a no-op; as the specification says, any other value is
false (``1``, ``yes``: logged once), as the OpenTelemetry SDK reads it."""

TRACEHOUSE_SERVICE = "TRACEHOUSE_SERVICE"
"""Service name when ``OTEL_SERVICE_NAME`` is unset."""

TRACEHOUSE_ENDPOINT = "TRACEHOUSE_ENDPOINT"
"""Collector base URL when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is unset."""

TRACEHOUSE_TOKEN = "TRACEHOUSE_TOKEN"
"""Ingestion token, sent as ``Authorization: Bearer …`` unless the OTLP headers already carry one."""

TRACEHOUSE_ENVIRONMENT = "TRACEHOUSE_ENVIRONMENT"
"""``deployment.environment`` when the resource attributes do not set it."""

TRACEHOUSE_SERVICE_VERSION = "TRACEHOUSE_SERVICE_VERSION"
"""``service.version`` when the resource attributes do not set it."""

TRACEHOUSE_SAMPLE_RATIO = "TRACEHOUSE_SAMPLE_RATIO"
"""Sampling ratio when ``OTEL_TRACES_SAMPLER_ARG`` is unset. Error traces are kept regardless."""

TRACEHOUSE_METRICS_INTERVAL = "TRACEHOUSE_METRICS_INTERVAL"
"""Seconds between metric collections/exports. Default 15."""

TRACEHOUSE_EXPORT_TIMEOUT = "TRACEHOUSE_EXPORT_TIMEOUT"
"""Seconds allowed for one export request. Default 3."""

TRACEHOUSE_QUEUE_SIZE = "TRACEHOUSE_QUEUE_SIZE"
"""Maximum spans/log records held in memory before new ones are dropped (counted). Default 2048."""

TRACEHOUSE_LOG_LEVEL = "TRACEHOUSE_LOG_LEVEL"
"""Lowest Python logging level exported as OTLP logs (name or number). Default WARNING; ``off`` disables."""

TRACEHOUSE_PROBES = "TRACEHOUSE_PROBES"
"""Comma-separated dependency URLs to health-check: redis://, postgresql://, mysql://, amqp://,
kafka://, http(s)://, tcp://."""

TRACEHOUSE_PROBE_INTERVAL = "TRACEHOUSE_PROBE_INTERVAL"
"""Seconds between probe rounds. Default 15."""

TRACEHOUSE_PROBE_TIMEOUT = "TRACEHOUSE_PROBE_TIMEOUT"
"""Seconds allowed for one whole probe check (DNS, connect, handshake, answer), not per read: past
it the target is down ("TimeoutError: no answer within 2.0 s"). Default 2."""

TRACEHOUSE_CGROUP_ROOT = "TRACEHOUSE_CGROUP_ROOT"
"""Where the cgroup filesystem is mounted. Default ``/sys/fs/cgroup``."""

TRACEHOUSE_DISABLED_INSTRUMENTATIONS = "TRACEHOUSE_DISABLED_INSTRUMENTATIONS"
"""Comma-separated instrumentor entry-point names not to load (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` too)."""

OTEL_PYTHON_DISABLED_INSTRUMENTATIONS = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
"""Standard list of instrumentations not to load."""

TRACEHOUSE_SNAPSHOTS = "TRACEHOUSE_SNAPSHOTS"
"""Fault snapshots (thread and memory captures, command polling, watchdog, exception hooks):
on by default; ``0``/``false``/``off`` switches all of them off."""

TRACEHOUSE_SNAPSHOT_SLOW_MS = "TRACEHOUSE_SNAPSHOT_SLOW_MS"
"""A request still in flight after this many milliseconds gets a thread snapshot linked to its
trace. Default 5000; ``0`` turns the slow-request watchdog off."""

TRACEHOUSE_SNAPSHOT_MEMORY_MB = "TRACEHOUSE_SNAPSHOT_MEMORY_MB"
"""Process RSS (MiB) above which a memory snapshot is taken (at most one per 30 s). Default off."""

TRACEHOUSE_SNAPSHOT_LOCALS = "TRACEHOUSE_SNAPSHOT_LOCALS"
"""``1`` adds local variables (``repr``, cut short; credential-looking names masked) to snapshot
frames. Default off: snapshots carry no variable values."""

TRACEHOUSE_SNAPSHOT_MEMORY_WINDOW_S = "TRACEHOUSE_SNAPSHOT_MEMORY_WINDOW_S"
"""Seconds tracemalloc traces for a memory snapshot's growth diff. Default 2."""

TRACEHOUSE_SNAPSHOT_MAX_BYTES = "TRACEHOUSE_SNAPSHOT_MAX_BYTES"
"""Largest snapshot body sent; bigger ones are cut (frames, then threads) and flagged
``truncated``. Default 262144."""

TRACEHOUSE_COMMAND_POLL_S = "TRACEHOUSE_COMMAND_POLL_S"
"""Seconds between polls of the collector for snapshot requests. Default 5; ``0`` disables polling."""


SDK_LIMITS = ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT",
              "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
              "OTEL_SPAN_EVENT_COUNT_LIMIT", "OTEL_SPAN_LINK_COUNT_LIMIT", "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
              "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT",
              "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT")
"""The OpenTelemetry SDK's span and log record limits, which it reads itself (when
``opentelemetry.sdk.trace`` is imported, in ``SpanLimits()`` and, in the SDKs that have it, in
``LogRecordLimits()`` of every ``LoggerProvider``): see :func:`drop_invalid_sdk_limits`."""

SDK_LIMIT_MAX = 2**31 - 1
"""The largest limit taken: the SDK makes a ``deque(maxlen=limit)`` for a span's events and links,
and past ``sys.maxsize`` that raised OverflowError in every ``start_span`` of the host."""

_warned: set[str] = set()


def drop_invalid_sdk_limits() -> None:
    """Take out of the environment every span or log record limit the SDK would refuse (it raises ValueError on
    anything but a non-negative integer, at import): logged, and the SDK's default applies, as
    for the agent's own variables. Called before the SDK is imported."""
    for name in SDK_LIMITS:
        raw = os.environ.get(name)
        if raw is None:
            continue
        text = raw.strip().lower()
        if text == "":  # the SDK's own "unset"
            continue
        try:
            value = int(text)
        except ValueError:
            value = -1
        if not 0 <= value <= SDK_LIMIT_MAX:
            _log.warning("tracehouse: ignoring %s=%r (%s); using the SDK's default", name, raw,
                         "out of range" if value > SDK_LIMIT_MAX else "not a non-negative integer")
            os.environ.pop(name, None)


def warn_once(key: str, message: str) -> None:
    """Log ``message`` the first time ``key`` is seen in this process (unsupported values)."""
    if key in _warned:
        return
    _warned.add(key)
    _log.warning("%s", message)


def get_str(*names: str, default: str | None = None) -> str | None:
    """First non-empty value among ``names``."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return default


def get_float(name: str, default: float, *, lo: float | None = None, hi: float | None = None,
              scale: float = 1.0) -> float | None:
    """Parse ``name`` as a float (times ``scale``); ``None`` when unset; default when invalid."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw) * scale
    except ValueError:
        _log.warning("tracehouse: ignoring %s=%r (not a number); using its default, %s", name, raw[:100],
                     _in_units(default, scale))
        return default
    if (lo is not None and value < lo) or (hi is not None and value > hi) or value != value:
        _log.warning("tracehouse: ignoring %s=%r (out of range: %s to %s); using its default, %s", name, raw[:100],
                     _in_units(lo, scale), _in_units(hi, scale), _in_units(default, scale))
        return default
    return value


def _in_units(value: float | None, scale: float) -> str:
    """``value`` (scaled) as the variable states it, e.g. milliseconds for an ``OTEL_*`` time."""
    return "none" if value is None else f"{value / scale:g}"


def get_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def get_otel_bool(name: str) -> bool:
    """A boolean ``OTEL_*`` variable as the specification reads it: true only for ``true`` (any
    case); anything but ``true``, ``false`` or empty is logged once and read as false."""
    raw = os.environ.get(name, "").strip()
    if raw.lower() in ("", "false", "true"):
        return raw.lower() == "true"
    warn_once(f"{name}={raw}", f"tracehouse: {name}={raw[:100]!r} is not true or false; read as false")
    return False


def get_list(*names: str) -> list[str]:
    out: list[str] = []
    for name in names:
        out.extend(p.strip() for p in os.environ.get(name, "").split(",") if p.strip())
    return out


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSENDABLE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")  # what HTTP/1.1 (latin-1, no control character) cannot carry


def sendable(value: str) -> bool:
    """Whether ``value`` can be an HTTP/1.1 header value (latin-1, no line break or control character)."""
    return not _UNSENDABLE.search(value)


def get_pairs(name: str, *, headers: bool = False, for_sdk: bool = False) -> dict[str, str]:
    """Parse ``k=v,k2=v2`` (values URL-decoded); malformed items are logged and skipped. With
    ``headers``, so is an item HTTP cannot send (a name that is not a token, a value with a line
    break or past latin-1): ``http.client`` raised on it at every export, so nothing was exported.
    With ``for_sdk`` the variable is left holding the well-formed items only: the SDK reads it
    again (``OTEL_RESOURCE_ATTRIBUTES``, for every ``Resource.create``) and logged each bad item
    a second time, its own way."""
    from urllib.parse import unquote

    out: dict[str, str] = {}
    kept: list[str] = []
    for item in os.environ.get(name, "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), unquote(value.strip())
        if not sep or not key:
            # the item itself is not logged: a header written without its '=' is often a credential
            _log.warning("tracehouse: ignoring item %d of %s (%d characters): not key=value", len(kept) + 1, name,
                         len(item))
            continue
        if headers and (not _TOKEN.fullmatch(key) or not sendable(value)):
            _log.warning("tracehouse: ignoring header %r in %s (%s); sending the others", key[:100], name,
                         "not a valid header name" if not _TOKEN.fullmatch(key) else
                         "a value HTTP cannot send: a line break, a control character or past latin-1")
            continue
        out[key] = value
        kept.append(item)
    if for_sdk and name in os.environ and len(kept) < len([i for i in os.environ[name].split(",") if i.strip()]):
        os.environ[name] = ",".join(kept)
    return out
