"""Load instrumentations: the agent's lean ones first, then every installed entry point.

An instrumentor is loaded when the host first imports the library it instruments (at once when
the host already has, as with ``start()`` called after the imports): the agent does not import
libraries the host never uses, nor pay their import time at start-up (:mod:`.on_import`,
:mod:`.instrument_targets`). Each instrumentor is loaded in isolation: a broken one is counted
and logged, the rest load; one whose library is not installed (a distribution can hold several) is
skipped. Stock entry points that a lean instrumentor replaces (fastapi, asgi, wsgi, flask, …) are
skipped; they are loaded instead if the lean one fails. Those that would send again what the agent
sends itself are skipped or loaded without the overlap (:mod:`.stock_overlap`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from tracehouse.agent import counters, errors
from tracehouse.agent.on_import import Deferred

_log = logging.getLogger("tracehouse.agent")
GROUP = "opentelemetry_instrumentor"
#: the module whose import loads a lean instrumentor (None: at once)
LEAN_MODULES = {"starlette": "starlette.applications", "uvicorn": "uvicorn.config",
                "gunicorn": "gunicorn.app.base", "flask": "flask", "django": "django",
                "uwsgi": None}


@dataclass
class Report:
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    #: skipped because the library is installed in a version they do not support (why, for each)
    unsupported: dict[str, str] = field(default_factory=dict)
    instrumentors: list = field(default_factory=list)
    deferred: dict[str, Deferred] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def pending(self) -> list[str]:
        """Instrumentors waiting for the host to import their library."""
        return [name for name, d in list(self.deferred.items()) if d.pending]


def _try(name: str, make, report: Report, check: bool = False, **kwargs) -> bool:
    """Instrument with ``make()``; ``check``: skip it when its own dependencies are not installed."""
    try:
        inst = make()
        if check and _absent(name, inst):
            with report.lock:
                report.skipped.append(name)
            return False
        inst.instrument(skip_dep_check=True, **kwargs)
    except Exception as exc:
        report.failed[name] = f"{type(exc).__name__}: {exc}"
        counters.add("instrumentations.failed")
        _log.warning("tracehouse: instrumentation %s failed and was skipped: %r", name, exc)
        return False
    with report.lock:
        report.loaded.append(name)
        report.instrumentors.append(inst)
    counters.add("instrumentations.loaded")
    return True


def _absent(name: str, inst) -> bool:
    """One distribution can hold instrumentors for different libraries (``httpx`` and ``httpx2``):
    its ``instruments-any`` requirements are met by either, each instrumentor needs its own."""
    from opentelemetry.instrumentation.dependencies import get_dependency_conflicts

    conflict = get_dependency_conflicts(inst.instrumentation_dependencies())
    if conflict is not None:
        _log.debug("tracehouse: instrumentation %s skipped: %s", name, conflict)
    return conflict is not None


def _when_imported(report: Report, name: str, modules, load) -> None:
    if not modules:
        load()
        return
    report.deferred[name] = Deferred(modules, load, f"instrumentation {name}")


def load_all(tracer_provider=None, meter_provider=None, disabled=frozenset(), entry_points=None) -> Report:
    """Instrument what is installed. ``entry_points`` overrides discovery (tests)."""
    from tracehouse.agent import frameworks, stock_overlap

    report = Report()
    kwargs = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
    lean = _lean_usable(disabled)
    replaced = {stock for name in lean for stock in frameworks.REPLACES[name]}
    if entry_points is None:
        from importlib.metadata import entry_points as _eps

        entry_points = _eps(group=GROUP)
    stock, held = _stock(report, entry_points, disabled, replaced, meter_provider)

    def load_stock(ep, modules) -> None:
        _when_imported(report, ep.name, modules, lambda: _try(ep.name, lambda: ep.load()(), report, check=True,
                                                              **kwargs, **stock_overlap.options(ep.name)))

    def load_lean(name: str) -> None:
        if _try(f"tracehouse.{name}", frameworks.LEAN[name], report):
            return
        for replacement in frameworks.REPLACES[name]:  # the stock one takes over
            if replacement in held:
                load_stock(*held.pop(replacement))

    for name in lean:
        module = LEAN_MODULES.get(name)
        _when_imported(report, f"tracehouse.{name}", (module,) if module else (),
                       lambda name=name: load_lean(name))
    for ep, modules in stock:
        load_stock(ep, modules)
    return report


def _lean_usable(disabled) -> list[str]:
    """The agent's own instrumentations whose library is installed in a supported version."""
    from opentelemetry.instrumentation.dependencies import get_dependency_conflicts

    from tracehouse.agent import frameworks

    lean: list[str] = []
    for name, cls in frameworks.LEAN.items():
        if name in disabled:
            continue
        try:
            conflict = get_dependency_conflicts(cls().instrumentation_dependencies())
        except Exception as exc:
            errors.swallow(f"dependency check {name}", exc)
            continue
        if not conflict:
            lean.append(name)
    return lean


def _stock(report: Report, entry_points, disabled, replaced: set[str], meter_provider):
    """The stock instrumentors to load, ``[(entry point, modules)]``, and those an agent's own one
    replaces, held by name in case it fails to load; skipped and failed ones go to ``report``."""
    from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

    from tracehouse.agent import instrument_targets, stock_overlap

    stock: list[tuple[object, tuple[str, ...]]] = []
    held: dict[str, tuple[object, tuple[str, ...]]] = {}
    for ep in entry_points:
        if ep.name in disabled or stock_overlap.skipped(ep.name, meter_provider):
            report.skipped.append(ep.name)
            continue
        try:
            dist = getattr(ep, "dist", None)
            conflict = get_dist_dependency_conflicts(dist) if dist is not None else None
            if conflict:
                report.skipped.append(ep.name)
                if getattr(conflict, "found", None):  # its library is there, in a version it does not support
                    report.unsupported[ep.name] = str(conflict)
                    counters.add("instrumentations.unsupported_version")
                continue
            modules = instrument_targets.modules(ep)
        except Exception as exc:
            report.failed[ep.name] = f"{type(exc).__name__}: {exc}"
            continue
        if ep.name in replaced:
            report.skipped.append(ep.name)
            held[ep.name] = (ep, modules)
        else:
            stock.append((ep, modules))
    return stock, held


def stop_waiting(report: Report) -> None:
    """Load nothing more (the libraries the host imports from now on stay as they are)."""
    for d in list(report.deferred.values()):
        d.cancel()


def unload(report: Report) -> None:
    stop_waiting(report)
    with report.lock:
        loaded = list(report.instrumentors)
    for inst in loaded:
        try:
            inst.uninstrument()
        except Exception as exc:
            errors.swallow("uninstrument", exc)
