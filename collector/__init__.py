"""tracehouse.collector: the OTLP/HTTP receiver, its durable buffer and the batching writer.

``build_collector(settings, store)`` returns the ASGI app and the background services (the WAL
flusher and the writer), each with ``start()`` and ``stop()``; stop them writer first. The other
receivers share the app's ingest path (``app.core``): ``grpc_receiver.GrpcReceiver`` (OTLP/gRPC)
and ``zipkin_app.ZipkinApp`` (Zipkin v2, an ASGI app of its own).
"""

from .build import Collector, build_collector
from .decode import BadRequest
from .errors import CollectorError
from .ingest import ClientGone
from .wal import WalClosed, WalLocked, WalUnusable
from .wire_budget import OverBudget

__all__ = ["BadRequest", "ClientGone", "Collector", "CollectorError", "OverBudget", "WalClosed", "WalLocked",
           "WalUnusable", "build_collector"]
