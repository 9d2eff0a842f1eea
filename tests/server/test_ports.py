"""Ports for the servers we start are picked where no client connection can take them first.

A cluster ClickHouse node once exited 70 at start with "Address already in use": its port came from
``bind(0)``, the ephemeral range, and an outgoing connection took it before the server bound it.
"""

from __future__ import annotations

import socket

from tracehouse import ports
from tracehouse.ports import candidate_ranges, ephemeral_range, free_port


def test_picked_ports_are_outside_the_ephemeral_range_and_never_repeat():
    low, high = ephemeral_range()
    assert candidate_ranges(low, high), "this machine's ephemeral range leaves no room to pick from"
    ports = [free_port() for _ in range(300)]
    inside = [p for p in ports if low <= p <= high]
    assert inside == [], f"{len(inside)} of 300 ports in the ephemeral range {low}-{high}"
    assert len(set(ports)) == len(ports)
    assert all(1024 < p <= 65535 for p in ports)


def test_a_port_something_listens_on_is_not_picked(monkeypatch):
    low, high = ephemeral_range()
    (lo, _), *_ = candidate_ranges(low, high)
    held = []
    try:  # something listens on 20 of a window's 21 ports; the picker chooses only from that window
        for port in range(lo, lo + 20):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
                s.listen(1)
                held.append(s)
            except OSError:
                s.close()
        occupied = {s.getsockname()[1] for s in held}
        assert occupied
        monkeypatch.setattr(ports, "candidate_ranges", lambda a, b: [(lo, lo + 20)])
        picked = [ports.free_port() for _ in range(3)]
        assert not occupied & set(picked), picked
    finally:
        for s in held:
            s.close()


def test_ranges_are_found_on_either_side_of_the_ephemeral_range():
    assert candidate_ranges(32768, 60999) == [(10000, 32767), (61000, 65535)]
    assert candidate_ranges(1024, 65000) == []  # nothing worth picking: the kernel's choice is used
    assert candidate_ranges(15000, 65535) == [(10000, 14999)]
