"""Redaction of credentials before storage: attribute keys that look like credentials get the
value ``[REDACTED]``; credentials inside URLs (``user:pass@`` and query parameters such as
``token=``) are masked in any string value. The key list is configurable; decisions per key are
cached, since the same few keys repeat in every span.

The same rules also run inside the storage engine (the native decoder, ``native/sqlexpr.py``):
every pattern here is written without flags and with explicit character classes, so Python's
``re`` and ClickHouse's RE2 read it alike (``\\s`` and ``(?i)`` differ between the two engines;
the classes below spell out what Python means by them)."""

from __future__ import annotations

import re

import re2

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

#: What Python's ``\s`` matches in a str pattern (RE2's ``\s`` is ASCII only).
WHITESPACE = (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680,
              *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000)
#: Characters that Python's case-insensitive matching takes for an ASCII letter, besides its two cases.
CASE_EXTRAS = {"i": (0x130, 0x131), "k": (0x212A,), "s": (0x17F,)}
#: Characters outside ASCII whose ``str.lower()`` contains ASCII letters or digits, and that text.
LOWER_TO_ASCII = {0x130: "i\u0307", 0x212A: "k"}


def char_class(codepoints, negate: bool = False, re2: bool = False) -> str:
    """``[...]`` for these code points, escaped for Python ``re`` or for RE2."""
    def esc(c: int) -> str:
        ch = chr(c)
        if ch.isalnum() and c < 0x80:
            return ch
        if re2:
            return f"\\x{{{c:x}}}"
        return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" if c < 0x10000 else f"\\U{c:08x}"
    return "[" + ("^" if negate else "") + "".join(esc(c) for c in codepoints) + "]"


def _ci(word: str, re2: bool) -> str:
    """``word`` matched case-insensitively as Python does, without the flag."""
    out = []
    for ch in word:
        if ch.isalpha():
            cps = [ord(ch.lower()), ord(ch.upper()), *CASE_EXTRAS.get(ch.lower(), ())]
            out.append(char_class(cps, re2=re2))
        else:
            out.append(re.escape(ch) if not re2 else char_class([ord(ch)], re2=True))
    return "".join(out)


def userinfo_pattern(re2: bool = False) -> str:
    """``scheme://user:password@``: groups 1 (scheme) and 2 (user) are kept."""
    stop_user = char_class([ord(c) for c in ":/?#@"] + list(WHITESPACE), negate=True, re2=re2)
    stop_pw = char_class([ord(c) for c in "@/?#"] + list(WHITESPACE), negate=True, re2=re2)
    return r"([a-zA-Z][a-zA-Z0-9+.\-]*://)(" + stop_user + "*):" + stop_pw + "*@"


def param_pattern(names, re2: bool = False) -> str:
    """``?name=value`` (or ``&``, ``;``): group 1 is kept, the value masked."""
    alts = "|".join(_ci(p, re2) for p in sorted(names, key=len, reverse=True))
    value = char_class([ord(c) for c in "&#;"] + list(WHITESPACE), negate=True, re2=re2)
    return "([?&;](?:" + alts + ")=)" + value + "*"


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False

_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_SEP = re.compile(r"[^a-z0-9]+")


def _words(key: str) -> str:
    """``"http.request.header.X-Api-Key"`` → ``"http request header x api key"``."""
    return _SEP.sub(" ", _CAMEL.sub(r"\1 \2", key).lower()).strip()


class Redactor:
    def __init__(self, extra_keys: list[str] | tuple[str, ...] = ()):
        self.words = sorted({_words(k) for k in (*DEFAULT_KEYS, *extra_keys) if _words(k)}, key=len, reverse=True)
        # A key is secret when a listed word sequence appears in it as whole words: "db.password",
        # "apiKey", "x-api-key", "session_id" match; "gen_ai.usage.input_tokens" does not.
        self.key_pattern = "(?:^| )(?:" + "|".join(re.escape(w) for w in self.words) + ")(?: |$)"
        self._key_re = re.compile(self.key_pattern)
        self.param_names = sorted(set(_URL_PARAMS) | {w.replace(" ", "_") for w in self.words})
        # RE2, linear in the value: in Python's re the scheme's unanchored ``[a-zA-Z][…]*://`` was
        # tried from every letter of a long run, so "a" * 64,000 + "@://" took 9.5 s holding the
        # interpreter (quadratic; a 1 MB value, hours). The same pattern the engine runs natively.
        self._userinfo_re = re2.compile(userinfo_pattern(re2=True), options=_RE2_OPTIONS)
        self._param_re = re.compile(param_pattern(self.param_names))
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
            s = self._userinfo_re.sub(lambda m: f"{m[1]}{m[2]}:{MASK}@", s)
        if "=" in s and ("?" in s or "&" in s or ";" in s):
            s = self._param_re.sub(lambda m: m.group(1) + MASK, s)
        return s
