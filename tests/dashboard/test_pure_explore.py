"""The pure parts of the new pages: units, flame graph merging, trace comparison, histogram math,
the compact waterfall."""

from __future__ import annotations

import math

import pytest

from tracehouse.dashboard import compare, flamegraph, units, waterfall
from tracehouse.storage import metric_math as mm


@pytest.mark.parametrize("unit, name, value, text", [
    ("By", "system.memory.usage", 3e9, "3 GB"),
    ("KiBy", "x", 2048, "2.1 MB"),  # 2048 KiB in bytes, with an SI prefix
    ("s", "http.server.request.duration", 0.25, "250 ms"),
    ("ms", "rpc.duration", 1500, "1.5 s"),
    ("1", "system.cpu.utilization", 0.423, "42.3%"),
    ("%", "cpu", 42.3, "42.3%"),
    ("{request}", "requests", 1234, "1.23k request"),
    ("By/s", "net.io", 2.5e6, "2.5 MB/s"),
    ("", "count", 0.5, "0.5"),
])
def test_units_format_values_and_label_axes(unit, name, value, text):
    u = units.parse(unit, name)
    assert units.fmt(value * u.factor, u) == text


def test_unit_axes_never_say_billions():
    mem = units.axis(units.parse("By", "system.memory.usage"))
    assert mem["ticksuffix"] == "B" and mem["tickformat"] == "~s" and mem["exponentformat"] == "SI"
    assert units.axis(units.parse("s", "d"))["ticksuffix"] == "s"
    assert units.axis(units.parse("1", "system.cpu.utilization"))["tickformat"] == ".0%"
    assert units.axis(units.rate_of(units.parse("By", "x")))["ticksuffix"] == "B/s"
    assert units.parse("ms", "x").factor == 1e-3 and units.parse("MiBy", "x").factor == 1024 ** 2
    assert units.hover(units.parse("By", "x")) == "%{y:.4~s}B"


def _stack(*fns):  # innermost first, as the agent sends them
    return [{"file": f"{fn}.py", "line": i, "function": fn} for i, fn in enumerate(fns)]


def test_flame_graph_merges_threads_by_function_and_file():
    body = {"threads": [{"stack": _stack("read", "query", "main")}, {"stack": _stack("write", "query", "main")},
                        {"stack": _stack("query", "main")}, {"stack": "garbage"}, "not a thread",
                        {"stack": [{"file": "query.py", "line": 99, "function": "query"}, *_stack("main")]}]}
    stacks = flamegraph.thread_stacks(body)
    assert len(stacks) == 4 and stacks[0][0]["function"] == "main"  # outermost first
    root = flamegraph.merge(stacks)
    main = root.children[("main", "main.py")]
    query = main.children[("query", "query.py")]
    assert root.value == 4 and main.value == 4 and query.value == 4 and query.self_value == 2
    assert query.lines == {"0", "1", "99"}  # merged across lines
    ice = flamegraph.icicle(root)
    by_label = dict(zip(ice["labels"], ice["values"]))
    assert by_label == {"all threads": 4, "main": 4, "query": 4, "read": 1, "write": 1}
    assert ice["parents"][0] == "" and ice["depth"] == 3
    top = flamegraph.top_self(root)
    assert top[0]["function"] == "query" and top[0]["samples"] == 2 and top[0]["share"] == 0.5
    small = flamegraph.icicle(root, max_nodes=3)
    assert small["truncated"] and len(small["ids"]) == 3
    assert flamegraph.thread_stacks(None) == [] and flamegraph.thread_stacks({"threads": 5}) == []


def _s(sid, parent, start, end, service="svc", name=None, error=False):
    return {"span_id": sid, "parent_span_id": parent, "start_ns": start, "end_ns": end, "service": service,
            "name": name or sid, "error": error}


def test_self_time_is_duration_minus_the_union_of_children():
    spans = [_s("r", None, 0, 100), _s("a", "r", 10, 40), _s("b", "r", 30, 60), _s("c", "r", 90, 150),
             _s("a1", "a", 0, 5)]  # overlapping children, a child past its parent's end, one before its start
    assert compare.self_times(spans) == [100 - 50 - 10, 30 - 0, 30, 60, 5]


def test_compare_lines_up_operations_and_sorts_by_difference():
    a = {"duration_ms": 100.0, "spans": [_s("r", None, 0, 100_000_000, "gw", "GET /"),
                                         _s("d", "r", 10_000_000, 30_000_000, "db", "SELECT")]}
    b = {"duration_ms": 250.0, "spans": [_s("r", None, 0, 250_000_000, "gw", "GET /"),
                                         _s("d", "r", 10_000_000, 200_000_000, "db", "SELECT"),
                                         _s("x", "r", 200_000_000, 210_000_000, "cache", "GET", True)]}
    c = compare.compare(a, b)
    assert c["delta_ms"] == 150.0 and c["same_operation"] and c["root_a"] == ("gw", "GET /")
    rows = {(r["service"], r["operation"]): r for r in c["rows"]}
    assert [(r["service"], r["operation"]) for r in c["rows"]][0] == ("db", "SELECT")  # +170 ms of its own
    assert rows[("db", "SELECT")]["delta_self_ms"] == 170.0
    assert rows[("gw", "GET /")]["a"]["self_ms"] == 80.0 and rows[("gw", "GET /")]["b"]["self_ms"] == 50.0
    assert rows[("cache", "GET")]["only"] == "b" and rows[("cache", "GET")]["b"]["errors"] == 1


def test_histogram_quantiles_like_prometheus():
    b = mm.explicit_buckets([0, 10, 0, 0], [0.1, 0.2, 0.5])  # 10 values in (0.1, 0.2]
    assert mm.quantile(0.5, b) == pytest.approx(0.15) and mm.quantile(1.0, b) == pytest.approx(0.2)
    assert mm.quantile(0.5, mm.explicit_buckets([4, 0], [1.0])) == pytest.approx(0.5)  # first bucket from 0
    assert mm.quantile(0.99, mm.explicit_buckets([1, 99], [1.0])) == 1.0  # overflow: highest bound
    assert mm.quantile(0.5, {}) is None and mm.quantile(0.5, mm.explicit_buckets([0, 0], [1.0])) is None
    e = mm.exponential_buckets(0, 2, 1, [4])  # scale 0: base 2, bucket 1 is (2, 4]; two zeros
    assert e[0.0] == 2 and e[4.0] == 4 and mm.quantile(0.9, e) == pytest.approx(2 + 2 * (5.4 - 2) / 4)
    fine = mm.exponential_buckets(3, 0, 8, [1])  # scale 3: base 2^(1/8), bucket 8 is (2, 2^(9/8)]
    (upper,) = [k for k, v in fine.items() if v]
    assert math.isclose(upper, 2 ** (9 / 8))


def test_histogram_increase_handles_restarts():
    h1 = (10.0, 5.0, {1.0: 10.0})
    h2 = (15.0, 7.0, {1.0: 12.0, 2.0: 3.0})
    assert mm.increase(h2, h1) == (5.0, 2.0, {1.0: 2.0, 2.0: 3.0})
    restarted = (3.0, 1.0, {1.0: 3.0})
    assert mm.increase(restarted, h2) == restarted
    assert mm.counter_increase(5.0, 100.0) == 5.0 and mm.counter_increase(150.0, 100.0) == 50.0
    assert mm.summary_quantile(0.95, [0.5, 0.99], [1.0, 9.0]) == 9.0 and mm.summary_quantile(0.5, [], []) is None


def test_compact_waterfall_rows():
    spans = [_s("b" * 16, "a" * 16, 10, 50, "s2", "child", True), _s("a" * 16, None, 0, 100, "s1", "root"),
             _s("c" * 16, "f" * 16, 5, 6, "s1", "orphan")]
    wf = waterfall.compact(spans)
    assert wf["ids"] == "a" * 16 + "b" * 16 + "c" * 16
    assert wf["parent"] == [-1, 0, -1] and wf["depth"] == [0, 1, 0]
    assert wf["flags"] == [2 | 4, 1 | 2, 0] and wf["start"] == [0, 10, 5] and wf["dur"] == [100, 40, 1]
    assert [wf["services"][i] for i in wf["svc"]] == ["s1", "s2", "s1"] and wf["total_ns"] == 100
    assert [wf["names"][i] for i in wf["op"]] == ["root", "child", "orphan"]
    assert waterfall.compact([])["ids"] == ""


def test_exponential_buckets_at_the_least_scale_do_not_overflow():
    """Scale -10, the least the OTLP specification allows, has base 2^1024, past a double: every
    explorer view of such a histogram answered 500 (OverflowError)."""
    e = mm.exponential_buckets(-10, 0, 0, [3])  # bucket 0 is (1, 2^1024]
    assert e == {1.0: 0.0, math.inf: 3.0}
    e = mm.exponential_buckets(-10, 1, -1, [2])  # bucket -1 is (2^-1024, 1]
    assert e[1.0] == 2 and 0 < min(k for k in e if k > 0) < 1e-300
    assert mm.exponential_buckets(-(2 ** 31), 0, 2 ** 31 - 1, [1]) == {math.inf: 1.0}
    assert mm.exponential_buckets(-(2 ** 31), 0, -(2 ** 31), [1]) == {0.0: 1.0}
    assert mm.quantile(0.5, mm.exponential_buckets(-10, 0, 0, [3])) == 1.0
