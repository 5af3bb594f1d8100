"""The heartbeat loop: extends a live reservation as the pure planner says.

It never raises for what the server or network does and never cancels the
guarded work: every failure is a :data:`HeartbeatEvent` passed to the caller's
callback and a WARNING on the ``cycleguard`` logger naming the reservation and
what happens next (retry with the same key, or stop).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeAlias, final

import attrs
from returns.pipeline import is_successful

from cycleguard._client import new_idempotency_key
from cycleguard._clock import Clock, to_ms
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

if TYPE_CHECKING:
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
