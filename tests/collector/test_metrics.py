"""The collector's metrics registry on prometheus_client: the collector's call API, one registry per
collector (no global state), and an exposition Prometheus's own parser reads."""

from __future__ import annotations

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

from tracehouse.collector.metrics import Registry


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_registry_keeps_the_collector_api_on_prometheus_client():
    a, b = Registry(), Registry()
    a.inc("tracehouse_collector_written_items_total", 5, signal="traces")
    a.inc("tracehouse_collector_written_items_total", 2, signal="traces")
    a.inc("tracehouse_collector_written_items_total", 1, signal="logs")
    a.observe("tracehouse_collector_writer_batch_seconds", 0.2)
    a.observe("tracehouse_collector_writer_batch_items", 300, signal="traces")
    a.gauge("tracehouse_collector_buffer_bytes", lambda: 4096)
    a.gauge("tracehouse_collector_wal_fsyncs_total", lambda: 7)
    a.gauge("tracehouse_collector_buffer_age_seconds", lambda: 1 / 0)  # unreadable: left out, scrape still works
    assert a.get("tracehouse_collector_written_items_total", signal="traces") == 7
    assert a.get("tracehouse_collector_written_items_total") == 8
    assert a.get("tracehouse_collector_wal_fsyncs_total") == 7
    assert b.get("tracehouse_collector_written_items_total") == 0  # registries are separate
    assert b"tracehouse_collector" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)

    s = _samples(a.render().decode())
    assert s[("tracehouse_collector_written_items_total", (("signal", "traces"),))] == 7
    assert s[("tracehouse_collector_buffer_bytes", ())] == 4096
    assert s[("tracehouse_collector_wal_fsyncs_total", ())] == 7
    assert s[("tracehouse_collector_writer_batch_seconds_bucket", (("le", "0.25"),))] == 1
    assert s[("tracehouse_collector_writer_batch_seconds_bucket", (("le", "0.1"),))] == 0
    assert s[("tracehouse_collector_writer_batch_items_sum", (("signal", "traces"),))] == 300
    assert not any(name.startswith("tracehouse_collector_buffer_age") for name, _ in s)


def test_a_label_set_that_changes_is_a_programming_error():
    r = Registry()
    r.inc("tracehouse_collector_requests_total", 1, signal="traces", code="200")
    try:
        r.inc("tracehouse_collector_requests_total", 1, signal="traces")
    except ValueError as e:
        assert "labels" in str(e)
    else:
        raise AssertionError("a changed label set was accepted")
