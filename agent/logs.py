"""Python ``logging`` records exported as OTLP log records, with the active trace and span ids."""

from __future__ import annotations

import logging

_SKIP = ("opentelemetry", "tracehouse.agent", "urllib3.connectionpool")


class _NotOurOwn(logging.Filter):
    """Keep the agent's and the exporter's own records out of the export path (no feedback loop)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(_SKIP)


def install(logger_provider, level: int, logger: logging.Logger | None = None) -> logging.Handler:
    from opentelemetry.sdk._logs import LoggingHandler

    handler = LoggingHandler(level=level, logger_provider=logger_provider)
    handler.addFilter(_NotOurOwn())
    target = logger or logging.getLogger()
    target.addHandler(handler)
    if target.level == logging.NOTSET or target.level > level:
        # Let records of the configured level reach the handler without changing other handlers.
        for h in target.handlers:
            if h is not handler and h.level == logging.NOTSET:
                h.setLevel(target.level if target.level != logging.NOTSET else logging.WARNING)
        target.setLevel(level)
    return handler


def uninstall(handler: logging.Handler, logger: logging.Logger | None = None) -> None:
    (logger or logging.getLogger()).removeHandler(handler)
