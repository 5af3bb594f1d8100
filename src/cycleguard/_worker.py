"""Blocking calls off the event loop, in order, on one private thread.

The settlement journal makes a blocking, fsync'd file write before every
commit. ``anyio.to_thread.run_sync`` would cost a capacity limiter, a cancel
scope, a context copy and a thread-pool round trip each time; a
:class:`SerialWorker` is one daemon thread that runs the calls submitted to it
in submission order and hands each result straight back to the waiting task
(``call_soon_threadsafe`` on asyncio, the run's token on trio).

Calls that queue up while the thread is busy run as one batch, followed by the
worker's ``after_batch`` hook, before any of their results is handed back: the
journal fsyncs its directory there once for the whole batch (group commit).
A call nobody waits for (:meth:`SerialWorker.post`) does not wake the thread:
it runs with the next batch, or within ``linger`` seconds (an idle thread looks
that often).

The thread exits after ``idle_timeout`` seconds without work and starts again
on demand, also in a forked child (where the parent's thread does not exist).
At interpreter exit, posted calls still queued run on the exiting thread.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Final, TypeAlias, TypeVar, cast, final

import anyio
import anyio.lowlevel

from cycleguard.transports._channels import running_on_asyncio

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("SerialWorker",)

T = TypeVar("T")
logger = logging.getLogger("cycleguard")

Deliver: TypeAlias = "Callable[[object, BaseException | None], None]"
"""Hands a call's value (or exception) back to the task waiting for it."""
_Job: TypeAlias = "tuple[Callable[[], object], Deliver | None]"

_MAX_BATCH: Final = 64
_workers: weakref.WeakSet[SerialWorker] = weakref.WeakSet()


@final
class SerialWorker:
    """Runs blocking calls one after another on a private daemon thread.

    Args:
        name: The thread's name.
        after_batch: Called on the thread after each batch of calls and before
            their results are handed back (an exception is logged).
        linger: Seconds a posted call may wait for a batch to join.
        idle_timeout: Seconds without work after which the thread exits.
    """

    def __init__(
        self,
        name: str,
        *,
        after_batch: Callable[[], None] | None = None,
        linger: float = 1.0,
        idle_timeout: float = 5.0,
    ) -> None:
        self._name = name
        self._after_batch = after_batch
        self._linger = linger
        self._idle_timeout = idle_timeout
        self.reset()
        _workers.add(self)

    def reset(self) -> None:
        """Start afresh: no thread, nothing queued (for a forked child)."""
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._jobs: deque[_Job] = deque()
        self._awaited = 0  # queued calls somebody waits for
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"SerialWorker(name={self._name!r})"

    async def run(self, call: Callable[[], T]) -> T:
        """Run ``call`` on the thread after everything submitted before it; return its result.

        As with ``anyio.to_thread.run_sync``, a cancellation already pending is
        delivered before ``call`` is submitted, and the wait is shielded: once
        submitted, the call completes and its outcome is known before a
        cancellation is delivered.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        if running_on_asyncio():
            return await self._run_on_asyncio(call)
        return await self._run_on_trio(call)  # anyio runs only on asyncio and trio

    def post(self, call: Callable[[], object]) -> None:
        """Run ``call`` on the thread after everything submitted before it; do not wait.

        It does not wake the thread: it runs with the next batch (before any call
        submitted after it) or within ``linger`` seconds. An exception it raises
        is logged.
        """
        self._submit((call, None))

    async def _run_on_asyncio(self, call: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def deliver(value: object, error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
                loop.call_soon_threadsafe(_settle, future, value, error)

        self._submit((call, deliver))
        done: list[T] = []
        with anyio.CancelScope(shield=True):
            done.append(await future)
        return done[0]

    async def _run_on_trio(self, call: Callable[[], T]) -> T:
        import outcome  # a dependency of trio
        import trio
        import trio.lowlevel

        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()

        def deliver(value: object, error: BaseException | None) -> None:
            result = outcome.Value(value) if error is None else outcome.Error(error)
            with contextlib.suppress(trio.RunFinishedError):  # the run is over: nobody waits
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        def refuse(_: object) -> trio.lowlevel.Abort:
            return trio.lowlevel.Abort.FAILED  # shielded: the call completes first

        self._submit((call, deliver))
        return cast("T", await trio.lowlevel.wait_task_rescheduled(refuse))

    def run_leftovers(self) -> None:
        """Run what is still queued on the calling thread (at interpreter exit)."""
        with self._lock:
            batch = list(self._jobs)
            self._jobs.clear()
            self._awaited = 0
        if batch:
            self._run_batch(batch)

    def _submit(self, job: _Job) -> None:
        with self._lock:
            self._jobs.append(job)
            if job[1] is not None:
                self._awaited += 1
                self._wakeup.notify()
            if self._thread is None:
                thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                thread.start()
                self._thread = thread

    def _serve(self) -> None:
        idle_since: float | None = None
        while True:
            with self._lock:
                if not self._awaited:
                    # Posted calls do not wake the thread: it looks every ``linger`` seconds.
                    self._wakeup.wait(self._linger)
                if not self._jobs:
                    now = time.monotonic()
                    idle_since = now if idle_since is None else idle_since
                    if now - idle_since >= self._idle_timeout:
                        self._thread = None
                        return
                    continue
                idle_since = None
                batch = [self._jobs.popleft() for _ in range(min(len(self._jobs), _MAX_BATCH))]
                self._awaited -= sum(1 for _, deliver in batch if deliver is not None)
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Job]) -> None:
        done: list[tuple[Deliver, object, BaseException | None]] = []
        for call, deliver in batch:
            value: object = None
            error: BaseException | None = None
            try:
                value = call()
            except BaseException as exc:  # noqa: BLE001  # handed to the waiting task, or logged
                error = exc
            if deliver is not None:
                done.append((deliver, value, error))
            elif error is not None:
                logger.error("%s: a background call failed", self._name, exc_info=error)
        if self._after_batch is not None:
            try:
                self._after_batch()
            except Exception:  # the waiting tasks must hear back whatever happened
                logger.exception("%s: the end-of-batch step failed", self._name)
        for deliver, value, error in done:
            deliver(value, error)


def _settle(future: asyncio.Future[T], value: object, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(cast("T", value))


def _after_fork_in_child() -> None:
    # The parent's threads do not exist here and their locks may be held.
    for worker in list(_workers):
        worker.reset()


def _run_leftovers_at_exit() -> None:
    # Daemon threads stop with the interpreter: what they have not run yet runs here.
    for worker in list(_workers):
        worker.run_leftovers()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_run_leftovers_at_exit)
