"""The process's file descriptor limit, raised to what the system allows.

A server process holds one descriptor per client connection (agents keep theirs open), and the
embedded engine one per open file of the store's parts. Many systems start processes with a soft
limit of 1,024 (systemd's default), far under the hard limit they allow (524,288): past it, the
server can accept no connection and the engine open no part, while the system would have allowed
more. As Go's runtime and ClickHouse's own server do, a server role raises its soft limit to the
hard one at start; a limit that cannot be raised is left as it is, and said once in the log.
"""

from __future__ import annotations

import logging

__all__ = ["raise_fd_limit"]

log = logging.getLogger("tracehouse.server")


def raise_fd_limit() -> tuple[int, int]:
    """Set the soft ``RLIMIT_NOFILE`` to the hard one; return (soft, hard) in effect after."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return (-1, -1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as e:
        log.warning("cannot raise the file descriptor limit from %d to %d: %s", soft, hard, e)
        return soft, hard
    return hard, hard
