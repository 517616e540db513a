"""The compute policy: at most `slots` pieces of model work at once, re-entrant, on cores / slots threads."""

import threading
import time

import pytest

from lmviz.model import compute
from lmviz.forward import trace as tracing


@pytest.fixture
def two_slots(monkeypatch):
    monkeypatch.setattr(compute, "_slots", threading.BoundedSemaphore(2))


def test_at_most_slots_pieces_run_at_once(two_slots):
    inside, most, lock = 0, 0, threading.Lock()

    def work():
        nonlocal inside, most
        with compute.slot():
            with lock:
                inside += 1
                most = max(most, inside)
            time.sleep(0.01)  # hold the slot while the others try to enter (not a timing assertion)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= most <= 2 and inside == 0


def test_a_slot_is_re_entrant_and_released_on_errors(monkeypatch):
    monkeypatch.setattr(compute, "_slots", threading.BoundedSemaphore(1))
    with compute.slot():
        with compute.slot():  # nested work in the same thread does not wait for itself
            pass
    with pytest.raises(ValueError):
        with compute.slot():
            raise ValueError("boom")
    assert compute._slots.acquire(blocking=False)  # the one slot is free again
    compute._slots.release()


def test_model_work_runs_inside_a_slot(tiny_gpt2, monkeypatch):
    """A forward pass waits for a free slot: with the only slot taken, a trace does not start."""
    monkeypatch.setattr(compute, "_slots", threading.BoundedSemaphore(1))
    done = threading.Event()
    compute._slots.acquire()
    worker = threading.Thread(target=lambda: (tracing.run_trace(tiny_gpt2, "wait for a slot"), done.set()))
    worker.start()
    assert not done.wait(0.5)  # it cannot run while the slot is held (a liveness check, not a speed one)
    compute._slots.release()
    worker.join(600)
    assert done.is_set()


def test_policy_from_the_environment(monkeypatch):
    monkeypatch.setenv("LMVIZ_COMPUTE_SLOTS", "3")
    policy = compute.policy()
    assert policy["slots"] == 3 and policy["threads_per_slot"] == max(1, policy["cores"] // 3)
    monkeypatch.delenv("LMVIZ_COMPUTE_SLOTS")
    assert compute.slots() == min(8, compute.cores())
