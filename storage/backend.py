"""The backend contract: run a statement, insert a columnar batch. Two implementations:
``chdb_backend`` (embedded engine) and ``server_backend`` (clickhouse-driver, native protocol).

``Backend`` is what every backend does. What only some do is a sub-protocol, checked with
``isinstance`` where it is used: ``PipelinedBackend`` (an insert's payload prepared apart from
sending it, so the two overlap) and ``EmbeddedBackend`` (the in-process engine: read-only
connections for user SQL, inserts of a file in any engine format, memory given back after
start-up). ``RuleReader`` is where user-written SQL runs."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .tables import Table

PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):([^{}]+)\}")


@dataclass
class Result:
    names: list[str]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.names, row)) for row in self.rows]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None


@runtime_checkable
class Backend(Protocol):
    """One connection to ClickHouse (embedded or server)."""

    kind: str

    def query(self, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> Result:
        """Run a statement with ``{name:Type}`` placeholders bound from ``params``."""

    def insert(self, table: Table, qualified_name: str, columns: Sequence[Sequence[Any]],
               token: str | None = None, settings: dict[str, Any] | None = None) -> int:
        """Insert one columnar batch (columns in ``table.columns`` order); return rows written. With
        ``token`` (servers with ``Capabilities.insert_dedup`` only), a retry with the same token
        writes only the parts, and the materialized views' parts, that are missing. ``settings``:
        the statement's own (a time limit), for a server."""

    def close(self) -> None: ...


@runtime_checkable
class PipelinedBackend(Backend, Protocol):
    """A backend whose inserts split into preparing a payload (Python-bound work) and sending it
    (the engine, which releases the GIL): ``Store.insert`` prepares part i+1 while part i goes in."""

    def prepare(self, table: Table, columns: Sequence[Sequence[Any]]) -> bytes:
        """Columns (in ``table.columns`` order) → the payload of one insert."""

    def insert_prepared(self, table: Table, qualified_name: str, payload: bytes, token: str | None = None) -> None:
        """Insert a payload from :meth:`prepare` (``token`` as in :meth:`Backend.insert`)."""


class RuleReader(Protocol):
    """Read-only connections, limited, whose default database is the store's: user-written SQL."""

    def query(self, sql: str, params: dict[str, Any] | None = None) -> Result: ...


@runtime_checkable
class EmbeddedBackend(Backend, Protocol):
    """The in-process engine (chDB)."""

    def restricted_reader(self, database: str, settings: dict[str, Any]) -> RuleReader:
        """Connections with ``settings`` fixed and then ``readonly = 1``, default database ``database``."""

    def insert_file(self, insert: str, fmt: str, data: bytes, structure: str = "", settings: str = "",
                    select: str = "SELECT * FROM {input}", lane: int = 0, pipe: bool = False) -> None:
        """``<insert> <select with {input} = file(<data>, fmt[, structure])> SETTINGS <settings>``,
        on insert connection ``lane`` (inserts on different lanes run side by side)."""

    def release_startup_memory(self) -> None:
        """Give back memory only start-up used."""


def check_params(sql: str, params: dict[str, Any] | None) -> None:
    """Every placeholder has a value and every value a placeholder (catches typos early)."""
    names = {m.group(1) for m in PARAM_RE.finditer(sql)}
    given = set(params or ())
    if names != given:
        missing, extra = names - given, given - names
        raise ValueError(f"query parameters mismatch: missing {sorted(missing)}, unused {sorted(extra)}")
