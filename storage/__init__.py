"""tracehouse.storage: the ClickHouse schema, the two backends (embedded chDB and a server
through clickhouse-driver), typed columnar inserts and the queries behind the API."""

from .errors import (
    ConfigError,
    InvalidParameter,
    NotFound,
    QueryError,
    QueryLimitExceeded,
    QueryTimeout,
    StorageError,
    StorageUnavailable,
)
from .store import Store
from .timerange import TimeRange, is_digits, parse_duration, parse_range, parse_step
from .url import DEFAULT_URL, StorageURL, parse_storage_url

__all__ = [
    "Store",
    "StorageURL",
    "parse_storage_url",
    "DEFAULT_URL",
    "TimeRange",
    "parse_range",
    "parse_duration",
    "parse_step",
    "is_digits",
    "StorageError",
    "StorageUnavailable",
    "QueryError",
    "QueryTimeout",
    "QueryLimitExceeded",
    "InvalidParameter",
    "NotFound",
    "ConfigError",
]
