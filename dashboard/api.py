"""The JSON query API (``/api/...``): thin FastAPI glue over the storage query functions."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from tracehouse import pathtext  # noqa: F401  (registers the {name:text} path convertor)
from tracehouse.storage import (
    InvalidParameter,
    NotFound,
    QueryLimitExceeded,
    QueryTimeout,
    StorageError,
    StorageUnavailable,
    attr_filters,
    json_body,
    parse_range,
    parse_step,
)
from tracehouse.storage import queries_map as qmap
from tracehouse.storage import queries_services as qsvc
from tracehouse.storage import queries_telemetry as qtel
from tracehouse.storage import queries_traces as qtr

ATTR_HELP = ("attribute filter, repeatable: key=value, key!=value, key~text (contains), key>n, key<n, key>=n, "
             "key<=n, 'key exists'; on span and resource attributes")
SINCE = Query(None, description="RFC 3339 time or relative (15m, 2h, 7d, now); default 15m ago")
UNTIL = Query(None, description="RFC 3339 time or relative; default now")


log = logging.getLogger("tracehouse.dashboard")


#: characters kept of each end of a reason: a reason quotes the value it refuses, and a value is as
#: long as its sender made it (a 16 kB filter came back whole, in the JSON and in the HTML page)
REASON_EDGE = 200


def clip_reason(text: str) -> str:
    """``text`` with its middle cut to an ellipsis past ``2 * REASON_EDGE`` characters: the start
    says what was refused and the end how to write it."""
    return text if len(text) <= 2 * REASON_EDGE + 1 else f"{text[:REASON_EDGE]}…{text[-REASON_EDGE:]}"


def error_response(exc: Exception) -> JSONResponse:
    """Our own reasons for bad parameters and unknown ids; for anything the database said, a generic
    message and an id that the server log carries next to the database's text."""
    if isinstance(exc, InvalidParameter):
        return JSONResponse({"error": clip_reason(str(exc))},
                            status_code=415 if isinstance(exc, json_body.NotJsonType) else 400)
    if isinstance(exc, NotFound):
        return JSONResponse({"error": clip_reason(str(exc))}, status_code=404)
    if isinstance(exc, QueryTimeout):
        return _logged(exc, 504, "query timed out: narrow the time range or add filters")
    if isinstance(exc, QueryLimitExceeded):
        return _logged(exc, 422, "query would read more than this server allows: narrow the time range or add filters")
    if isinstance(exc, StorageUnavailable):
        return _logged(exc, 503, "storage unavailable", {"Retry-After": "5"})
    if isinstance(exc, StorageError):
        return _logged(exc, 500, "storage error")
    # a bug: Starlette answers it, then re-raises it, and uvicorn closes the connection; said in
    # the answer, or a client that keeps connections alive sends its next request into the close
    return _logged(exc, 500, "internal error", {"Connection": "close"})


def _logged(exc: Exception, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    error_id = uuid.uuid4().hex[:16]
    log.error("error id %s: %s answered %d: %s: %s", error_id, type(exc).__name__, status, message, exc,
              exc_info=exc if status >= 500 else None)
    return JSONResponse({"error": message, "error_id": error_id}, status_code=status, headers=headers)


#: what the handlers answer; ``Exception`` last: a bug answers 500 with an error id (the traceback
#: is in the log under it) instead of a reset connection
HANDLED = (InvalidParameter, NotFound, QueryTimeout, StorageUnavailable, StorageError, Exception)


def _float(name: str, v: str | None) -> float | None:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except ValueError:
        raise InvalidParameter(f"{name} must be a number") from None


def _int(name: str, v: str | None, default: int) -> int:
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise InvalidParameter(f"{name} must be an integer") from None


def api_router(get_store) -> APIRouter:
    """``get_store(request)`` returns the Store; routes hold no state of their own."""
    r = APIRouter(prefix="/api", tags=["query"])

    @r.get("/services")
    def list_services(request: Request, since: str | None = SINCE, until: str | None = UNTIL,
                      q: str | None = Query(None, description="only names containing this (any case)")
                      ) -> dict[str, Any]:
        """The busiest services (at most 2,000; ``truncated`` and ``total`` say when there are more)."""
        tr = parse_range(since, until)
        return {"since_ns": tr.start_ns, "until_ns": tr.end_ns, **qsvc.listing(get_store(request), tr, match=q or None)}

    # {service:text}: any name, "/" (sent as %2F or not) and newlines included. The route is the path's
    # last segment and the name everything before it: /api/services/a%2Foperations/series is the
    # series of service "a/operations"
    @r.get("/services/{service:text}/operations")
    def service_operations(request: Request, service: str, since: str | None = SINCE, until: str | None = UNTIL,
                           q: str | None = Query(None, description="only names containing this (any case)")
                           ) -> dict[str, Any]:
        """The service's busiest operations (at most 500, the most calls first; ``truncated`` and
        ``total`` say when there are more)."""
        tr = parse_range(since, until)
        return {"service": service, **qsvc.operation_listing(get_store(request), service, tr, match=q or None)}

    @r.get("/services/{service:text}/series")
    def service_series(request: Request, service: str, since: str | None = SINCE, until: str | None = UNTIL,
                       step: str | None = Query(None, description="bucket width, e.g. 1m, 5m (minimum 1m)"),
                       operation: str | None = None) -> dict[str, Any]:
        tr = parse_range(since, until)
        return qsvc.series(get_store(request), service, tr, parse_step(step), operation)

    @r.get("/traces")
    def search_traces(request: Request, since: str | None = SINCE, until: str | None = UNTIL,
                      service: str | None = None, operation: str | None = None,
                      min_duration_ms: str | None = None, max_duration_ms: str | None = None,
                      status: str | None = Query(None, description="ok or error"),
                      attr: list[str] = Query([], description=ATTR_HELP),
                      limit: str | None = None) -> dict[str, Any]:
        tr = parse_range(since, until)
        traces = qtr.search(
            get_store(request), tr, service=service or None, operation=operation or None,
            min_duration_ms=_float("min_duration_ms", min_duration_ms),
            max_duration_ms=_float("max_duration_ms", max_duration_ms), status=status or None,
            attrs=attr_filters.parse_filters(attr), limit=_int("limit", limit, 50))
        return {"traces": traces}

    @r.get("/traces/{trace_id}")
    def get_trace(request: Request, trace_id: str) -> dict[str, Any]:
        return qtr.trace(get_store(request), trace_id)

    @r.get("/traces/{trace_id}/spans/{span_id}")
    def get_span(request: Request, trace_id: str, span_id: str) -> dict[str, Any]:
        """One span with its attributes, resource, events and links (the waterfall's details panel)."""
        return qtr.span(get_store(request), trace_id, span_id)

    @r.get("/traces/{trace_id}/outline")
    def get_outline(request: Request, trace_id: str) -> dict[str, Any]:
        """Every span's ids, service, name, times and error flag: the shape of a trace of up to
        200,000 spans without their attributes."""
        return qtr.outline(get_store(request), trace_id)

    @r.get("/service-map")
    def service_map(request: Request, since: str | None = SINCE, until: str | None = UNTIL) -> dict[str, Any]:
        return qmap.service_map(get_store(request), parse_range(since, until))

    @r.get("/metrics/names")
    def metric_names(request: Request, since: str | None = SINCE, until: str | None = UNTIL,
                     service: str | None = None) -> dict[str, Any]:
        """Metrics with points in the range: at most 5,000, the ones with the most points past that
        (``truncated`` and ``total`` say so)."""
        return qtel.metric_listing(get_store(request), parse_range(since, until), service or None)

    @r.get("/metrics")
    def metrics(request: Request, name: str = Query(..., description="metric name"), since: str | None = SINCE,
                until: str | None = UNTIL, service: str | None = None,
                label: list[str] = Query([], description="k=v, repeatable"), step: str | None = None,
                agg: str = Query("avg", description="avg|min|max|sum|last|count|rate"),
                group_by: list[str] = Query([], description="labels to group series by")) -> dict[str, Any]:
        return qtel.metric_series(get_store(request), name, parse_range(since, until), service or None, label,
                                  parse_step(step), agg, group_by or None)

    @r.get("/logs")
    def logs(request: Request, since: str | None = SINCE, until: str | None = UNTIL, service: str | None = None,
             trace_id: str | None = None, severity: str | None = None, q: str | None = None,
             event_name: str | None = None, limit: str | None = None) -> dict[str, Any]:
        tr = parse_range(since, until, default="1h")
        return {"logs": qtel.logs(get_store(request), tr, service or None, trace_id or None, severity or None,
                                  q or None, event_name or None, _int("limit", limit, 100))}

    return r
