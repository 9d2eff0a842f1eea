"""Shared page plumbing: the Jinja2 environment (autoescape on), the time-range / auto-refresh
view state every page keeps in its query string, and formatting filters."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse

from tracehouse.storage import InvalidParameter, TimeRange, parse_range

from .links import current_path, service_href

RANGES = ("15m", "1h", "6h", "24h", "7d")
REFRESH = {"off": 0, "10s": 10, "30s": 30, "1m": 60}
_TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


@dataclass
class View:
    """The time range and refresh interval of a page, parsed from and written back to the URL."""

    since: str
    until: str
    refresh: str
    tr: TimeRange
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def refresh_s(self) -> int:
        return REFRESH[self.refresh]

    def qs(self, **params: Any) -> str:
        """Query string with the view state plus ``params`` (lists repeat, None drops)."""
        base: dict[str, Any] = {"since": self.since}
        if self.until:
            base["until"] = self.until
        if self.refresh != "off":
            base["refresh"] = self.refresh
        base.update(params)
        pairs = []
        for k, v in base.items():
            for item in v if isinstance(v, (list, tuple)) else [v]:
                if item is not None and item != "":
                    pairs.append((k, item))
        return urlencode(pairs)


def view_from(request: Request, default: str = "1h") -> View:
    q = request.query_params
    since = (q.get("since_abs") or q.get("since") or default).strip()
    until = (q.get("until") or "").strip()
    refresh = q.get("refresh") or "off"
    if refresh not in REFRESH:
        raise InvalidParameter(f"refresh must be one of {', '.join(REFRESH)}")
    tr = parse_range(since, until or None)
    return View(since, until, refresh, tr)


def fmt_ms(v: Any) -> str:
    if v is None:
        return "–"
    v = float(v)
    if v >= 1000:
        return f"{v / 1000:.2f} s"
    if v >= 10:
        return f"{v:.0f} ms"
    return f"{v:.2f} ms"


def fmt_pct(v: Any) -> str:
    return "–" if v is None else f"{float(v) * 100:.2f}%"


def fmt_rate(v: Any) -> str:
    if v is None:
        return "–"
    v = float(v)
    return f"{v:.2f}/s" if v >= 0.1 else f"{v * 60:.2f}/min"


def fmt_ns(ns: Any) -> str:
    if not ns:
        return "–"
    return datetime.fromtimestamp(int(ns) / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def fmt_num(v: Any) -> str:
    """A measured value: integers as such, 4 significant digits otherwise, NaN/None/infinities spelled
    out (a metric rule over a gauge an SDK sent +Inf to fires with that value: the alerts and service
    pages answered 500)."""
    if v is None:
        return "–"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if f != f:
        return "NaN"
    if math.isinf(f):
        return "∞" if f > 0 else "-∞"
    if f == int(f) and abs(f) < 1e15:
        return str(int(f))
    return f"{f:,.0f}" if abs(f) >= 1000 else f"{f:.4g}"


def fmt_bytes(v: Any) -> str:
    """Sizes come from agents' snapshot bodies too: anything but a finite number shows as –."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "–"
    if not math.isfinite(v):
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024 or unit == "TiB":
            return f"{v:.1f} {unit}" if unit != "B" else f"{v:.0f} B"
        v /= 1024
    return str(v)


def health(row: dict[str, Any]) -> str:
    """ok / warning / critical / idle from error rate and p95 (thresholds documented on the page)."""
    if not row.get("requests"):
        return "idle"
    er = float(row.get("error_rate") or 0)
    p95 = float(row.get("p95_ms") or 0)
    if er >= 0.05 or p95 >= 2000:
        return "critical"
    if er >= 0.01 or p95 >= 500:
        return "warning"
    return "ok"


def _dumps(obj: Any, **_: Any) -> str:
    """orjson for ``|tojson`` (several times faster on a 5,000-span trace); Jinja's htmlsafe wrapper
    still escapes ``<``, ``>``, ``&`` and ``'`` in the result."""
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS, default=str).decode()


def make_env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(ms=fmt_ms, pct=fmt_pct, rate=fmt_rate, ts=fmt_ns, bytes=fmt_bytes, num=fmt_num,
                       urlpart=lambda s: quote(str(s), safe=""))
    env.policies["json.dumps_function"] = _dumps
    env.globals.update(RANGES=RANGES, REFRESH=list(REFRESH), health=health, service_href=service_href)
    return env


_ENV: jinja2.Environment | None = None


def render(request: Request, template: str, view: View | None, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    global _ENV
    if _ENV is None:
        _ENV = make_env()
    t0 = time.perf_counter()
    html = _ENV.get_template(template).render(request=request, view=view, path=current_path(request), **ctx)
    resp = HTMLResponse(html, status_code=status_code)
    resp.headers["Server-Timing"] = f"render;dur={(time.perf_counter() - t0) * 1000:.1f}"
    return resp
