"""Where each signal goes: protocol, endpoint, headers, timeout, compression, TLS.

The OTLP exporter variables of the OpenTelemetry specification, generic and per signal
(``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` wins over ``OTEL_EXPORTER_OTLP_ENDPOINT``, and so on):

* protocol ``http/protobuf`` (default) or ``grpc`` (needs ``pip install "tracehouse[grpc]"``);
  ``http/json`` and anything else is logged once and replaced by ``http/protobuf``;
* a per-signal HTTP endpoint is used as given; the generic one gets ``/v1/traces`` … appended;
  a gRPC endpoint is ``scheme://host:port`` (default ``http://127.0.0.1:4317``);
* headers: generic, then per-signal (per-signal keys win); ``TRACEHOUSE_TOKEN`` adds
  ``authorization: Bearer …`` when no header sets it;
* timeout (ms), compression (``gzip``/``none``), certificate (CA file), insecure (gRPC).

An ``endpoint`` argument to :func:`tracehouse.agent.start` is a base URL for every signal and
wins over the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tracehouse.agent import environment as env

__all__ = ["SIGNALS", "SignalExport", "resolve_exports"]

SIGNALS = {"spans": ("TRACES", "/v1/traces"), "metrics": ("METRICS", "/v1/metrics"), "logs": ("LOGS", "/v1/logs")}
PROCESSOR_TIMEOUTS = {"spans": env.OTEL_BSP_EXPORT_TIMEOUT, "metrics": env.OTEL_METRIC_EXPORT_TIMEOUT,
                      "logs": env.OTEL_BLRP_EXPORT_TIMEOUT}
"""The batch processor's (metric reader's) bound on one export of each signal, in ms."""
HTTP, GRPC = "http/protobuf", "grpc"
DEFAULT_HTTP = "http://127.0.0.1:4318"
DEFAULT_GRPC = "http://127.0.0.1:4317"


@dataclass(frozen=True)
class SignalExport:
    protocol: str
    url: str  # HTTP: the full URL; gRPC: scheme://host:port
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 3.0
    compression: str | None = None
    certificate: str | None = None
    insecure: bool | None = None
    processor_timeout: float | None = None  # s: OTEL_BSP/BLRP/METRIC_EXPORT_TIMEOUT, already within timeout
    protocol_from: str = "OTEL_EXPORTER_OTLP_PROTOCOL"  # the variable that chose ``protocol``


def _var(signal: str, suffix: str) -> tuple[str, str]:
    return f"OTEL_EXPORTER_OTLP_{SIGNALS[signal][0]}_{suffix}", f"OTEL_EXPORTER_OTLP_{suffix}"


def _protocol(signal: str) -> tuple[str, str]:
    """The signal's protocol, and the variable it came from (the generic one when none is set)."""
    for name in _var(signal, "PROTOCOL"):
        raw = os.environ.get(name, "").strip().lower()
        if not raw:
            continue
        if raw in (HTTP, GRPC):
            return raw, name
        env.warn_once(f"{name}={raw}", f"tracehouse: {name}={raw!r} is not supported (http/protobuf, grpc); "
                            "using http/protobuf")
        return HTTP, name
    return HTTP, _var(signal, "PROTOCOL")[1]


def _valid_url(name: str, raw: str) -> str | None:
    try:
        parts = urlsplit(raw if "://" in raw else f"http://{raw}")
    except ValueError:  # "http://[::1" (an unclosed IPv6 literal): start() raised it in the host
        env.warn_once(f"{name}={raw}", f"tracehouse: ignoring {name}={raw!r} (not a URL)")
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        env.warn_once(f"{name}={raw}", f"tracehouse: ignoring {name}={raw!r} (not an http(s) URL)")
        return None
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        env.warn_once(f"{name}={raw}", f"tracehouse: ignoring {name}={raw!r} (bad port)")
        return None
    return raw.rstrip("/")


def _endpoint(signal: str, protocol: str, base: str | None, base_is_argument: bool) -> str:
    specific, generic = _var(signal, "ENDPOINT")
    path = SIGNALS[signal][1]
    if not base_is_argument:
        raw = os.environ.get(specific, "").strip()
        if raw and (url := _valid_url(specific, raw)):
            return url if protocol == GRPC or "://" in raw else f"http://{url}"
    if base is None:
        return DEFAULT_GRPC if protocol == GRPC else DEFAULT_HTTP + path
    if protocol == GRPC:
        return base
    return base + path


def _headers(signal: str, common: dict[str, str]) -> dict[str, str]:
    out = dict(common)
    out.update(env.get_pairs(_var(signal, "HEADERS")[0], headers=True))
    return out


def _timeout_ms(name: str, default: float) -> float | None:
    return env.get_float(name, default * 1000, lo=1, hi=600_000)


def _timeout(signal: str, common: float, bound: float | None) -> float:
    """The signal's own timeout variable, else ``common`` (``OTEL_EXPORTER_OTLP_TIMEOUT`` read once
    for the three signals: a bad value was logged three times); then at most ``bound``, the
    signal's processor bound (:func:`processor_timeout`)."""
    v = _timeout_ms(_var(signal, "TIMEOUT")[0], common)
    own = common if v is None else v / 1000.0
    return own if bound is None else min(own, bound)


def processor_timeout(signal: str) -> float | None:
    """``OTEL_BSP_EXPORT_TIMEOUT``, ``OTEL_METRIC_EXPORT_TIMEOUT`` or ``OTEL_BLRP_EXPORT_TIMEOUT`` (ms)
    in seconds: the longest one export of the signal may take, by the spec; None when unset, the
    spec's default (30 s) when bad (logged). Unread, an export with a 10 s exporter timeout held
    its processor for 10 s under ``OTEL_BSP_EXPORT_TIMEOUT=500``."""
    return env.get_float(PROCESSOR_TIMEOUTS[signal], 30.0, lo=0.001, hi=600.0, scale=0.001)


def _compression(signal: str) -> str | None:
    for name in _var(signal, "COMPRESSION"):
        raw = os.environ.get(name, "").strip().lower()
        if not raw:
            continue
        if raw in ("gzip", "none"):
            return None if raw == "none" else raw
        env.warn_once(f"{name}={raw}", f"tracehouse: {name}={raw!r} is not supported (gzip, none); sending uncompressed")
        return None
    return None


def _certificate(signal: str) -> str | None:
    """The CA file to trust for the signal's collector; one that cannot be read is logged once by
    name and not used (the system's CAs then check the collector: nothing is trusted that the file
    would not have made trusted). It failed every export with a bare FileNotFoundError."""
    for name in _var(signal, "CERTIFICATE"):
        path = os.environ.get(name, "").strip()
        if not path:
            continue
        if os.path.isfile(path) and os.access(path, os.R_OK):
            return path
        env.warn_once(f"{name}={path}", f"tracehouse: ignoring {name}={path[:200]!r} (not a readable file); "
                                        "checking the collector's certificate against the system's CAs")
        return None
    return None


def resolve_exports(base: str | None, base_is_argument: bool, headers: dict[str, str],
                    timeout: float) -> dict[str, SignalExport]:
    """The export settings of each signal. ``base``: a base URL (argument or generic variable)."""
    out = {}
    generic = _timeout_ms("OTEL_EXPORTER_OTLP_TIMEOUT", timeout)
    common = timeout if generic is None else generic / 1000.0
    for signal in SIGNALS:
        protocol, protocol_from = _protocol(signal)
        cert = _certificate(signal)
        insecure_raw = env.get_str(*_var(signal, "INSECURE"))
        bound = processor_timeout(signal)
        out[signal] = SignalExport(
            protocol=protocol, protocol_from=protocol_from, url=_endpoint(signal, protocol, base, base_is_argument),
            headers=_headers(signal, headers), timeout=_timeout(signal, common, bound), processor_timeout=bound,
            compression=_compression(signal), certificate=cert,
            insecure=None if insecure_raw is None else insecure_raw.lower() in ("1", "true", "yes", "on"))
    return out
