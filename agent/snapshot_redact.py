"""What may leave the process: credential-looking names are masked, values are cut short, and
text that carries ``key=value`` credentials is masked (no environment, ever). Used for snapshot
locals and source lines, exception messages, and the command line sent with every resource."""

from __future__ import annotations

import re

__all__ = ["MASK", "is_secret_name", "mask_argv", "mask_source_line", "mask_text", "safe_repr"]

MASK = "[REDACTED]"
_WORDS = ("password", "passwd", "pwd", "secret", "token", "authorization", "auth", "cookie", "api key",
          "apikey", "private key", "privatekey", "session", "sessionid", "credential", "credentials",
          "access key", "secret key", "signature", "key", "bearer", "dsn",
          # containers of credentials: request headers, WSGI environ, process environment
          "headers", "header", "environ", "env", "cookies")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_SEP = re.compile(r"[^a-z0-9]+")
_KEY_RE = re.compile("(?:^| )(?:" + "|".join(re.escape(w) for w in sorted(_WORDS, key=len, reverse=True))
                     + ")(?: |$)")
# key=value / key: value pairs whose key looks like a credential, and user:password@ in URLs.
_PAIR_RE = re.compile(r"(?i)((?:password|passwd|pwd|secret|token|api[_-]?key|authorization|bearer|"
                      r"credential|session)[\w.-]*[\"']?\s*[=:]\s*[\"']?)([^\s\"'&,;]+)")
_SCHEME_RE = re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{6,}")
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\s]*):[^@/?#\s]*@")
_cache: dict[str, bool] = {}


def is_secret_name(name: str) -> bool:
    """``db_password``, ``apiKey``, ``X-Api-Key``, ``session_id`` → True; ``tokens_used`` → False."""
    hit = _cache.get(name)
    if hit is None:
        words = _SEP.sub(" ", _CAMEL.sub(r"\1 \2", name).lower()).strip()
        hit = bool(_KEY_RE.search(words))
        if len(_cache) < 10_000:
            _cache[name] = hit
    return hit


def mask_text(s: str) -> str:
    """Mask ``password=…``-style pairs and URL passwords inside free text (exception messages)."""
    s = _SCHEME_RE.sub(lambda m: m.group(1) + " " + MASK, s)
    if "=" in s or ":" in s:
        s = _PAIR_RE.sub(lambda m: m.group(1) + MASK, s)
        s = _USERINFO.sub(lambda m: m.group(1) + ":" + MASK + "@", s)
    return s


def safe_repr(name: str, value: object, limit: int = 200) -> str:
    """The ``repr`` of a local variable, masked when its name looks like a credential."""
    if is_secret_name(name):
        return MASK
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ is the application's business, not ours
        text = f"<repr failed: {type(exc).__name__}>"
    return mask_text(text[:limit])


_ASSIGN = re.compile(r"^(\s*(?:[A-Za-z_][\w.]*(?:\[[^\]]*\])?\s*,\s*)*"
                     r"(?P<target>[A-Za-z_][\w.]*(?:\[\s*[\"']?(?P<key>[^\]\"']*)[\"']?\s*\])?)"
                     r"\s*(?::[^=]*)?(?<![=!<>])=(?!=)\s*)(?P<value>.+)$")


def mask_source_line(line: str) -> str:
    """A source line with credentials masked: the value of an assignment to a credential-looking
    name (``password = "…"``, ``self.api_key = …``, ``headers["Authorization"] = …``), then
    ``key=value`` pairs, tokens and URL passwords as in :func:`mask_text`."""
    m = _ASSIGN.match(line)
    if m:
        target = m.group("key") or m.group("target").rsplit(".", 1)[-1]
        if is_secret_name(target):
            return m.group(1) + MASK
    return mask_text(line)


def mask_argv(argv: list[str]) -> list[str]:
    """A command line with credentials masked: ``--password=…``, ``--api-token …`` (the next
    argument), ``-p…`` with the value attached (digits alone are read as a port and kept),
    ``user:password@`` in URLs and ``key=value`` credentials anywhere."""
    out: list[str] = []
    mask_next = False
    for arg in argv:
        arg = str(arg)
        if mask_next:
            out.append(MASK)
            mask_next = False
            continue
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            if is_secret_name(name):
                if eq:
                    out.append(f"--{name}={MASK}")
                else:
                    out.append(arg)
                    mask_next = True
                continue
        elif arg.startswith("-p") and len(arg) > 2 and not arg[2:].isdigit() and not arg[2:].startswith("="):
            out.append("-p" + MASK)
            continue
        out.append(mask_text(arg))
    return out
