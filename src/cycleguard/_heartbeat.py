"""The heartbeat loop: extends a live reservation as the pure planner says.

It never raises for what the server or network does and never cancels the
guarded work: every failure is a :data:`HeartbeatEvent` passed to the caller's
callback and a WARNING on the ``cycleguard`` logger naming the reservation and
what happens next (retry with the same key, or stop).

On the event loop's own clock a heartbeat whose first beat lies ahead is not a
task until that beat is due: one task per event loop (:class:`DueStarts`)
starts it then, in the lease's task group and with the context the block began
with, exactly where it would have woken from its first sleep. Most guarded
calls end long before their first beat (about half a TTL in) and so never pay
for a task.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import math
import weakref
from collections.abc import Callable
from functools import cache, partial
from typing import TYPE_CHECKING, Protocol, TypeAlias, final

import anyio
import attrs
from returns.pipeline import is_successful

from cycleguard._client import new_idempotency_key
from cycleguard._clock import Clock, EventLoopClock, to_ms
from cycleguard._core._errors import CyclesError
from cycleguard._core._heartbeat import (
    LeaseTiming,
    Plan,
    RetrySameKey,
    RetryState,
    Stop,
    Wait,
    after_failure,
    after_grant,
)
from cycleguard.transports._channels import running_on_asyncio

if TYPE_CHECKING:
    import trio
    from anyio.abc import TaskGroup

    from cycleguard._client import CyclesClient

logger = logging.getLogger("cycleguard")


@final
@attrs.frozen(kw_only=True)
class HeartbeatExtended:
    """The lease was extended; the next beat is due in ``next_delay_ms``."""

    reservation_id: str
    expires_at_ms: int
    next_delay_ms: int


@final
@attrs.frozen(kw_only=True)
class HeartbeatRetrying:
    """An extend failed transiently; it is retried with the same key after ``delay_ms``."""

    reservation_id: str
    error: CyclesError
    delay_ms: int


@final
@attrs.frozen(kw_only=True)
class HeartbeatStopped:
    """The heartbeat ended; ``lease_lost`` says the server no longer holds the reservation."""

    reservation_id: str
    reason: str
    error: CyclesError | None
    lease_lost: bool


HeartbeatEvent: TypeAlias = HeartbeatExtended | HeartbeatRetrying | HeartbeatStopped
"""What the heartbeat reports to ``on_heartbeat``."""

HeartbeatCallback: TypeAlias = Callable[[HeartbeatEvent], None]


class LeaseView(Protocol):
    """What the heartbeat needs from the lease it protects."""

    @property
    def reservation_id(self) -> str:
        """The reservation being kept alive."""
        ...

    def heartbeat_wanted(self) -> bool:
        """False once the lease is being finalized or is gone."""
        ...

    def heartbeat_extended(self, expires_at_ms: int) -> None:
        """Record the server's new expiry."""
        ...

    def heartbeat_stopped(self, event: HeartbeatStopped) -> None:
        """Record why the heartbeat ended."""
        ...


async def run_heartbeat(
    client: CyclesClient,
    lease: LeaseView,
    timing: LeaseTiming,
    plan: Plan,
    *,
    clock: Clock,
    on_event: HeartbeatCallback | None,
) -> None:
    """Keep ``lease`` alive until the planner says stop or the lease no longer wants it."""
    key = new_idempotency_key()
    retry: RetryState | None = None
    last_error: CyclesError | None = None
    while True:
        match plan:
            case Stop(reason=reason, lease_lost=lost):
                stopped = HeartbeatStopped(
                    reservation_id=lease.reservation_id,
                    reason=reason,
                    error=last_error,
                    lease_lost=lost,
                )
                logger.warning(
                    "heartbeat for reservation %s stopped: %s%s; the work goes on and settles "
                    "at the end",
                    lease.reservation_id,
                    reason,
                    f" ({type(last_error).__name__})" if last_error else "",
                )
                lease.heartbeat_stopped(stopped)
                _emit(on_event, stopped)
                return
            case Wait(delay_ms=delay):
                key, retry = new_idempotency_key(), None
                await clock.sleep(delay / 1000)
            case RetrySameKey(delay_ms=delay):
                await clock.sleep(delay / 1000)
        if not lease.heartbeat_wanted():
            return
        sent = to_ms(clock.now())
        result = await client.extend_reservation(
            lease.reservation_id, timing.ttl_ms, idempotency_key=key
        )
        received = to_ms(clock.now())
        if is_successful(result):
            extended = result.unwrap()
            timing, plan = after_grant(
                timing,
                ttl_ms=timing.ttl_ms,
                request_timeout_ms=timing.request_timeout_ms,
                sent_at_ms=sent,
                received_at_ms=received,
                expires_at_ms=extended.expires_at_ms,
                remaining_ttl_ms=extended.remaining_ttl_ms,
            )
            lease.heartbeat_extended(extended.expires_at_ms)
            if isinstance(plan, Wait):
                _emit(
                    on_event,
                    HeartbeatExtended(
                        reservation_id=lease.reservation_id,
                        expires_at_ms=extended.expires_at_ms,
                        next_delay_ms=plan.delay_ms,
                    ),
                )
            continue
        last_error = result.failure()
        retry, plan = after_failure(timing, last_error, now_ms=received, retry=retry)
        if isinstance(plan, RetrySameKey):
            logger.warning(
                "heartbeat extend for reservation %s failed (%s); retrying with the same "
                "idempotency key in %d ms",
                lease.reservation_id,
                type(last_error).__name__,
                plan.delay_ms,
            )
            _emit(
                on_event,
                HeartbeatRetrying(
                    reservation_id=lease.reservation_id, error=last_error, delay_ms=plan.delay_ms
                ),
            )


def _emit(callback: HeartbeatCallback | None, event: HeartbeatEvent) -> None:
    if callback is not None:
        callback(event)


def start_heartbeat(
    group: TaskGroup,
    client: CyclesClient,
    lease: LeaseView,
    timing: LeaseTiming,
    plan: Plan,
    *,
    clock: Clock,
    on_event: HeartbeatCallback | None,
) -> Callable[[], None]:
    """Run the heartbeat of ``lease`` in ``group``; return what stops it.

    Stopping cancels the heartbeat if it runs; call it before ``group`` closes.
    """
    beat = partial(run_heartbeat, client, lease, timing, clock=clock, on_event=on_event)
    first_beat_ms = plan.delay_ms if isinstance(plan, Wait) else 0
    on_loop_clock = isinstance(clock, EventLoopClock)
    starts = _running_due_starts() if first_beat_ms > 0 and on_loop_clock else None
    if starts is None:
        group.start_soon(beat, plan)
        return group.cancel_scope.cancel
    context = contextvars.copy_context()
    started = False

    def spawn() -> None:
        group.start_soon(beat, Wait(0))  # the first sleep is over: extend now

    def start() -> None:
        nonlocal started
        started = True
        context.run(spawn)  # in the context the block began with

    handle = starts.add(clock.now() + first_beat_ms / 1000, start)

    def stop() -> None:
        starts.remove(handle)
        if started:
            group.cancel_scope.cancel()

    return stop


@final
class DueStarts:
    """Calls each registered function when the event loop's clock reaches its deadline.

    One per event loop, run by :func:`due_starts` as a background task that
    sleeps until the earliest deadline; registering and removing cost a dict
    operation, not a task.
    """

    def __init__(self) -> None:
        self._due: dict[int, tuple[float, Callable[[], None]]] = {}
        self._handles = itertools.count()
        self._scope: anyio.CancelScope | None = None
        self.task: asyncio.Task[None] | None = None  # the asyncio task that serves it

    def add(self, deadline: float, start: Callable[[], None]) -> int:
        """Call ``start`` at ``deadline`` (event loop seconds); return a handle to remove it."""
        handle = next(self._handles)
        self._due[handle] = (deadline, start)
        scope = self._scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline
        return handle

    @property
    def pending(self) -> int:
        """How many registrations have not fallen due (or been removed) yet."""
        return len(self._due)

    def remove(self, handle: int) -> None:
        """Forget a registration (nothing happens if it was already called)."""
        self._due.pop(handle, None)

    async def serve(self) -> None:
        """Call registered functions as they fall due, until cancelled."""
        while True:
            earliest = min((deadline for deadline, _ in self._due.values()), default=math.inf)
            with anyio.CancelScope(deadline=earliest) as self._scope:
                await anyio.sleep_forever()
            self._scope = None
            now = anyio.current_time()
            for handle, (deadline, start) in list(self._due.items()):
                if deadline <= now:
                    del self._due[handle]
                    try:
                        start()
                    except Exception:  # one lease's failure must not stop the others' heartbeats
                        logger.exception("could not start a heartbeat")


_asyncio_starts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DueStarts] = (
    weakref.WeakKeyDictionary()
)


def due_starts() -> DueStarts:
    """The running event loop's :class:`DueStarts`, started on first use."""
    if not running_on_asyncio():
        return _trio_due_starts()
    loop = asyncio.get_running_loop()
    starts = _asyncio_starts.get(loop)
    if starts is None:
        starts = _asyncio_starts[loop] = DueStarts()
    if starts.task is None or starts.task.done():  # new, or cancelled by someone else
        starts.task = loop.create_task(
            starts.serve(), name="cycleguard heartbeat starts", context=contextvars.Context()
        )
    return starts


def _running_due_starts() -> DueStarts | None:
    """:func:`due_starts`, or ``None`` when the event loop takes no new tasks (it is ending)."""
    try:
        return due_starts()
    except RuntimeError:
        return None


@cache
def _trio_run_var() -> trio.lowlevel.RunVar[DueStarts]:
    import trio  # optional dependency, present when running on trio

    return trio.lowlevel.RunVar("cycleguard_heartbeat_starts")


def _trio_due_starts() -> DueStarts:
    import trio  # optional dependency, present when running on trio

    run_var = _trio_run_var()
    try:
        return run_var.get()
    except LookupError:
        starts = DueStarts()
        trio.lowlevel.spawn_system_task(starts.serve, name="cycleguard heartbeat starts")
        run_var.set(starts)
        return starts
