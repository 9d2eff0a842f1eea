"""Safety for user SQL (``kind: sql`` business rules).

A user query is tokenized (string literals, quoted identifiers and comments are understood, so a
keyword inside a string is not mistaken for one) and accepted only when it is:

- one statement (a trailing ``;`` is dropped, any other ``;`` refuses it), starting with SELECT/WITH;
- free of write/DDL/administration keywords and of ``SETTINGS``/``FORMAT``/``INTO OUTFILE``;
- free of table functions and functions that reach outside the database (``url``, ``file``,
  ``remote``, ``s3``, ``mysql``, ``dictGet``, ``executable`` …);
- reading only the tables in :data:`ALLOWED_TABLES`, named bare after FROM/JOIN/IN. Each such
  name is rewritten to ``<store database>.<table>`` (we qualify instead of ``USE db``: the chDB
  session is shared by the whole process, and the server backend pools connections, so
  switching the default database would leak into other components);
- using only the engine's parameters ``{start:UInt32} {end:UInt32} {start_ns:UInt64} {end_ns:UInt64}``.
  Where ``{start}``/``{end}`` are compared directly with a DateTime column (``timestamp >= {start:UInt32}``)
  they are wrapped in ``toDateTime()``: ClickHouse 18.16 rejects a UInt32 against the
  ``toStartOfHour(timestamp)`` sorting key.

At run time the engine adds the settings ``readonly=1`` and ``max_execution_time`` (both
backends honour them; with readonly=1 a query cannot change settings back), so anything the
checks here missed still cannot write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ALLOWED_TABLES = ("spans", "logs", "metric_points", "red_1m", "edges_1m", "trace_summary", "service_endpoints")
PARAMS = {"start": "UInt32", "end": "UInt32", "start_ns": "UInt64", "end_ns": "UInt64"}
MAX_QUERY_CHARS = 20_000
_FORBIDDEN_WORDS = {
    "insert", "alter", "drop", "create", "attach", "detach", "rename", "truncate", "optimize", "system",
    "kill", "grant", "revoke", "set", "settings", "format", "into", "outfile", "use", "exchange",
    "delete", "update", "describe", "show", "explain", "check", "watch", "move", "backup", "restore",
    "infile", "undrop",
}
_FORBIDDEN_FUNCS = {
    "url", "urlcluster", "input", "merge", "view", "loop", "joinget", "joingetornull", "numbers",
    "numbers_mt", "zeros", "zeros_mt", "generaterandom", "values", "null", "format", "getsetting",
    "currentuser", "currentprofiles", "currentroles", "filesystemavailable", "filesystemcapacity",
    "filesystemunreserved", "getserverport", "buildid", "addresstoline", "addresstosymbol", "demangle",
}
_FORBIDDEN_PREFIXES = (
    "file", "remote", "cluster", "s3", "gcs", "hdfs", "azure", "mysql", "postgres", "odbc", "jdbc",
    "sqlite", "mongo", "redis", "executable", "dict", "iceberg", "deltalake", "hudi", "hive", "kafka",
)
_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      |(?P<comment>--[^\n]*|/\*.*?\*/)
      |(?P<string>'(?:[^'\\]|\\.|'')*')
      |(?P<qident>"(?:[^"\\]|\\.|"")*"|`(?:[^`\\]|\\.|``)*`)
      |(?P<param>\{\s*[A-Za-z_][A-Za-z0-9_]*\s*:\s*[A-Za-z0-9_()]+\s*\})
      |(?P<word>[A-Za-z_][A-Za-z0-9_]*)
      |(?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)
      |(?P<punct>->|<=|>=|!=|<>|==|\|\||::|[-+*/%(),.;=<>\[\]?:!^&|~])
    """,
    re.VERBOSE | re.DOTALL,
)


class UnsafeQuery(ValueError):
    """The query was refused; the message says why."""


@dataclass
class _Tok:
    kind: str
    text: str


def _tokens(sql: str) -> list[_Tok]:
    out, pos = [], 0
    while pos < len(sql):
        m = _TOKEN.match(sql, pos)
        if not m:
            raise UnsafeQuery(f"unexpected character {sql[pos]!r} at offset {pos}")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind in ("ws", "comment"):
            continue
        out.append(_Tok(kind, m.group()))
    return out


def prepare(sql: str, database: str) -> str:
    """Check ``sql`` and return it with every table name qualified by ``database``."""
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", database):
        raise UnsafeQuery(f"bad database name {database!r}")
    if not isinstance(sql, str) or not sql.strip():
        raise UnsafeQuery("empty query")
    if len(sql) > MAX_QUERY_CHARS:
        raise UnsafeQuery(f"query longer than {MAX_QUERY_CHARS} characters")
    toks = _tokens(sql)
    while toks and toks[-1].text == ";":
        toks.pop()
    if any(t.text == ";" for t in toks):
        raise UnsafeQuery("only one statement is allowed")
    if not toks or toks[0].kind != "word" or toks[0].text.lower() not in ("select", "with"):
        raise UnsafeQuery("the query must be a SELECT (or WITH … SELECT)")
    if not any(t.kind == "word" and t.text.lower() == "value" for t in toks) and \
            not any(t.kind == "qident" and t.text[1:-1] == "value" for t in toks):
        raise UnsafeQuery("the query must return a column named value")
    out: list[str] = []
    for i, t in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        prev = toks[i - 1] if i > 0 else None
        low = t.text.lower()
        if t.kind == "param":
            name, _, typ = t.text.strip("{}").partition(":")
            name, typ = name.strip(), typ.strip()
            if PARAMS.get(name) != typ:
                raise UnsafeQuery(f"unknown parameter {t.text}: use {', '.join(f'{{{k}:{v}}}' for k, v in PARAMS.items())}")
            text = "{" + name + ":" + typ + "}"
            if typ == "UInt32" and _next_to_time_column(toks, i):
                text = f"toDateTime({text})"  # ClickHouse 18.16 cannot compare the DateTime key with a UInt32
            out.append(text)
            continue
        if t.kind == "word":
            is_call = nxt is not None and nxt.text == "("
            if is_call and (low in _FORBIDDEN_FUNCS or low.startswith(_FORBIDDEN_PREFIXES)):
                raise UnsafeQuery(f"function {t.text}() is not allowed in alert rules")
            if not is_call and low in _FORBIDDEN_WORDS and not (prev is not None and prev.text == "."):
                raise UnsafeQuery(f"{t.text.upper()} is not allowed in alert rules (read-only SELECT only)")
            if prev is not None and _is_table_position(toks, i - 1):
                if t.text not in ALLOWED_TABLES or (nxt is not None and nxt.text in (".", "(")):
                    raise UnsafeQuery(
                        f"table {t.text!r} is not readable from alert rules: use one of {', '.join(ALLOWED_TABLES)}")
                out.append(f"{database}.{t.text}")
                continue
        elif t.kind == "qident" and prev is not None and _is_table_position(toks, i - 1):
            raise UnsafeQuery("quoted table names are not allowed: use one of " + ", ".join(ALLOWED_TABLES))
        out.append(t.text)
    return _join(out)


_CMP = {"<", "<=", ">", ">=", "=", "==", "!=", "<>"}


def _next_to_time_column(toks: list[_Tok], i: int) -> bool:
    """``timestamp >= {start:UInt32}`` (either order): the DateTime columns of our tables."""
    cols = {"timestamp", "minute", "hour"}
    if i >= 2 and toks[i - 1].text in _CMP and toks[i - 2].text.lower() in cols:
        return True
    return i + 2 < len(toks) and toks[i + 1].text in _CMP and toks[i + 2].text.lower() in cols


def _is_table_position(toks: list[_Tok], i: int) -> bool:
    """Is the token after ``toks[i]`` a table reference (FROM x, JOIN x, IN x)?"""
    low = toks[i].text.lower() if toks[i].kind == "word" else ""
    if low == "from":
        return True
    if low == "join":
        return not (i > 0 and toks[i - 1].text.lower() == "array")
    if low == "in":
        return i + 1 < len(toks) and toks[i + 1].kind in ("word", "qident") and \
            not (i + 2 < len(toks) and toks[i + 2].text == "(")
    return False


def _join(parts: list[str]) -> str:
    return " ".join(parts)


def check_query(sql: str) -> None:
    """Validate a rule's query at load time (raises ``RuleError``)."""
    from .rules import RuleError

    try:
        prepare(sql, "db")
    except UnsafeQuery as e:
        raise RuleError(f"sql rule refused: {e}") from None
