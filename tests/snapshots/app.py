"""A WSGI application for the snapshot tests, served by gunicorn under ``tracehouse-agent run``.

/hang      waits on a lock that a "lock-holder" thread holds for ``hold`` seconds
/slow      sleeps ``s`` seconds (the storm)
/leak      calls leak(): keeps ``n`` 10 KB buffers for ever
/whoami    this process's pid and service.instance.id (``sleep`` seconds first)
/crash     a thread that dies of an unhandled exception
"""

import json
import os
import threading
import time
from urllib.parse import parse_qs

LOCK = threading.Lock()
LEAKED = []


def leak(n):
    for _ in range(n):
        LEAKED.append(bytearray(10_000))  # LEAK-LINE


def hold_lock(seconds):
    with LOCK:
        time.sleep(seconds)


def hang(hold):
    password = "hunter2-SECRET-LOCAL-7731"  # noqa: F841 - planted secret (test d)
    api_token = "SECRET-TOKEN-LOCAL-5512"  # noqa: F841
    holder = threading.Thread(target=hold_lock, args=(hold,), name="lock-holder", daemon=True)
    holder.start()
    time.sleep(0.05)
    LOCK.acquire()  # HANG-LINE
    LOCK.release()


def crash():
    raise RuntimeError("boom from a worker thread")


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    out = {"ok": True}
    if path == "/hang":
        hang(float(q.get("hold", "3")))
    elif path == "/slow" or path.startswith("/slow/"):
        time.sleep(float(q.get("s", "1")))
    elif path == "/leak":
        leak(int(q.get("n", "100")))
    elif path == "/crash":
        threading.Thread(target=crash, name="crasher").start()
    elif path == "/whoami":
        time.sleep(float(q.get("sleep", "0")))
        from tracehouse.agent import pipeline

        agent = pipeline.current()
        out = {"pid": os.getpid(),
               "instance": str(agent.resource.attributes.get("service.instance.id")) if agent else None}
    body = json.dumps(out).encode()
    start_response("200 OK", [("content-type", "application/json"), ("content-length", str(len(body)))])
    return [body]
