"""Started by ``tracehouse-agent run``: start the agent before the application's code runs.

Any ``sitecustomize`` that was shadowed by this one is imported afterwards, and a failure to
start never stops the application.
"""

import os
import sys


def _start():
    if os.environ.get("TRACEHOUSE_AGENT_AUTOSTART") != "1":
        return
    if os.path.basename(sys.argv[0] if sys.argv else "") in ("uwsgi", "pyuwsgi"):
        # uWSGI forks its workers in C; without these options Python's fork hooks (a new instance
        # id, new export threads) do not run in them. The fork hooks option also runs the
        # before-fork hooks and PyOS_BeforeFork in the master, so a worker never starts with the
        # GIL or a lock held by one of the master's threads (the agent's threads run there).
        os.environ.setdefault("UWSGI_PY_CALL_OSAFTERFORK", "1")
        os.environ.setdefault("UWSGI_PY_CALL_UWSGI_FORK_HOOKS", "1")
    try:
        import tracehouse.agent
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "tracehouse":
            # another Python the application starts (a system tool, another virtualenv) inherits
            # PYTHONPATH: it has no agent to start, and says nothing on the application's stderr
            return
        print(f"tracehouse agent did not start: {exc!r}", file=sys.stderr)
        return
    except Exception as exc:
        print(f"tracehouse agent did not start: {exc!r}", file=sys.stderr)
        return
    try:
        tracehouse.agent.start()
    except Exception as exc:  # the application must run even when the agent cannot
        print(f"tracehouse agent did not start: {exc!r}", file=sys.stderr)


def _chain():
    here = os.path.dirname(os.path.abspath(__file__))
    import importlib.util

    saved = sys.path[:]
    try:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
        spec = importlib.util.find_spec("sitecustomize")
    finally:
        sys.path[:] = saved
    if spec is not None and spec.origin and os.path.dirname(os.path.abspath(spec.origin)) != here:
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            print(f"sitecustomize {spec.origin} failed: {exc!r}", file=sys.stderr)


_chain()
_start()
