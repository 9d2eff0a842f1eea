"""Login for the dashboard and bearer tokens for the JSON API, with roles viewer < editor < admin.

Open when neither ``settings.users`` nor ``settings.api_tokens`` is configured (the server refuses
that off loopback, see ``tracehouse.exposure``). Otherwise:

* every page needs a session; without one it redirects to ``/login``, where a user signs in with a
  password (``settings.users``: name → {"password_hash", "role"}) or with an API token;
* ``/api/...`` accepts ``Authorization: Bearer <token>`` or a session; ``/metrics`` also accepts
  an ingest token (``settings.ingest_tokens``), and needs one of them whenever any is configured;
* roles: viewer reads; editor also changes rules, silences and snapshot requests; admin also
  everything about users, tokens and retention (``require_role("admin")``). Every unsafe method
  needs editor at least (the gate), admin-only routes add the dependency;
* API tokens: ``name:role:secret`` (``settings.api_tokens``, or YAML entries ``{name, role, token}``);
  a bare ``secret`` is named ``token-N`` and acts as :data:`DEFAULT_TOKEN_ROLE` (what every token
  was before tokens had roles);
* sessions are an HMAC-SHA256-signed cookie (HttpOnly, SameSite=Strict; Secure over HTTPS and
  whenever a trusted TLS proxy is declared) holding the principal, expiry, a fingerprint of its
  credential (a changed password or token ends the session) and a CSRF token; the role is read
  from the configuration at each request. Signing out ends the session: this process remembers its
  id until it would have expired, and a digest of it goes to the store, which every replica (and
  this one after a restart) reads again every two seconds (``signouts.py``); a copy of the cookie
  is refused afterwards. The signing key comes from ``settings.secret_key_file`` or
  ``settings.secret_key``, else it is random per process (sessions then end on restart and do
  not carry across replicas).

Password hashes: ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`` or
``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>``; ``hash_password`` makes the first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request

from .loginlimit import LoginLimiter

__all__ = ["DEFAULT_TOKEN_ROLE", "ROLES", "ApiToken", "Auth", "has_role", "hash_password", "parse_api_tokens",
           "require_role", "verify_password"]

log = logging.getLogger("tracehouse.dashboard.auth")

ROLES = {"viewer": 1, "editor": 2, "admin": 3}
DEFAULT_TOKEN_ROLE = "editor"
COOKIE = "th_session"
LOGIN_CSRF_COOKIE = "th_login_csrf"
SESSION_S = 12 * 3600
OPEN_PATHS = ("/login", "/logout", "/static/", "/healthz", "/readyz", "/favicon.ico")  # /logout checks its CSRF


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def same(a: str, b: str) -> bool:
    """Constant-time equality of two strings of any characters (``hmac.compare_digest`` refuses
    non-ASCII str, which made a non-ASCII cookie or CSRF value a 500)."""
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


def hash_password(password: str, salt: bytes | None = None, n: int = 2**14, r: int = 8, p: int = 1) -> str:
    salt = salt or os.urandom(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(dk)}"


def verify_password(password: str, stored: str) -> bool:
    """Blocking (scrypt takes tens of milliseconds by design): call it from a worker thread."""
    try:
        parts = stored.split("$")
        pw = password.encode("utf-8", "surrogatepass")
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = (int(x) for x in parts[1:4])
            dk = hashlib.scrypt(pw, salt=_unb64(parts[4]), n=n, r=r, p=p, dklen=len(_unb64(parts[5])),
                                maxmem=256 << 20)
            return hmac.compare_digest(dk, _unb64(parts[5]))
        if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            want = _unb64(parts[3])
            dk = hashlib.pbkdf2_hmac("sha256", pw, _unb64(parts[2]), int(parts[1]), len(want))
            return hmac.compare_digest(dk, want)
    except (ValueError, TypeError):
        return False
    return False


@dataclass(frozen=True)
class ApiToken:
    name: str
    role: str
    secret: bytes


def parse_api_tokens(raw: Any) -> list[ApiToken]:
    """``name:role:secret`` strings, bare secrets (→ ``token-N``, :data:`DEFAULT_TOKEN_ROLE`) or
    mappings ``{name, role, token}``. An unknown role in a mapping is an error, not a default."""
    out: list[ApiToken] = []
    for i, item in enumerate(raw if isinstance(raw, (list, tuple)) else [raw] if raw else [], 1):
        if isinstance(item, dict):
            secret = str(item.get("token") or item.get("secret") or "")
            role = str(item.get("role") or DEFAULT_TOKEN_ROLE)
            if role not in ROLES:
                raise ValueError(f"API token {item.get('name')!r}: role must be one of {', '.join(ROLES)}")
            if secret:
                out.append(ApiToken(str(item.get("name") or f"token-{i}"), role, secret.encode()))
            continue
        s = str(item).strip()
        if not s:
            continue
        name, role, secret = (s.split(":", 2) + ["", ""])[:3]
        if name and role in ROLES and secret:
            out.append(ApiToken(name, role, secret.encode()))
            continue
        if s.count(":") >= 2 and name and secret and role not in ROLES:
            log.warning("API token %d looks like name:role:secret but %r is not a role; it is taken as one "
                        "bare secret acting as %s", i, role, DEFAULT_TOKEN_ROLE)
        out.append(ApiToken(f"token-{i}", DEFAULT_TOKEN_ROLE, s.encode()))
    return out


def session_key(settings: Any) -> tuple[bytes, bool]:
    """(signing key, whether it was configured). ``secret_key_file`` wins over ``secret_key``; an
    unreadable or empty key file stops the start (a silently random key would log everyone out)."""
    path = getattr(settings, "secret_key_file", None) or ""
    secret = getattr(settings, "secret_key", None) or ""
    if path:
        with open(path, "rb") as f:
            data = f.read().strip()
        if not data:
            raise ValueError(f"the session key file {path} is empty")
    elif isinstance(secret, str) and secret.strip():
        # stripped as the file's content is: a key pasted with a newline (a Kubernetes secret made
        # from a file) signs as the same key given without one, on every replica
        data = secret.strip().encode()
    else:
        return os.urandom(32), False
    return hashlib.sha256(b"tracehouse session key\0" + data).digest(), True


class Auth:
    """The auth configuration of one app; pure apart from the clock it is given."""

    def __init__(self, settings: Any, clock=time.time, limiter: LoginLimiter | None = None):
        self.users: dict[str, dict[str, Any]] = dict(getattr(settings, "users", None) or {})
        self.tokens = parse_api_tokens(getattr(settings, "api_tokens", None) or [])
        # what an unknown name is checked against: a configured user's own hash, so that it costs the
        # same scrypt/PBKDF2 work as a wrong password of a user (a cheaper hash told names apart by time)
        self._decoy = next((str(u["password_hash"]) for u in self.users.values()
                            if isinstance(u, dict) and u.get("password_hash")), "")
        self.ingest_tokens = [str(t).encode() for t in getattr(settings, "ingest_tokens", None) or [] if t]
        self.key, configured = session_key(settings)
        self.secure_cookies = bool([p for p in getattr(settings, "trusted_proxies", None) or [] if p])
        self.clock = clock
        self.limiter = limiter or LoginLimiter()
        self._ended: dict[str, int] = {}  # session id (its CSRF token) → expiry, of sessions signed out
        self._ended_lock = threading.Lock()
        # sign-outs of other processes, and of this one before a restart (``signouts.SignOuts``;
        # set by the app when it has a store)
        self.shared_signouts: Any = None
        if self.enabled and not configured:
            log.warning("no TRACEHOUSE_SECRET_KEY(_FILE): dashboard sessions are signed with a random key, so they "
                        "end when this process stops and are not valid on other replicas")
        bare = sum(1 for t in self.tokens if t.name.startswith("token-"))
        if bare:
            log.info("%d API token(s) without a role act as %s; write name:role:secret to choose", bare,
                     DEFAULT_TOKEN_ROLE)

    @property
    def enabled(self) -> bool:
        return bool(self.users or self.tokens)

    @property
    def protects_metrics(self) -> bool:
        return self.enabled or bool(self.ingest_tokens)

    def _fingerprint(self, kind: str, credential: bytes) -> str:
        return _b64(hmac.new(self.key, kind.encode() + b"\0" + credential, hashlib.sha256).digest()[:9])

    def _new_session(self, kind: str, name: str, credential: bytes) -> dict[str, Any]:
        return {"k": kind, "n": name, "f": self._fingerprint(kind, credential), "exp": int(self.clock()) + SESSION_S,
                "csrf": _b64(os.urandom(18))}

    def login(self, name: str, password: str) -> dict[str, Any] | None:
        """A new session for a user and password, or None. Blocking: run it in a worker thread."""
        u = self.users.get(name)
        if not isinstance(u, dict):
            verify_password(password, self._decoy)  # the same work as for a user: result ignored
            return None
        if not verify_password(password, str(u.get("password_hash", ""))):
            return None
        return self._new_session("u", name, str(u.get("password_hash", "")).encode())

    def token_login(self, secret: str) -> dict[str, Any] | None:
        """A new session for an API token (for pages when only tokens are configured), or None."""
        t = self._token(secret.encode("utf-8", "surrogatepass"))
        return None if t is None else self._new_session("t", t.name, t.secret)

    def sign(self, session: dict[str, Any]) -> str:
        payload = _b64(json.dumps(session, separators=(",", ":")).encode())
        return payload + "." + _b64(hmac.new(self.key, payload.encode(), hashlib.sha256).digest())

    def session(self, cookie: str | None) -> dict[str, Any] | None:
        """The principal a signed session cookie stands for (``u`` display name, ``r`` role as
        configured now, ``csrf``), or None when it is missing, forged, expired or revoked."""
        if not cookie or "." not in cookie:
            return None
        payload, _, sig = cookie.rpartition(".")
        good = _b64(hmac.new(self.key, payload.encode("utf-8", "surrogatepass"), hashlib.sha256).digest())
        if not same(sig, good):
            return None
        try:
            s = json.loads(_unb64(payload))
        except ValueError:
            return None
        if not isinstance(s, dict) or not isinstance(s.get("exp"), int) or s["exp"] < self.clock():
            return None
        sid = str(s.get("csrf", ""))
        if sid in self._ended or (self.shared_signouts is not None and self.shared_signouts.ended(sid)):
            return None
        name, kind = str(s.get("n", "")), s.get("k")
        if kind == "u" and isinstance(self.users.get(name), dict):
            u = self.users[name]
            credential, role, shown = str(u.get("password_hash", "")).encode(), u.get("role", "viewer"), name
        elif kind == "t" and (t := next((t for t in self.tokens if t.name == name), None)) is not None:
            credential, role, shown = t.secret, t.role, f"token:{name}"
        else:
            return None
        if not same(str(s.get("f", "")), self._fingerprint(kind, credential)):
            return None
        return {"u": shown, "r": role if role in ROLES else "viewer", "csrf": str(s.get("csrf", "")), "kind": kind,
                "exp": s["exp"]}

    def end(self, session: dict[str, Any]) -> None:
        """Sign out: :meth:`session` refuses this session (a principal it returned) from now on."""
        now = self.clock()
        with self._ended_lock:
            for sid in [sid for sid, exp in self._ended.items() if exp < now]:
                del self._ended[sid]
            self._ended[session["csrf"]] = int(session["exp"])

    def _token(self, given: bytes) -> ApiToken | None:
        found = None
        for t in self.tokens:  # compare with every token: no early exit to time
            if hmac.compare_digest(given, t.secret):
                found = t
        return found if given else None

    def bearer(self, header: str | None) -> dict[str, Any] | None:
        """The principal of an ``Authorization: Bearer <API token>`` header, or None."""
        if not header or not header[:7].lower() == "bearer ":
            return None
        t = self._token(header[7:].strip().encode("utf-8", "surrogatepass"))
        return None if t is None else {"u": f"token:{t.name}", "r": t.role, "kind": "bearer"}

    def token_ok(self, header: str | None) -> bool:
        return self.bearer(header) is not None

    def metrics_ok(self, header: str | None) -> bool:
        """An API token or an ingest token (what the collector's /metrics takes) as a bearer."""
        if self.bearer(header) is not None:
            return True
        if not header or not header[:7].lower() == "bearer ":
            return False
        given = header[7:].strip().encode("utf-8", "surrogatepass")
        ok = False
        for t in self.ingest_tokens:
            ok |= hmac.compare_digest(given, t)
        return ok and bool(given)


def has_role(session: dict[str, Any] | None, role: str) -> bool:
    return bool(session) and ROLES.get(session.get("r", ""), 0) >= ROLES[role]


def require_role(role: str):
    """A FastAPI dependency: 403 unless the request's principal has ``role`` or more. Open (passes)
    when the dashboard has no authentication configured, like every other route on loopback.
    Use: ``@router.put("/api/retention", dependencies=[Depends(require_role("admin"))])``."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")

    def dependency(request: Request) -> None:
        auth = getattr(request.app.state, "auth", None)
        if auth is None or not auth.enabled:
            return
        if not has_role(getattr(request.state, "user", None), role):
            raise HTTPException(403, f"this needs the {role} role")

    dependency.__name__ = f"require_{role}"
    return dependency
