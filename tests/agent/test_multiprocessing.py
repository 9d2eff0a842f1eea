"""multiprocessing children made by fork or forkserver send what they traced.

They end with ``os._exit()``, so the agent's ``atexit`` flush never ran in them: a CLI's
``Pool.map`` over forked workers, or a ``Process``, sent no span at all.
"""

from __future__ import annotations

import pytest

from tests.agent.helpers import run_host
from tests.agent.otlp_sink import closed_port_url


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_forked_children_send_their_spans_before_they_exit(tmp_path, sink, method):
    got, stderr = run_host(tmp_path, f"""
        import json, multiprocessing, os
        from opentelemetry import trace

        def work(n):
            with trace.get_tracer("job").start_as_current_span(f"item {{n}}"):
                return os.getpid()

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("{method}")
            pool = ctx.Pool(2)
            pids = pool.map(work, range(4))
            pool.close()
            pool.join()
            child = ctx.Process(target=work, args=(9,))
            child.start()
            child.join()
            print(json.dumps({{"pids": sorted(set(pids)), "parent": os.getpid(), "exit": child.exitcode}}))
    """, sink.url)
    assert got["exit"] == 0 and stderr == ""
    assert got["parent"] not in got["pids"]
    spans = sink.wait(lambda s: s.spans() if len(s.spans()) >= 5 else None, timeout=10) or sink.spans()
    assert sorted(x.name for _, x in spans) == ["item 0", "item 1", "item 2", "item 3", "item 9"]
    assert {ra["process.pid"] for ra, x in spans if x.name != "item 9"} == set(got["pids"])


def test_a_forked_child_counts_the_instrumentations_it_inherited(tmp_path):
    """``stats()`` in a gunicorn worker said fewer instrumentations were loaded than were: the
    counters were cleared at the fork, the instrumentations loaded in the master stayed."""
    got, _ = run_host(tmp_path, """
        import json, os
        from tracehouse.agent import pipeline, stats

        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            counted = stats().get("instrumentations.loaded", 0)
            os.write(w, json.dumps([counted, len(pipeline.current().instrumentation.loaded)]).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        print(os.read(r, 1000).decode())
    """, closed_port_url())
    assert got[0] == got[1] > 0
