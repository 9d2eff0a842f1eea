"""Small state files of a server process (what the store did not take yet, kept across a restart):
written whole and atomically (a temporary file, fsync, rename, fsync of the folder), at most a
given size, and read back as untrusted input (size checked before reading, JSON only)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any

__all__ = ["put", "write_json", "write_bytes", "read_json", "remove", "state_dir"]


def put(path: str, doc: Any, max_bytes: int) -> None:
    """``path`` holds ``doc`` (as :func:`write_json`), or no file when ``doc`` is None."""
    if doc is None:
        remove(path)
    else:
        write_json(path, doc, max_bytes)


def write_json(path: str, doc: Any, max_bytes: int) -> None:
    """Replace ``path`` by ``doc`` as JSON. Raises ValueError past ``max_bytes``, OSError."""
    data = json.dumps(doc, separators=(",", ":")).encode()
    if len(data) > max_bytes:
        raise ValueError(f"{len(data):,} bytes, over {max_bytes:,}")
    write_bytes(path, data)


def write_bytes(path: str, data: bytes) -> None:
    """Replace ``path`` by ``data``: a temporary file beside it, fsync, rename, fsync of the folder."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + "-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def state_dir(settings: Any, setting: str, name: str) -> str:
    """A role's data directory: the setting ``setting`` when given; else next to the chDB directory
    (``<path>-<name>``), or ``./tracehouse-<name>`` on a ClickHouse server; '' without a storage setting."""
    given = str(getattr(settings, setting, "") or "")
    if given:
        return given
    storage = str(getattr(settings, "storage", "") or "")
    if not storage:
        return ""
    if storage.startswith("chdb://"):
        from .url import parse_storage_url

        return parse_storage_url(storage).path + "-" + name
    return os.path.abspath("./tracehouse-" + name)


def read_json(path: str, max_bytes: int) -> Any:
    """The JSON document in ``path``; None when there is no file. Raises ValueError (too large, not
    JSON) and OSError."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"larger than {max_bytes:,} bytes")
    try:
        return json.loads(data)
    except RecursionError:  # nested past the parser's depth: no file this process writes
        raise ValueError("nested too deeply") from None


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
