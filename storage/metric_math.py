"""Pure arithmetic behind the metrics explorer: increases of cumulative counters and histograms
(with resets), histogram buckets of both kinds as ``{upper bound: count}`` maps, and quantiles
interpolated inside a bucket the way Prometheus' ``histogram_quantile`` does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

INF = math.inf

#: a histogram's observations: (count, sum, {upper bound: count in that bucket})
Hist = tuple[float, float, dict[float, float]]


def explicit_buckets(counts: Sequence[float], bounds: Sequence[float]) -> dict[float, float]:
    """OTLP explicit buckets: ``counts[i]`` is for values ≤ ``bounds[i]`` (and above the previous
    bound); the one extra count is for values above the last bound."""
    out: dict[float, float] = {}
    for i, c in enumerate(counts):
        b = float(bounds[i]) if i < len(bounds) else INF
        out[b] = out.get(b, 0.0) + float(c)
    return out


def exponential_buckets(scale: int, zero_count: float, offset: int, counts: Sequence[float]) -> dict[float, float]:
    """OTLP exponential buckets (positive range): bucket ``offset + j`` holds values in
    (base^(offset+j), base^(offset+j+1)] with base = 2^(2^-scale); zeros go to bound 0. The base
    itself is never formed: at scale -10 (the least the OTLP specification allows) it is 2^1024,
    past a double, and every explorer view of the metric answered 500."""
    width = _pow2(-int(scale))  # bound i is 2^(i * width)
    out: dict[float, float] = {0.0: float(zero_count)} if zero_count else {}
    for j, c in enumerate(counts):
        if c:
            i = int(offset) + j
            lower, upper = _pow2(i * width if i else 0.0), _pow2((i + 1) * width if i + 1 else 0.0)
            out.setdefault(lower, 0.0)  # an empty bucket ending there: the lower bound for quantiles
            out[upper] = out.get(upper, 0.0) + float(c)
    return out


def _pow2(e: float) -> float:
    """2^e, past the largest double as infinity and below the smallest as 0."""
    if e >= 1024:
        return INF
    return 0.0 if e < -1075 else 2.0 ** e


def add(a: dict[float, float], b: dict[float, float]) -> dict[float, float]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0.0) + v
    return out


def increase(last: Hist, prev: Hist) -> Hist:
    """What a cumulative histogram gained from ``prev`` to ``last``; a count that went down means
    the process restarted, and then ``last`` itself is the increase."""
    count, total, buckets = last
    pcount, ptotal, pbuckets = prev
    if count < pcount or any(buckets.get(k, 0.0) < v for k, v in pbuckets.items()):
        return last
    return count - pcount, total - ptotal, {k: v - pbuckets.get(k, 0.0) for k, v in buckets.items()}


def counter_increase(last: float, prev: float) -> float:
    return last if last < prev else last - prev


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q``-quantile of bucketed observations, linear inside the bucket it falls in. The
    first bucket starts at 0 when its bound is positive; a quantile in the overflow bucket is the
    highest finite bound. None without observations."""
    items = sorted(buckets.items())
    total = sum(c for _, c in items if c > 0)
    if total <= 0:
        return None
    rank = q * total
    cum = 0.0
    finite = [b for b, c in items if b != INF]
    for i, (upper, c) in enumerate(items):
        if c <= 0:
            continue
        if cum + c >= rank:
            if upper == INF:
                return finite[-1] if finite else None
            lower = items[i - 1][0] if i > 0 else (0.0 if upper > 0 else upper)
            return lower + (upper - lower) * ((rank - cum) / c)
        cum += c
    return finite[-1] if finite else None


def summary_quantile(q: float, quantiles: Sequence[float], values: Sequence[float]) -> float | None:
    """The value a summary reports for the quantile nearest ``q`` (summaries cannot be merged
    or re-cut; this is what they offer)."""
    if not quantiles:
        return None
    i = min(range(len(quantiles)), key=lambda j: abs(float(quantiles[j]) - q))
    return float(values[i]) if i < len(values) else None


def mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and v == v]
    return sum(vals) / len(vals) if vals else None
