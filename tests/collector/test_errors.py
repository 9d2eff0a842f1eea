"""The collector's exceptions form one family under CollectorError; callers' old catches still hold."""

from __future__ import annotations

import tracehouse.collector as collector
from tests.support.surface import own_exceptions


def test_one_exception_family():
    found = own_exceptions(collector)
    assert {c.__name__ for c in found} >= {"BadRequest", "WalClosed", "WalLocked"}
    for cls in found:
        assert issubclass(cls, collector.CollectorError), cls
        assert cls.__name__ in collector.__all__, cls
    assert issubclass(collector.WalLocked, RuntimeError)  # what the command line caught before
    e = collector.BadRequest(413, "too big")
    assert (e.status, e.message, str(e)) == (413, "too big", "too big")
