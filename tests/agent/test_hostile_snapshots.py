"""Fault snapshots taken in a hostile process: what the host's own data (exception messages,
source lines, locals, threads) makes the agent do stays bounded in time and size, in a real host
process exporting to a real loopback collector."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tracehouse.agent.snapshot_export import EVENT_NAME

HOST = """
import json, sys, threading, time
{before}
import tracehouse.agent as a
h = a.start(service="hostile", endpoint={url!r}, instrument=False, metrics=False, command_poll_s=0{extra})
{body}
h.shutdown(5)
"""


def _run(tmp_path, sink, body: str, timeout: float = 15.0, extra: str = "", before: str = "") -> dict:
    """Run the host; its last stdout line as JSON (raises TimeoutExpired, killing it, past ``timeout``)."""
    script = tmp_path / "host.py"
    script.write_text(HOST.format(url=sink.url, body=textwrap.dedent(body), extra=extra, before=textwrap.dedent(before)))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=timeout,
                         env=dict(os.environ, OTEL_BLRP_SCHEDULE_DELAY="100"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _snapshots(sink) -> list[dict]:
    found = []
    for _, rec in sink.logs():
        if any(kv.key == "event.name" and kv.value.string_value == EVENT_NAME for kv in rec.attributes):
            found.append(json.loads(rec.body.string_value))
    return found


def test_a_huge_exception_message_does_not_hold_the_dying_thread(tmp_path, sink):
    # The message of an unhandled exception is often the application's input ("bad value: ...").
    # Masking it ran two regexes that are quadratic on runs like "password.password..." or a
    # long word: a 90 KB message held the thread (its excepthook runs the snapshot first) for
    # minutes, and the process's exit behind it.
    result = _run(tmp_path, sink, """
        msg = "password=hunter2 " + "password." * 5000 + " " + "a" * 40000
        def boom():
            raise ValueError(msg)
        t0 = time.monotonic()
        t = threading.Thread(target=boom, name="doomed")
        t.start()
        t.join(10)
        print(json.dumps({"held_s": time.monotonic() - t0, "alive": t.is_alive()}))
    """)
    assert not result["alive"] and result["held_s"] < 3.0, result
    snap, = sink.wait(lambda s: _snapshots(s))
    exc = snap["exception"]
    assert exc["thread"] == "doomed" and exc["type"] == "builtins.ValueError"
    assert "hunter2" not in exc["message"] and exc["message"].startswith("password=[REDACTED]")
    assert len(exc["message"]) <= 500


def _doomed(wait_s: int) -> str:
    """Host code: a thread dies of an exception while the thread ``p`` is parked on ``ev``; prints
    how long the dying thread was held (the agent's snapshot runs in it) and whether it still lives."""
    return textwrap.indent(textwrap.dedent(f"""
        time.sleep(0.2)
        def boom():
            raise ValueError("boom")
        t0 = time.monotonic()
        t = threading.Thread(target=boom, name="doomed")
        t.start()
        t.join({wait_s})
        held = time.monotonic() - t0
        ev.set()
        p.join()
        print(json.dumps({{"held_s": held, "alive": t.is_alive()}}))"""), "        ").strip()


def test_a_huge_source_line_on_a_stack_is_cut_not_read_whole(tmp_path, sink):
    # Generated or minified code puts megabytes on one line. Each frame's source line was masked
    # whole (read as Python tokens: 3 MB took ~13 s of the snapshotting thread, GIL included),
    # and the body then could not fit its cap in any form, so the snapshot said nothing at all.
    huge = "ev.wait(10) or (" + "1, " * 1_000_000 + ")"
    result = _run(tmp_path, sink, """
        ev = threading.Event()
        def parked():
            HUGE_LINE
        p = threading.Thread(target=parked, name="parked")
        p.start()
        DOOMED
    """.replace("HUGE_LINE", huge).replace("DOOMED", _doomed(10)))
    assert not result["alive"] and result["held_s"] < 3.0, result
    snap, = sink.wait(lambda s: _snapshots(s))
    parked, = [t for t in snap["threads"] if t["name"] == "parked"]
    top, = [f for f in parked["stack"] if f["function"] == "parked"]
    assert top["code"].startswith("ev.wait(10) or (1, 1, ")
    assert len(top["code"]) <= 500


def test_huge_locals_are_shown_cut_without_copying_them_whole(tmp_path, sink):
    # With locals on (TRACEHOUSE_SNAPSHOT_LOCALS=1) each was repr()'d whole and then cut to 200
    # characters: an 80 MB string held by 40 frames of a recursion was 40 copies of 80 MB made one
    # after the other on the snapshotting thread (seconds, GIL held, RSS up 80 MB at each).
    result = _run(tmp_path, sink, """
        ev = threading.Event()
        def deep(n, blob, rows):
            if n:
                return deep(n - 1, blob, rows)
            ev.wait(20)
        blob = "x" * 80_000_000
        p = threading.Thread(target=deep, args=(40, blob, list(range(2_000_000))), name="parked")
        p.start()
        DOOMED
    """.replace("DOOMED", _doomed(15)), timeout=30, extra=", snapshot_locals=True")
    assert not result["alive"] and result["held_s"] < 3.0, result
    snap, = sink.wait(lambda s: _snapshots(s))
    parked, = [t for t in snap["threads"] if t["name"] == "parked"]
    frame = next(f for f in parked["stack"] if f["function"] == "deep")
    assert frame["locals"]["blob"].startswith("'xxxx") and len(frame["locals"]["blob"]) <= 200
    assert frame["locals"]["rows"].startswith("[0, 1, 2") and len(frame["locals"]["rows"]) <= 200


def test_the_hosts_thread_excepthook_runs_before_the_snapshot(tmp_path, sink):
    # sys.excepthook ran the host's hook first, threading.excepthook ran the agent's capture of
    # every thread first: a thread's traceback (or a host's fail-fast hook) waited for it.
    result = _run(tmp_path, sink, """
        def boom():
            raise ValueError("boom")
        t = threading.Thread(target=boom, name="doomed")
        t.start()
        t.join(10)
        print(json.dumps({"emitted_before_host_hook": seen, "after": a.stats().get("snapshots.emitted", 0)}))
    """, before="""
        seen = []
        def host_hook(args):
            import tracehouse.agent
            seen.append(tracehouse.agent.stats().get("snapshots.emitted", 0))
        threading.excepthook = host_hook
    """)
    assert result == {"emitted_before_host_hook": [0], "after": 1}, result
