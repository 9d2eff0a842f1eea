"""What the connected ClickHouse supports, probed once from its version.

Only the DDL changes with these flags; queries never depend on them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Capabilities:
    version: tuple[int, ...]
    low_cardinality: bool
    codecs: bool
    ttl: bool
    skip_indexes: bool
    server_side_params: bool
    view_subqueries: bool  # a materialized view may select from a subquery over its source
    compact_parts: bool  # small parts may keep all columns in one file (min_bytes_for_wide_part)
    packed_parts: bool  # small parts may be one file on disk (min_bytes_for_full_part_storage)
    lazy_ttl_modify: bool = False  # MODIFY TTL can skip rewriting every part (materialize_ttl_after_modify = 0)

    @property
    def version_string(self) -> str:
        return ".".join(str(p) for p in self.version)


def parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.strip().strip('"').split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or (0,)


def capabilities_for(version_text: str) -> Capabilities:
    v = parse_version(version_text)
    return Capabilities(
        version=v,
        low_cardinality=v >= (19, 9),
        codecs=v >= (19, 11),
        ttl=v >= (19, 11),
        skip_indexes=v >= (20, 1),
        server_side_params=v >= (21, 1),
        view_subqueries=v >= (21, 1),
        compact_parts=v >= (20, 3),
        packed_parts=v >= (24, 1),
        lazy_ttl_modify=v >= (20, 5),
    )
