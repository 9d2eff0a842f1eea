"""Server settings: flags, then ``TRACEHOUSE_*`` environment variables, then a YAML file, then defaults.

Every setting is declared once below with its environment variable. A bad environment or file value
is logged and the default used; a bad flag raises at once (argparse does that).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

log = logging.getLogger("tracehouse.config")


class SettingsError(ValueError):
    """The configuration cannot be used (an unreadable or malformed file, a bad flag): the command
    says why on one line and exits 2, with no traceback."""


@dataclass
class Settings:
    #: TRACEHOUSE_STORAGE: chdb:///path (embedded) or clickhouse://user:password@host:9000/db
    storage: str = "chdb://./tracehouse-data"
    #: TRACEHOUSE_HOST: address both servers listen on
    host: str = "127.0.0.1"
    #: TRACEHOUSE_OTLP_PORT: OTLP/HTTP receiver
    otlp_port: int = 4318
    #: TRACEHOUSE_OTLP_GRPC_PORT: OTLP/gRPC receiver (0 = off)
    otlp_grpc_port: int = 4317
    #: TRACEHOUSE_ZIPKIN_PORT: Zipkin v2 receiver, POST /api/v2/spans (0 = off; Zipkin's own port is 9411)
    zipkin_port: int = 0
    #: TRACEHOUSE_HTTP_PORT: dashboard and JSON API
    http_port: int = 8080
    #: TRACEHOUSE_BUFFER_DIR: the collector's durable buffer ('' = <chdb dir>/buffer or ./tracehouse-buffer)
    buffer_dir: str = ""
    #: TRACEHOUSE_ALERTS_DIR: the alert engine's data directory: changes of alert state the store has
    #: not taken yet wait there too ('' = <chdb dir>-alerts or ./tracehouse-alerts)
    alerts_dir: str = ""
    #: TRACEHOUSE_DASHBOARD_DIR: the dashboard's data directory: sign-outs the store has not taken yet
    #: wait there ('' = <chdb dir>-dashboard or ./tracehouse-dashboard)
    dashboard_dir: str = ""
    #: TRACEHOUSE_BUFFER_MAX_BYTES: cap of the durable buffer; past it OTLP requests get 503
    buffer_max_bytes: int = 1 << 30
    #: TRACEHOUSE_INGEST_TOKENS: comma-separated tokens accepted on OTLP ('' = open)
    ingest_tokens: list[str] = field(default_factory=list)
    #: TRACEHOUSE_INGEST_TOKEN_HEADER: header carrying the token when not Authorization: Bearer
    ingest_token_header: str = "authorization"
    #: TRACEHOUSE_OTLP_CORS_ORIGINS: origins whose pages may send to the OTLP/HTTP and Zipkin receivers
    #: from a browser (``https://app.example.com``, ``https://*.example.com`` or ``*``; '' = none)
    otlp_cors_origins: list[str] = field(default_factory=list)
    #: TRACEHOUSE_RATE_LIMIT_PER_SERVICE: per-service token bucket for items/s (0 = off)
    rate_limit_per_service: float = 0.0
    #: TRACEHOUSE_REDACT_KEYS: extra attribute key patterns to mask
    redact_keys: list[str] = field(default_factory=list)
    #: TRACEHOUSE_MAX_CONCURRENT_REQUESTS: OTLP requests in flight at once; past it, 503 + Retry-After
    max_concurrent_requests: int = 64
    #: TRACEHOUSE_MAX_INFLIGHT_BYTES: OTLP/Zipkin request bytes held at once, read or being read (a
    #: body counts its Content-Length, or TRACEHOUSE_MAX_BODY_BYTES when chunked, from its head; a gRPC
    #: call the message cap until its message is read; a decoded request its payload when larger, as a
    #: gzip body's); 503 + Retry-After (gRPC: UNAVAILABLE with RetryInfo) past it
    max_inflight_bytes: int = 256 << 20
    #: TRACEHOUSE_CLIENT_TIMEOUT_SECONDS: a client must send a request's head within this many seconds
    #: of connecting (or of the previous answer on the connection), and its body within this many
    #: seconds of the head; a slower one is answered 408 or cut off, so it holds no request slot
    client_timeout_seconds: float = 60.0
    #: TRACEHOUSE_MAX_CONNECTIONS: connections the HTTP servers (OTLP, Zipkin, dashboard) hold at once;
    #: past it a new one is answered 503 + Retry-After and closed. 0: the file descriptor limit less
    #: 1,024 (or half of it, whichever is more), at most 10,000, so the WAL and the store keep descriptors
    max_connections: int = 0
    #: TRACEHOUSE_DASHBOARD_MAX_BODY_BYTES: largest request body the dashboard and its API take (413
    #: past it); its forms and JSON documents are small
    dashboard_max_body_bytes: int = 1 << 20
    #: TRACEHOUSE_DASHBOARD_MAX_RUNNING: dashboard requests that may query the store running at once, in
    #: all (0 = twice the concurrent user queries on embedded chDB, 4 on a ClickHouse server)
    dashboard_max_running: int = 0
    #: TRACEHOUSE_DASHBOARD_RUNNING_PER_CLIENT: of those, running at once for one signed-in user, API
    #: token or (without sign-in) client address; the client's others wait their turn
    dashboard_running_per_client: int = 2
    #: TRACEHOUSE_DASHBOARD_QUEUE_PER_CLIENT: requests of one client waiting for a turn; past it 429 + Retry-After
    dashboard_queue_per_client: int = 16
    #: TRACEHOUSE_DASHBOARD_MAX_CLIENTS: clients with requests running or waiting at once; a new one past
    #: it is answered 503 + Retry-After
    dashboard_max_clients: int = 1000
    #: TRACEHOUSE_DASHBOARD_QUEUE_WAIT_S: seconds a request waits for its turn at most (then 503 + Retry-After)
    dashboard_queue_wait_s: float = 15.0
    #: TRACEHOUSE_DEDUP_WINDOW_SECONDS: a request whose content was acknowledged this recently is
    #: acknowledged again without being stored (a client's retry after a lost answer)
    dedup_window_seconds: float = 600.0
    #: TRACEHOUSE_DEDUP_MAX_REQUESTS: at most this many requests are remembered for that
    dedup_max_requests: int = 100_000
    #: TRACEHOUSE_DECODER: how stored trace and log requests become rows: native (the embedded engine decodes
    #: them), python, or auto (native on embedded chDB for batches of 5,000 items or more, python for smaller
    #: ones and on a ClickHouse server)
    decoder: str = "auto"
    #: TRACEHOUSE_INGEST_LANES: batches the native decoders store side by side when a backlog waits
    #: (each on an engine connection of its own): 1 (0 = the default, 1) or 2 (≈ 10% more stored
    #: spans/s on 2 cores, ≈ 170 MB more peak memory in a burst: two batches in the engine at once)
    ingest_lanes: int = 0
    #: TRACEHOUSE_MAX_BODY_BYTES: largest accepted (compressed) OTLP body
    max_body_bytes: int = 16 << 20
    #: TRACEHOUSE_MAX_DECOMPRESSED_BYTES: largest accepted body after gunzip (and gRPC message). 20 MiB,
    #: the OpenTelemetry Collector's default body cap: parsing costs up to ~26x a body's size in memory
    #: (measured: 4 MB of empty attributes, +105 MB RSS), so 64 MiB let one tiny gzip body take ~1.7 GB
    max_decompressed_bytes: int = 20 << 20
    #: TRACEHOUSE_RULES: alert rule files
    rules: list[str] = field(default_factory=list)
    #: TRACEHOUSE_DEMO: start the demo shop next to the server
    demo: bool = False
    #: TRACEHOUSE_API_TOKENS: tokens for the JSON API and sign-in, each ``name:role:secret`` (role viewer,
    #: editor or admin; a bare ``secret`` acts as editor); YAML also takes ``{name: {role, token}}`` ('' = none)
    api_tokens: list[Any] = field(default_factory=list)
    #: TRACEHOUSE_USERS: dashboard users from the config file (name → {password_hash, role})
    users: dict[str, Any] = field(default_factory=dict)
    #: TRACEHOUSE_RETENTION: days per signal, e.g. spans=7,metrics=30
    retention: dict[str, int] = field(default_factory=dict)
    #: TRACEHOUSE_LOG_LEVEL
    log_level: str = "info"
    #: TRACEHOUSE_INSECURE_ALLOW_OPEN: let a role listen on a non-loopback address without authentication
    insecure_allow_open: bool = False
    #: TRACEHOUSE_ALLOWED_HOSTS: Host header values accepted on both ports (``*.example.com`` matches
    #: subdomains, ``*`` any); '' = loopback names when listening on loopback, any otherwise
    allowed_hosts: list[str] = field(default_factory=list)
    #: TRACEHOUSE_SECRET_KEY: signs dashboard sessions (same value on every replica; '' = random per process)
    secret_key: str = ""
    #: TRACEHOUSE_SECRET_KEY_FILE: a file holding the session key (wins over TRACEHOUSE_SECRET_KEY)
    secret_key_file: str = ""
    #: TRACEHOUSE_TRUSTED_PROXIES: addresses/networks of TLS-terminating proxies whose X-Forwarded-Proto and
    #: X-Forwarded-For are believed; when set, session cookies are marked Secure ('' = believe no proxy)
    trusted_proxies: list[str] = field(default_factory=list)
    #: TRACEHOUSE_RETENTION_INTERVAL: seconds between runs of the retention job (serve, collector; 0 = off)
    retention_interval: float = 3600.0
    #: TRACEHOUSE_SELF_OBSERVE: the server sends its own traces and metrics to its own store (service "tracehouse")
    self_observe: bool = False
    #: TRACEHOUSE_SELF_OBSERVE_INTERVAL: seconds between sends of the server's own metrics
    self_observe_interval: float = 15.0
    #: TRACEHOUSE_ZOOKEEPER: host:port[,host:port] of the ZooKeeper (or Keeper) that holds the alert
    #: lease on a cluster (one evaluator per cluster); required by the alert role with ?cluster=
    zookeeper: str = ""
    #: TRACEHOUSE_LEASE_TTL: seconds before a dead evaluator's lease expires and another takes over
    lease_ttl: float = 10.0
    #: TRACEHOUSE_QUERY_TIMEOUT_S: seconds any query a user causes (pages, API, rules) may run
    query_timeout_s: float = 15.0
    #: TRACEHOUSE_QUERY_MAX_MEMORY_BYTES: memory one such query may hold
    query_max_memory_bytes: int = 1 << 30
    #: TRACEHOUSE_QUERY_MAX_ROWS: rows one such query may read
    query_max_rows: int = 300_000_000
    #: TRACEHOUSE_QUERY_MAX_BYTES: uncompressed bytes one such query may read
    query_max_bytes: int = 40 << 30
    #: TRACEHOUSE_QUERY_MAX_THREADS: threads one such query may use (0 = half the cores)
    query_max_threads: int = 0
    #: TRACEHOUSE_QUERY_MAX_CONCURRENT: such queries at once on embedded chDB (0 = half the cores)
    query_max_concurrent: int = 0
    #: TRACEHOUSE_QUERY_NICE: nice value of the engine threads running them on embedded chDB (0-19)
    query_nice: int = 10
    #: TRACEHOUSE_QUERY_BUSY_SHARE: share of the time such queries may keep embedded chDB busy
    #: (bursts of 5 s of query time are not paced; 0 = unpaced)
    query_busy_share: float = 0.5
    #: TRACEHOUSE_RULES_STORAGE: on a ClickHouse server, the URL SQL rules run through: the same
    #: server and database as `storage`, as a read-only user that can read only that database
    #: (see the README); '' = the main user with readonly=1 (logged as a warning)
    rules_storage: str = ""
    #: TRACEHOUSE_RULE_QUERY_OFFSET: seconds the windows of alert rules end before the evaluation
    #: time, for data still on its way (a rule's or group's query_offset overrides it)
    rule_query_offset: float = 0.0
    #: TRACEHOUSE_RULE_PREVIEWS_PER_MINUTE: rule previews each client may run per minute
    rule_previews_per_minute: int = 20

    @property
    def resolved_buffer_dir(self) -> str:
        if self.buffer_dir:
            return self.buffer_dir
        if self.storage.startswith("chdb://"):
            from tracehouse.storage import parse_storage_url

            return os.path.join(parse_storage_url(self.storage).path + "-buffer")
        return os.path.abspath("./tracehouse-buffer")


def _convert(name: str, default: Any, raw: Any) -> Any:
    """``raw`` (a YAML value, or the text of a variable or flag) as the type of ``default``."""
    if isinstance(default, bool):
        return _boolean(raw)
    if isinstance(default, (int, float)):
        return type(default)(raw)
    if isinstance(default, list):
        return _list(raw)
    if isinstance(default, dict):
        return _mapping(raw)
    return str(raw)


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    s = str(raw).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{raw!r} is not a boolean")


def _list(raw: Any) -> list:
    if isinstance(raw, list):
        return [x if isinstance(x, dict) else str(x) for x in raw]
    if isinstance(raw, dict):  # a YAML mapping of named entries: name → {..} or name → "value"
        return [dict(v, name=str(k)) if isinstance(v, dict) else f"{k}:{v}" for k, v in raw.items()]
    return [p.strip() for p in str(raw).split(",") if p.strip()]


def _mapping(raw: Any) -> dict:
    if isinstance(raw, dict):
        return raw
    out: dict[str, Any] = {}
    for part in str(raw).split(","):
        if part.strip():
            k, _, v = part.partition("=")
            out[k.strip()] = int(v) if v.strip().isdigit() else v.strip()
    return out


#: settings that take one of a few words (compared in lower case)
CHOICES = {"log_level": ("debug", "info", "warning", "warn", "error", "critical"),
           "decoder": ("auto", "native", "python")}
PORTS = ("otlp_port", "otlp_grpc_port", "zipkin_port", "http_port")


def _check(name: str, value: Any) -> Any:
    """``value`` if setting ``name`` can take it, else ValueError saying why. Every number is a size,
    a count, a port or a duration: finite, not negative, an integer within a signed 64-bit one (what
    the ClickHouse settings made of them take)."""
    if name in CHOICES:
        word = str(value).strip().lower()
        if word not in CHOICES[name]:
            raise ValueError(f"{value!r} is not one of {', '.join(CHOICES[name])}")
        return word
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    if value < 0:
        raise ValueError(f"{value!r} is negative")
    if value >= 1 << 63:
        raise ValueError(f"{value!r} is too large")
    if name in PORTS and value > 65535:
        raise ValueError(f"{value!r} is not a port (0-65535)")
    return value


def _read_file(path: str) -> dict[str, Any]:
    """A YAML configuration file's mapping; SettingsError when it cannot be read or is not one."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:  # a stream: YAML errors then quote no line of it
            values = yaml.safe_load(f) or {}
    except OSError as e:  # missing, unreadable, a directory
        raise SettingsError(f"cannot read the configuration file {path}: {e.strerror or e}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SettingsError(f"the configuration file {path} is not valid YAML: {e}") from None
    if not isinstance(values, dict):
        raise SettingsError(f"{path}: top level must be a mapping")
    return values


def load_settings(flags: dict[str, Any] | None = None, config_file: str | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    """Merge defaults ← YAML file ← environment ← flags (flags win)."""
    env = os.environ if environ is None else environ
    s = Settings()
    path = config_file or env.get("TRACEHOUSE_CONFIG")
    file_values = _read_file(path) if path else {}
    for f in fields(Settings):
        default = getattr(s, f.name)
        for source, raw in (("file", file_values.get(f.name)), ("env", env.get("TRACEHOUSE_" + f.name.upper()))):
            if raw is None:
                continue
            try:
                setattr(s, f.name, _check(f.name, _convert(f.name, default, raw)))
            except (ValueError, TypeError, OverflowError) as e:
                log.warning("ignoring bad %s value for %s (%s); using %r", source, f.name, e, getattr(s, f.name))
    for k, v in (flags or {}).items():
        if v is None or (isinstance(v, list) and not v):
            continue
        if not hasattr(s, k):
            raise ValueError(f"unknown setting {k}")
        try:
            setattr(s, k, _check(k, _convert(k, getattr(Settings(), k), v)))
        except (ValueError, TypeError, OverflowError) as e:
            raise SettingsError(f"--{k.replace('_', '-')}: {e}") from None
    return s
