"""The backend contract: run a statement, insert a columnar batch. Two implementations:
``chdb_backend`` (embedded engine) and ``server_backend`` (clickhouse-driver, native protocol)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .schema import Table

PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):([^{}]+)\}")


@dataclass
class Result:
    names: list[str]
    rows: list[tuple]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.names, row)) for row in self.rows]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None


class Backend(Protocol):
    """One connection to ClickHouse (embedded or server)."""

    kind: str

    def query(self, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> Result:
        """Run a statement with ``{name:Type}`` placeholders bound from ``params``."""

    def insert(self, table: Table, qualified_name: str, columns: Sequence[Sequence[Any]],
               token: str | None = None) -> int:
        """Insert one columnar batch (columns in ``table.columns`` order); return rows written. With
        ``token`` (servers with ``Capabilities.insert_dedup`` only), a retry with the same token
        writes only the parts, and the materialized views' parts, that are missing."""

    def close(self) -> None: ...


def check_params(sql: str, params: dict[str, Any] | None) -> None:
    """Every placeholder has a value and every value a placeholder (catches typos early)."""
    names = {m.group(1) for m in PARAM_RE.finditer(sql)}
    given = set(params or ())
    if names != given:
        missing, extra = names - given, given - names
        raise ValueError(f"query parameters mismatch: missing {sorted(missing)}, unused {sorted(extra)}")
