"""The quoted attribute filter ``=["key", "op", "value"]``: any key or value, operators and spaces
included, selects exactly that label; every filter text that meant something still means it. Found
by a prober: the explorer's label chips wrote ``le<5=a`` (answered 400) and ``k=v=c`` (filtered key
``k``)."""

from __future__ import annotations

import time

import pytest

from testkit.metricgen import point
from tracehouse.storage import InvalidParameter, parse_range
from tracehouse.storage import queries_metrics as qm
from tracehouse.storage.attr_filters import MAX_LEN, AttrFilter, format_filter, parse_filter

NS = 1_000_000_000
HOSTILE = [("le<5", "a"), ("x>y", "b"), ("k=v", "c"), ("a!b", "d"), ("k", "v=c"), ("t~", "e"), (" sp ", " f "),
           ("=[x", "]"), ("q exists", "g"), ("u", "h exists"), ('["j"]', '"'), ("nl", "a\nb\\c\0"),
           ("=", "="), ("ok", "Z" * MAX_LEN)]


@pytest.mark.parametrize("text, want", [
    ('=["le<5", "=", "a"]', ("le<5", "=", "a")),
    ('  =["k=v","!=","c"]  ', ("k=v", "!=", "c")),
    ('=[" sp ", "~", " x "]', (" sp ", "~", " x ")),  # taken exactly: no stripping
    ('=["n>1", ">=", "2.5"]', ("n>1", ">=", "2.5")),
    ('=["a b", "exists"]', ("a b", "exists", "")),
    ('=["k", "=", ""]', ("k", "=", "")),
])
def test_quoted_form(text, want):
    f = parse_filter(text)
    assert (f.key, f.op, f.value) == want


@pytest.mark.parametrize("text", ['=["k"]', '=["k", "="]', '=["k", "exists", "v"]', '=["k", "in", "v"]',
                                  '=["k", "=", 5]', '=["", "=", "v"]', '=["k", ">", "abc"]', '=["k", "=", "v"',
                                  '=[' + '[' * 5000 + ']' * 5000 + ']', '=["\\ud800", "=", "v"]',
                                  '=["' + "x" * (MAX_LEN + 1) + '", "=", "v"]'])
def test_bad_quoted_filters_are_refused_with_a_reason(text):
    with pytest.raises(InvalidParameter):
        parse_filter(text)


@pytest.mark.parametrize("text, want", [
    ("a=b", ("a", "=", "b")), ("a=b=c", ("a", "=", "b=c")), ("a = [x]", ("a", "=", " [x]")),
    ('"k=v"=c', ('"k', "=", 'v"=c')), ("k=[1,2]", ("k", "=", "[1,2]")), ("=[x exists", ("=[x", "exists", "")),
    ('["a"]=b', ('["a"]', "=", "b")),
])
def test_plain_filters_keep_their_meaning(text, want):
    f = parse_filter(text)
    assert (f.key, f.op, f.value) == want


@pytest.mark.parametrize("key, value", HOSTILE)
def test_every_label_has_a_filter_text_that_reads_back_as_itself(key, value):
    text = format_filter(key, "=", value)
    assert parse_filter(text) == AttrFilter(key, "=", value)
    assert AttrFilter(key, "=", value).text == text


def test_plain_form_where_it_is_unambiguous_and_none_past_the_limit():
    assert format_filter("http.route", "=", "/a=b") == "http.route=/a=b"
    assert format_filter("user.id", "exists") == "user.id exists"
    assert format_filter("k=v", "=", "c") == '=["k=v","=","c"]'
    assert format_filter("k=v", "exists") == '=["k=v","exists"]'
    assert format_filter("ok", "=", "Z" * (MAX_LEN + 1)) is None


def test_quoted_filters_select_exactly_their_series(store):
    now = time.time_ns()
    cols = store.columns_for("metric_points")
    for i, (k, v) in enumerate(HOSTILE):
        for j in range(3):
            point(cols, now - (10 + j) * NS, "chips", "chip.gauge", {k: v}, value=float(i))
    point(cols, now - 10 * NS, "chips", "chip.gauge", {"k": "v"}, value=99.0)  # what k=v=c would select
    store.insert("metric_points", cols)
    tr = parse_range("5m", None)
    for i, (k, v) in enumerate(HOSTILE):
        f = parse_filter(format_filter(k, "=", v))
        got = qm.explore(store, qm.MetricQuery("chip.gauge", tr, filters=(f,), group_by=(k,), agg="max"))
        assert [s["labels"] for s in got["series"]] == [{k: v}], (k, v)
        assert {p[1] for s in got["series"] for p in s["points"]} == {float(i)}
