"""SQL expressions (ClickHouse dialect, for the embedded engine) that compute what ``convert.py``
computes in Python: attribute values as text, redaction, limits, JSON of event and link
attributes. Pure functions from expressions to expressions; each mirrors one Python function, and
the differential test (``tests/collector/test_native.py``) feeds both the same requests.

The engine matches regular expressions with RE2; the patterns come from ``redact.py`` in their RE2
spelling, so the two engines apply the same rules.
"""

from __future__ import annotations

import itertools
import re

from tracehouse.storage.attrs import ARRAY, BOOL, BYTES, DOUBLE, EMPTY, INT, KVLIST, STR

from .convert import Limits
from .redact import LOWER_TO_ASCII, MASK, Redactor, param_pattern, userinfo_pattern

__all__ = ["lit", "Sql"]

_names = itertools.count()


def lit(s: str) -> str:
    """A ClickHouse string literal."""
    out = ["'"]
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "'":
            out.append("\\'")
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append("'")
    return "".join(out)


def let(value: str, body) -> str:
    """``body(name)`` with ``name`` bound to ``value`` once (a one-element arrayMap)."""
    name = f"_v{next(_names)}"
    return f"arrayMap({name} -> {body(name)}, [{value}])[1]"


# --- JSON, as the engine writes it (``convert._json`` writes the same) --------------------------


def json_str(x: str) -> str:
    """A JSON string literal of ``x``: the engine's ``toJSONString`` (quote, backslash and control
    characters escaped, ``\\u00XX`` in capitals, U+2028/U+2029 as escapes, ``/`` left alone under
    ``insert_settings``' ``output_format_json_escape_forward_slashes = 0``), which ``convert._json``
    reproduces. One function where a chain of 27 replacements used to reproduce orjson: the
    statement is analysed at every insert, and the chain cost 45 of its 172 ms (measured with
    ``EXPLAIN PLAN`` of the trace flattening)."""
    return f"toJSONString({x})"


def float_text(x: str, style: str) -> str:
    """A double as Python's ``repr`` (``style="repr"``) or as orjson writes it (``"json"``): from
    the shortest round-trip digits and decimal exponent of the engine's own ``toString``
    (``12345678901234567000`` → ``1.2345678901234567e+16``). Written out in full (the engine
    computes a repeated subexpression once)."""
    lo, special = (-4, ("'nan'", "'inf'", "'-inf'")) if style == "repr" else (-5, ("'null'",) * 3)
    t = f"toString({x})"
    g = f"extractGroups({t}, '^-?([0-9]*)[.]?([0-9]*)e?([-+0-9]*)$')"
    alld = f"concat({g}[1], {g}[2])"
    d = f"trimRight(trimLeft({alld}, '0'), '0')"
    e = (f"(toInt32(length({g}[1])) - toInt32(length({alld})) + toInt32(length(trimLeft({alld}, '0'))) - 1 "
         f"+ toInt32OrZero({g}[3]))")
    n = f"toInt32(length({d}))"
    exp = (f"if(abs({e}) < 10, concat('0', toString(abs({e}))), toString(abs({e})))" if style == "repr"
           else f"toString(abs({e}))")
    fixed = (f"multiIf({e} >= {n} - 1, concat({d}, repeat('0', toUInt32(greatest({e} - {n} + 1, 0))), '.0'), "
             f"{e} >= 0, concat(substring({d}, 1, toUInt32(greatest({e} + 1, 0))), '.', "
             f"substring({d}, toUInt32(greatest({e} + 2, 1)))), "
             f"concat('0.', repeat('0', toUInt32(greatest(-{e} - 1, 0))), {d}))")
    sci = (f"concat(substring({d}, 1, 1), if(length({d}) > 1, concat('.', substring({d}, 2)), ''), 'e', "
           f"if({e} < 0, '-', '+'), {exp})")
    sign = f"if(startsWith({t}, '-'), '-', '')"
    return (f"multiIf(isNaN({x}), {special[0]}, isInfinite({x}), if({x} > 0, {special[1]}, {special[2]}), "
            f"{x} = 0, concat({sign}, '0.0'), concat({sign}, if({e} >= {lo} AND {e} < 16, {fixed}, {sci})))")


def json_object(keys: str, vals: str) -> str:
    """``{"k": v, ...}`` from an array of keys and an array of JSON value texts, as a Python dict
    makes it: a repeated key keeps its first place and takes its last value."""
    def body(k: str, v: str) -> str:
        simple = f"arrayMap((_jk, _jv) -> concat({json_str('_jk')}, ':', _jv), {k}, {v})"
        dedup = (f"arrayMap(_ji -> concat({json_str(f'{k}[_ji]')}, ':', "
                 f"{v}[length({k}) + 1 - indexOf(arrayReverse({k}), {k}[_ji])]), "
                 f"arrayFilter(_ji -> indexOf({k}, {k}[_ji]) = _ji, arrayEnumerate({k})))")
        return (f"concat('{{', arrayStringConcat(if(length(arrayDistinct({k})) = length({k}), {simple}, {dedup}), "
                "','), '}')")
    return let(keys, lambda k: let(vals, lambda v: body(k, v)))


# --- redaction and values ------------------------------------------------------------------------


class Sql:
    """The expressions for one configuration (redaction keys and limits)."""

    def __init__(self, red: Redactor, lim: Limits, doubles: bool = False, kvlists: bool = False):
        """``doubles``/``kvlists``: whether the engine formats doubles (as Python's repr and as
        orjson) and key-value lists itself; without, requests holding them take the Python path.
        Both are off by default: they double the statement the engine analyses at every insert
        (measured: 120 against 45 kB, 0.48 against 0.2 s), for values few spans carry."""
        self.red = red
        self.lim = lim
        self.doubles = doubles
        self.kvlists = kvlists
        self._userinfo = lit(userinfo_pattern(re2=True))
        self._params = lit(param_pattern(red.param_names, re2=True))
        self._key_re = lit("(?:^| )(?:" + "|".join(red.words) + ")(?: |$)")
        # a key can be secret only if it holds the longest word of some listed sequence (or one
        # of the few characters that lower-case to ASCII letters): a cheap test first, as one
        # regular expression. Its (?i:…) folds case as Unicode does, so it admits every key that
        # an ASCII case-insensitive search for the words admits (and a few more, which the full
        # test then decides). Measured against that search (``multiSearchAnyCaseInsensitive``
        # over the 17 words, then a match for the odd characters): the flattening of a 100k-span
        # batch took 1.19 against 1.40 CPU-s (medians of eight, alternating), where no test at all
        # took 1.14.
        needles = sorted({max(w.split(" "), key=len) for w in red.words})
        odd = "|".join(chr(c) for c in LOWER_TO_ASCII)
        self._prefilter = lit("(?i:" + "|".join(re.escape(n) for n in needles) + ")" + (f"|{odd}" if odd else ""))

    # Redactor.key_is_secret
    def words(self, k: str) -> str:
        s = f"replaceRegexpAll({k}, '([a-z0-9])([A-Z])', '\\\\1 \\\\2')"
        for c, low in LOWER_TO_ASCII.items():
            # lower() of these holds ASCII letters; what else it holds is a separator
            s = f"replaceAll({s}, {lit(chr(c))}, {lit(''.join(ch if ch.isascii() and ch.isalnum() else ' ' for ch in low))})"
        return f"trimBoth(replaceRegexpAll(lower({s}), '[^a-z0-9]+', ' '))"

    def secret(self, k: str) -> str:
        return f"match({k}, {self._prefilter}) AND match({self.words(k)}, {self._key_re})"

    # Redactor.text
    def redact(self, s: str) -> str:
        return (f"replaceRegexpAll(replaceRegexpAll({s}, {self._userinfo}, '\\\\1\\\\2:{MASK}@'), "
                f"{self._params}, '\\\\1{MASK}')")

    def redact_if_needed(self, s: str) -> str:
        return f"if(position({s}, '=') > 0 OR position({s}, '@') > 0, {self.redact(s)}, {s})"

    # convert._value / the string branch of convert._attrs: an attribute value as stored text.
    # ``redacted``: the string member already redacted, computed beside rather than inside the
    # multiIf (a regex replacement in a lazily evaluated branch costs the engine several times
    # the memory and time, measured: 430 against 170 MB for 1M values)
    def value_text(self, v: str, depth: int, redacted: str | None = None) -> str:
        branches = [
            f"{v}.value = 'string_value', {redacted or self.redact_if_needed(f'{v}.string_value')}",
            f"{v}.value = 'int_value', toString({v}.int_value)",
            f"{v}.value = 'bool_value', if({v}.bool_value, 'true', 'false')",
            f"{v}.value = 'bytes_value', base64Encode({v}.bytes_value)",
        ]
        if self.doubles:
            branches.append(f"{v}.value = 'double_value', {float_text(f'{v}.double_value', 'repr')}")
        if depth >= 2:
            branches.append(f"{v}.value = 'array_value', {self.json_array(f'{v}.array_value.values', depth - 1)}")
            if self.kvlists:
                branches.append(f"{v}.value = 'kvlist_value', {self.json_kvlist(f'{v}.kvlist_value.values', depth - 1)}")
        return "multiIf(" + ", ".join(branches) + ", '')"

    @staticmethod
    def type_code(v: str) -> str:
        codes = {"string_value": STR, "bool_value": BOOL, "int_value": INT, "double_value": DOUBLE,
                 "array_value": ARRAY, "kvlist_value": KVLIST, "bytes_value": BYTES}
        cases = ", ".join(f"{v}.value = '{k}', {c}" for k, c in codes.items())
        return f"toUInt8(multiIf({cases}, {EMPTY}))"

    # convert._py as JSON text: scalars (``depth`` 1), or arrays and kvlists of them; ``string``
    # is the string member's JSON when computed beside (see value_text)
    def json_value(self, v: str, depth: int, cap: int | None = None, string: str | None = None) -> str:
        if string is None:
            s = self.redact_if_needed(f"{v}.string_value")
            if cap is not None:
                s = f"substringUTF8({s}, 1, {cap})"
            string = json_str(s)
        branches = [
            f"{v}.value = 'string_value', {string}",
            f"{v}.value = 'int_value', toString({v}.int_value)",
            f"{v}.value = 'bool_value', if({v}.bool_value, 'true', 'false')",
            f"{v}.value = 'bytes_value', concat('\"', base64Encode({v}.bytes_value), '\"')",
        ]
        if self.doubles:
            branches.append(f"{v}.value = 'double_value', {float_text(f'{v}.double_value', 'json')}")
        if depth >= 2:
            branches.append(f"{v}.value = 'array_value', {self.json_array(f'{v}.array_value.values', depth - 1)}")
            if self.kvlists:
                branches.append(f"{v}.value = 'kvlist_value', {self.json_kvlist(f'{v}.kvlist_value.values', depth - 1)}")
        return "multiIf(" + ", ".join(branches) + ", 'null')"

    def json_array(self, values: str, depth: int) -> str:
        x = f"_a{next(_names)}"
        return f"concat('[', arrayStringConcat(arrayMap({x} -> {self.json_value(x, depth)}, {values}), ','), ']')"

    def json_kvlist(self, kvs: str, depth: int) -> str:
        x = f"_k{next(_names)}"
        keys = f"arrayMap({x} -> {x}.key, {kvs})"
        vals = f"arrayMap({x} -> if({self.secret(f'{x}.key')}, {lit(chr(34) + MASK + chr(34))}, {self.json_value(f'{x}.value', depth)}), {kvs})"
        return json_object(keys, vals)

    def nested(self, v: str, depth: int) -> str:
        """True when a value is one the engine leaves to Python: nested deeper than the schema
        unrolls, or a double or key-value list where those are not formatted here."""
        python = ["'array_value'", "'kvlist_value'"] if depth <= 1 else []
        if not self.doubles:
            python.append("'double_value'")
        if depth >= 2 and not self.kvlists:
            python.append("'kvlist_value'")
        test = f"{v}.value IN ({', '.join(python)})" if python else "0"
        if depth <= 1:
            return test
        x = f"_n{next(_names)}"
        deeper = f"({v}.value = 'array_value' AND arrayExists({x} -> {self.nested(x, depth - 1)}, {v}.array_value.values))"
        if self.kvlists:
            deeper += (f" OR ({v}.value = 'kvlist_value' AND arrayExists({x} -> {self.nested(f'{x}.value', depth - 1)}, "
                       f"{v}.kvlist_value.values))")
        return f"({test} OR {deeper})"

    # convert._attrs: (keys, values, types) plus the three truncation counts, in two steps so the
    # caller computes the value texts once (as a column) and reads them twice
    def attrs(self, a: str, depth: int) -> dict[str, str]:
        lim = self.lim
        x = f"_t{next(_names)}"

        def each(expr: str) -> str:
            # computed over every attribute, then cut: slicing the input (tuples of every
            # AnyValue member) would copy all of it
            return f"arraySlice(arrayMap({x} -> {expr}, {a}), 1, {lim.max_attributes})"

        redacted = f"arrayMap({x} -> {self.redact_if_needed(f'{x}.value.string_value')}, {a})"
        return {
            "keys": each(f"substringUTF8({x}.key, 1, {lim.max_key_len})"),
            "texts": (f"arraySlice(arrayMap(({x}, _r) -> {self.value_text(f'{x}.value', depth, '_r')}, {a}, "
                      f"{redacted}), 1, {lim.max_attributes})"),
            "types": each(self.type_code(f"{x}.value")),
            "n_attributes": f"toUInt64(greatest(length({a}) - {lim.max_attributes}, 0))",
            "n_keys": f"toUInt64(arrayCount(_b -> _b, {each(f'lengthUTF8({x}.key) > {lim.max_key_len}')}))",
        }

    def attr_values(self, keys: str, texts: str) -> dict[str, str]:
        """The stored values (cut, and masked under secret keys) and the count of cut ones, from
        the columns holding ``attrs()``'s keys and texts."""
        lim = self.lim
        return {
            "values": (f"arrayMap((k, t) -> if({self.secret('k')}, {lit(MASK)}, substringUTF8(t, 1, {lim.max_value_len})), "
                       f"{keys}, {texts})"),
            "n_values": f"toUInt64(arrayCount(t -> lengthUTF8(t) > {lim.max_value_len}, {texts}))",
        }

    # convert._attr_dict (scalar values only: a nested value sends the request to Python)
    def attr_dict(self, a: str, extra_key: str | None = None, extra_value: str | None = None) -> dict[str, str]:
        lim = self.lim
        x = f"_d{next(_names)}"
        capped = f"arraySlice({a}, 1, {lim.max_attributes})"
        keys = f"arrayMap({x} -> substringUTF8({x}.key, 1, {lim.max_key_len}), {capped})"
        secret = f"arrayMap(k -> {self.secret('k')}, {keys})"
        red = f"arrayMap({x} -> {self.redact_if_needed(f'{x}.value.string_value')}, {capped})"
        strings = f"arrayMap(_r -> {json_str(f'substringUTF8(_r, 1, {lim.max_value_len})')}, {red})"
        vals = (f"arrayMap((_s, {x}, _j) -> if(_s, {lit(chr(34) + MASK + chr(34))}, "
                f"{self.json_value(f'{x}.value', 1, string='_j')}), {secret}, {capped}, {strings})")
        long_value = (f"arrayCount((_s, {x}, _r) -> {x}.value.value = 'string_value' AND NOT _s AND "
                      f"lengthUTF8(_r) > {lim.max_value_len}, {secret}, {capped}, {red})")
        if extra_key is not None and extra_value is not None:
            keys_all = f"arrayConcat({keys}, if({extra_value} != '', [{lit(extra_key)}], []))"
            vals_all = f"arrayConcat({vals}, if({extra_value} != '', [{json_str(extra_value)}], []))"
        else:
            keys_all, vals_all = keys, vals
        return {
            "json": json_object(keys_all, vals_all),
            "n_attributes": f"toUInt64(greatest(length({a}) - {lim.max_attributes}, 0))",
            "n_keys": f"toUInt64(arrayCount({x} -> lengthUTF8({x}.key) > {lim.max_key_len}, {capped}))",
            "n_values": f"toUInt64({long_value})",
        }
