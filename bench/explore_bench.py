"""The metrics explorer's work (``queries_metrics.explore``, what ``/api/metrics/explore`` and
``/explore`` run) over many label sets: a histogram and a gauge, each with ``--sets`` distinct
attribute sets of 5 points in the last hour, read ungrouped and grouped by a 5-value label, on
embedded chDB in this process. Prints seconds per query and what it returned (series, total, step).

    python bench/explore_bench.py --sets 50000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NS = 1_000_000_000


def _request(kind: str, lo: int, hi: int, now: int):
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="svc")))
    m = rm.scope_metrics.add().metrics.add()
    m.name = kind
    if kind == "histogram":
        m.histogram.aggregation_temporality = 2
    for i in range(lo, hi):
        for k in range(5):
            p = m.histogram.data_points.add() if kind == "histogram" else m.gauge.data_points.add()
            p.attributes.append(KeyValue(key="id", value=AnyValue(string_value=f"id-{i}")))
            p.attributes.append(KeyValue(key="region", value=AnyValue(string_value=f"r{i % 5}")))
            p.time_unix_nano = now - (5 - k) * 60 * NS
            p.start_time_unix_nano = now - 3600 * NS
            if kind == "histogram":
                p.count, p.sum = 3, 1.5
                p.explicit_bounds.extend([1.0, 2.0])
                p.bucket_counts.extend([1, 1, 1])
            else:
                p.as_double = i
    return req


def run(sets: int) -> list[dict]:
    from tracehouse.collector.convert import CONVERTERS, Limits, Stats, new_batch
    from tracehouse.collector.redact import Redactor
    from tracehouse.storage import Store
    from tracehouse.storage.queries_metrics import MetricQuery, explore
    from tracehouse.storage.timerange import TimeRange

    now = time.time_ns()
    d = tempfile.mkdtemp(prefix="th-explore-")
    out = []
    try:
        with Store.open(f"chdb://{d}?database=explore") as store:
            store.migrate()
            table, convert = CONVERTERS["metrics"]
            for kind in ("histogram", "gauge"):
                for lo in range(0, sets, 10_000):
                    b = new_batch(table)
                    convert(_request(kind, lo, min(sets, lo + 10_000), now), b, Redactor(), Limits(), Stats())
                    store.insert(b.table, b.columns())
            tr = TimeRange(now - 3600 * NS, now + 60 * NS)
            for kind in ("histogram", "gauge"):
                for group in ((), ("region",)):
                    t0 = time.perf_counter()
                    r = explore(store, MetricQuery(name=kind, tr=tr, group_by=group))
                    out.append({"metric": kind, "group_by": list(group), "seconds": round(time.perf_counter() - t0, 2),
                                "series": len(r["series"]), "series_total": r["series_total"],
                                "step_s": r["step_s"], "truncated": r["truncated"]})
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", type=int, default=50_000, help="distinct attribute sets per metric (5 points each)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    results = run(args.sets)
    if args.json:
        print(json.dumps({"sets": args.sets, "runs": results}))
    else:
        for r in results:
            print(f"{r['metric']:9} group_by={r['group_by']!s:12} {r['seconds']:6.2f} s  series {r['series']} "
                  f"of {r['series_total']}, step {r['step_s']} s, truncated {r['truncated']}")


if __name__ == "__main__":
    main()
