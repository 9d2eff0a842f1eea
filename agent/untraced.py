"""The agent's own network calls, made without telemetry from the host's instrumentations.

The stock ``urllib``, ``requests``, ``redis`` … instrumentations (what ``opentelemetry-bootstrap -a
install`` puts in a service's environment) trace every call made in the process, the agent's own
too: its command poll showed as a root ``GET`` client span, and in ``http.client.request.duration``,
every few seconds in every process. Each of them leaves alone a call made while the context carries
OpenTelemetry's suppression key, as the stock exporters' own requests do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def untraced() -> Iterator[None]:
    """No spans or metrics from instrumentations for what runs inside, in this thread."""
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

    token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        yield
    finally:
        detach(token)
