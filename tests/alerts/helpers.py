"""Test helpers: an injected clock and an SMTP inbox (the webhook receiver is testkit.receiver.Receiver)."""

from __future__ import annotations

import time

NS = 1_000_000_000


class Clock:
    """Nanosecond clock the test moves by hand. Starts on a whole hour a little in the past
    (recent enough to stay inside the tables' retention)."""

    def __init__(self, start_s: int | None = None):
        self.ns = (start_s if start_s is not None else (int(time.time()) // 3600 - 2) * 3600) * NS

    def __call__(self) -> int:
        return self.ns

    @property
    def s(self) -> int:
        return self.ns // NS

    def advance(self, seconds: float) -> int:
        self.ns += int(seconds * NS)
        return self.ns


class Inbox:
    """An aiosmtpd handler keeping every message it receives."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.messages.append(envelope)
        return "250 OK"
