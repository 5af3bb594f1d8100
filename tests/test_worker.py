"""The journal's writer thread: order, results, shielded waits, posted calls, batches."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from cycleguard._worker import SerialWorker

pytestmark = pytest.mark.anyio


async def test_calls_run_in_order_and_hand_back_results_and_exceptions() -> None:
    """Results and exceptions reach the waiting task; posted calls keep their place."""
    worker = SerialWorker("test-worker")
    seen: list[str] = []
    worker.post(lambda: seen.append("posted"))

    def waited() -> int:
        seen.append("waited")
        return 42

    assert await worker.run(waited) == 42
    assert seen == ["posted", "waited"]

    def broken() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await worker.run(broken)


async def test_a_cancelled_wait_still_sees_the_call_finish() -> None:
    """Like ``anyio.to_thread``: once submitted, the call completes and its result is
    returned; the cancellation arrives at the next checkpoint."""
    worker = SerialWorker("test-worker")
    finished = threading.Event()

    def slow() -> int:
        time.sleep(0.2)
        finished.set()
        return 7

    got: list[int] = []
    with anyio.move_on_after(0.05) as scope:
        got.append(await worker.run(slow))
        await anyio.sleep(1)
    assert scope.cancelled_caught
    assert finished.is_set()
    assert got == [7]


async def test_a_pending_cancellation_submits_nothing() -> None:
    """A call made in an already cancelled scope never runs."""
    worker = SerialWorker("test-worker")
    ran: list[bool] = []
    with anyio.CancelScope() as scope:
        scope.cancel()
        await worker.run(lambda: ran.append(True))
    await worker.run(lambda: None)
    assert ran == []


async def test_a_posted_call_runs_within_its_linger_without_a_later_call() -> None:
    """A posted call does not wake the thread, but it does not wait for ever either."""
    worker = SerialWorker("test-worker", linger=0.05)
    await worker.run(lambda: None)  # the thread is up and idle
    done = threading.Event()
    worker.post(done.set)
    await anyio.to_thread.run_sync(done.wait, 2.0)
    assert done.is_set()


async def test_calls_queued_together_share_one_end_of_batch_step() -> None:
    """The end-of-batch step runs once for a batch, before any of its results is handed
    back (the journal fsyncs its directory there)."""
    events: list[str] = []
    worker = SerialWorker("test-worker", after_batch=lambda: events.append("end"))
    gate = threading.Event()
    first_running = threading.Event()

    def first() -> None:
        first_running.set()
        gate.wait(2.0)
        events.append("first")

    async with anyio.create_task_group() as group:
        group.start_soon(worker.run, first)
        await anyio.to_thread.run_sync(first_running.wait, 2.0)
        for name in ("a", "b", "c"):
            group.start_soon(worker.run, lambda name=name: events.append(name))
        await anyio.sleep(0.05)  # all three queued behind the first
        gate.set()
    assert events[:2] == ["first", "end"]
    assert sorted(events[2:5]) == ["a", "b", "c"]  # one batch (trio starts tasks in any order)
    assert events[5:] == ["end"]


def test_leftover_posted_calls_run_on_request() -> None:
    """What is still queued runs on the calling thread (what happens at interpreter exit)."""
    worker = SerialWorker("test-worker", linger=60)
    seen: list[int] = []
    worker.post(lambda: seen.append(1))
    worker.run_leftovers()
    assert seen == [1]
