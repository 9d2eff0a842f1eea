"""The native decoder for traces: trace requests go from the WAL into the embedded engine as they
are, and the engine decodes, flattens, redacts, limits and stores them (``Protobuf`` input format,
then materialized views), without a Python object per span. The feed's objects and the insert
are ``native_feed``'s (shared with logs); the SQL is ``native_traces``'s: one row per span, every
``spans`` column plus the request's index, a flag for requests nesting attributes deeper than the
schema unrolls, and the truncation counts. ``spans``'s own views feed the rollups.

Each batch carries an insert deduplication token: a batch written again after a crash or a failed
answer adds nothing to ``spans`` and fills exactly the rollups that missed it.
"""

from __future__ import annotations

import logging

from . import native_traces
from .native_feed import BLOCK_BYTES, NativeFeed, NativeResult, requests_per_block

__all__ = ["NativeTraces", "NativeResult", "native_supported", "requests_per_block", "BLOCK_BYTES"]

log = logging.getLogger("tracehouse.collector.native")


def native_supported(store) -> bool:
    """The native path needs the embedded engine (it streams the raw requests into it)."""
    return getattr(store.backend, "kind", "") == "chdb" and hasattr(store.backend, "insert_file")


class NativeTraces(NativeFeed):
    """Trace requests from the WAL into the embedded engine as they are (``native_feed``)."""

    signal = "traces"
    table = "spans"
    spec = native_traces
    # the objects of earlier versions (one unnumbered feed; before that, a view that flattened)
    legacy = ("traces_flatten_mv", "traces_spans_mv", "traces_raw")
