"""Redaction of credentials before storage: attribute keys that look like credentials get the
value ``[REDACTED]``; credentials inside URLs (``user:pass@`` and query parameters such as
``token=``) are masked in any string value. The key list is configurable; decisions per key are
cached, since the same few keys repeat in every span."""

from __future__ import annotations

import re

__all__ = ["DEFAULT_KEYS", "MASK", "Redactor"]

MASK = "[REDACTED]"
DEFAULT_KEYS = (
    "password", "passwd", "pwd", "secret", "token", "authorization", "cookie", "set-cookie", "api key",
    "apikey", "private key", "privatekey", "session", "sessionid", "credential", "credentials",
    "access key", "secret key", "signature", "x-auth-token",
)
# Query parameters whose value is masked inside URLs.
_URL_PARAMS = ("token", "access_token", "refresh_token", "id_token", "password", "passwd", "pwd", "secret",
               "key", "api_key", "apikey", "api-key", "auth", "signature", "sig", "session", "sessionid",
               "client_secret", "x-amz-signature", "x-amz-credential", "code")
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/?#@\s]*):(?P<pw>[^@/?#\s]*)@")


_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_SEP = re.compile(r"[^a-z0-9]+")


def _words(key: str) -> str:
    """``"http.request.header.X-Api-Key"`` → ``"http request header x api key"``."""
    return _SEP.sub(" ", _CAMEL.sub(r"\1 \2", key).lower()).strip()


class Redactor:
    def __init__(self, extra_keys: list[str] | tuple[str, ...] = ()):
        words = sorted({_words(k) for k in (*DEFAULT_KEYS, *extra_keys) if _words(k)}, key=len, reverse=True)
        # A key is secret when a listed word sequence appears in it as whole words: "db.password",
        # "apiKey", "x-api-key", "session_id" match; "gen_ai.usage.input_tokens" does not.
        self._key_re = re.compile("(?:^| )(?:" + "|".join(re.escape(w) for w in words) + ")(?: |$)")
        names = set(_URL_PARAMS) | {w.replace(" ", "_") for w in words}
        params = "|".join(re.escape(p) for p in sorted(names, key=len, reverse=True))
        self._param_re = re.compile(r"(?i)([?&;](?:" + params + r")=)[^&#;\s]*")
        self.secret_keys: dict[str, bool] = {}

    def key_is_secret(self, key: str) -> bool:
        hit = self.secret_keys.get(key)
        if hit is None:
            hit = bool(self._key_re.search(_words(key)))
            if len(self.secret_keys) < 100_000:
                self.secret_keys[key] = hit
        return hit

    def text(self, s: str) -> str:
        """Mask credentials inside URLs in a string value (cheap when there are none)."""
        if "@" in s and "://" in s:
            s = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", s)
        if "=" in s and ("?" in s or "&" in s or ";" in s):
            s = self._param_re.sub(lambda m: m.group(1) + MASK, s)
        return s
