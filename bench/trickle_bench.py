"""The collector's CPU under a steady trickle of traces (the load most collectors see most of the
time), per decoder: ``tracehouse collector`` on embedded chDB receives ``--rate`` spans/s as
requests of ``--per-request`` spans over OTLP/HTTP for ``--seconds``, and the script prints the
server's CPU cores over that window, spans stored and lost, for each decoder in the same run.

    python bench/trickle_bench.py --rate 1500 --seconds 20 --decoder auto,native,python
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.ingest_bench import _stored, build_requests  # noqa: E402
from testkit.servers import free_port, wait_port  # noqa: E402


def run(decoder: str, bodies: list[bytes], per_request: int, rate: float, seconds: float) -> dict:
    import httpx
    import psutil

    tmp = tempfile.mkdtemp(prefix="th-trickle-")
    otlp = free_port()
    env = dict(os.environ, TRACEHOUSE_BUFFER_DIR=os.path.join(tmp, "buffer"), TRACEHOUSE_LOG_LEVEL="warning",
               TRACEHOUSE_DECODER=decoder)
    cmd = [sys.executable, "-m", "tracehouse.cli", "collector", "--storage", f"chdb://{tmp}/data?database=bench",
           "--otlp-port", str(otlp)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{otlp}"
    try:
        if not wait_port(otlp, 90):
            raise RuntimeError("collector did not start")
        proc = psutil.Process(server.pid)
        deadline = time.monotonic() + 60
        while httpx.get(url + "/readyz", timeout=5).status_code != 200:  # schema and decoders' tables made
            if time.monotonic() > deadline:
                raise RuntimeError("collector not ready")
            time.sleep(0.1)
        every = per_request / rate
        sent = 0
        with httpx.Client(timeout=30) as client:
            cpu0, t0 = proc.cpu_times(), time.monotonic()
            for i, body in enumerate(bodies):
                due = t0 + i * every
                if due - t0 >= seconds:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
                r = client.post(url + "/v1/traces", content=body, headers={"content-type": "application/x-protobuf"})
                r.raise_for_status()
                sent += per_request
            deadline = time.monotonic() + 60
            while _stored(url) < sent and time.monotonic() < deadline:
                time.sleep(0.05)
            cpu1, t1 = proc.cpu_times(), time.monotonic()
            stored = _stored(url)
        cpu = cpu1.user + cpu1.system - cpu0.user - cpu0.system
        return {"decoder": decoder, "spans_per_s": round(sent / (t1 - t0)), "sent": sent, "stored": stored,
                "lost": sent - stored, "collector_cpu_s": round(cpu, 2),
                "collector_cpu_cores": round(cpu / (t1 - t0), 3)}
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=1500, help="spans per second")
    p.add_argument("--per-request", type=int, default=100, dest="per_request")
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--decoder", default="auto,native,python", help="comma-separated: auto, native, python")
    args = p.parse_args(argv)
    decoders = [d.strip() for d in args.decoder.split(",") if d.strip()]
    if not decoders or any(d not in ("auto", "native", "python") for d in decoders):
        raise SystemExit("--decoder takes auto, native, python (comma-separated)")
    bodies = build_requests(int(args.rate * args.seconds) + args.per_request, args.per_request)
    runs = [run(d, bodies, args.per_request, args.rate, args.seconds) for d in decoders]
    for r in runs:
        print(json.dumps(r), flush=True)
    return 0 if all(r["lost"] == 0 for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
