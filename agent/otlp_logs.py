"""Log records (host log lines, snapshots) as OTLP bytes, by the SDK's own log encoder.

The encoder raises on a string that is not valid UTF-8 text (a lone surrogate: a file name from
``os.listdir``, an argument, a value Python decoded with ``surrogateescape``): one such record in
a host log line made the whole batch fail, and every record in it was dropped; in an attribute,
the SDK logged a traceback on the host's stderr and dropped the attribute. Such strings are
written as :func:`.otlp_wire.text` writes them in spans, each unencodable character as ``?``.
"""

from __future__ import annotations

from collections.abc import Mapping

from tracehouse.agent.otlp_wire import valid

__all__ = ["encoded"]


def _valid(v):
    """``v`` with every string in it valid; ``v`` itself when nothing had to change."""
    if isinstance(v, str):
        return valid(v)
    if isinstance(v, (list, tuple)):
        items = [_valid(x) for x in v]
        return v if all(a is b for a, b in zip(items, v)) else type(v)(items)
    if isinstance(v, Mapping):
        pairs = [(_valid(k), _valid(x), k, x) for k, x in v.items()]
        if all(k2 is k and x2 is x for k2, x2, k, x in pairs):
            return v
        return {k2: x2 for k2, x2, _, _ in pairs}
    return v


def _make_valid(record) -> None:
    lr = getattr(record, "log_record", record)  # ReadableLogRecord/LogData hold it; older SDKs are it
    body = lr.body
    fixed = _valid(body)
    if fixed is not body:
        lr.body = fixed
    attrs = lr.attributes
    if attrs:
        fixed = _valid(attrs)
        if fixed is not attrs:
            lr.attributes = fixed


def encoded(batch) -> bytes:
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

    for record in batch:
        _make_valid(record)
    return encode_logs(batch).SerializeToString()
