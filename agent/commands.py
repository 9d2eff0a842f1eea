"""The agent's command channel: it polls the collector for snapshot requests.

``GET {endpoint}/v1/tracehouse/commands?service=S&instance=I`` with the export headers (the same
ingestion token as OTLP) answers ``{"commands": [{"id", "kind", "reason", "requested_by"}]}``.
One request at a time, every ``interval`` seconds, each within a timeout for the whole exchange (a
collector answering a byte at a time cannot hold the poll); failures back off (a collector
without the endpoint — 404 — is asked again only every few minutes). Redirects are failed polls:
following one would send the ingestion token to whatever host it names. The thread never
touches the host's threads; commands are handed to ``on_command``, which must not block.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable

from tracehouse.agent import counters, errors
from tracehouse.agent.otlp_transport import ExportFailed, get_within
from tracehouse.agent.untraced import untraced

__all__ = ["CommandPoller", "PATH"]

PATH = "/v1/tracehouse/commands"
MAX_RESPONSE = 64 * 1024
MAX_COMMANDS = 10
NOT_SUPPORTED_PAUSE = 300.0


class CommandPoller:
    def __init__(self, endpoint: str, headers: dict[str, str], interval: float, timeout: float,
                 identity: Callable[[], tuple[str, str]], on_command: Callable[[dict], None],
                 first_delay: float = 0.5):
        self.url = endpoint.rstrip("/") + PATH
        self.headers = {k: v for k, v in headers.items()}
        self.interval = interval
        self.timeout = timeout
        self.identity = identity
        self.on_command = on_command
        self.first_delay = first_delay
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop = threading.Event()
        self._seen.clear()
        self._thread = threading.Thread(target=self._run, name="tracehouse-commands", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def _run(self) -> None:
        wait = self.first_delay
        failures = 0
        while not self._stop.wait(wait):
            try:
                status = self.poll_once()
            except Exception as exc:
                errors.swallow("snapshot command poll", exc)
                status = "error"
            if status == "ok":
                failures = 0
                wait = self.interval
            elif status == "unsupported":
                wait = NOT_SUPPORTED_PAUSE
            else:
                failures += 1
                wait = min(60.0, self.interval * 2 ** min(failures, 6))

    def poll_once(self) -> str:
        """One poll: ``"ok"``, ``"unsupported"`` (404) or ``"failed"`` (network, 5xx, 401)."""
        service, instance = self.identity()
        query = urllib.parse.urlencode({"service": service, "instance": instance})
        try:
            with untraced():
                status, raw = get_within(f"{self.url}?{query}", dict(self.headers, accept="application/json"),
                                         self.timeout, MAX_RESPONSE + 1)
        except (ExportFailed, ValueError):  # ValueError: a URL http.client cannot use
            counters.add("commands.poll_failed")
            return "failed"
        if status != 200:
            counters.add("commands.poll_failed")
            return "unsupported" if status in (404, 405) else "failed"
        counters.add("commands.polled")
        if len(raw) > MAX_RESPONSE:
            counters.add("commands.dropped.too_large")
            return "ok"
        try:
            cmds = json.loads(raw).get("commands") or []
        except (ValueError, AttributeError):
            counters.add("commands.dropped.malformed")
            return "ok"
        for cmd in cmds[:MAX_COMMANDS]:
            if not isinstance(cmd, dict) or not isinstance(cmd.get("id"), str) or cmd["id"] in self._seen:
                continue
            self._seen[cmd["id"]] = None
            while len(self._seen) > 512:
                self._seen.popitem(last=False)
            counters.add("commands.received")
            self.on_command(cmd)
        return "ok"
