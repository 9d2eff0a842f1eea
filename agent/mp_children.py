"""multiprocessing children made by fork or forkserver send their telemetry before they exit.

Such a child ends with ``os._exit()`` once its target returns (a ``Pool`` worker when the pool is
closed and joined, a ``Process`` when its function returns): ``atexit`` handlers, the agent's flush
among them, never run, so everything the child traced was lost — every span of a ``Pool.map`` over
forked workers. multiprocessing runs its own exit finalizers there (``util._exit_function``); each
child gets one that stops the agent, after the host's own finalizers (the lowest priority).

A worker that ``Pool.terminate()`` stops (as leaving ``with Pool() as pool:`` does) is killed by
SIGTERM: only what it exported before then arrives. Children made by spawn run the agent's
``atexit`` hook as any interpreter does.
"""

from __future__ import annotations

from collections.abc import Callable

from tracehouse.agent.on_import import Deferred


class _Owner:
    """What multiprocessing's after-fork registry holds (weakly) for the agent."""


_OWNER = _Owner()


def install(on_exit: Callable[[], None]) -> Deferred:
    """Have ``on_exit()`` run at the end of every multiprocessing child forked from now on."""
    return Deferred(("multiprocessing",), lambda: _register(on_exit), "multiprocessing exit hook")


def _register(on_exit: Callable[[], None]) -> None:
    from multiprocessing import util

    # called in the child, after multiprocessing cleared the finalizers it inherited
    util.register_after_fork(_OWNER, lambda _owner: util.Finalize(None, on_exit, exitpriority=-100))
