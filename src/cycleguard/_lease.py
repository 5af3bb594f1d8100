"""The reservation lease: ``open_reservation`` holds budget for the length of a block.

Python's ``async with`` plays the part of Rust's ``Drop`` in the seed's
``ReservationGuard``, but awaits its cleanup: leaving the block without
committing or releasing (an exception, a cancellation, an early ``return``)
releases the reservation under a shielded, time-bounded cancel scope, and the
exception or cancellation still propagates.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, TypeVar, final

import anyio
import attrs
from returns.pipeline import is_successful
from returns.result import Failure, Result, Success

from cycleguard._client import CyclesClient, new_idempotency_key
from cycleguard._clock import Clock, EventLoopClock, to_ms
from cycleguard._core import _exchange
from cycleguard._core._errors import CyclesError, is_retryable
from cycleguard._core._heartbeat import after_grant
from cycleguard._core._models import (
    Action,
    Amount,
    Caps,
    CommitRequest,
    Decision,
    OveragePolicy,
    ReleaseResponse,
    Reservation,
    ReservationCreateRequest,
    ReservationStatus,
    StandardMetrics,
    Subject,
)
from cycleguard._core._result import and_then
from cycleguard._core._state import LeaseEvent, LeaseState, can_transition, next_state
from cycleguard._heartbeat import HeartbeatCallback, HeartbeatStopped, start_heartbeat
from cycleguard._settlement import (
    Committed,
    Pending,
    RecoveredViaEvent,
    Rejected,
    Settlement,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable

    from cycleguard._core._json import JsonObject

T = TypeVar("T")
logger = logging.getLogger("cycleguard")

DEFAULT_CLEANUP_TIMEOUT = 5.0
DEFAULT_TTL_MS = 60_000


@final
@attrs.frozen(kw_only=True)
class AlreadyFinalized:
    """A second commit or release was refused; nothing was sent."""

    reservation_id: str
    state: LeaseState


@final
@attrs.frozen(kw_only=True)
class LeaseLost:
    """The server no longer holds the reservation (expired, finalized elsewhere, unknown)."""

    reason: str
    error: CyclesError | None


@final
class Lease:
    """A live reservation held for the length of an ``open_reservation`` block.

    Read the grant (:attr:`decision`, :attr:`caps`, :attr:`reservation_id`,
    :attr:`expires_at_ms`, :attr:`affected_scopes`) to shape the guarded work,
    then finalize exactly once with :meth:`commit` or :meth:`release`. A second
    finalization is refused with :class:`AlreadyFinalized`.
    """

    def __init__(
        self,
        client: CyclesClient,
        reservation: Reservation,
        request: ReservationCreateRequest,
        settlement: Settlement,
    ) -> None:
        self._client = client
        self._reservation = reservation
        self._request = request
        self._settlement = settlement
        self._state = LeaseState.ACTIVE
        self._expires_at_ms = reservation.expires_at_ms
        self._lost: LeaseLost | None = None
        self._heartbeat_stop: HeartbeatStopped | None = None
        # Uncontended, acquiring checks for cancellation without yielding to the loop.
        self._finalizing = anyio.Lock(fast_acquire=True)
        self._release_key = new_idempotency_key()
        self._commit_key = new_idempotency_key()

    def __repr__(self) -> str:
        return f"Lease(reservation_id={self.reservation_id!r}, state={self._state.value})"

    @property
    def reservation(self) -> Reservation:
        """The server's grant as it arrived."""
        return self._reservation

    @property
    def reservation_id(self) -> str:
        """The server's id for this reservation."""
        return self._reservation.reservation_id

    @property
    def decision(self) -> Decision:
        """``ALLOW`` or ``ALLOW_WITH_CAPS``."""
        return self._reservation.decision

    @property
    def caps(self) -> Caps | None:
        """Limits to apply to the guarded work, when the decision is ``ALLOW_WITH_CAPS``."""
        return self._reservation.caps

    @property
    def reserved(self) -> Amount:
        """The amount held."""
        return self._reservation.reserved

    @property
    def affected_scopes(self) -> tuple[str, ...]:
        """Every scope the reservation holds budget on, root first."""
        return self._reservation.affected_scopes

    @property
    def expires_at_ms(self) -> int:
        """The server's current expiry (moved forward by the heartbeat)."""
        return self._expires_at_ms

    @property
    def subject(self) -> Subject:
        """The subject the reservation was made for (defaults merged)."""
        return self._request.subject

    @property
    def action(self) -> Action:
        """The action the reservation was made for."""
        return self._request.action

    @property
    def state(self) -> LeaseState:
        """Where the lease is in its lifecycle."""
        return self._state

    @property
    def lost(self) -> LeaseLost | None:
        """Set when the heartbeat learned that the server no longer holds the reservation."""
        return self._lost

    @property
    def heartbeat_stop(self) -> HeartbeatStopped | None:
        """Why the heartbeat stopped, if it has."""
        return self._heartbeat_stop

    # The heartbeat's view ---------------------------------------------------------

    def heartbeat_wanted(self) -> bool:
        """Extends are useful while the lease is active or its commit is settling."""
        return self._state in {LeaseState.ACTIVE, LeaseState.COMMIT_PENDING}

    def heartbeat_extended(self, expires_at_ms: int) -> None:
        """Record a new server expiry."""
        self._expires_at_ms = max(self._expires_at_ms, expires_at_ms)

    def heartbeat_stopped(self, event: HeartbeatStopped) -> None:
        """Record why the heartbeat ended; a lost lease is visible on :attr:`lost`."""
        self._heartbeat_stop = event
        if event.lease_lost:
            self._lost = LeaseLost(reason=event.reason, error=event.error)

    # Finalization -----------------------------------------------------------------

    async def commit(
        self,
        actual: Amount,
        *,
        metrics: StandardMetrics | None = None,
        metadata: JsonObject | None = None,
    ) -> Result[Committed | RecoveredViaEvent | Pending, Rejected | AlreadyFinalized]:
        """Charge ``actual`` and settle it durably.

        Success means the spend is recorded (``Committed``, ``RecoveredViaEvent``) or
        journaled and will be (``Pending``). ``Rejected`` means the server refused the
        charge for good. Settlement runs to its own bounded end even if the caller is
        cancelled meanwhile, so known spend is never dropped halfway.
        """
        async with self._finalizing:
            if not can_transition(self._state, LeaseEvent.COMMIT_SENT):
                return Failure(
                    AlreadyFinalized(reservation_id=self.reservation_id, state=self._state)
                )
            self._state = next_state(self._state, LeaseEvent.COMMIT_SENT)
            request = CommitRequest(
                idempotency_key=self._commit_key, actual=actual, metrics=metrics, metadata=metadata
            )
            outcome = await shielded(
                partial(
                    self._settlement.commit,
                    reservation_id=self.reservation_id,
                    request=request,
                    subject=self.subject,
                    action=self.action,
                    wait_for_removal=False,
                )
            )
            match outcome:
                case Committed() | RecoveredViaEvent():
                    self._state = next_state(self._state, LeaseEvent.COMMIT_CONFIRMED)
                    return Success(outcome)
                case Pending():
                    return Success(outcome)
                case Rejected():
                    self._state = next_state(self._state, LeaseEvent.COMMIT_REJECTED)
                    return Failure(outcome)

    async def release(
        self, reason: str | None = None
    ) -> Result[ReleaseResponse, CyclesError | AlreadyFinalized]:
        """Return the whole reservation to the budget.

        A transient failure is retried once with the same idempotency key. If the
        release still fails the lease stays active, so leaving the block tries again
        with the same key.
        """
        async with self._finalizing:
            if not can_transition(self._state, LeaseEvent.RELEASE):
                return Failure(
                    AlreadyFinalized(reservation_id=self.reservation_id, state=self._state)
                )
            released = await self._send_release(reason)
            if is_successful(released):
                self._state = next_state(self._state, LeaseEvent.RELEASE)
                return Success(released.unwrap())
            return Failure(released.failure())

    async def _send_release(self, reason: str | None) -> Result[ReleaseResponse, CyclesError]:
        result = await self._client.release_reservation(
            self.reservation_id, reason=reason, idempotency_key=self._release_key
        )
        if not is_successful(result) and is_retryable(result.failure()):
            result = await self._client.release_reservation(
                self.reservation_id, reason=reason, idempotency_key=self._release_key
            )
        return result

    async def release_if_active(self, reason: str, *, time_limit: float) -> None:
        """Release the lease if nothing finalized it, shielded from cancellation.

        This is what leaving an ``open_reservation`` block does. It waits at most
        ``time_limit`` seconds; if the release fails or takes longer, a warning is
        logged and the server's expiry returns the hold.
        """
        if self._state is not LeaseState.ACTIVE:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(time_limit) as scope:
            released = await self.release(reason)
            if not is_successful(released):
                logger.warning(
                    "could not release reservation %s on exit (%s); the server's expiry "
                    "will return the hold",
                    self.reservation_id,
                    type(released.failure()).__name__,
                )
        if scope.cancelled_caught:
            logger.warning(
                "releasing reservation %s on exit took longer than %.1f s; the server's "
                "expiry will return the hold",
                self.reservation_id,
                time_limit,
            )


async def shielded(work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` to completion even if the caller is cancelled meanwhile.

    The cancellation is delivered at the caller's next checkpoint afterwards.
    """
    done: list[T] = []
    with anyio.CancelScope(shield=True):
        done.append(await work())
    return done[0]


def _exit_reason(exc: BaseException | None) -> str:
    if exc is None:
        return "guarded block ended without commit or release"
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return "guarded block was cancelled"
    return f"guarded block raised {type(exc).__name__}"


async def _create_with_retry(
    client: CyclesClient, request: ReservationCreateRequest, cleanup_timeout: float
) -> Result[Reservation, CyclesError]:
    """Create, retrying once with the same key when the outcome is unknown.

    If the caller is cancelled while the create is in flight, the server may hold a
    reservation nobody knows the id of: look it up by idempotency key and release it
    (shielded, bounded) before the cancellation propagates.
    """
    try:
        created = await client.send(request)
        if not is_successful(created) and is_retryable(created.failure()):
            created = await client.send(request)
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True), anyio.move_on_after(cleanup_timeout):
            await _release_orphans(client, request)
        raise
    return and_then(created, _exchange.live_reservation)


async def _release_orphans(client: CyclesClient, request: ReservationCreateRequest) -> None:
    found = await client.list_reservations(
        idempotency_key=request.idempotency_key, status=ReservationStatus.ACTIVE
    )
    if not is_successful(found):
        logger.warning(
            "create was cancelled and the reservation could not be looked up (%s); "
            "the server's expiry will return any hold",
            type(found.failure()).__name__,
        )
        return
    for row in found.unwrap().reservations:
        await client.release_reservation(row.reservation_id, reason="reserve was cancelled")


@asynccontextmanager
async def open_reservation(
    client: CyclesClient,
    *,
    action: Action,
    estimate: Amount,
    subject: Subject | None = None,
    ttl_ms: int | None = None,
    grace_period_ms: int | None = None,
    overage_policy: OveragePolicy | None = None,
    metadata: JsonObject | None = None,
    idempotency_key: str | None = None,
    settlement: Settlement | None = None,
    heartbeat: bool = True,
    on_heartbeat: HeartbeatCallback | None = None,
    cleanup_timeout: float = DEFAULT_CLEANUP_TIMEOUT,
    clock: Clock | None = None,
) -> AsyncGenerator[Result[Lease, CyclesError]]:
    """Reserve ``estimate`` for the length of the block; yield the lease or the failure.

    The reservation request is sent on entry (with one same-key retry when the
    outcome is unknown). On success the block gets a :class:`Lease`; a heartbeat
    keeps it alive (the protocol's ``remaining_ttl_ms`` algorithm) in a task
    group that lives as long as the block. Leaving the block unfinalized
    releases the reservation, shielded from cancellation and bounded by
    ``cleanup_timeout``; the exception or cancellation still propagates.

    Example::

        async with open_reservation(cycles, action=action, estimate=Amount.tokens(800)) as got:
            if not is_successful(got):
                return got.failure()
            lease = got.unwrap()
            reply = await call_model(max_tokens=lease.caps.max_tokens if lease.caps else 800)
            await lease.commit(Amount.tokens(reply.usage.total_tokens))
    """
    clock = clock or EventLoopClock()
    request = client.reservation_request(
        action=action,
        estimate=estimate,
        subject=subject,
        ttl_ms=ttl_ms,
        grace_period_ms=grace_period_ms,
        overage_policy=overage_policy,
        metadata=metadata,
        idempotency_key=idempotency_key,
    )
    sent = to_ms(clock.now())
    created = await _create_with_retry(client, request, cleanup_timeout)
    received = to_ms(clock.now())
    if not is_successful(created):
        yield Failure(created.failure())
        return
    reservation = created.unwrap()
    lease = Lease(client, reservation, request, settlement or client.settlement)
    # The block's own exception is held while the heartbeat's task group closes, so it
    # leaves this context manager as itself rather than inside an exception group.
    raised: BaseException | None = None
    try:
        async with anyio.create_task_group() as heartbeat_group:
            stop_heartbeat: Callable[[], None] | None = None
            if heartbeat:
                timeouts = client.config.timeouts.total
                timing, plan = after_grant(
                    None,
                    ttl_ms=ttl_ms or reservation.remaining_ttl_ms or DEFAULT_TTL_MS,
                    request_timeout_ms=None if timeouts is None else timeouts * 1000,
                    sent_at_ms=sent,
                    received_at_ms=received,
                    expires_at_ms=reservation.expires_at_ms,
                    remaining_ttl_ms=reservation.remaining_ttl_ms,
                )
                stop_heartbeat = start_heartbeat(
                    heartbeat_group, client, lease, timing, plan, clock=clock, on_event=on_heartbeat
                )
            try:
                yield Success(lease)
            except BaseException as error:  # noqa: BLE001  # re-raised below, never turned into a value
                raised = error
            finally:
                if stop_heartbeat is not None:
                    stop_heartbeat()
    finally:
        # Runs even when closing the task group re-raises a pending cancellation.
        await lease.release_if_active(_exit_reason(raised), time_limit=cleanup_timeout)
    if raised is not None:
        raise raised
