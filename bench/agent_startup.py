"""What the agent adds to a host's start-up and exit: an empty script, timed as a whole process.

    python bench/agent_startup.py --runs 15 --json
    python bench/agent_startup.py --python /path/to/other/venv/bin/python --json   # another checkout

Runs ``python empty.py`` plain, under ``tracehouse-agent run`` (exporting to a closed port, so no
collector's speed is measured), and under it with ``OTEL_SDK_DISABLED=true``, interleaved, and
prints the median wall time of each and what the agent adds. With ``--python`` given more than
once, every interpreter's agent is measured in the same run, interleaved, for ratios that hold on
a machine whose speed changes. Also lists which of the commonly instrumented libraries an empty
script has in ``sys.modules`` under the agent (it imported none of them). The last line printed
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from testkit.servers import free_port  # noqa: E402

LIBRARIES = ("fastapi", "starlette", "uvicorn", "flask", "django", "redis", "requests", "sqlalchemy",
             "psycopg2", "urllib3", "httpx", "grpc")


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=120)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--python", action="append", help="interpreter whose tracehouse-agent to measure")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    pythons = args.python or [sys.executable]
    tmp = tempfile.mkdtemp(prefix="agent-startup-")
    empty = os.path.join(tmp, "empty.py")
    with open(empty, "w") as f:
        f.write("pass\n")
    probe = os.path.join(tmp, "probe.py")
    with open(probe, "w") as f:
        f.write(f"import json, sys\nprint(json.dumps([m for m in {LIBRARIES!r} if m in sys.modules]))\n")
    env = dict(os.environ, TRACEHOUSE_ENDPOINT=f"http://127.0.0.1:{free_port()}", OTEL_SERVICE_NAME="bench")
    off = dict(env, OTEL_SDK_DISABLED="true")
    cases: dict[str, tuple[list[str], dict]] = {}
    for py in pythons:
        agent = os.path.join(os.path.dirname(py), "tracehouse-agent")
        cases[f"plain {py}"] = ([py, empty], env)
        cases[f"agent {py}"] = ([agent, "run", "--", py, empty], env)
        cases[f"agent, OTEL_SDK_DISABLED {py}"] = ([agent, "run", "--", py, empty], off)
    times: dict[str, list[float]] = {k: [] for k in cases}
    for cmd, e in cases.values():  # warm the page cache and .pyc files
        timed(cmd, e)
    for _ in range(args.runs):
        for name, (cmd, e) in cases.items():
            times[name].append(timed(cmd, e))
    result: dict[str, object] = {"runs": args.runs}
    for py in pythons:
        plain = statistics.median(times[f"plain {py}"])
        agent = statistics.median(times[f"agent {py}"])
        disabled = statistics.median(times[f"agent, OTEL_SDK_DISABLED {py}"])
        agent_bin = os.path.join(os.path.dirname(py), "tracehouse-agent")
        imported = json.loads(subprocess.run([agent_bin, "run", "--", py, probe], env=env, capture_output=True,
                                             text=True, timeout=120, check=True).stdout.strip().splitlines()[-1])
        row = {"plain_s": round(plain, 3), "agent_s": round(agent, 3), "agent_sdk_disabled_s": round(disabled, 3),
               "agent_adds_s": round(agent - plain, 3), "libraries_imported_by_agent": imported}
        result[py] = row
        print(f"{py}: plain {plain:.3f} s, under the agent {agent:.3f} s (+{agent - plain:.3f} s), "
              f"OTEL_SDK_DISABLED {disabled:.3f} s; libraries an empty script got: {imported or 'none'}")
    if len(pythons) > 1:
        base = result[pythons[0]]["agent_adds_s"]  # type: ignore[index]
        for py in pythons[1:]:
            other = result[py]["agent_adds_s"]  # type: ignore[index]
            print(f"added time, {py} / {pythons[0]}: {other / base:.2f}x")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
