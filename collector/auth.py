"""Ingestion tokens: ``Authorization: Bearer <token>`` or the token alone in a configured header."""

from __future__ import annotations

import hmac

__all__ = ["TokenCheck"]


class TokenCheck:
    def __init__(self, tokens: list[str], header: str = "authorization"):
        self.tokens = [t.encode() for t in tokens if t]
        self.header = (header or "authorization").lower().encode("latin-1")

    @property
    def open(self) -> bool:
        return not self.tokens

    def allows(self, headers: dict[bytes, bytes]) -> bool:
        """``headers``: lower-case names → values, as ASGI gives them."""
        if not self.tokens:
            return True
        given = []
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            given.append(auth[7:].strip())
        if self.header != b"authorization":
            given.append(headers.get(self.header, b"").strip())
        ok = False
        for g in given:
            if not g:
                continue
            for t in self.tokens:  # compare with every token: no early exit to time
                ok |= hmac.compare_digest(g, t)
        return ok
