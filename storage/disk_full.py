"""A store whose disk is full cannot take an insert now; it can once space is freed.

ClickHouse (server and chDB) answers an insert it has no room for with NOT_ENOUGH_SPACE (243:
"Cannot reserve 1.00 MiB, not enough space"), or with the system's ENOSPC text from a write. Both
were raised as a query error, which the collector's writer counts as a rejection: after eight, its
batch was stored record by record and then set aside in dead-letter files, which only an operator
brings back, although nothing was wrong with the data. They are ``StorageUnavailable`` now: the
data waits in the durable buffer (503 once it is full), as for a store that is down.
"""

from __future__ import annotations

__all__ = ["NOT_ENOUGH_SPACE", "is_disk_full"]

NOT_ENOUGH_SPACE = 243


def is_disk_full(code: int | None, text: str) -> bool:
    """Whether a store error with this code and text means its disk is full."""
    return code == NOT_ENOUGH_SPACE or "No space left on device" in text
