"""One real ``tracehouse serve`` for the snapshot tests (each test uses its own service names)."""

from __future__ import annotations

import pytest

from tests.snapshots.helpers import Server


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()
