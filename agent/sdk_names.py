"""Names the OpenTelemetry SDK changed within the release range the agent supports
(:data:`.sdk_private.SUPPORTED`): import them from here.

The log exporter's base class and result became ``LogRecordExporter``/``LogRecordExportResult``
in 1.39; 1.30-1.38 have only ``LogExporter``/``LogExportResult``. Importing the new names
directly made ``tracehouse.agent.start()`` raise ImportError on those releases.
"""

from __future__ import annotations

try:
    from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
except ImportError:  # SDK < 1.39
    from opentelemetry.sdk._logs.export import LogExporter as LogRecordExporter  # type: ignore[attr-defined,no-redef]
    from opentelemetry.sdk._logs.export import LogExportResult as LogRecordExportResult  # type: ignore[attr-defined,no-redef]

__all__ = ["LogRecordExporter", "LogRecordExportResult"]
