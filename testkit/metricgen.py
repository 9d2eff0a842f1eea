"""Metric points for tests and benchmarks, written straight into storage columns."""

from __future__ import annotations

import random

from tracehouse.storage.attrs import encode_map

NS = 1_000_000_000
DEFAULTS = dict(start_ns=0, description="", unit="1", temporality=2, is_monotonic=0, flags=0, resource_keys=[],
                resource_values=[], scope_name="", scope_version="", value=0.0, count=0, sum=0.0, min=0.0, max=0.0,
                bucket_counts=[], explicit_bounds=[], exp_scale=0, exp_zero_count=0, exp_positive_offset=0,
                exp_positive_counts=[], exp_negative_offset=0, exp_negative_counts=[], quantiles=[],
                quantile_values=[], exemplar_trace_ids=[], exemplar_span_ids=[], exemplar_values=[],
                exemplar_times_ns=[], type=1, instance="i-1")


def point(cols: dict, ts_ns: int, service: str, name: str, attrs: dict | None = None,
          resource: dict | None = None, **fields) -> None:
    """Append one point; ``fields`` override the column defaults (type, value, bucket_counts, …)."""
    k, v, t = encode_map(attrs or {})
    res = resource if resource is not None else {"service.name": service}
    row = dict(DEFAULTS, timestamp=ts_ns // NS, ts_ns=ts_ns, service=service, name=name, attr_keys=k,
               attr_values=v, attr_types=t, resource_keys=list(res), resource_values=[str(x) for x in res.values()])
    row.update(fields)
    for key, val in row.items():
        cols[key].append(val)


BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]


def request_durations(cols: dict, now: int, minutes: int, services: list[str], trace_ids: list[bytes] | None = None,
                      interval_s: int = 10, seed: int = 3) -> None:
    """``http.server.request.duration`` (seconds, cumulative explicit histograms) per service and
    route every ``interval_s``, as an OpenTelemetry SDK exports it, with exemplars from
    ``trace_ids`` when given."""
    rng = random.Random(seed)
    for svc in services:
        for route in ("/orders", "/items/{id}", "/health"):
            counts = [0] * (len(BOUNDS) + 1)
            total = 0.0
            start = now - minutes * 60 * NS
            for ts in range(start, now, interval_s * NS):
                ex_t, ex_s, ex_v, ex_ts = [], [], [], []
                for _ in range(rng.randint(5, 30)):
                    v = rng.lognormvariate(-3.0, 1.0)
                    total += v
                    counts[next((i for i, b in enumerate(BOUNDS) if v <= b), len(BOUNDS))] += 1
                    if trace_ids and rng.random() < 0.1:
                        ex_t.append(rng.choice(trace_ids))
                        ex_s.append(rng.randbytes(8))
                        ex_v.append(v)
                        ex_ts.append(ts - rng.randrange(interval_s * NS))
                point(cols, ts, svc, "http.server.request.duration", {"http.route": route, "http.request.method": "GET"},
                      {"service.name": svc, "host.name": "node-1"}, type=3, unit="s", start_ns=start,
                      count=sum(counts), sum=total, bucket_counts=list(counts), explicit_bounds=BOUNDS,
                      exemplar_trace_ids=ex_t, exemplar_span_ids=ex_s, exemplar_values=ex_v, exemplar_times_ns=ex_ts)
