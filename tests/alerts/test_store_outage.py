"""The alert engine while its ClickHouse server hangs (SIGSTOP) or is down, on a private real
clickhouse-server this module starts and stops by its pid: firing alerts stay firing, nothing is
resolved or sent as resolved, an absence rule does not fire because its query failed, the rules'
health says why, readers of the alerts never wait for the hung store, and evaluation recovers by
itself when the server answers again."""

from __future__ import annotations

import threading
import time

from prometheus_client import generate_latest

from testkit import servers
from testkit.receiver import Receiver
from tests.support import hung_store
from tests.support.waiting import wait_for
from tracehouse.alerts import Engine, build_config

clickhouse, hang, outage_store = hung_store.clickhouse, hung_store.hang, hung_store.outage_store


def _engine(store, rx: Receiver) -> Engine:
    cfg = build_config([("t.yaml", {
        "groups": [{"name": "g", "interval": "1s", "rules": [
            {"alert": "Always", "kind": "sql", "query": "SELECT 1 AS value", "op": ">", "threshold": 0},
            {"alert": "CartSilent", "kind": "absence", "service": "cart", "window": "1m", "for": "1h"},
        ]}],
        "receivers": [{"name": "ops", "webhook": {"url": rx.url}}],
        "route": {"receiver": "ops", "group_by": ["alertname"], "group_wait": "0s", "group_interval": "1s",
                  "repeat_interval": "4h"},
        "notifications": {"allow_private_destinations": True}})])
    return Engine(store, cfg)


def _states(engine: Engine) -> dict[str, str]:
    return {a.labels["alertname"]: a.state for a in engine.current_alerts()}


def _within(seconds: float, fn, what: str):
    """``fn()`` on a thread; its result, or a failure naming ``what`` if it takes longer."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert out, f"{what} did not answer within {seconds} s while the store hung"
    return out[0]


def test_readers_of_the_alerts_never_wait_for_a_hung_store(outage_store, hang):
    rx = Receiver()
    e = _engine(outage_store, rx)
    e.run_once(force=True)
    assert _states(e) == {"Always": "firing", "CartSilent": "pending"}
    wait_for(lambda: len(rx.bodies) == 1, 10, what="the firing notification")
    hang()
    evaluation = threading.Thread(target=e.run_once, kwargs={"force": True}, daemon=True)
    evaluation.start()
    time.sleep(1.0)  # the evaluation now waits for the stopped server
    assert evaluation.is_alive()
    # the API's reads and a Prometheus scrape of the engine's metrics answer at once
    assert _within(3, lambda: _states(e), "current_alerts()") == {"Always": "firing", "CartSilent": "pending"}
    assert _within(3, lambda: len(e.alerts()), "alerts()") == 2
    assert _within(3, lambda: len(e.list_rules()), "list_rules()") == 2
    assert b"tracehouse_alerts" in _within(3, lambda: generate_latest(e.metrics.registry), "/metrics")
    hang.resume()
    evaluation.join(30)
    assert not evaluation.is_alive()
    e.run_once(force=True)
    assert _states(e) == {"Always": "firing", "CartSilent": "pending"}
    assert {ar.health for ar in e.rules.values()} == {"ok"}
    assert [b["status"] for b in rx.bodies] == ["firing"]
    rx.down()


def test_an_evaluation_on_a_hung_store_ends_within_the_rule_time_limit(outage_store, hang):
    outage_store.RULE_TIMEOUT_S = 1  # waited for: the limit and a 5 s margin, in all
    cfg = build_config([("t.yaml", {"groups": [{"name": "g", "interval": "1s", "rules": [
        {"alert": "CartSilent", "kind": "absence", "service": "cart", "window": "1m", "for": "1h"}]}]})])
    e = Engine(outage_store, cfg)
    e.run_once(force=True)
    assert _states(e) == {"CartSilent": "pending"}
    hang()
    t0 = time.monotonic()
    evaluation = threading.Thread(target=e.run_once, kwargs={"force": True}, daemon=True)
    evaluation.start()
    evaluation.join(20)
    took = time.monotonic() - t0
    assert not evaluation.is_alive(), "the evaluation still waits for the hung store after 20 s"
    assert took < 15, f"the evaluation took {took:.1f} s"
    ar = e.rules["g/CartSilent"]
    assert ar.health == "err" and "StorageUnavailable" in ar.last_error
    assert _states(e) == {"CartSilent": "pending"}  # neither fired nor dropped by a failed query
    assert e.metrics.eval_failures.labels(group="g")._value.get() == 1
    hang.resume()
    e.run_once(force=True)
    assert ar.health == "ok" and _states(e) == {"CartSilent": "pending"}
    assert [(h["from_state"], h["to_state"]) for h in e.history("g/CartSilent")][0] == ("error", "ok")


def _down_after_first_query(store, clickhouse):
    """The rule reader's real query, which stops the server (SIGTERM, by pid) right after the first
    answer: the alert changes state while the store can no longer take the change."""
    calls = []

    def query(sql, params):
        result = store.rule_reader().query(sql, params)
        if not calls:
            calls.append(1)
            clickhouse.stop()
        return result

    return query


def test_a_change_of_state_the_store_could_not_take_is_written_when_it_returns(outage_store, clickhouse):
    rule = {"alert": "Always", "kind": "sql", "query": "SELECT 1 AS value", "op": ">", "threshold": 0}
    cfg = build_config([("t.yaml", {"groups": [{"name": "g", "interval": "1s", "rules": [rule]}]})])
    e = Engine(outage_store, cfg, sql_query=_down_after_first_query(outage_store, clickhouse))
    e.run_once(force=True)  # inactive -> pending -> firing, and the store is gone before it is written
    assert _states(e) == {"Always": "firing"}
    restarted = servers.restart_clickhouse(clickhouse)
    clickhouse.pid = restarted.pid  # the module's fixture stops the restarted server
    e.run_once(force=True)  # no change now: what the store missed is written
    assert sorted((h["from_state"], h["to_state"]) for h in e.history("g/Always")) == [
        ("inactive", "pending"), ("pending", "firing")]  # (both at the same time: in no order)
    again = Engine(outage_store, cfg)  # a restart starts from the firing alert, fires nothing again
    assert _states(again) == {"Always": "firing"}
    assert again.run_once(force=True) == []


def test_a_notification_sent_while_the_store_was_down_is_not_sent_again_after_a_restart(outage_store, clickhouse):
    rx = Receiver()
    rule = {"alert": "Always", "kind": "sql", "query": "SELECT 1 AS value", "op": ">", "threshold": 0}
    cfg = build_config([("t.yaml", {
        "groups": [{"name": "g", "interval": "1s", "rules": [rule]}],
        "receivers": [{"name": "ops", "webhook": {"url": rx.url}}],
        "route": {"receiver": "ops", "group_by": ["alertname"], "group_wait": "0s", "group_interval": "1s",
                  "repeat_interval": "4h"},
        "notifications": {"allow_private_destinations": True}})])
    e = Engine(outage_store, cfg, sql_query=_down_after_first_query(outage_store, clickhouse))
    e.run_once(force=True)  # fires and notifies; the store is gone when the send is recorded
    wait_for(lambda: len(rx.bodies) == 1, 10, what="the firing notification")
    restarted = servers.restart_clickhouse(clickhouse)
    clickhouse.pid = restarted.pid
    # the dispatcher writes a record again (at most every 2 s) at its next tick once the store is back
    wait_for(lambda: e.run_once(force=True) is not None and not e.dispatcher._unrecorded, 15,
             what="the notification record written once the store is back")
    again = Engine(outage_store, cfg)  # restarted: knows the firing alert was notified
    again.run_once(force=True)
    again.dispatcher.tick(again.clock() + 2 * 10**9)
    assert [b["status"] for b in rx.bodies] == ["firing"]
    rx.down()


def test_the_evaluation_loop_shows_a_store_down_at_its_start_and_resumes_by_itself(outage_store, clickhouse):
    rule = {"alert": "Always", "kind": "sql", "query": "SELECT 1 AS value", "op": ">", "threshold": 0}
    cfg = build_config([("t.yaml", {"groups": [{"name": "g", "interval": "1s", "rules": [rule]}]})])
    e = Engine(outage_store, cfg)
    e.run_once(force=True)
    assert _states(e) == {"Always": "firing"}
    clickhouse.stop()
    e.start()  # takes the lease: the persisted state cannot be read
    try:
        ar = e.rules["g/Always"]
        wait_for(lambda: ar.health == "err", 5, what="the rule's health to say why nothing is evaluated")
        assert "could not be loaded" in ar.last_error
        assert e.metrics.eval_failures.labels(group="g")._value.get() >= 1
        assert _states(e) == {"Always": "firing"} and not e.leading
        restarted = servers.restart_clickhouse(clickhouse)
        clickhouse.pid = restarted.pid  # the module's fixture stops the restarted server
        wait_for(lambda: e.leading and ar.health == "ok", 30, what="evaluation to resume by itself")
        assert _states(e) == {"Always": "firing"}
        assert sorted((h["from_state"], h["to_state"]) for h in e.history("g/Always")
                      if h["to_state"] in ("pending", "firing")) == [("inactive", "pending"), ("pending", "firing")]
    finally:
        e.stop()


def test_the_notifications_api_answers_at_once_while_the_dispatcher_reads_or_writes_a_hung_store(
        outage_store, hang):
    from testkit.servers import serving
    from tests.support import oneshot
    from tracehouse.alerts import alerts_router
    from tracehouse.alerts.state import Alert
    from tracehouse.dashboard import require_role
    from tracehouse.dashboard.app import create_app

    outage_store.SMALL_READ_TIMEOUT_S = outage_store.SMALL_WRITE_TIMEOUT_S = 1  # waited for: 1 s and 5 s, in all
    rx = Receiver()
    e = _engine(outage_store, rx)
    e.run_once(force=True)
    wait_for(lambda: len(rx.bodies) == 1, 10, what="the firing notification")
    d = e.dispatcher
    app = create_app(None, outage_store, alerts=e, routers=[alerts_router(e, require_role)])
    with serving(app) as port:
        url = f"http://127.0.0.1:{port}/api/alerts/notifications"
        assert [g["receiver"] for g in oneshot.get(url, timeout=10).json()["groups"]] == ["ops"]
        hang()
        # a new group reads what it last sent; its flush reads it again and records the send
        other = Alert("g/Other", "fp-other", {"alertname": "Other"}, "firing")
        now = e.clock()
        work = [threading.Thread(target=d.update, args=([other], now), daemon=True),
                threading.Thread(target=d.tick, args=(now + 10**9,), daemon=True)]
        for t in work:
            t.start()
            time.sleep(0.3)  # each now waits for the stopped server
            t0 = time.monotonic()
            r = oneshot.get(url, timeout=20)
            took = time.monotonic() - t0
            print(f"notifications API answered in {took:.2f} s while {t.name} waited on the hung store")
            assert r.status_code == 200 and took < 1.5, f"the notifications API took {took:.1f} s"
            assert t.is_alive(), "the dispatcher did not wait for the store"
            t.join(30)
        assert {g["key"]: g["last_error"] for g in r.json()["groups"]}.keys() == {
            'ops:{alertname="Always"}', 'ops:{alertname="Other"}'}
        hang.resume()
    wait_for(lambda: len(rx.bodies) == 2, 10, what="the other group's notification")
    assert [b["commonLabels"]["alertname"] for b in rx.bodies] == ["Always", "Other"]
    # the send the hung store did not take is recorded once it answers again
    wait_for(lambda: d.tick(e.clock()) is not None and not d._unrecorded, 15, what="the send recorded")
    rx.down()


def _file_settings(tmp_path):
    import types

    import yaml

    rules = tmp_path / "t.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "g", "interval": "1s", "rules": [
        {"alert": "Always", "kind": "sql", "query": "SELECT 1 AS value", "op": ">", "threshold": 0}]}]}))
    return types.SimpleNamespace(rules=[str(rules)], alerts_dir=str(tmp_path / "alerts"))


def test_a_change_of_state_the_store_did_not_take_survives_a_restart_during_the_outage(outage_store, clickhouse,
                                                                                      tmp_path):
    import os

    from tracehouse.alerts import build_engine

    settings = _file_settings(tmp_path)
    [e] = build_engine(settings, outage_store)
    e.sql_query = _down_after_first_query(outage_store, clickhouse)
    e.run_once(force=True)  # inactive -> pending -> firing, and the store is gone before it is written
    assert _states(e) == {"Always": "firing"}
    del e  # the server stops before the store is back
    restarted = servers.restart_clickhouse(clickhouse)
    clickhouse.pid = restarted.pid  # the module's fixture stops the restarted server
    [again] = build_engine(settings, outage_store)  # started again: from the file of what the store missed
    assert _states(again) == {"Always": "firing"}
    assert again.run_once(force=True) == []  # fires nothing again
    assert sorted((h["from_state"], h["to_state"]) for h in again.history("g/Always")) == [
        ("inactive", "pending"), ("pending", "firing")]
    assert os.listdir(settings.alerts_dir) == []  # the store took it all: no file left
    [third] = build_engine(settings, outage_store)
    assert _states(third) == {"Always": "firing"} and third.run_once(force=True) == []


def test_a_notification_the_store_did_not_record_is_not_sent_again_by_an_engine_restarted_after_the_outage(
        outage_store, clickhouse, tmp_path):
    """The record of a send the store did not take waits in a file of the engine's data directory: an
    engine started again after the outage (the record was in the first one's memory only) sends
    nothing a second time, writes the record to the store, and leaves no file."""
    import os
    import types

    import yaml

    from tracehouse.alerts import build_engine
    from tracehouse.alerts.engine import UNRECORDED_FILE

    rx = Receiver()
    rules = tmp_path / "t.yaml"
    rules.write_text(yaml.safe_dump({
        "groups": [{"name": "g", "interval": "1s", "rules": [
            {"alert": "Always", "kind": "sql", "query": "SELECT 1 AS value", "op": ">", "threshold": 0}]}],
        "receivers": [{"name": "ops", "webhook": {"url": rx.url}}],
        "route": {"receiver": "ops", "group_by": ["alertname"], "group_wait": "0s", "group_interval": "1s",
                  "repeat_interval": "4h"},
        "notifications": {"allow_private_destinations": True}}))
    settings = types.SimpleNamespace(rules=[str(rules)], alerts_dir=str(tmp_path / "alerts"))
    [e] = build_engine(settings, outage_store)
    e.sql_query = _down_after_first_query(outage_store, clickhouse)
    e.run_once(force=True)  # fires and notifies; the store is gone when the send is recorded
    wait_for(lambda: len(rx.bodies) == 1, 10, what="the firing notification")
    assert len(e.dispatcher._unrecorded) == 1
    assert os.path.exists(os.path.join(settings.alerts_dir, UNRECORDED_FILE))
    del e  # the server stops before the store is back
    restarted = servers.restart_clickhouse(clickhouse)
    clickhouse.pid = restarted.pid  # the module's fixture stops the restarted server
    [again] = build_engine(settings, outage_store)  # started again: from the file of what the store missed
    again.run_once(force=True)
    again.dispatcher.tick(again.clock() + 2 * 10**9)
    assert [b["status"] for b in rx.bodies] == ["firing"]  # not sent a second time
    wait_for(lambda: again.run_once(force=True) is not None and not again.dispatcher._unrecorded, 15,
             what="the notification record written once the store is back")
    again.dispatcher.tick(again.clock() + 2 * 10**9)
    assert [b["status"] for b in rx.bodies] == ["firing"]  # not sent a second time
    assert os.listdir(settings.alerts_dir) == []  # the store took it all: no file left
    [third] = build_engine(settings, outage_store)  # from the store now
    third.run_once(force=True)
    third.dispatcher.tick(third.clock() + 2 * 10**9)
    assert [b["status"] for b in rx.bodies] == ["firing"]
    rx.down()


def test_a_hostile_file_of_notification_records_is_read_safely(tmp_path):
    import json

    from tracehouse.alerts.notify import Dispatcher

    path = tmp_path / "unrecorded.json"
    good = {"forget": False, "firing": ["fp1"], "last_sent_ns": 5, "at_ns": 5}
    path.write_text(json.dumps({"format": 1, "groups": {
        'ops:{alertname="A"}': good,
        "bad-type": {"forget": "yes", "firing": ["x"], "last_sent_ns": 1, "at_ns": 1},
        "bad-list": {"forget": False, "firing": [1, {"a": 2}], "last_sent_ns": 1, "at_ns": 1},
        "bad-int": {"forget": False, "firing": [], "last_sent_ns": 10**30, "at_ns": 1},
        "not-a-dict": [1, 2]}}))
    d = Dispatcher(None, {})
    assert d.attach_file(str(path)) == 1
    assert list(d._unrecorded) == ['ops:{alertname="A"}']
    assert json.loads(path.read_text())["groups"] == {'ops:{alertname="A"}': good}  # rewritten without the rest
    for junk in (b"\xff\xfe not json", b"[1, 2]", b'{"format": 99, "groups": {}}', b"[" * 100_000):
        path.write_bytes(junk)
        assert Dispatcher(None, {}).attach_file(str(path)) == 0
        assert path.read_bytes() == junk  # left for inspection
    path.write_bytes(b" " * (9 << 20))  # over the size limit: not read
    assert Dispatcher(None, {}).attach_file(str(path)) == 0
