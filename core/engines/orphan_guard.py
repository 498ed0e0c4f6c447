"""vLLM's engine-core and worker processes end when the process that started them dies.

Why: vLLM (0.32, CPU) starts its engine core and workers with ``multiprocessing``. When the
process that owns the engine is SIGKILLed (a killed job, an actor Ray kills, a test timeout),
they are adopted by init and keep spinning a core each, forever: seen on this machine, two such
pairs at 30-70% CPU for half an hour after their job was gone. A daemon thread in each of
those processes looks once a second at its parent and exits the process when it has changed.

Runs from the ``vllm.general_plugins`` entry point (core/engines/vllm_compat.py), i.e. in
every process vLLM starts; only ``multiprocessing`` children arm it, so the process that uses
vLLM as a library (a Ray actor, the CLI, a Serve replica) is never affected.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

_armed = False


def guard_orphans(interval_s: float = 1.0) -> bool:
    """In a ``multiprocessing`` child: exit (status 1) once the parent is gone. True when armed now."""
    global _armed
    if _armed or multiprocessing.parent_process() is None:
        return False
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(1)  # nothing to flush: the engine's owner, and its requests, are gone

    threading.Thread(target=watch, name="longwriter-orphan-guard", daemon=True).start()
    _armed = True
    return True
