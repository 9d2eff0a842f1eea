"""A process's memory as Linux reports it (``/proc/<pid>/status``), for tests that bound it."""

from __future__ import annotations

__all__ = ["status_mb", "reset_peak"]


def status_mb(pid: int, key: str) -> float:
    """One ``kB`` line of ``/proc/<pid>/status`` (``VmRSS:``, ``VmHWM:``, …) in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no {key} for {pid}")


def reset_peak(pid: int) -> None:
    """The peak (``VmHWM``) counts from now on."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
