"""The ``tracehouse`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from .config import Settings, SettingsError, load_settings


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", help="chdb:///path or clickhouse://user:password@host:9000/db")
    p.add_argument("--config", help="YAML configuration file")


def _server_flags(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--otlp-port", type=int, dest="otlp_port", help="OTLP/HTTP port (default 4318)")
    p.add_argument("--http-port", type=int, dest="http_port", help="dashboard/API port (default 8080)")
    p.add_argument("--otlp-grpc-port", type=int, dest="otlp_grpc_port", help="OTLP/gRPC port (default 4317; 0 = off)")
    p.add_argument("--zipkin-port", type=int, dest="zipkin_port",
                   help="Zipkin v2 receiver port, e.g. 9411 (default 0 = off)")
    p.add_argument("--rules", action="append", default=[], help="alert rules file (repeatable)")
    insecure_flag(p)


def insecure_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--insecure-allow-open", action="store_true", default=None, dest="insecure_allow_open",
                   help="listen on a non-loopback address without authentication (logged as INSECURE)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tracehouse", description="tracehouse observability server")
    sub = p.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="run collector, dashboard and alerts in one process")
    _server_flags(serve)
    serve.add_argument("--demo", action="store_true", default=None, help="also run the demo shop")
    col = sub.add_parser("collector", help="run the OTLP collector alone")
    _server_flags(col)
    for p_ in (serve, col):
        p_.add_argument("--self-observe", action="store_true", default=None, dest="self_observe",
                        help='send the server\'s own traces and metrics to its own store (service "tracehouse")')
    dash = sub.add_parser("dashboard", help="run the dashboard and JSON API alone")
    _server_flags(dash)
    # --- alerts subcommand (help entry only; dispatched in main) ---
    sub.add_parser("alerts", help="alert rules: test FILE..., check FILE..., run (see tracehouse alerts -h)")
    # --- end alerts subcommand ---
    demo = sub.add_parser("demo", help="run the demo shop alone against a running tracehouse server (its "
                          "agents send TRACEHOUSE_TOKEN when the server needs an ingest token)")
    demo.add_argument("--endpoint", default="http://127.0.0.1:4318", help="the server's OTLP/HTTP base URL")
    demo.add_argument("--rps", type=float, default=12.0, help="requests per second sent to the shop")
    demo.add_argument("--config", help=argparse.SUPPRESS)
    mig = sub.add_parser("migrate", help="create or upgrade the schema (idempotent)")
    _common(mig)
    mig.add_argument("--cluster", help="ClickHouse cluster name: replicated tables behind Distributed ones")
    return p


def _flags(ns: argparse.Namespace) -> dict:
    keep = ("storage", "host", "otlp_port", "http_port", "rules", "demo", "insecure_allow_open", "otlp_grpc_port",
            "zipkin_port", "self_observe")
    return {k: getattr(ns, k) for k in keep if hasattr(ns, k)}


def main(argv: list[str] | None = None) -> int:
    # --- alerts subcommand (its own parser: see alerts_cli.py) ---
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["alerts"]:
        from .alerts_cli import main as alerts_main

        return alerts_main(args[1:])
    # --- end alerts subcommand ---
    ns = build_parser().parse_args(argv)
    try:
        settings = load_settings(_flags(ns), ns.config)
    except SettingsError as e:
        print(f"tracehouse {ns.cmd}: {e}", file=sys.stderr, flush=True)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    if ns.cmd == "migrate":
        return _migrate(ns, settings)
    if ns.cmd == "demo":
        return _run_demo(ns)
    return _serve(ns, settings)


def quiet_libraries() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per notification or self-observe send
    # the driver logs a traceback per failed connect; the store's own errors say it once, with the address
    logging.getLogger("clickhouse_driver.connection").setLevel(logging.ERROR)


def store_unreachable(who: str, e: Exception) -> int:
    """One line for a store that cannot be reached at start, or that refuses what the command must
    do there (a wrong user or password, a user without the rights for the schema): no traceback,
    no server stack trace; the exit status."""
    from tracehouse.storage.errors import StorageUnavailable, one_line

    if isinstance(e, StorageUnavailable):
        hint = "start ClickHouse first (or check TRACEHOUSE_STORAGE)"
    else:
        hint = "the store refused it: check the user, password and database of TRACEHOUSE_STORAGE"
    print(f"{who}: cannot start: {one_line(e)}; {hint}", file=sys.stderr, flush=True)
    return 1


def _migrate(ns: argparse.Namespace, settings: Settings) -> int:
    from tracehouse.storage import ConfigError, Store, parse_storage_url
    from tracehouse.storage.errors import QueryError, StorageUnavailable

    try:
        url = parse_storage_url(settings.storage)
    except ConfigError as e:
        print(f"tracehouse migrate: {e}", file=sys.stderr, flush=True)
        return 2
    if ns.cluster:
        from dataclasses import replace

        url = replace(url, cluster=ns.cluster)
    try:
        with Store.open(url) as store:
            applied = store.migrate(retention=settings.retention or None)
            print(f"schema at version {store.schema_version()} on {url.redacted()}"
                  + (f" (applied {applied})" if applied else " (already current)"))
    except ConfigError as e:  # an embedded store another process has open
        print(f"tracehouse migrate: {e}", file=sys.stderr, flush=True)
        return 2
    except (StorageUnavailable, QueryError) as e:
        return store_unreachable("tracehouse migrate", e)
    return 0


def _serve(ns: argparse.Namespace, settings: Settings) -> int:
    _quiet_grpc_fork()
    from . import server
    from .exposure import ExposureError

    roles = {"serve": ("collector", "dashboard", "alerts"), "collector": ("collector",),
             "dashboard": ("dashboard",)}[ns.cmd]

    shop = None
    if ns.cmd == "serve" and settings.demo:
        from .demo.launcher import DEMO_RULES

        settings.rules = [*settings.rules, DEMO_RULES]

    def started() -> None:
        nonlocal shop
        if settings.demo and ns.cmd == "serve":
            from .demo import DemoShop

            # the shop's agents send with one of the server's own ingest tokens: with tokens set,
            # an agent without one is refused (401) and the demo would show nothing
            token = {"TRACEHOUSE_TOKEN": settings.ingest_tokens[0]} if settings.ingest_tokens else {}
            shop = DemoShop(endpoint=f"http://{_client_host(settings.host)}:{settings.otlp_port}", extra_env=token)
            shop.start()
            print(f"demo shop running: {len(shop.procs)} processes, traffic to the gateway on port "
                  f"{shop.ports['gateway']}", flush=True)
        _print_endpoints(settings, roles)

    try:
        asyncio.run(server.run(settings, roles, on_started=started))
    except ExposureError as e:
        print(f"tracehouse {ns.cmd}: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        pass
    except Exception as e:
        from tracehouse.collector.wal import WalLocked, WalUnusable
        from tracehouse.storage import ConfigError
        from tracehouse.storage.errors import QueryError, StorageUnavailable

        # at start: the schema is checked before anything listens (but the collector alone, which
        # buffers while it connects again: server._open_or_wait); a store that answers may refuse
        if isinstance(e, (StorageUnavailable, QueryError)):
            return store_unreachable(f"tracehouse {ns.cmd}", e)
        if not isinstance(e, (WalLocked, WalUnusable, ConfigError)):
            raise
        print(f"tracehouse: {e}", file=sys.stderr)
        return 2
    finally:
        if shop is not None:
            shop.stop()
    return 0


def _print_endpoints(settings: Settings, roles: tuple[str, ...]) -> None:
    if "dashboard" in roles:
        print(f"tracehouse dashboard: http://{settings.host}:{settings.http_port}/", flush=True)
    if "collector" in roles:
        print(f"tracehouse OTLP/HTTP: http://{settings.host}:{settings.otlp_port}/v1/traces", flush=True)
        if settings.otlp_grpc_port:
            print(f"tracehouse OTLP/gRPC: {settings.host}:{settings.otlp_grpc_port}", flush=True)
        if settings.zipkin_port:
            print(f"tracehouse Zipkin v2: http://{settings.host}:{settings.zipkin_port}/api/v2/spans", flush=True)


def _quiet_grpc_fork() -> None:
    """Turn gRPC's fork handlers off in the server process (unless the user set them): it starts
    subprocesses (the demo shop) while the OTLP/gRPC receiver's threads run, and each fork only
    logged "Other threads are currently calling into gRPC, skipping fork() handlers". No child of
    the server uses the parent's gRPC state: each execs a new program. Read when gRPC initialises,
    so it is set before the server imports grpc."""
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _refuses_demo(endpoint: str) -> str:
    """Why the server at ``endpoint`` would refuse the shop's telemetry ('' if it takes it): an
    empty OTLP request with the headers the shop's agents will send (``TRACEHOUSE_TOKEN`` or
    ``OTEL_EXPORTER_OTLP_HEADERS``, read as the agent reads them). A server that cannot be reached
    yet is not a refusal: the agents retry, and this says so."""
    import httpx

    from .agent.config import export_headers

    headers = export_headers()
    try:
        r = httpx.post(endpoint + "/v1/traces", content=b"", timeout=5,
                       headers={**headers, "content-type": "application/x-protobuf"})
    except httpx.HTTPError as e:
        print(f"tracehouse demo: {endpoint} cannot be reached yet ({e}); the shop's agents will keep retrying",
              file=sys.stderr, flush=True)
        return ""
    if r.status_code == 401:
        sent = any(k.lower() == "authorization" for k in headers)
        return (f"{endpoint} refused the demo's telemetry (401): set TRACEHOUSE_TOKEN to one of the server's "
                "TRACEHOUSE_INGEST_TOKENS" + (" (the token sent was not accepted)" if sent else ""))
    return ""


def _run_demo(ns: argparse.Namespace) -> int:
    import signal
    import threading

    from .demo import DemoShop

    refused = _refuses_demo(ns.endpoint.rstrip("/"))
    if refused:
        print(f"tracehouse demo: {refused}", file=sys.stderr, flush=True)
        return 2
    shop = DemoShop(endpoint=ns.endpoint.rstrip("/"), rps=ns.rps)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    shop.start()
    print(f"demo shop sending to {ns.endpoint}: gateway on http://127.0.0.1:{shop.ports['gateway']}/ "
          "(Ctrl-C stops it)", flush=True)
    try:
        while not done.wait(1.0):
            pass
    finally:
        shop.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
