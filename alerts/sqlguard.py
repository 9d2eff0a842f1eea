"""What user SQL (``kind: sql`` business rules) may read, decided on ClickHouse's own parse of it.

:func:`prepare` has the statement parsed by the engine (:func:`tracehouse.storage.sqlparse.parse_select`:
one statement, the parser's canonical text and syntax tree) and accepts it only when:

- it is a plain SELECT (UNION/INTERSECT/EXCEPT of SELECTs, subqueries and ``WITH`` expressions
  included) with no ``SETTINGS``, ``FORMAT`` or ``INTO OUTFILE``, and every node of its tree is of
  a kind known to be read-only (:data:`_NODE_KINDS`);
- every table it names, wherever (FROM, JOIN, a comma list, ``IN table``, quoted or not), is one of
  :data:`ALLOWED_TABLES`, bare or qualified with the store's database, and the table of an
  ``IN table`` is no alias in the query too (18.16 would read the table the alias stands for);
- it calls no table function (``url``, ``file``, ``remote``, ``numbers`` …) and none of the
  functions that reach outside the database, read dictionaries, settings or server state, or sleep
  (:data:`_FORBIDDEN_FUNCS`, :data:`_FORBIDDEN_PREFIXES`), nor those whose one call may outlast the
  query's time limit (the edit distances), under their own names or the engine's aliases of them
  (``fullHostName`` is ``FQDN``, ``user`` is ``currentUser``);
- it uses only the engine's parameters ``{start:UInt32} {end:UInt32} {start_ns:UInt64} {end_ns:UInt64}``.

The statement that runs is the parser's canonical text (comments dropped, exactly one statement),
on connections whose default database is the store's and that are read-only (chDB), or as a
database user that can read only that database (a ClickHouse server; see the README). Where
``{start}``/``{end}`` are compared directly with a DateTime column (``timestamp >= {start:UInt32}``)
they are wrapped in ``toDateTime()`` first: ClickHouse 18.16 rejects a UInt32 against the
``toStartOfHour(timestamp)`` sorting key.
"""

from __future__ import annotations

import re

from tracehouse.storage import InvalidParameter
from tracehouse.storage.backend import PARAM_RE
from tracehouse.storage.sqlparse import Node, function_aliases, parse_select

from .errors import UnsafeQuery

ALLOWED_TABLES = ("spans", "logs", "metric_points", "red_1m", "edges_1m", "trace_summary", "service_endpoints")
PARAMS = {"start": "UInt32", "end": "UInt32", "start_ns": "UInt64", "end_ns": "UInt64"}
MAX_QUERY_CHARS = 20_000

#: syntax-tree nodes a read-only SELECT is made of; anything else (SETTINGS, a second statement,
#: a construct this list does not know) is refused
_NODE_KINDS = frozenset({
    "SelectWithUnionQuery", "SelectIntersectExceptQuery", "SelectQuery", "ExpressionList", "TablesInSelectQuery",
    "TablesInSelectQueryElement", "TableExpression", "TableIdentifier", "TableJoin", "ArrayJoin", "Subquery",
    "Identifier", "Literal", "Function", "Asterisk", "QualifiedAsterisk", "OrderByElement", "WithElement",
    "WindowDefinition", "WindowListElement", "ColumnsRegexpMatcher", "ColumnsListMatcher",
    "QualifiedColumnsRegexpMatcher", "QualifiedColumnsListMatcher", "ColumnsTransformerList",
    "ColumnsExceptTransformer", "ColumnsReplaceTransformer", "ColumnsApplyTransformer", "Interpolate",
    "InterpolateElement",
})
#: functions (lower case) that read outside the rule's rows: files, URLs, other servers, dictionaries,
#: join tables, settings, server and session state; or that only stall (sleep)
_FORBIDDEN_FUNCS = frozenset({
    "input", "joinget", "joingetornull", "getsetting", "getsettingordefault", "getserversetting",
    "getmergetreesetting", "hascolumnintable", "getmacro", "globalvariable", "hostname", "fqdn", "serveruuid",
    "uptime", "tcpport", "getserverport", "buildid", "revision", "displayname", "shardnum", "shardcount",
    "initialqueryid", "queryid", "initialquerystarttime", "transactionid", "transactionlatestsnapshot",
    "transactionoldestsnapshot", "runningconcurrency", "getclienthttpheader", "getoskernelversion",
    "addresstoline", "addresstolinewithinlines", "addresstosymbol", "demangle", "trap", "catboostevaluate",
    "modelevaluate", "evalmlmethod", "generateserialid", "zookeepersessionuptime", "version", "chdb",
    "authenticateduser", "pggetuserbyid", "enabledprofiles", "defaultprofiles", "enabledroles", "defaultroles",
    "showcertificate",
})
_FORBIDDEN_PREFIXES = (
    "dict", "file", "url", "remote", "cluster", "s3", "gcs", "hdfs", "azure", "mysql", "postgres", "odbc", "jdbc",
    "sqlite", "mongo", "redis", "executable", "sleep", "current", "getsetting", "getserver", "filesystem",
    "iceberg", "deltalake", "hudi", "hive", "kafka", "zookeeper", "addressto", "ai",
    # quadratic in their arguments' length with little memory, in one call: the engine checks a
    # query's time limit between blocks, so a block of rows each comparing two 64k-character strings
    # (about 5 s a row) ran for hours past max_execution_time, holding a query slot (measured on
    # chDB: 8 rows of 20k characters, 4.1 s under a limit of 1 s)
    "editdistance", "levenshtein", "dameraulevenshtein", "arraylevenshtein", "arraysimilarity",
    # an aggregate over each of many overlapping ranges of one array: 300 ranges of a million
    # elements (uniqExact) ran 6.2 s under a limit of 1 s, and the count of ranges is the caller's
    "arrayreduceinranges",
)
_IN_FUNCS = frozenset({"in", "notin", "globalin", "globalnotin", "nullin", "notnullin", "globalnullin",
                       "globalnotnullin"})


def prepare(sql: str, database: str) -> str:
    """Check ``sql`` and return the text to run (the parser's canonical form of it)."""
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", database):
        raise UnsafeQuery(f"bad database name {database!r}")
    if not isinstance(sql, str) or not sql.strip():
        raise UnsafeQuery("empty query")
    if len(sql) > MAX_QUERY_CHARS:
        raise UnsafeQuery(f"query longer than {MAX_QUERY_CHARS} characters")
    for m in PARAM_RE.finditer(sql):
        if PARAMS.get(m.group(1).strip()) != m.group(2).strip():
            raise UnsafeQuery(f"unknown parameter {m.group(0)}: use "
                              + ", ".join(f"{{{k}:{v}}}" for k, v in PARAMS.items()))
    try:
        parsed = parse_select(_wrap_time_params(sql), PARAMS)
    except InvalidParameter as e:
        raise UnsafeQuery(str(e)) from None
    _check_tree(parsed.root, database)
    for m in PARAM_RE.finditer(parsed.canonical):
        if PARAMS.get(m.group(1)) != m.group(2).strip():
            raise UnsafeQuery(f"unknown parameter {m.group(0)}")
    return parsed.canonical


def check_query(sql: str) -> None:
    """Validate a rule's query at load time (raises ``RuleError``)."""
    from .rules import RuleError

    try:
        prepare(sql, "db")
    except UnsafeQuery as e:
        raise RuleError(f"sql rule refused: {e}") from None


# -- the policy, on the parser's tree -----------------------------------------------------------------

def _check_tree(root: Node, database: str) -> None:
    if root.kind != "SelectWithUnionQuery":
        raise UnsafeQuery("the query must be a SELECT (or WITH … SELECT)")
    if len(root.children) != 1:
        raise UnsafeQuery("FORMAT, INTO OUTFILE and SETTINGS are not allowed in alert rules")
    returns_value = False
    aliased = [n.text for n in root.walk() if "(alias " in n.text]
    for node in root.walk():
        if node.kind not in _NODE_KINDS:
            what = "SETTINGS" if node.kind in ("Set", "SetQuery") else node.kind
            raise UnsafeQuery(f"{what} is not allowed in alert rules (read-only SELECT only)")
        if node.kind == "TableIdentifier":
            _check_table(node.name, database)
        elif node.kind == "TableExpression":
            if any(c.kind == "Function" for c in node.children):
                name = next(c.name for c in node.children if c.kind == "Function")
                raise UnsafeQuery(f"table function {name}() is not allowed in alert rules")
        elif node.kind == "Function":
            _check_function(node, database, aliased)
        if node.text.endswith("(alias value)") or (node.kind == "Identifier" and node.name == "value"):
            returns_value = True
    if not returns_value:
        raise UnsafeQuery("the query must return a column named value")


def _check_table(name: str, database: str) -> None:
    db, dot, table = name.rpartition(".")
    if table not in ALLOWED_TABLES or (dot and db != database):
        raise UnsafeQuery(f"table {name!r} is not readable from alert rules: use one of {', '.join(ALLOWED_TABLES)}")


def _check_function(node: Node, database: str, aliased: list[str]) -> None:
    low = node.name.lower()
    if any(f in _FORBIDDEN_FUNCS or f.startswith(_FORBIDDEN_PREFIXES)
           for f in (low, function_aliases().get(low, low))):  # fullHostName is FQDN, user currentUser
        raise UnsafeQuery(f"function {node.name}() is not allowed in alert rules")
    if low in _IN_FUNCS and node.children and len(node.children[0].children) == 2:
        rhs = node.children[0].children[1]
        if rhs.kind == "Identifier":  # `x IN name`: the name is a table (or a set) to ClickHouse
            _check_table(rhs.name, database)
            # 18.16 puts an alias's expression in the name's place and reads the table that names:
            # `WITH settings AS red_1m … x IN red_1m` read the settings table
            if any(t.endswith(f"(alias {rhs.name})") for t in aliased):
                raise UnsafeQuery(f"IN {rhs.name}: {rhs.name} is also an alias in the query; "
                                  "rename the alias")


# -- the 18.16 convenience: {start}/{end} next to a DateTime column become toDateTime(…) ---------------

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      |(?P<comment>--[^\n]*|/\*.*?\*/)
      |(?P<string>'(?:[^'\\]|\\.|'')*')
      |(?P<qident>"(?:[^"\\]|\\.|"")*"|`(?:[^`\\]|\\.|``)*`)
      |(?P<param>\{\s*[A-Za-z_][A-Za-z0-9_]*\s*:\s*[A-Za-z0-9_()]+\s*\})
      |(?P<word>[A-Za-z_][A-Za-z0-9_]*)
      |(?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_CMP = {"<", "<=", ">", ">=", "=", "==", "!=", "<>"}
_TIME_COLUMNS = {"timestamp", "minute", "hour"}


def _wrap_time_params(sql: str) -> str:
    """Only a convenience for old servers: the parser, not this scan, decides what is allowed."""
    parts = [(m.lastgroup or "", m.group()) for m in _TOKEN.finditer(sql)]
    sig = [i for i, (k, _) in enumerate(parts) if k not in ("ws", "comment")]
    out = [t for _, t in parts]
    for n, i in enumerate(sig):
        kind, text = parts[i]
        if kind != "param" or not text.replace(" ", "").endswith(":UInt32}"):
            continue
        before = [parts[j][1] for j in sig[max(0, n - 3):n]]
        after = [parts[j][1] for j in sig[n + 1:n + 4]]
        if _next_to_time(before[::-1]) or _next_to_time(after):
            out[i] = f"toDateTime({text})"
    return "".join(out)


def _next_to_time(toks: list[str]) -> bool:
    """``[op, column]`` or ``[op1, op2, column]`` (``>`` ``=`` read as two tokens) nearest first."""
    ops = ""
    for t in toks:
        if t and t in "<>=!":
            ops += t
            continue
        return bool(ops) and t.lower() in _TIME_COLUMNS and (ops in _CMP or ops[::-1] in _CMP)
    return False
