"""``tracehouse-agent run [--service NAME] [--endpoint URL] -- COMMAND ...``

Like ``opentelemetry-instrument``: puts the bootstrap directory (whose ``sitecustomize.py``
starts the agent) first on ``PYTHONPATH``, exports the settings as environment variables and
replaces itself with the command, so every Python process it starts (gunicorn/uvicorn workers
included) runs with the agent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

BOOTSTRAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tracehouse-agent", description="Run a Python program with the tracehouse agent.")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run COMMAND with the agent: tracehouse-agent run -- python app.py")
    run.add_argument("--service", help="service name (OTEL_SERVICE_NAME)")
    run.add_argument("--endpoint", help="collector base URL (OTEL_EXPORTER_OTLP_ENDPOINT)")
    run.add_argument("--sample-ratio", type=float, help="share of traces kept (errors always kept)")
    run.add_argument("--probes", help="comma-separated dependency URLs to health-check")
    run.add_argument("command", nargs=argparse.REMAINDER, help="the program and its arguments, after --")
    return p


def build_env(args, environ: dict[str, str]) -> dict[str, str]:
    env = dict(environ)
    path = env.get("PYTHONPATH", "")
    parts = [p for p in path.split(os.pathsep) if p and p != BOOTSTRAP]
    env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP, *parts])
    env["TRACEHOUSE_AGENT_AUTOSTART"] = "1"
    if args.service:
        env["OTEL_SERVICE_NAME"] = args.service
    if args.endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = args.endpoint
    if args.sample_ratio is not None:
        if not 0 <= args.sample_ratio <= 1:
            raise SystemExit("tracehouse-agent: --sample-ratio must be within 0..1")
        env["TRACEHOUSE_SAMPLE_RATIO"] = str(args.sample_ratio)
    if args.probes:
        env["TRACEHOUSE_PROBES"] = args.probes
    return env


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("tracehouse-agent: give the command to run after --", file=sys.stderr)
        return 2
    env = build_env(args, os.environ)
    exe = shutil.which(command[0], path=env.get("PATH")) or command[0]
    try:
        os.execvpe(exe, command, env)
    except OSError as exc:
        print(f"tracehouse-agent: cannot run {command[0]!r}: {exc}", file=sys.stderr)
        # as a shell says it (POSIX): 127 for a command not found, 126 for one found but not runnable
        return 127 if isinstance(exc, FileNotFoundError) else 126
    return 0  # pragma: no cover - execvpe does not return


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
