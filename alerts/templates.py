"""Annotation templates: Jinja2 in a sandbox, with ``value``, ``labels``, ``alertname``,
``dashboard_url`` and ``rule_id``. Labels are data: autoescape is off because annotations are
plain text (notifiers escape for their own formats), and the sandbox refuses attribute tricks.

An editor writes these templates, so rendering one must stay cheap whatever it says:

- no loops, macros, call or filter blocks, includes or imports (an annotation is a line of text),
  and no ``set``, ``with`` or ``block`` (a name bound to a value lets ``{% set a = a ~ a %}``
  double it at every step);
- ``*``, ``**``, ``+``, ``//`` and ``~`` are checked before they run: no string or list longer than
  :data:`MAX_VALUE_CHARS`, no integer past :data:`MAX_INT_BITS` bits; ``%`` on strings (printf
  widths) is refused;
- padding and joining filters (``center``, ``indent``, ``wordwrap``, ``truncate``, ``replace``,
  ``join``, ``format``) check their result size first, and ``slice``/``batch`` their count (which
  they loop to, or pad to); ``range`` stops at :data:`MAX_RANGE`;
  ``lipsum`` is gone; every filter's result, a string, list or tuple, is at most
  :data:`MAX_VALUE_CHARS` long (``|list|string`` grows a value fivefold a step); strings, lists and
  dicts offer only a few read-only methods;
- the template itself is at most :data:`MAX_TEMPLATE_CHARS`, its output at most
  :data:`MAX_OUTPUT_CHARS` (cut, with an ellipsis).
"""

from __future__ import annotations

import functools
import math
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes, pass_environment
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment
from jinja2.visitor import NodeTransformer

from tracehouse.pathtext import service_path

from .errors import RuleError

MAX_TEMPLATE_CHARS = 4000
MAX_VALUE_CHARS = 10_000
MAX_OUTPUT_CHARS = 4000
MAX_INT_BITS = 256
MAX_RANGE = 1000
_BLOCKED_NODES = (nodes.For, nodes.Macro, nodes.CallBlock, nodes.FilterBlock, nodes.Include, nodes.Import,
                  nodes.FromImport, nodes.Extends, nodes.Assign, nodes.AssignBlock, nodes.With, nodes.Block)
_SAFE_METHODS = {
    str: {"lower", "upper", "title", "capitalize", "strip", "lstrip", "rstrip", "startswith", "endswith",
          "split", "count", "find", "isdigit", "isalpha"},
    dict: {"items", "keys", "values", "get"},
    list: {"count", "index"},
    tuple: {"count", "index"},
}


def _size(v: Any) -> int:
    return len(v) if isinstance(v, (str, list, tuple)) else 0


def _refuse(what: str) -> SecurityError:
    return SecurityError(f"{what} is not allowed in annotation templates")


class _BoundedSandbox(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "//", "%"})

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "%" and isinstance(left, str):
            raise _refuse("string formatting with %")
        if operator_ in ("*", "+"):
            seq_len = _product_len(operator_, left, right)
            if seq_len > MAX_VALUE_CHARS:
                raise SecurityError(f"a value longer than {MAX_VALUE_CHARS} is not allowed in annotation templates")
        if isinstance(left, int) and isinstance(right, int) and not isinstance(left, bool):
            bits = _int_bits(operator_, left, right)
            if bits > MAX_INT_BITS:
                raise SecurityError(f"a number over {MAX_INT_BITS} bits is not allowed in annotation templates")
        if operator_ == "**" and isinstance(right, (int, float)) and abs(right) > MAX_INT_BITS:
            raise _refuse("so large an exponent")
        return super().call_binop(context, operator_, left, right)

    def wrap_str_format(self, value: Any) -> None:
        """No ``str.format``/``format_map`` (field widths build strings of any size)."""
        return None

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        for kind, allowed in _SAFE_METHODS.items():
            if isinstance(obj, kind) and callable(value):
                return attr in allowed
        return super().is_safe_attribute(obj, attr, value)


def _product_len(op: str, left: Any, right: Any) -> int:
    if op == "+":
        return _size(left) + _size(right)
    for seq, n in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
            return len(seq) * max(0, n)
    return 0


def _int_bits(op: str, left: int, right: int) -> int:
    if op == "*":
        return left.bit_length() + right.bit_length()
    if op == "**":
        return left.bit_length() * max(0, right)
    return max(left.bit_length(), right.bit_length()) + 1


def _checked(n: int) -> int:
    if n > MAX_VALUE_CHARS:
        raise SecurityError(f"a value longer than {MAX_VALUE_CHARS} is not allowed in annotation templates")
    return n


def _human(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):  # x / 0 in a SQL rule; int(inf) would raise
        return "+Inf" if f > 0 else "-Inf"
    if f == int(f) and abs(f) < 1e15:
        return str(int(f))
    return f"{f:.4g}"


def _bounded_range(*args: int) -> range:
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise SecurityError(f"range() longer than {MAX_RANGE} is not allowed in annotation templates")
    return r


def _wrap_width(name: str):
    """The filter ``name`` with its width or count (first argument after the value) checked first."""
    original = _env.filters[name]

    def width_ok(args: tuple, kwargs: dict) -> None:
        width = args[0] if args else next((kwargs[k] for k in ("width", "length", "slices", "linecount") if k in kwargs), 0)
        if isinstance(width, int):
            _checked(width)

    if getattr(original, "jinja_pass_arg", None) is not None:  # wordwrap, truncate take the environment
        @pass_environment
        def with_env(env: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
            width_ok(args, kwargs)
            return original(env, value, *args, **kwargs)

        return with_env

    def plain(value: Any, *args: Any, **kwargs: Any) -> Any:
        width_ok(args, kwargs)
        return original(value, *args, **kwargs)

    return plain


def _concat(items: tuple) -> str:
    """``a ~ b ~ ...``: Jinja's own join of the items' texts, its size checked first (``~`` is no
    binary operator the sandbox intercepts: 440 of them over a label of 16,384 characters made a
    value of 7 MB, 0.5 s of CPU, at every evaluation of every alert of the rule)."""
    texts = [str(x) for x in items]
    _checked(sum(map(len, texts)))
    return "".join(texts)


class _BoundedConcat(NodeTransformer):
    """Every ``~`` (a Concat node) becomes the ``_concat`` filter over its items."""

    def visit_Concat(self, node: nodes.Concat) -> nodes.Filter:  # noqa: N802 (Jinja's visitor naming)
        items = [self.visit(n) for n in node.nodes]
        return nodes.Filter(nodes.Tuple(items, "load", lineno=node.lineno), "_concat", [], [], None, None,
                            lineno=node.lineno)


def _replace(value: Any, old: str, new: str, count: int | None = None) -> str:
    s, old, new = str(value), str(old), str(new)
    hits = s.count(old) if old else len(s) + 1
    if count is not None:
        hits = min(hits, max(0, int(count)))
    _checked(len(s) + hits * max(0, len(new) - len(old)))
    return s.replace(old, new, -1 if count is None else max(0, int(count)))


def _join(value: Any, d: str = "", attribute: Any = None) -> str:
    items = [str(x) if attribute is None else str(_env.getattr(x, attribute)) for x in value]
    _checked(sum(map(len, items)) + len(str(d)) * max(0, len(items) - 1))
    return str(d).join(items)


def _bounded_result(original: Any) -> Any:
    """The filter ``original`` with the size of its result checked (the pass-arg marker kept)."""
    @functools.wraps(original)
    def checked(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        if isinstance(out, (str, list, tuple)):
            _checked(len(out))
        return out

    return checked


_env = _BoundedSandbox(autoescape=False, undefined=StrictUndefined)
_env.filters["human"] = _human
_env.filters["service_path"] = service_path  # {{ dashboard_url }}{{ labels.service|service_path }}
for _name in ("center", "indent", "wordwrap", "truncate", "slice", "batch"):
    _env.filters[_name] = _wrap_width(_name)
_env.filters["replace"] = _replace
_env.filters["join"] = _join
_env.filters["_concat"] = _concat
del _env.filters["format"]
_env.filters = {name: _bounded_result(f) for name, f in _env.filters.items()}
_env.globals["range"] = _bounded_range
_env.globals.pop("lipsum", None)


@lru_cache(maxsize=512)
def _compile(text: str):
    if len(text) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"template longer than {MAX_TEMPLATE_CHARS} characters")
    tree = _env.parse(text)
    for kind in _BLOCKED_NODES:
        if next(tree.find_all(kind), None) is not None:
            raise TemplateError(f"{kind.__name__.lower()} blocks are not allowed in annotation templates")
    return _env.from_string(_BoundedConcat().visit(tree))


def check(text: str) -> None:
    """Raise :class:`RuleError` (a ValueError) if ``text`` is not a valid template."""
    try:
        _compile(text)
    except TemplateError as e:
        raise RuleError(f"bad template {text[:200]!r}: {e}") from None


def render(text: str, context: dict[str, Any]) -> str:
    """Render one annotation; a failing template gives its error text instead of raising."""
    if "{" not in text:
        return text[:MAX_OUTPUT_CHARS]
    try:
        out: list[str] = []
        size = 0
        for chunk in _compile(text).generate(**context):
            out.append(chunk)
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                break
        result = "".join(out)
    except Exception as e:  # a broken template must not stop an alert from firing
        return f"<template error: {str(e)[:300]}> {text[:500]}"
    return result if len(result) <= MAX_OUTPUT_CHARS else result[:MAX_OUTPUT_CHARS - 1] + "…"


def render_all(templates: dict[str, str], value: float, labels: dict[str, str], dashboard_url: str,
               rule_id: str) -> dict[str, str]:
    ctx = {"value": _human(value) if value == value else "NaN", "raw_value": value, "labels": labels,
           "alertname": labels.get("alertname", ""), "dashboard_url": dashboard_url.rstrip("/"), "rule_id": rule_id}
    out = {k: render(v, ctx) for k, v in templates.items()}
    if "dashboard" not in out and dashboard_url:
        svc = labels.get("service")
        out["dashboard"] = dashboard_url.rstrip("/") + (service_path(svc) if svc else "/alerts")
    return out

