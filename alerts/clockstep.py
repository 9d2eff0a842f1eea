"""Deadlines against a wall clock that can step back (an NTP correction, a VM restored from a
snapshot): a deadline further ahead than the longest wait that could have set it was set before
the clock moved back, and would otherwise hold evaluation or notification for as long as the step
(an hour back = an hour of silence). Such a deadline is taken as due now; a time stamp in the future
(when an alert became active, when its condition stopped holding) is taken as now."""

from __future__ import annotations


def due(deadline_ns: int, now_ns: int, longest_wait_ns: int) -> int:
    """``deadline_ns``, or ``now_ns`` when it lies more than ``longest_wait_ns`` ahead."""
    return now_ns if deadline_ns - now_ns > longest_wait_ns else deadline_ns


def not_after(stamp_ns: int, now_ns: int) -> int:
    """``stamp_ns``, or ``now_ns`` when the stamp is in the future."""
    return min(stamp_ns, now_ns)
