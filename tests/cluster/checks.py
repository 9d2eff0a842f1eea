"""What the cluster tests check after a load: each acknowledged span stored once, traces whole and
on one shard with their summaries, rollups agreeing with the spans, replicas in step."""

from __future__ import annotations

import time
import urllib.request

from testkit.otlp_load import Senders, Workload
from tests.support.waiting import wait_for
from tracehouse.storage import StorageUnavailable

NS = 1_000_000_000


def window_clause(t0_ns: int, t1_ns: int) -> str:
    return f"timestamp >= toDateTime({t0_ns // NS}) AND timestamp < toDateTime({t1_ns // NS + 1})"


def span_counts(store, t0_ns: int, t1_ns: int) -> dict[str, int]:
    """Stored rows per span id (hex) in the window."""
    rows = store.query(f"SELECT lower(hex(span_id)), count() FROM {store.t('spans')} WHERE {window_clause(t0_ns, t1_ns)} "
                       "GROUP BY span_id").rows
    return {s: int(c) for s, c in rows}


def buffers_empty(cluster) -> bool:
    for port in cluster.info["collector_ports"]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return False
        line = next(x for x in text.splitlines() if x.startswith("tracehouse_collector_buffer_bytes"))
        if float(line.split()[-1]) != 0:
            return False
    return True


def wait_stored(cluster, store, senders: Senders, t0_ns: int, t1_ns: int, timeout: float = 180) -> dict[str, int]:
    """Wait until every acknowledged span is stored and the collectors' buffers are empty."""
    want = {s.hex() for b in senders.acked for s in b.span_ids}

    def done():
        counts = span_counts(store, t0_ns, t1_ns)
        return counts if want <= counts.keys() and buffers_empty(cluster) else None

    wait_for(done, timeout, every=1.0, what="every acknowledged span stored", tolerate=(StorageUnavailable,))
    time.sleep(1.5)  # anything still in flight (a replay) would land now
    return span_counts(store, t0_ns, t1_ns)


def assert_exactly_once(counts: dict[str, int], senders: Senders, allow_uncertain_twice: bool = False) -> dict:
    """Every acknowledged span once; a span twice only if its body had an attempt without an answer
    (and only when the test allows that: a collector killed after storing, before answering)."""
    acked = {s.hex() for b in senders.acked for s in b.span_ids}
    uncertain = {s.hex() for b in senders.uncertain for s in b.span_ids}
    missing = acked - counts.keys()
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged spans were lost"
    extra = counts.keys() - acked
    assert not extra, f"{len(extra)} stored spans were never sent"
    twice = {s for s, c in counts.items() if c > 1}
    if allow_uncertain_twice:
        assert twice <= uncertain, f"{len(twice - uncertain)} spans stored twice without a lost answer"
    else:
        assert not twice, f"{len(twice)} spans stored more than once (of {len(acked)})"
    assert max(counts.values(), default=1) <= 2
    return {"spans": len(acked), "duplicated": len(twice), "uncertain_bodies": len(senders.uncertain)}


def assert_traces_whole_and_colocated(store, work: Workload, t0_ns: int, t1_ns: int, duplicated: int = 0) -> None:
    """Every trace has all its spans, its summary counts them all, and spans and summary sit on one
    shard (the same one); every rollup counts exactly the rows stored (``duplicated`` rows more than
    the spans sent, where a test allows them)."""
    w = window_clause(t0_ns, t1_ns)
    per_trace = dict(store.query(f"SELECT lower(hex(trace_id)), count() FROM (SELECT DISTINCT trace_id, span_id "
                                 f"FROM {store.t('spans')} WHERE {w}) GROUP BY trace_id").rows)
    assert per_trace == {t.hex(): n for t, n in work.spans_per_trace.items()}
    hours = f"hour >= toStartOfHour(toDateTime({t0_ns // NS})) AND hour <= toDateTime({t1_ns // NS + 1})"
    sw = store.shard_writer()
    placed: dict[str, int] = {}
    mine = {t.hex() for t in work.spans_per_trace}
    for i in range(len(sw.shards)):
        spans = {t for (t,) in sw.on_shard(i, lambda b: b.query(
            f"SELECT DISTINCT lower(hex(trace_id)) FROM {store.db}.spans_local WHERE {w}")).rows}
        summaries = {t for (t,) in sw.on_shard(i, lambda b: b.query(
            f"SELECT DISTINCT lower(hex(trace_id)) FROM {store.db}.trace_summary_local WHERE {hours}")).rows}
        assert spans & mine == summaries & mine, f"shard {i + 1}: traces and summaries differ"
        for t in spans & mine:
            assert t not in placed, "a trace has spans on two shards"
            placed[t] = i
    assert set(placed) == mine
    total = sum(work.spans_per_trace.values())
    stored = store.query(f"SELECT count() FROM {store.t('spans')} WHERE {w}").scalar()
    minutes = f"minute >= toStartOfMinute(toDateTime({t0_ns // NS})) AND minute <= toDateTime({t1_ns // NS + 1})"
    red = store.query(f"SELECT countMerge(calls) FROM {store.t('red_1m')} WHERE {minutes}").scalar()
    summary = store.query(f"SELECT countMerge(span_count) FROM {store.t('trace_summary')} WHERE {hours} "
                          f"AND trace_id IN (SELECT trace_id FROM {store.t('spans')} WHERE {w})").scalar()
    assert stored == red == summary == total + duplicated, (stored, red, summary, total, duplicated)


def replicas_in_step(cluster, store, t0_ns: int, t1_ns: int, timeout: float = 90) -> None:
    """Both replicas of every shard hold the same spans and rollups (a restarted one caught up)."""
    from tracehouse.storage import Store

    w = window_clause(t0_ns, t1_ns)

    def same():
        for shard in (1, 2):
            seen = set()
            for n in cluster.nodes(shard):
                with Store.open(f"clickhouse://default:@127.0.0.1:{n['tcp']}/{store.db}") as s:
                    seen.add((s.query(f"SELECT count() FROM {store.db}.spans_local WHERE {w}").scalar(),
                              s.query(f"SELECT countMerge(calls) FROM {store.db}.red_1m_local").scalar(),
                              s.query(f"SELECT countMerge(span_count) FROM {store.db}.trace_summary_local").scalar()))
            if len(seen) != 1:
                return None
        return True

    wait_for(same, timeout, every=1.0, what="replicas in step", tolerate=(StorageUnavailable,))
