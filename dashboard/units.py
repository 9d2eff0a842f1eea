"""Units of measure (OpenTelemetry's UCUM strings: ``By``, ``KiBy``, ``s``, ``ms``, ``1``, ``%``,
``{request}``, ``By/s`` …) → how charts label an axis and how tables print a value. Pure.

Plotly's default tick format abbreviates 3,000,000,000 as "3B" (billions), which on a memory axis
reads as three bytes. Axes here use SI prefixes and the unit as a suffix: "3GB", "250ms", "1.2k/s".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_BYTES = {"By": 1, "KBy": 1e3, "MBy": 1e6, "GBy": 1e9, "KiBy": 1024, "MiBy": 1024**2, "GiBy": 1024**3,
          "bytes": 1, "byte": 1, "B": 1}
_BITS = {"bit": 1, "Kibit": 1024, "Mibit": 1024**2, "kbit": 1e3, "Mbit": 1e6}
_SECONDS = {"s": 1, "ms": 1e-3, "us": 1e-6, "μs": 1e-6, "µs": 1e-6, "ns": 1e-9, "min": 60, "h": 3600, "d": 86400}
_RATE_SUFFIXES = ("/s", "/sec", "/second")


def plain(text: str) -> str:
    """User data for plotly text: it reads a subset of HTML in labels, names, titles, tick suffixes
    and hover text (``<br>``, ``<b>``, links), so ``<`` and ``>`` go as entities, which it shows as
    the characters (Python's ``<module>`` frame stays readable, a tag or a link in a span name or a
    metric's unit stays text)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class Unit:
    """What a value of a metric is: ``kind`` (bytes, bits, seconds, ratio, percent, count, other),
    the factor to its base unit (KiBy → 1024 bytes, ms → 0.001 s), a per-second rate or not, and
    the label shown for counts and unknown units."""

    kind: str
    factor: float = 1.0
    per_second: bool = False
    label: str = ""

    @property
    def suffix(self) -> str:
        base = {"bytes": "B", "bits": "bit", "seconds": "s", "percent": "%"}.get(self.kind, "")
        if not base and self.label:
            base = " " + self.label
        return base + ("/s" if self.per_second else "")


def parse(unit: str | None, name: str = "") -> Unit:
    """The meaning of a UCUM unit string (``name`` decides whether a dimensionless ``1`` is a
    ratio: OpenTelemetry writes utilizations as 0–1 with unit ``1``)."""
    u = (unit or "").strip()
    per_second = False
    for suf in _RATE_SUFFIXES:
        if u.endswith(suf) and len(u) > len(suf):
            u, per_second = u[: -len(suf)], True
            break
    if u in _BYTES:
        return Unit("bytes", _BYTES[u], per_second)
    if u in _BITS:
        return Unit("bits", _BITS[u], per_second)
    if u in _SECONDS and not per_second:
        return Unit("seconds", _SECONDS[u])
    if u == "%":
        return Unit("percent", 1.0, per_second)
    if u in ("1", "") and any(w in name for w in ("utilization", "ratio", "usage_ratio")) and not per_second:
        return Unit("ratio")
    if u.startswith("{") and u.endswith("}"):
        return Unit("count", 1.0, per_second, u[1:-1])
    if u in ("1", ""):
        return Unit("count", 1.0, per_second)
    return Unit("other", 1.0, per_second, u)


def rate_of(u: Unit) -> Unit:
    """The unit of a per-second rate of ``u`` (a counter of bytes → bytes per second)."""
    return Unit(u.kind if u.kind != "ratio" else "count", u.factor, True, u.label)


def axis(u: Unit) -> dict[str, Any]:
    """Plotly axis properties for values already multiplied by ``u.factor``."""
    if u.kind == "ratio":
        return {"tickformat": ".0%", "hoverformat": ".2%"}
    return {"tickformat": "~s", "hoverformat": ".4~s", "exponentformat": "SI", "ticksuffix": plain(u.suffix)}


def hover(u: Unit, axis_name: str = "y") -> str:
    """A hovertemplate fragment for one value: ``%{y:.3~s}GB``-style."""
    if u.kind == "ratio":
        return "%{" + axis_name + ":.2%}"
    return "%{" + axis_name + ":.4~s}" + plain(u.suffix)


_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"))


def fmt(value: float | None, u: Unit) -> str:
    """A value (already in the base unit) for a table cell: ``2.15 GB``, ``250 ms``, ``42.0%``."""
    if value is None or value != value:
        return "–"
    v = float(value)
    if u.kind == "ratio":
        return f"{v * 100:.1f}%"
    if u.kind == "percent":
        return f"{v:.1f}%" + ("/s" if u.per_second else "")
    if v == 0:
        return "0" + (" " + u.suffix.strip() if u.suffix.strip() else "")
    if u.kind in ("count", "other") and abs(v) < 1:
        return f"{v:.3g}" + (f" {u.suffix.strip()}" if u.suffix.strip() else "")
    for scale, prefix in _SI:
        if abs(v) >= scale or scale == 1e-9:
            num = v / scale
            text = f"{num:.3g}" if abs(num) < 1000 else f"{num:.0f}"
            suffix = u.suffix.strip()
            if u.kind in ("bytes", "bits", "seconds"):
                return f"{text} {prefix}{suffix}"
            return f"{text}{prefix}" + (f" {suffix}" if suffix else "")
    return str(v)
