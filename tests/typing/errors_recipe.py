"""The documented way to branch on a client result, checked by mypy and pyright."""

from __future__ import annotations

from typing import TYPE_CHECKING, assert_never, assert_type

from returns.pipeline import is_successful

from cycleguard import CyclesClient, Reservation
from cycleguard.errors import (
    BudgetClosed,
    BudgetExceeded,
    BudgetFrozen,
    ConnectionFailed,
    CyclesError,
    DebtOutstanding,
    Denied,
    Forbidden,
    IdempotencyMismatch,
    InternalError,
    InvalidRequest,
    InvalidResponse,
    LimitExceeded,
    MaxExtensionsExceeded,
    NotFound,
    OverdraftLimitExceeded,
    ReservationExpired,
    ReservationFinalized,
    TenantClosed,
    TimedOut,
    TransportUnavailable,
    Unauthorized,
    UnitMismatch,
    UnknownServerError,
    ValidationFailed,
)

if TYPE_CHECKING:
    from returns.result import Result


def describe(error: CyclesError) -> str:
    """Every variant handled: both checkers accept the match as exhaustive."""
    match error:
        case BudgetExceeded(message=message) | DebtOutstanding(message=message):
            return f"out of budget: {message}"
        case BudgetFrozen() | BudgetClosed() | OverdraftLimitExceeded():
            return "budget blocked"
        case Denied(reason_code=reason):
            return f"denied: {reason}"
        case LimitExceeded(retry_after=seconds):
            return f"throttled for {seconds}s"
        case ValidationFailed(issues=issues):
            return f"{len(issues)} invalid fields"
        case ConnectionFailed() | TimedOut() | InvalidResponse() | TransportUnavailable():
            return "transport"
        case UnknownServerError(error_code=code):
            return f"unknown {code}"
        case (
            InvalidRequest()
            | Unauthorized()
            | Forbidden()
            | NotFound()
            | ReservationExpired()
            | ReservationFinalized()
            | IdempotencyMismatch()
            | UnitMismatch()
            | MaxExtensionsExceeded()
            | TenantClosed()
            | InternalError()
        ):
            return error.message
        case _:
            assert_never(error)


def forgets_a_variant(error: CyclesError) -> None:
    """A match that misses variants is an error for both checkers (checked ignore)."""
    match error:  # type: ignore[exhaustive-match]
        case BudgetExceeded():
            pass


async def reserve_recipe(
    client: CyclesClient, request_result: Result[Reservation, CyclesError]
) -> int:
    """is_successful + unwrap / failure: each side keeps its precise type."""
    if is_successful(request_result):
        reservation = request_result.unwrap()
        assert_type(reservation, Reservation)
        return reservation.reserved.amount
    failure = request_result.failure()
    assert_type(failure, CyclesError)
    return len(describe(failure))
