"""Exceptions raised by :mod:`tracehouse.storage`.

Callers (collector, dashboard, alerts) catch these and never the backends' own errors:

- ``StorageError``: base class.
  - ``StorageUnavailable``: the store cannot be reached or is not answering (retry later).
  - ``QueryError``: the database rejected a statement (a bug, or a bad user query).
    - ``QueryTimeout``: the statement ran past its time limit.
    - ``QueryLimitExceeded``: the statement would read or hold more than its limits allow.
  - ``InvalidParameter``: a user-supplied value is not acceptable (answer 400).
  - ``NotFound``: an id that does not exist (answer 404).
  - ``ConfigError``: a bad storage URL or setting.
"""

from __future__ import annotations

__all__ = [
    "StorageError",
    "StorageUnavailable",
    "QueryError",
    "QueryTimeout",
    "QueryLimitExceeded",
    "InvalidParameter",
    "NotFound",
    "ConfigError",
    "one_line",
]


def one_line(e: BaseException, limit: int = 500) -> str:
    """A store error in one line, for a log or a terminal: a server's message without the stack
    trace that old servers append to it."""
    return " ".join(str(e).split("Stack trace:", 1)[0].split())[:limit]


class StorageError(Exception):
    """Base of every error raised by tracehouse.storage."""


class StorageUnavailable(StorageError):
    """The store cannot be reached, or it stopped answering."""


class QueryError(StorageError):
    """The database rejected a statement."""


class QueryTimeout(QueryError):
    """A statement exceeded its time limit."""


class QueryLimitExceeded(QueryError):
    """A statement hit a row, byte or memory limit (narrow the range or add filters)."""

    #: ClickHouse error codes: TOO_MANY_ROWS (rows read or result rows), TOO_MANY_BYTES,
    #: MEMORY_LIMIT_EXCEEDED, TOO_MANY_ROWS_OR_BYTES
    CODES = frozenset({158, 307, 241, 396})


class InvalidParameter(StorageError, ValueError):
    """A user-supplied value (filter, time range, id) is not acceptable."""


class NotFound(StorageError, LookupError):
    """The requested object does not exist."""


class ConfigError(StorageError, ValueError):
    """A bad storage URL or setting."""
