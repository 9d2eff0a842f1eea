"""Optional login for the dashboard and bearer tokens for the JSON API.

Open when neither ``settings.users`` nor ``settings.api_tokens`` is configured. Otherwise:

* pages need a session (``settings.users``: name → {"password_hash", "role"}; roles viewer <
  editor < admin); without one they redirect to ``/login``;
* ``/api/...`` accepts ``Authorization: Bearer <token>`` (``settings.api_tokens``) or a session;
* sessions are an HMAC-SHA256-signed cookie (HttpOnly, SameSite=Strict) holding user, role,
  expiry and a CSRF token; unsafe methods authenticated by the cookie must carry that token
  (form field ``csrf`` or header ``X-CSRF-Token``). The signing key is ``settings.secret_key``
  when set, else random per process (sessions then end on restart).

Password hashes: ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`` or
``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>``; ``hash_password`` makes the first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from typing import Any

ROLES = {"viewer": 1, "editor": 2, "admin": 3}
COOKIE = "th_session"
LOGIN_CSRF_COOKIE = "th_login_csrf"
SESSION_S = 12 * 3600
# /logout checks its own CSRF; /metrics and /readyz are for scrapers and probes, like the collector's
OPEN_PATHS = ("/login", "/logout", "/static/", "/healthz", "/readyz", "/metrics", "/favicon.ico")


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def hash_password(password: str, salt: bytes | None = None, n: int = 2**14, r: int = 8, p: int = 1) -> str:
    salt = salt or os.urandom(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(dk)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        parts = stored.split("$")
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = (int(x) for x in parts[1:4])
            dk = hashlib.scrypt(password.encode(), salt=_unb64(parts[4]), n=n, r=r, p=p, dklen=len(_unb64(parts[5])),
                                maxmem=256 << 20)
            return hmac.compare_digest(dk, _unb64(parts[5]))
        if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            want = _unb64(parts[3])
            dk = hashlib.pbkdf2_hmac("sha256", password.encode(), _unb64(parts[2]), int(parts[1]), len(want))
            return hmac.compare_digest(dk, want)
    except (ValueError, TypeError):
        return False
    return False


class Auth:
    """The auth configuration of one app; pure apart from the clock it is given."""

    def __init__(self, settings: Any, clock=time.time):
        self.users: dict[str, dict[str, Any]] = dict(getattr(settings, "users", None) or {})
        self.tokens: list[str] = [t for t in (getattr(settings, "api_tokens", None) or []) if t]
        secret = getattr(settings, "secret_key", None)
        self.key = secret.encode() if isinstance(secret, str) and secret else os.urandom(32)
        self.clock = clock

    @property
    def enabled(self) -> bool:
        return bool(self.users or self.tokens)

    def login(self, name: str, password: str) -> dict[str, Any] | None:
        u = self.users.get(name)
        if not isinstance(u, dict) or not verify_password(password, str(u.get("password_hash", ""))):
            verify_password(password, hash_password("x", n=2**10))  # similar work for unknown users
            return None
        role = u.get("role", "viewer")
        return {"u": name, "r": role if role in ROLES else "viewer", "exp": int(self.clock()) + SESSION_S,
                "csrf": _b64(os.urandom(18))}

    def sign(self, session: dict[str, Any]) -> str:
        payload = _b64(json.dumps(session, separators=(",", ":")).encode())
        return payload + "." + _b64(hmac.new(self.key, payload.encode(), hashlib.sha256).digest())

    def session(self, cookie: str | None) -> dict[str, Any] | None:
        if not cookie or "." not in cookie:
            return None
        payload, _, sig = cookie.rpartition(".")
        good = _b64(hmac.new(self.key, payload.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(sig, good):
            return None
        try:
            s = json.loads(_unb64(payload))
        except ValueError:
            return None
        if not isinstance(s, dict) or s.get("exp", 0) < self.clock() or s.get("u") not in self.users:
            return None
        return s

    def token_ok(self, header: str | None) -> bool:
        if not header or not header.lower().startswith("bearer "):
            return False
        given = header[7:].strip()
        return any(hmac.compare_digest(given.encode(), t.encode()) for t in self.tokens)


def has_role(session: dict[str, Any] | None, role: str) -> bool:
    return bool(session) and ROLES.get(session.get("r", ""), 0) >= ROLES[role]
