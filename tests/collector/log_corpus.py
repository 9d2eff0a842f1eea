"""Log requests that exercise every corner of the log conversion: fed to both decoders by the
differential test (``test_native_logs.py``). Built with the generated proto classes, plus what the
official SDK's OTLP/HTTP log exporter sends for records made through the SDK (stdlib ``logging``
through its ``LoggingHandler``, the Logs API, and the agent's snapshot emitter)."""

from __future__ import annotations

import struct

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.collector.corpus import _NOW, DOUBLES, TRICKY_KEYS, TRICKY_VALUES, _raw
from tests.collector.payloads import kv

SNAPSHOT = "tracehouse.snapshot"


def _req(service: str | None = "logcorpus", resource: list | None = None):
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    if service is not None:
        rl.resource.attributes.append(kv("service.name", service))
    rl.resource.attributes.extend(resource or [])
    sl = rl.scope_logs.add()
    sl.scope.name, sl.scope.version = "corpus.logs", "1.2"
    return req, sl


def _rec(sl, i: int, body=None, attrs: list | None = None, **fields):
    r = sl.log_records.add()
    r.time_unix_nano = fields.pop("time", _NOW + i * 1000)
    r.observed_time_unix_nano = fields.pop("observed", _NOW + i * 1000 + 7)
    r.trace_id = fields.pop("trace_id", struct.pack(">QQ", 0xF00D, i + 1))
    r.span_id = fields.pop("span_id", struct.pack(">Q", i + 1))
    r.severity_number = fields.pop("severity", 9)
    r.severity_text = fields.pop("severity_text", "INFO")
    if body is not None:
        r.body.CopyFrom(kv("", body).value if not isinstance(body, AnyValue) else body)
    for k, v in fields.items():
        setattr(r, k, v)
    r.attributes.extend(attrs or [])
    return r


def corner_requests() -> list[tuple[str, ExportLogsServiceRequest]]:
    out = []

    req, sl = _req(resource=[kv("service.instance.id", "i-7"), kv("deployment.environment", "test"),
                             kv("service.instance.id", "i-8")])
    _rec(sl, 0, "scalars", [kv("s", "text"), kv("b", True), kv("i", -7), kv("imax", 2**63 - 1), kv("imin", -2**63),
                            kv("raw", b"\x00\xff\xfe"), kv("empty", ""), KeyValue(key="unset"),
                            _raw("strindex", string_value_strindex=3)])
    _rec(sl, 1, "secret keys", [kv(k, "secret-value") for k in TRICKY_KEYS])
    for n, v in enumerate(TRICKY_VALUES):  # credentials and escapes in bodies and in attributes
        _rec(sl, 2 + n, v, [kv("v", v)])
    out.append(("scalars, secrets and urls in bodies and attributes", req))

    req, sl = _req()
    _rec(sl, 20, 42)
    _rec(sl, 21, -2**63)
    _rec(sl, 22, True)
    _rec(sl, 23, False)
    _rec(sl, 24, b"\xff\xfe\xc3\x28\xa0\xa1")  # invalid UTF-8 travels only in bytes
    _rec(sl, 25)  # no body
    _rec(sl, 26, "")
    _rec(sl, 27, AnyValue(string_value_strindex=5))
    _rec(sl, 28, "b" * 20_000)  # cut, counted as a log body
    _rec(sl, 29, "x" * 150, [kv("event.name", SNAPSHOT)])  # a snapshot: its own, longer, cut
    _rec(sl, 30, "s" * 300, event_name=SNAPSHOT)
    _rec(sl, 31, "y" * 150, [kv("event.name", "from.attribute"), kv("event.name", "second")])
    _rec(sl, 32, "z", [kv("event.name", 5)])  # not a string: no event name
    _rec(sl, 33, "w", [kv("event.name", "attr")], event_name="field")  # the field wins
    _rec(sl, 34, "v", event_name="E" * 20_000)
    _rec(sl, 35, "late event attribute", [kv(f"a{n}", n) for n in range(300)] + [kv("event.name", "late")])
    out.append(("bodies and event names", req))

    req, sl = _req()
    for n, sev in enumerate((-5, 0, 24, 255, 256, 300, 2**31 - 1, -2**31)):
        _rec(sl, 40 + n, f"severity {sev}", severity=sev, severity_text=f"S{sev}")
    _rec(sl, 50, "time 0, observed set", time=0)
    _rec(sl, 51, "far future", time=2**64 - 1, observed=0)
    _rec(sl, 52, "empty ids", trace_id=b"", span_id=b"", flags=0xFFFFFFFF)
    _rec(sl, 53, "flags", flags=1)
    _rec(sl, 54, "long severity text", severity_text="S" * 20_000)  # cut, counted as a severity text
    out.append(("severities, times, ids, flags", req))

    req, sl = _req(resource=[kv(f"r{n}", "x" * 150) for n in range(300)])
    _rec(sl, 60, "many attributes", [kv(f"attr{n}", f"value {n}") for n in range(300)])
    _rec(sl, 61, "long key and value", [kv("k" * 300, "v"), kv("v", "x" * 20_000), kv("token", "t" * 200)])
    out.append(("huge counts", req))

    # resource attributes nesting arrays and key-value lists of scalars stay native
    req, sl = _req(resource=[kv("process.command_args", ["python", "app.py", "--password=x", "q\"uote"]),
                             kv("numbers", [1, True, b"\x00", ""]), kv("empty_list", [])])
    _rec(sl, 70, "one")
    _rec(sl, 71, "two")
    sl2 = req.resource_logs[0].scope_logs.add()  # a second scope, and an empty one
    req.resource_logs[0].scope_logs.add()
    _rec(sl2, 72, "other scope")
    rl2 = req.resource_logs.add()  # a resource without records (nothing stored, nothing counted)
    rl2.resource.attributes.extend([kv(f"r{n}", "x" * 150) for n in range(300)])
    rl2.scope_logs.add()
    rl3 = req.resource_logs.add()  # a resource without service.name, with a repeated one
    rl3.resource.attributes.extend([kv("service.name", ""), kv("other", 1)])
    _rec(rl3.scope_logs.add(), 73, "unknown service")
    rl4 = req.resource_logs.add()
    rl4.resource.attributes.extend([kv("service.name", "first"), kv("service.name", "second"),
                                    kv("service.instance.id", "x" * 150)])
    _rec(rl4.scope_logs.add(), 74, "last service name")
    out.append(("resource arrays and kvlists, scopes, services", req))

    # a resource key-value list: native only where the engine formats key-value lists (every_value)
    req, sl = _req(resource=[kv("labels", {"team": "a", "token": "t", "n": 1, "dup": 1}), kv("empty_map", {})])
    _rec(sl, 75, "labelled")
    out.append(("resource kvlist", req))

    # what the engine leaves to Python: these requests take the Python path
    req, sl = _req()
    _rec(sl, 80, {"msg": "structured", "password": "p", "n": [1, {"deep": True}], "url": "https://u:pw@h/"})
    out.append(("kvlist body", req))
    req, sl = _req()
    _rec(sl, 81, ["a", 1, 2.5, True, b"\x01"])
    out.append(("array body", req))
    req, sl = _req()
    _rec(sl, 82, DOUBLES[12], [kv("ratio", DOUBLES[4])])
    out.append(("double body and attribute", req))
    req, sl = _req()
    _rec(sl, 83, "tags", [kv("tags", ["a", "b"])])
    out.append(("record attribute array", req))
    req, sl = _req(resource=[kv("deep", [["nested", ["deeper"]]])])
    _rec(sl, 84, "deep resource")
    out.append(("deeply nested resource attribute", req))

    req, sl = _req(service="plain")
    for n in range(40):
        _rec(sl, 100 + n, f"GET /item/{n} took {n} ms", [kv("http.route", f"/item/{n % 5}"), kv("n", n)])
    out.append(("plain logs", req))
    return out


def sdk_requests() -> list[tuple[str, ExportLogsServiceRequest]]:
    """What the official SDK's OTLP/HTTP log exporter sends: stdlib ``logging`` records through the
    SDK's ``LoggingHandler`` (an exception with its stack trace, extra attributes), the Logs API
    with a structured body, and the agent's snapshot emitter."""
    import logging

    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import ProcessResourceDetector, Resource, get_aggregated_resources

    from tests.agent.otlp_sink import Sink
    from tracehouse.agent.snapshot_export import SnapshotEmitter

    sink = Sink()
    logger = logging.getLogger("tests.log_corpus")
    handler = None
    try:
        resource = get_aggregated_resources([ProcessResourceDetector()],
                                            Resource.create({"service.name": "sdk-logs", "token": "t"}))
        provider = LoggerProvider(resource=resource)
        provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=sink.url + "/v1/logs")))
        handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.info("user %s logged in from https://u:pw@h/x?token=abc", "alice", extra={"user.id": 7})
        logger.warning("slow query", extra={"db.statement": "SELECT 1", "password": "hunter2"})
        try:
            raise ValueError('bad "value"\nline')
        except ValueError:
            logger.exception("request failed")
        logger.debug("ratio %s", 0.25, extra={"ratio": 0.25})  # a double attribute: Python path
        provider.get_logger("sdk.api", "2.0").emit(body={"structured": True, "items": [1, 2]},
                                                   attributes={"k": "v"}, event_name="app.event")
        SnapshotEmitter(provider).emit({"kind": "error", "trigger": "exception", "reason": "test",
                                        "frames": [{"function": "f", "line": 1}] * 20}, {"http.route": "/x"})
        provider.shutdown()
    finally:
        if handler is not None:
            logger.removeHandler(handler)
        sink.close()
    return [(f"sdk request {n}", msg) for n, (path, msg, _) in enumerate(sink.requests) if path == "/v1/logs"]
