"""Agent test fixtures. Errors the agent swallows fail the test (sentry's approach), unless the
test is marked ``agent_errors_expected`` (tests that break the collector on purpose)."""

from __future__ import annotations

import pytest

from tests.agent.otlp_sink import Sink


def pytest_configure(config):
    config.addinivalue_line("markers", "agent_errors_expected: the test breaks the collector on purpose")


@pytest.fixture(autouse=True)
def fail_on_swallowed_errors(request):
    from tracehouse.agent import errors

    swallowed: list[tuple[str, BaseException]] = []
    expected = request.node.get_closest_marker("agent_errors_expected") is not None
    errors.set_hook(None if expected else (lambda where, exc: swallowed.append((where, exc))))
    yield swallowed
    errors.set_hook(None)
    if swallowed and not expected:
        where, exc = swallowed[0]
        raise AssertionError(f"the agent swallowed {len(swallowed)} error(s); first in {where}: {exc!r}") from exc


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.close()
