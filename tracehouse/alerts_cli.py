"""``tracehouse alerts ...``: ``test FILE...`` (rule unit tests), ``check FILE...`` (validate rule
files), ``run`` (the engine alone, against a storage URL, with its /metrics, /healthz and /readyz).

The composition of the alerts role alone: it lives in ``tracehouse/`` beside ``server.py`` (whose
store opening it shares), so ``tracehouse.alerts`` imports no part of the server."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tracehouse alerts", description="alert rules: test, check, run")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("test", help="run rule unit tests (promtool test rules style)")
    t.add_argument("files", nargs="+")
    t.add_argument("--storage", help="chdb:///dir for the test databases (default: a temporary directory)")
    c = sub.add_parser("check", help="validate rule files")
    c.add_argument("files", nargs="+")
    r = sub.add_parser("run", help="run the alert engine alone")
    r.add_argument("--storage", help="chdb:///path or clickhouse://user:password@host:9000/db")
    r.add_argument("--rules", action="append", default=[], help="rule file (repeatable)")
    r.add_argument("--config", help="YAML configuration file")
    r.add_argument("--host", help="address of /metrics, /healthz and /readyz (default 127.0.0.1)")
    r.add_argument("--http-port", type=int, dest="http_port", help="port of /metrics, /healthz and /readyz (default 8080)")
    from .cli import insecure_flag

    insecure_flag(r)
    return p


def cmd_test(files: list[str], storage: str | None = None) -> int:
    from tracehouse.alerts.ruletest import run_files

    outcomes = run_files(files, storage)
    failed = 0
    for o in outcomes:
        if o.ok:
            print(f"  SUCCESS  {o.file} ({o.checks} checks)")
        else:
            failed += 1
            print(f"  FAILED   {o.file}")
            for f in o.failures:
                print("    " + f.replace("\n", "\n    "))
    return 1 if failed else 0


def cmd_check(files: list[str]) -> int:
    from tracehouse.alerts import RuleError, load_files

    try:
        cfg = load_files(files)
    except RuleError as e:
        print(f"  FAILED: {e}")
        return 1
    print(f"  SUCCESS: {len(cfg.rules)} rules, {len(cfg.receivers)} receivers")
    return 0


def cmd_run(ns: argparse.Namespace) -> int:
    from tracehouse.alerts import build_engine

    from .config import SettingsError, load_settings
    from .exposure import ExposureError, check
    from .server import open_store

    try:
        settings = load_settings({"storage": ns.storage, "rules": ns.rules, "host": ns.host,
                                  "http_port": ns.http_port, "insecure_allow_open": ns.insecure_allow_open}, ns.config)
    except SettingsError as e:
        print(f"tracehouse alerts run: {e}", file=sys.stderr, flush=True)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .cli import quiet_libraries

    quiet_libraries()
    try:  # the same rule as the other roles, for whatever port this role listens on (see exposure.LISTENERS)
        check(settings, ("alerts",))
    except ExposureError as e:
        print(f"tracehouse alerts run: {e}", file=sys.stderr, flush=True)
        return 2
    from tracehouse.storage import ConfigError
    from tracehouse.storage.errors import QueryError, StorageUnavailable

    from .cli import store_unreachable

    try:
        store = open_store(settings)
    except ConfigError as e:  # a bad storage URL: said as `serve` says it, without a traceback
        print(f"tracehouse alerts run: {e}", file=sys.stderr, flush=True)
        return 2
    except (StorageUnavailable, QueryError) as e:
        return store_unreachable("tracehouse alerts run", e)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        engines = build_engine(settings, store)
    except ValueError as e:  # RuleError (a rules file), AlertsConfigError (a cluster without a ZooKeeper)
        store.close()
        print(f"tracehouse alerts: {e}", file=sys.stderr)
        return 2
    ops = _ops_server(settings, engines)
    try:
        for e in engines:
            e.start()
        ops.start()
        print(f"tracehouse alerts: {sum(len(e.rules) for e in engines)} rules; metrics on "
              f"http://{settings.host}:{settings.http_port}/metrics", flush=True)
        stop.wait()
    finally:
        ops.stop()
        for e in engines:
            e.stop()
        store.close()
    return 0


class _OpsServer:
    """/metrics, /healthz and /readyz of the engine alone, served by uvicorn on a thread."""

    def __init__(self, app, host: str, port: int, head_timeout: float = 60.0):
        import uvicorn

        from .http_protocol import with_head_timeout

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    access_log=False, lifespan="off",
                                                    http=with_head_timeout(head_timeout)))
        self.thread = threading.Thread(target=self.server.run, name="tracehouse-alerts-http", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=10)


def _ops_server(settings, engines) -> _OpsServer:
    from .ops import OpsApp, process_registry

    registry = process_registry(("alerts",))
    for e in engines:
        registry.register(e.metrics.registry)

    def ready() -> tuple[bool, str]:
        for e in engines:
            ok, reason = e.ready()
            if not ok:
                return ok, reason
        return True, "ready"

    from .exposure import guard
    from .ops import metrics_authorizer

    app = guard(OpsApp(registry, ready, authorize=metrics_authorizer(settings)), settings)
    return _OpsServer(app, settings.host, settings.http_port, settings.client_timeout_seconds)


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.cmd == "test":
        return cmd_test(ns.files, ns.storage)
    if ns.cmd == "check":
        return cmd_check(ns.files)
    return cmd_run(ns)


if __name__ == "__main__":
    sys.exit(main())
