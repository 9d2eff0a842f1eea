"""What may leave the process: credential-looking names are masked, values are cut short, and
text that carries ``key=value`` credentials is masked (no environment, ever). Used for snapshot
locals and source lines, exception messages, and the command line sent with every resource."""

from __future__ import annotations

import io
import itertools
import re
import reprlib
import tokenize

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
# The runs after a keyword and before "://" are bounded: unbounded, every keyword in a long run
# ("password.password.…", a long word) scanned to the run's end, quadratic in the text (a 90 KB
# exception message took minutes, holding the GIL). No credential key or URL scheme is longer.
_PAIR_RE = re.compile(r"(?i)((?:password|passwd|pwd|secret|token|api[_-]?key|authorization|bearer|"
                      r"credential|session)[\w.-]{0,64}[\"']?\s*[=:]\s*[\"']?)([^\s\"'&,;]+)")
_SCHEME_RE = re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{6,}")
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]{0,31}://[^:/?#@\s]*):[^@/?#\s]*@")
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


class _BoundedRepr(reprlib.Repr):
    """``repr`` that reads no more of a string, bytes or container than it shows: a plain
    ``repr`` of an 80 MB string copied all of it (seconds, GIL held, its size again in RSS)
    before the 200 characters kept. Other objects' own ``__repr__`` still runs whole."""

    def __init__(self, limit: int):
        super().__init__()
        self.maxlevel = 3
        self.maxstring = self.maxlong = self.maxother = limit
        self.maxtuple = self.maxlist = self.maxset = self.maxfrozenset = self.maxdeque = self.maxarray = 40
        self.maxdict = 20

    def repr_bytes(self, x, level):
        return self.repr_str(x, level)  # the same head ... tail cut, as bytes

    repr_bytearray = repr_bytes

    # reprlib sorts a dict's keys and a set's items before taking the first few (seconds for
    # millions): these take the first ones in iteration order instead
    def _items(self, x, level, left: str, right: str, limit: int, each) -> str:
        if not x:
            return left + right
        if level <= 0:
            return left + "..." + right
        pieces = [each(item, level - 1) for item in itertools.islice(x, limit)]
        if len(x) > limit:
            pieces.append("...")
        return left + ", ".join(pieces) + right

    def repr_dict(self, x, level):
        return self._items(x.items(), level, "{", "}", self.maxdict,
                           lambda kv, lv: f"{self.repr1(kv[0], lv)}: {self.repr1(kv[1], lv)}")

    def repr_set(self, x, level):
        return self._items(x, level, "{", "}", self.maxset, self.repr1) if x else "set()"

    def repr_frozenset(self, x, level):
        return self._items(x, level, "frozenset({", "})", self.maxfrozenset, self.repr1) if x else "frozenset()"


_REPRS: dict[int, _BoundedRepr] = {}


def safe_repr(name: str, value: object, limit: int = 200) -> str:
    """The ``repr`` of a local variable, masked when its name looks like a credential."""
    if is_secret_name(name):
        return MASK
    r = _REPRS.get(limit)
    if r is None:
        r = _REPRS[limit] = _BoundedRepr(limit)
    try:
        text = r.repr(value)
    except Exception as exc:  # a broken __repr__ is the application's business, not ours
        text = f"<repr failed: {type(exc).__name__}>"
    return mask_text(text[:limit])


_ASSIGN = re.compile(r"^(\s*(?:[A-Za-z_][\w.]*(?:\[[^\]]*\])?\s*,\s*)*"
                     r"(?P<target>[A-Za-z_][\w.]*(?:\[\s*[\"']?(?P<key>[^\]\"']*)[\"']?\s*\])?)"
                     r"\s*(?::[^=]*)?(?<![=!<>])=(?!=)\s*)(?P<value>.+)$")
_ASSIGN_OPS = frozenset(("=", ":=", "+=", "|=", "-=", "*=", "/=", "%=", "&=", "^=", "<<=", ">>=", "//=", "**=", "@="))
_COMPARE_OPS = frozenset(("==", "!=", "in", "is", ":", "or"))
_STOP_NAMES = frozenset(("and", "or", "if", "else", "for", "not", "in", "is", "as", "from", "lambda"))
_OPEN, _CLOSE = frozenset("([{"), frozenset(")]}")
_LITERALS = (tokenize.STRING, tokenize.NUMBER) + tuple(
    getattr(tokenize, n) for n in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END") if hasattr(tokenize, n))
_line_cache: dict[str, str] = {}


def mask_source_line(line: str) -> str:
    """A source line with credentials masked, read as Python tokens: what is assigned to a
    credential-looking name (``password = "…"``, ``self.api_key = …``, ``headers["Authorization"]
    = …``, ``f(token="…")``, ``{"secret": …}``) and the literal it is compared with
    (``if password == "…"``), then URL passwords and ``key=value`` credentials inside string
    literals. Code that merely mentions such a word (``tokens_used = 5``) is left alone. A line
    that is not Python on its own (inside a multi-line string) is masked as free text."""
    hit = _line_cache.get(line)
    if hit is None:
        hit = _mask_code(line)
        if len(_line_cache) >= 4096:
            _line_cache.clear()
        _line_cache[line] = hit
    return hit


def _tokens(line: str) -> tuple[list, bool]:
    """The line's tokens as (type, text, start col, end col), and whether all of it was read."""
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(line).readline):
            if tok.start[0] != 1:
                break
            if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
                continue
            out.append((tok.type, tok.string, tok.start[1], tok.end[1] if tok.end[0] == 1 else len(line)))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return out, bool(out) and out[-1][3] >= len(line.rstrip())
    return out, True


def _is_subject(toks: list, i: int) -> bool:
    kind, text = toks[i][0], toks[i][1]
    if kind == tokenize.NAME:
        return text not in _STOP_NAMES and is_secret_name(text)
    if kind == tokenize.STRING and len(text) >= 2 and text[-1] in "\"'":  # a subscript or dict key
        before = toks[i - 1][1] if i else ""
        after = toks[i + 1][1] if i + 1 < len(toks) else ""
        return (before == "[" or after == ":") and is_secret_name(text.strip("\"'bBrRuU"))
    return False


def _operand_end(toks: list, j: int, line_end: int, depth0_to_end: bool) -> int:
    """The end column of the expression starting at token ``j``."""
    if depth0_to_end:
        return line_end
    depth, end = 0, toks[j][3]
    for k in range(j, len(toks)):
        kind, text = toks[k][0], toks[k][1]
        if kind == tokenize.OP and text in _OPEN:
            depth += 1
        elif kind == tokenize.OP and text in _CLOSE:
            if depth == 0:
                break
            depth -= 1
        elif depth == 0 and k > j and ((kind == tokenize.OP and text in (",", ":", ";", "==", "!=")) or
                                       (kind == tokenize.NAME and text in _STOP_NAMES)):
            break
        elif kind == tokenize.COMMENT:
            break
        end = toks[k][3]
    return end


def _mask_code(line: str) -> str:
    toks, complete = _tokens(line)
    if not toks or not complete:
        return _mask_plain(line)
    masks: list[tuple[int, int]] = []
    depth = 0
    for i, (kind, text, _, _) in enumerate(toks):
        if kind == tokenize.OP and text in _OPEN:
            depth += 1
        elif kind == tokenize.OP and text in _CLOSE:
            depth = max(0, depth - 1)
        if not _is_subject(toks, i):
            continue
        if i >= 2 and toks[i - 1][1] in ("==", "!=") and toks[i - 2][0] in _LITERALS:
            masks.append((toks[i - 2][2], toks[i - 2][3]))  # "…" == password
        j = i + 1
        if j < len(toks) and toks[j][1] == "]":
            j += 1
        while j < len(toks) and toks[j][0] == tokenize.OP and toks[j][1] == ":" and kind == tokenize.NAME \
                and depth == 0 and any(t[1] == "=" for t in toks[j:]):
            j = next(k for k in range(j, len(toks)) if toks[k][1] == "=")  # an annotation: skip to its value
        if j + 1 >= len(toks):
            continue
        op = toks[j][1]
        if op in _ASSIGN_OPS or op in _COMPARE_OPS:
            start = toks[j + 1][2]
            to_end = op in _ASSIGN_OPS and depth == 0  # a statement: the rest of the line (comment too)
            end = _operand_end(toks, j + 1, len(line), to_end)
            # compared with another name (password == expected): nothing literal to hide
            if op in _ASSIGN_OPS or op == ":" or any(t[0] in _LITERALS and start <= t[2] < end for t in toks):
                masks.append((start, end))
    return _apply_masks(line, toks, masks)


def _apply_masks(line: str, toks: list, masks: list[tuple[int, int]]) -> str:
    """``line`` with each span of ``masks`` replaced by MASK (overlapping ones once) and secrets in
    the string literals between them masked."""
    out, pos = [], 0
    for start, end in sorted(masks):
        if start < pos:
            continue
        out.append(_mask_literals(line[pos:start], toks, pos))
        out.append(MASK)
        pos = end
    out.append(_mask_literals(line[pos:], toks, pos))
    return "".join(out)


def _mask_literals(chunk: str, toks: list, offset: int) -> str:
    """``chunk`` (line[offset:]) with :func:`mask_text` applied inside its string literals only."""
    if "'" not in chunk and '"' not in chunk:
        return chunk
    out, pos = [], 0
    end = offset + len(chunk)
    for kind, text, start, stop in toks:
        if kind in _LITERALS and start >= offset and stop <= end:
            out.append(chunk[pos:start - offset])
            out.append(mask_text(text))
            pos = stop - offset
    out.append(chunk[pos:])
    return "".join(out)


def _mask_plain(line: str) -> str:
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
