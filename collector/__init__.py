"""tracehouse.collector: the OTLP/HTTP receiver, its durable buffer and the batching writer.

``build_collector(settings, store)`` returns the ASGI app and the background services (the WAL
flusher and the writer), each with ``start()`` and ``stop()``; stop them writer first.
"""

from .build import Collector, build_collector

__all__ = ["build_collector", "Collector"]
