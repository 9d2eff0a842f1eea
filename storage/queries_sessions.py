"""Signed-out dashboard sessions (``ended_sessions``): written at sign-out, read by every dashboard
process, so that a copy of a signed-out session cookie is refused by other replicas and after a
restart, not only by the process that signed it out. Rows are digests of session ids with the time
the session would have expired; expired rows are never read again, and :func:`prune_ended_sessions`
(run by the dashboard about hourly) deletes them, so the table holds only the sign-outs of sessions
that could still be used."""

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


def prune_ended_sessions(store: Store, now: int) -> int:
    """Delete the rows of sessions that expired before ``now`` (Unix seconds): how many there were.
    A mutation (``ALTER TABLE … DELETE``, which every supported server has), issued only when there
    is something to delete; the server applies it in the background. On a cluster the table is
    replicated to every node, and the mutation with it."""
    cutoff = max(0, min(int(now), 0xFFFFFFFF))
    n = int(store.read_small(f"SELECT count() FROM {store.t('ended_sessions')} WHERE expires < {{now:UInt32}}",
                             {"now": cutoff}, timeout_s=READ_TIMEOUT_S).scalar() or 0)
    if n:
        store.query(f"ALTER TABLE {store.t('ended_sessions')} DELETE WHERE expires < {cutoff}",
                    None, {"max_execution_time": READ_TIMEOUT_S})
    return n
