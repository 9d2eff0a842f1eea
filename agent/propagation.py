"""``OTEL_PROPAGATORS``: which context formats incoming requests are read in and outgoing ones
written in (``tracecontext``, ``baggage``, ``b3``, ``b3multi``, ``none``, or any installed
``opentelemetry_propagator`` entry point).

The OpenTelemetry API reads the variable when ``opentelemetry.propagate`` is first imported and
raises on a name it cannot load, which would break every instrumentation that imports it. So a
name that is not installed is logged once and dropped, the variable is rewritten to the names
kept, and the agent sets the global propagator itself. The lean server middlewares parse W3C
``traceparent`` themselves when only ``tracecontext``/``baggage`` are configured (the default)
and go through the configured propagator otherwise.
"""

from __future__ import annotations

import os

from tracehouse.agent import environment as env

__all__ = ["DEFAULT", "install", "resolve_names"]

DEFAULT = ("tracecontext", "baggage")
GROUP = "opentelemetry_propagator"


def _available() -> set[str]:
    from importlib.metadata import entry_points

    return {ep.name for ep in entry_points(group=GROUP)}


def resolve_names(raw: str | None) -> tuple[str, ...]:
    if raw is None or not raw.strip():
        return DEFAULT
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    if "none" in names:
        return ()
    available = _available()
    kept: list[str] = []
    for n in names:
        if n in available:
            if n not in kept:
                kept.append(n)
        else:
            env.warn_once(f"propagator {n}", f"tracehouse: {env.OTEL_PROPAGATORS} names {n!r}, which is not "
                          f"installed (available: {', '.join(sorted(available))}); it is ignored")
    return tuple(kept)


def install(names: tuple[str, ...]) -> None:
    """Set the global propagator and the lean middlewares' extraction for ``names``."""
    from importlib.metadata import entry_points

    from tracehouse.agent import http_server

    wanted = ",".join(names) if names else "none"
    if os.environ.get(env.OTEL_PROPAGATORS, "").strip() and os.environ[env.OTEL_PROPAGATORS] != wanted:
        os.environ[env.OTEL_PROPAGATORS] = wanted  # what opentelemetry.propagate will read at import
    from opentelemetry import propagate
    from opentelemetry.propagators.composite import CompositePropagator

    eps = {ep.name: ep for ep in entry_points(group=GROUP)}
    textmap = CompositePropagator([eps[n].load()() for n in names if n in eps])
    propagate.set_global_textmap(textmap)
    http_server.configure_propagation(names, textmap)
