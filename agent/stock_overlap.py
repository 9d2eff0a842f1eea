"""Stock instrumentations that would send again what the agent sends itself.

``opentelemetry-bootstrap -a install`` installs an instrumentation for every library it finds,
the standard library's included. Two of them overlap the agent's own signals:

* ``system_metrics`` sends process, runtime and host metrics, twelve of them under the names of the
  agent's own resource metrics (``process.cpu.time``, ``process.memory.usage``,
  ``system.memory.usage``, ``cpython.gc.collections`` …): two series of one name for one resource,
  counted twice by any query over the name, and a psutil pass over every host statistic (network
  connections included) in the host process each interval. It is skipped while the agent sends
  metrics; a service that wants its extra host metrics instruments it from code after ``start()``.
* ``logging`` (0.5x and later) adds an SDK handler to the root logger. That exports every record a
  second time beside the agent's own export (:mod:`.logs`, at ``TRACEHOUSE_LOG_LEVEL``), INFO and
  DEBUG records too, and, as the root logger then has a handler, Python's last-resort output stops: a
  script's ``logging.warning(...)`` no longer reaches its stderr. It is loaded without that handler
  unless ``OTEL_PYTHON_LOG_AUTO_INSTRUMENTATION`` is set; its trace-context log format
  (``OTEL_PYTHON_LOG_CORRELATION=true``) works as documented.
"""

from __future__ import annotations

import os

LOG_HANDLER_VARIABLE = "OTEL_PYTHON_LOG_AUTO_INSTRUMENTATION"


def skipped(name: str, meter_provider) -> bool:
    """Whether the stock entry point ``name`` duplicates what the agent sends itself."""
    return name == "system_metrics" and meter_provider is not None


def options(name: str) -> dict:
    """Keyword arguments the stock entry point ``name`` is instrumented with, beyond the providers."""
    if name == "logging" and LOG_HANDLER_VARIABLE not in os.environ:
        return {"enable_log_auto_instrumentation": False}
    return {}
