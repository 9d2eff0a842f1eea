"""Load instrumentations: the agent's lean ones first, then every installed entry point.

Each instrumentor is loaded in isolation: a broken one is counted and logged, the rest load.
Stock entry points that a lean instrumentor replaces (fastapi, asgi, wsgi, flask, …) are
skipped when the lean one applied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tracehouse.agent import errors

_log = logging.getLogger("tracehouse.agent")
GROUP = "opentelemetry_instrumentor"


@dataclass
class Report:
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    instrumentors: list = field(default_factory=list)


def _try(name: str, make, report: Report, **kwargs) -> bool:
    try:
        inst = make()
        inst.instrument(skip_dep_check=True, **kwargs)
    except Exception as exc:
        report.failed[name] = f"{type(exc).__name__}: {exc}"
        _log.warning("tracehouse: instrumentation %s failed and was skipped: %r", name, exc)
        return False
    report.loaded.append(name)
    report.instrumentors.append(inst)
    return True


def load_all(tracer_provider=None, meter_provider=None, disabled=frozenset(), entry_points=None) -> Report:
    """Instrument what is installed. ``entry_points`` overrides discovery (tests)."""
    from opentelemetry.instrumentation.dependencies import (
        get_dependency_conflicts,
        get_dist_dependency_conflicts,
    )

    from tracehouse.agent import frameworks

    report = Report()
    kwargs = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
    replaced: set[str] = set()
    for name, cls in frameworks.LEAN.items():
        if name in disabled:
            continue
        try:
            conflict = get_dependency_conflicts(cls().instrumentation_dependencies())
        except Exception as exc:
            errors.swallow(f"dependency check {name}", exc)
            continue
        if conflict:
            continue
        if _try(f"tracehouse.{name}", cls, report):
            replaced.update(frameworks.REPLACES[name])

    if entry_points is None:
        from importlib.metadata import entry_points as _eps

        entry_points = _eps(group=GROUP)
    for ep in entry_points:
        if ep.name in disabled or ep.name in replaced:
            report.skipped.append(ep.name)
            continue
        try:
            dist = getattr(ep, "dist", None)
            if dist is not None and get_dist_dependency_conflicts(dist):
                report.skipped.append(ep.name)
                continue
        except Exception as exc:
            report.failed[ep.name] = f"{type(exc).__name__}: {exc}"
            continue
        _try(ep.name, lambda ep=ep: ep.load()(), report, **kwargs)
    return report


def unload(report: Report) -> None:
    for inst in report.instrumentors:
        try:
            inst.uninstrument()
        except Exception as exc:
            errors.swallow("uninstrument", exc)
