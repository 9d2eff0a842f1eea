"""Python ``logging`` records exported as OTLP log records, with the active trace and span ids.

The export handler is attached to no logger. A handler on the root logger (the SDK's way) changed
the host's own logging: ``logging.basicConfig()`` did nothing, since the root logger already had a
handler, and Python's last-resort output of unhandled warnings to stderr never fired, so the host's
log lines vanished; lowering the root level to let the export level through made the host's own
handlers print records it had filtered out. Instead ``Logger.callHandlers`` is wrapped: after the
host's handlers have had a record (so their count, levels and ``lastResort`` are as before), the
record goes to the export handler too when it is at the export level or above. What is exported
is what the host's logging creates: a record below a logger's effective level is never made.
"""

from __future__ import annotations

import logging
import threading
import warnings

from . import counters
from .otlp_wire import TEXT_MAX

_SKIP = ("opentelemetry", "tracehouse.agent", "urllib3.connectionpool")
_handlers: list[logging.Handler] = []
_lock = threading.Lock()


class _NotOurOwn(logging.Filter):
    """Keep the agent's and the exporter's own records out of the export path (no feedback loop)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(_SKIP)


def _export(record: logging.LogRecord) -> None:
    for h in _handlers:
        if record.levelno >= h.level:
            h.handle(record)  # a failing emit goes to the handler's handleError, as for any handler


def _wrap(original):
    def callHandlers(self: logging.Logger, record: logging.LogRecord) -> None:  # noqa: N802 - stdlib's name
        original(self, record)
        if _handlers:
            _export(record)

    callHandlers.tracehouse_original = original  # type: ignore[attr-defined]
    return callHandlers


_STACKTRACE = "exception.stacktrace"
_HEAD = 4096  # of a stack trace cut in its middle: the outermost frames; the rest is its innermost end


def _cut(key: str, value):
    """``value`` within ``TEXT_MAX`` characters (each string of a sequence too), or ``value``
    itself when nothing is too long. A stack trace loses its middle: its last lines name the
    exception and the frame that raised it."""
    if isinstance(value, str):
        if len(value) <= TEXT_MAX:
            return value
        counters.add("values.truncated")
        if key != _STACKTRACE:
            return value[:TEXT_MAX]
        width = len(str(len(value)))
        tail = TEXT_MAX - _HEAD - len("\n  ...  characters cut ...\n") - width
        marker = f"\n  ... {len(value) - _HEAD - tail:>{width}} characters cut ...\n"
        return value[:_HEAD] + marker + value[-tail:]
    if isinstance(value, (list, tuple)) and any(isinstance(v, str) and len(v) > TEXT_MAX for v in value):
        return type(value)(_cut("", v) for v in value)
    return value


def _cut_attributes(out) -> None:
    """Every attribute value of a record within ``TEXT_MAX`` characters: the SDK sets
    ``exception.stacktrace`` (a deep recursion's is megabytes) and ``exception.message`` whole, and
    each ``extra=`` value of the host's as it was; a hung collector's queue held 2,048 of them."""
    attrs = getattr(out, "attributes", None)
    if not attrs:
        return
    cut = {k: _cut(k, v) for k, v in attrs.items()}
    if any(cut[k] is not v for k, v in attrs.items()):
        try:
            for k, v in cut.items():
                attrs[k] = v
        except TypeError:  # an immutable mapping (older SDKs): a new one
            out.attributes = cut


def install(logger_provider, level: int) -> logging.Handler:
    from opentelemetry.sdk._logs import LoggingHandler

    class Handler(LoggingHandler):
        def _translate(self, record: logging.LogRecord):  # the SDK's, with the body and attributes cut
            out = super()._translate(record)
            body = getattr(out, "body", None)
            cut = _cut("", body)  # as the span writer cuts a value: records waiting for a slow
            if cut is not body:  # collector (2,048 of them) held whole 1 MB messages, ~3.5 GB
                out.body = cut
            _cut_attributes(out)
            return out

        def flush(self) -> None:
            """Nothing: ``logging.shutdown()`` at exit calls it, and the SDK's flush starts a thread
            (a traceback under a thread limit) and waits on the collector. The agent flushes its
            provider itself, within its bounds."""

    with warnings.catch_warnings():  # deprecated in newer SDKs: a host running with -W error died of it
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = Handler(level=level, logger_provider=logger_provider)
    handler.addFilter(_NotOurOwn())
    with _lock:
        _handlers.append(handler)
        if not hasattr(logging.Logger.callHandlers, "tracehouse_original"):
            logging.Logger.callHandlers = _wrap(logging.Logger.callHandlers)  # type: ignore[method-assign]
    return handler


def uninstall(handler: logging.Handler) -> None:
    with _lock:
        if handler in _handlers:
            _handlers.remove(handler)
        current = logging.Logger.callHandlers
        if not _handlers and hasattr(current, "tracehouse_original"):
            logging.Logger.callHandlers = current.tracehouse_original  # type: ignore[method-assign]
