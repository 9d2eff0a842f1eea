"""The demo's schedule of faults: a pure function of the seconds since the demo started, so every
process agrees on what is happening without talking to each other.

One cycle lasts ``CYCLE_S``; in each cycle (so a newcomer sees everything in the first minute
or two):
- 10–30 s: bursts of payment errors (the card processor declines 40% of charges with a 500);
- 20–24 s: a report request hangs on a lock held by another thread (a slow-request snapshot; the
  launcher sends one report request in this window, so every cycle has one);
- 30–50 s: a latency spike in inventory (300–900 ms per stock check);
- 55–80 s: the external bank is down (the launcher stops it; payments fail, its probe reports down);
- always: orders leaks a little memory per request (a slow leak, capped).
"""

from __future__ import annotations

from dataclasses import dataclass

CYCLE_S = 120


@dataclass(frozen=True)
class Faults:
    payment_errors: bool
    inventory_slow: bool
    bank_down: bool
    report_hangs: bool
    cycle: int
    second: float


def faults_at(elapsed_s: float) -> Faults:
    cycle, t = divmod(max(0.0, elapsed_s), CYCLE_S)
    return Faults(
        payment_errors=10 <= t < 30,
        inventory_slow=30 <= t < 50,
        bank_down=55 <= t < 80,
        report_hangs=20 <= t < 24,
        cycle=int(cycle),
        second=t,
    )
