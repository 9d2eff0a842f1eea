"""Whether an embedded store's data directory is free: one process at a time opens it.

The engine locks ``DIR/status`` (``flock``, held while it runs, the owner's PID written in the
file) and refuses a second process with ``Error initializing EmbeddedServer: .``, after printing its
own line and, from the command line, a traceback. The lock is tried here first, the way the engine
takes it, and released at once, so that a second ``tracehouse serve`` on the same directory says
what is wrong, and who holds it, in one line.
"""

from __future__ import annotations

import fcntl
import os

from .errors import ConfigError

__all__ = ["StoreInUse", "check_free"]


class StoreInUse(ConfigError):
    """Another process has the embedded store's data directory open."""


def _owner(text: str) -> str:
    """The PID the engine wrote in its status file (``PID: 123`` on the first line), or ''."""
    first = text.split("\n", 1)[0]
    pid = first.removeprefix("PID:").strip()
    return pid if first.startswith("PID:") and pid.isascii() and pid.isdigit() and len(pid) <= 10 else ""


def check_free(path: str) -> None:
    """Raise :class:`StoreInUse` when another process holds the data directory ``path``."""
    status = os.path.join(path, "status")
    try:
        fd = os.open(status, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # no status file: never opened, or not readable (the engine says why)
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 256).decode("utf-8", "replace")
            pid = _owner(text)
            if pid == str(os.getpid()):
                return
            who = f"process {pid}" if pid else "another process"
            raise StoreInUse(
                f"the embedded store {path} is in use by {who}: one process at a time opens an embedded store "
                "(stop that process, give this one another directory, or share a ClickHouse server)") from None
        except OSError:  # a file system without flock: the engine decides
            return
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
