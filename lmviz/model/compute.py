"""How much model work runs at once: a few compute slots, each with its share of the cores.

A classroom is 30 sessions on one server. Without a policy every session's
forward pass would start at once, and torch would give each the whole
machine's threads: 30 passes x all cores, thrashing caches and memory. So
every piece of model work (a forward pass, a decoding step, a block of the
logit lens, a loss window) runs inside `slot()`:

- at most `$LMVIZ_COMPUTE_SLOTS` pieces run at once (default: one per core,
  at most 8); the others wait their turn;
- in the app, torch runs each piece on cores / slots threads
  (`configure_threads(server=True)`, called at start), so the slots
  together use every core once; the CLI and a notebook use every core;
- pieces are short (a pass, a step, a block, a window), so a long job, such
  as the whole lens of a long text, gives way between its pieces and many
  short requests interleave with it instead of queueing behind it;
- a thread that holds a slot may enter `slot()` again (nested work) without
  waiting.

Python code that only draws (figures, tables) runs outside the slots.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

import torch


def cores() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under taskset), not all the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def slots() -> int:
    """$LMVIZ_COMPUTE_SLOTS, else one slot per core, at most 8 (each then gets cores / 8 threads).

    Measured with bench/load.py (30 sessions at once, 2 cores): 2 slots of 1 thread finished the
    classroom sooner (p95 29 s) than 1 slot of 2 threads (35 s) or no limit (39 s, and 1.1 GB more RSS):
    the small matrix products of short texts gain less from a second thread than from a second slot."""
    return max(1, int(os.environ.get("LMVIZ_COMPUTE_SLOTS") or min(8, cores())))


def threads_per_slot() -> int:
    return max(1, cores() // slots())


_slots = threading.BoundedSemaphore(slots())
_held = threading.local()  # .depth: how many slot() blocks this thread is inside


_configured = False


def configure_threads(server: bool = False) -> None:
    """Set torch's threads once per process: $LMVIZ_THREADS if set; else, for the app's server
    (server=True), cores / slots, so that the slots together use every core once; else (one user: the
    CLI, a notebook) every core."""
    global _configured
    if _configured:
        return
    default = threads_per_slot() if server else cores()
    torch.set_num_threads(int(os.environ.get("LMVIZ_THREADS") or default))
    _configured = True


@contextmanager
def slot():
    """Run the enclosed model work in one of the compute slots; waits while all are busy."""
    depth = getattr(_held, "depth", 0)
    if depth == 0:
        _slots.acquire()
    _held.depth = depth + 1
    try:
        yield
    finally:
        _held.depth = depth
        if depth == 0:
            _slots.release()


def policy() -> dict[str, int]:
    """The policy in numbers (the load benchmark prints it)."""
    return {"cores": cores(), "slots": slots(), "threads_per_slot": threads_per_slot()}

