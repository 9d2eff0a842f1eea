"""Signed-out dashboard sessions (``ended_sessions``): written at sign-out, read by every dashboard
process, so that a copy of a signed-out session cookie is refused by other replicas and after a
restart, not only by the process that signed it out. Rows are digests of session ids with the time
the session would have expired; expired rows are never read again."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import Store

#: signed-out sessions one read returns at most (the newest expiries first)
MAX_ENDED = 100_000
#: seconds one read of the list may take (a hung server is given this and a margin, see server_backend)
READ_TIMEOUT_S = 5


def record_ended_session(store: Store, digest: str, expires: int) -> None:
    store.write_small("ended_sessions", {"id": [digest], "expires": [max(0, min(int(expires), 0xFFFFFFFF))],
                                    "ended_ns": [time.time_ns()]})


def ended_sessions(store: Store, now: int, limit: int = MAX_ENDED) -> dict[str, int]:
    """Digest → expiry (Unix seconds) of the signed-out sessions that have not expired at ``now``."""
    res = store.read_small(
        f"SELECT id, max(expires) AS e FROM {store.t('ended_sessions')} WHERE expires >= {{now:UInt32}} "
        "GROUP BY id ORDER BY e DESC LIMIT {lim:UInt32}", {"now": max(0, int(now)), "lim": int(limit)},
        timeout_s=READ_TIMEOUT_S)
    return {str(i): int(e) for i, e in res.rows}
