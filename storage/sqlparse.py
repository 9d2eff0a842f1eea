"""User-written SQL parsed by ClickHouse's own parser, in the embedded chDB engine.

:func:`parse_select` gives the statement's canonical text (``formatQuerySingleLine``: one
statement, comments dropped, a second statement refused by the parser itself) and its syntax tree
(``EXPLAIN AST`` of that canonical text) as :class:`Node` objects. Both run on a read-only
connection to the engine this process already has open, or, when none is, to an in-memory one
opened for the call and closed after it (chDB allows one engine per process; the engine registry's
lock is held meanwhile so that no store opens another). A ClickHouse server deployment uses the
same embedded parser: 18.16 has no EXPLAIN.

The parser never runs the statement: ``formatQuerySingleLine`` receives it as a bound string, and
``EXPLAIN AST`` of the canonical text only prints the tree. Policy (which tables and functions a
statement may use) belongs to the caller.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

from .backend import PARAM_RE
from .errors import InvalidParameter, StorageError
from .textvalues import escape_param

__all__ = ["Node", "Parsed", "parse_select", "function_aliases", "SqlSyntaxError"]

#: the longest statement handed to the parser
MAX_SQL_CHARS = 20_000
_LINE = re.compile(r"^(?P<indent> *)(?P<kind>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>.*?)(?: \(children (?P<n>\d+)\))?$")


class SqlSyntaxError(InvalidParameter):
    """The statement does not parse (the message says where, never the engine's own text)."""


@dataclass
class Node:
    kind: str  # SelectQuery, TableIdentifier, Function, Identifier, Literal, …
    text: str  # what EXPLAIN AST prints after the kind: a name, a literal, an alias
    children: list[Node] = field(default_factory=list)
    declared: int = 0  # the "(children N)" EXPLAIN AST printed

    @property
    def name(self) -> str:
        """The name or literal, without ``(alias …)``."""
        return re.sub(r" \(alias .*\)$", "", self.text)

    def walk(self) -> Iterator[Node]:
        yield self
        for c in self.children:
            yield from c.walk()


@dataclass(frozen=True)
class Parsed:
    canonical: str
    root: Node


def parse_select(sql: str, param_types: dict[str, str]) -> Parsed:
    """Parse one statement with ``{name:Type}`` placeholders whose types are ``param_types``."""
    if not isinstance(sql, str) or not sql.strip():
        raise SqlSyntaxError("empty query")
    if len(sql) > MAX_SQL_CHARS:
        raise SqlSyntaxError(f"query longer than {MAX_SQL_CHARS} characters")
    return _parse(sql, tuple(sorted(param_types.items())))


@lru_cache(maxsize=256)
def _parse(sql: str, param_types: tuple[tuple[str, str], ...]) -> Parsed:
    from .chdb_backend import parser_connection

    with parser_connection() as conn:
        try:
            out = conn.query("SELECT formatQuerySingleLine({q:String})", "TSVRaw", params={"q": escape_param(sql)})
        except Exception as e:
            raise _syntax_error(e, sql) from None
        canonical = out.bytes().decode("utf-8", "replace").rstrip("\n")
        if any(ch in canonical for ch in "\n\r\0"):  # literals are escaped in it; names with breaks are refused
            raise SqlSyntaxError("names may not contain line breaks or NUL")
        used = {m.group(1) for m in PARAM_RE.finditer(canonical)}
        types = dict(param_types)
        dummies = {name: "0" for name in used if name in types}
        try:
            tree = conn.query("EXPLAIN AST " + canonical, "TSVRaw", params=dummies or None)
        except Exception as e:
            raise _syntax_error(e, sql) from None
    return Parsed(canonical, _tree(tree.bytes().decode("utf-8", "replace")))


@lru_cache(maxsize=1)
def function_aliases() -> dict[str, str]:
    """The engine's function aliases, lower case → the function each stands for, lower case
    (``fullhostname`` → ``fqdn``, ``user`` → ``currentuser``): a policy on function names must
    see through them."""
    from .chdb_backend import parser_connection

    with parser_connection() as conn:
        out = conn.query("SELECT name, alias_to FROM system.functions WHERE alias_to != ''", "TSVRaw")
    pairs = (line.split("\t") for line in out.bytes().decode("utf-8", "replace").splitlines() if line)
    return {name.lower(): target.lower() for name, target in pairs}


def _syntax_error(e: Exception, sql: str) -> StorageError:
    text = str(e)
    if "Multi-statements are not allowed" in text:
        return SqlSyntaxError("only one statement is allowed")
    m = re.search(r"failed at position (\d+)", text)
    if m:
        pos = int(m.group(1))
        return SqlSyntaxError(f"syntax error at position {pos}: {sql[max(0, pos - 1):pos + 30]!r}")
    m = re.search(r"Substitution `([^`]*)` is not set", text)
    if m:
        return SqlSyntaxError(f"unknown parameter {m.group(1)!r}")
    return SqlSyntaxError("the query could not be parsed")


def _tree(text: str) -> Node:
    """EXPLAIN AST's indented lines → nodes (one space of indent per level).

    Every node's children must number what EXPLAIN AST declared for it: a name that smuggles a
    line break into the output can then add lines only below its own line, never re-parent or
    hide a real node (and whatever it adds is checked like the rest)."""
    root: Node | None = None
    stack: list[tuple[int, Node]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            raise SqlSyntaxError("the query's syntax tree could not be read")
        depth = len(m.group("indent"))
        node = Node(m.group("kind"), m.group("rest").strip(), declared=int(m.group("n") or 0))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            stack[-1][1].children.append(node)
        elif root is None:
            root = node
        else:
            raise SqlSyntaxError("only one statement is allowed")
        stack.append((depth, node))
    if root is None:
        raise SqlSyntaxError("empty query")
    if any(len(n.children) != n.declared for n in root.walk()):
        raise SqlSyntaxError("the query's syntax tree could not be read")
    return root
