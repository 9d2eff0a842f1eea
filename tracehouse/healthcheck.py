"""The container image's health check (``python -m tracehouse.healthcheck``): exit status 0 when the
server in this container answers ``/healthz`` on the dashboard's port, or else on the collector's
(a ``tracehouse collector`` container has no dashboard; the check on port 8080 alone marked every
such container unhealthy). The ports are read from ``TRACEHOUSE_HTTP_PORT`` and
``TRACEHOUSE_OTLP_PORT``, as the server reads them. Standard library only, no proxy: it runs every
10 seconds and has 3."""

from __future__ import annotations

import os
import urllib.request

PORTS = (("TRACEHOUSE_HTTP_PORT", 8080), ("TRACEHOUSE_OTLP_PORT", 4318))


def main() -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for name, default in PORTS:
        raw = os.environ.get(name, "").strip()
        port = int(raw) if raw.isascii() and raw.isdigit() and 0 < int(raw) < 65536 else default
        try:
            with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return 0
        except OSError:
            continue
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
