"""One-off HTTP calls of the tests, each on a connection of its own, as ``httpx.get`` makes them.

``httpx.get``/``post`` build a client for every call, and with it a TLS context that loads the CA
bundle: ~50 ms of CPU per call (measured: 53 ms against 4 ms with a shared context, plain HTTP on
loopback), though every server the tests start speaks plain HTTP. A test posting ~900 hostile
bodies spent most of its 96 s there, and polling loops took that CPU from the server under test.
These calls share one context, still verifying, for the few tests that speak TLS."""

from __future__ import annotations

from typing import Any

import httpx

_TLS = httpx.create_ssl_context()


def get(url: str, **kw: Any) -> httpx.Response:
    return httpx.get(url, verify=_TLS, **kw)


def post(url: str, **kw: Any) -> httpx.Response:
    return httpx.post(url, verify=_TLS, **kw)


def options(url: str, **kw: Any) -> httpx.Response:
    return httpx.options(url, verify=_TLS, **kw)
