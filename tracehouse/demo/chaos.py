"""The demo's schedule of faults: a pure function of the seconds since the demo started, so every
process agrees on what is happening without talking to each other.

One cycle lasts ``CYCLE_S``; in each cycle:
- 15–35 s: bursts of payment errors (the card processor declines 40% of charges with a 500);
- 40–60 s: a latency spike in inventory (300–900 ms per stock check);
- 70–95 s: the external bank is down (the launcher stops it; payments fail, its probe reports down);
- 100–104 s: a report request hangs on a lock held by another thread (a slow-request snapshot);
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
        payment_errors=15 <= t < 35,
        inventory_slow=40 <= t < 60,
        bank_down=70 <= t < 95,
        report_hangs=100 <= t < 104,
        cycle=int(cycle),
        second=t,
    )
