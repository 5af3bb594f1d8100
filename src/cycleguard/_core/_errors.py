"""Every failure the world can hand back to a caller, as frozen values.

Hierarchy (all classes are final; branch with ``match``)::

    CyclesError
    ├── ServerError            the server answered with the protocol's error envelope
    │   ├── InvalidRequest, Unauthorized, Forbidden, NotFound,
    │   ├── BudgetExceeded, BudgetFrozen, BudgetClosed,
    │   ├── ReservationExpired, ReservationFinalized, IdempotencyMismatch,
    │   ├── UnitMismatch, OverdraftLimitExceeded, DebtOutstanding,
    │   ├── MaxExtensionsExceeded, LimitExceeded, TenantClosed, InternalError
    │   └── UnknownServerError  an ``error`` code this version does not know
    ├── Denied                 decision=DENY from decide or a dry-run reservation
    ├── ValidationFailed       the request broke a protocol rule; nothing was sent
    └── TransportError
        ├── ConnectionFailed   no usable connection, or it broke before a response
        ├── TimedOut           a connect, read, write or pool timeout fired
        ├── InvalidResponse    an answer that is not a schema-valid response (ambiguous)
        └── TransportUnavailable  the transport cannot run here (closed, wrong event loop)

Programmer misuse (calling an API wrongly) raises :class:`UsageError` instead.
"""

from __future__ import annotations

import enum
from typing import ClassVar, Literal, TypeAlias, final

import attrs

from cycleguard._core._json import JsonObject


class UsageError(Exception):
    """Raised for programmer misuse of the API, never for what a server or network did."""


class ErrorCode(enum.Enum):
    """The ``error`` codes of the runtime protocol (v0.1.25)."""

    INVALID_REQUEST = "INVALID_REQUEST"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    BUDGET_FROZEN = "BUDGET_FROZEN"
    BUDGET_CLOSED = "BUDGET_CLOSED"
    RESERVATION_EXPIRED = "RESERVATION_EXPIRED"
    RESERVATION_FINALIZED = "RESERVATION_FINALIZED"
    IDEMPOTENCY_MISMATCH = "IDEMPOTENCY_MISMATCH"
    UNIT_MISMATCH = "UNIT_MISMATCH"
    OVERDRAFT_LIMIT_EXCEEDED = "OVERDRAFT_LIMIT_EXCEEDED"
    DEBT_OUTSTANDING = "DEBT_OUTSTANDING"
    MAX_EXTENSIONS_EXCEEDED = "MAX_EXTENSIONS_EXCEEDED"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    TENANT_CLOSED = "TENANT_CLOSED"
    INTERNAL_ERROR = "INTERNAL_ERROR"


@attrs.frozen(kw_only=True)
class _ServerErrorFields:
    """Fields every error envelope carries; ``retry_after`` comes from ``Retry-After``."""

    status: int
    message: str
    request_id: str | None = None
    trace_id: str | None = None
    details: JsonObject | None = None
    retry_after: float | None = None


@final
@attrs.frozen(kw_only=True)
class InvalidRequest(_ServerErrorFields):
    """400 ``INVALID_REQUEST``: the server rejected the request's shape or values."""

    code: ClassVar[ErrorCode] = ErrorCode.INVALID_REQUEST


@final
@attrs.frozen(kw_only=True)
class Unauthorized(_ServerErrorFields):
    """401 ``UNAUTHORIZED``: the API key is missing, unknown or revoked."""

    code: ClassVar[ErrorCode] = ErrorCode.UNAUTHORIZED


@final
@attrs.frozen(kw_only=True)
class Forbidden(_ServerErrorFields):
    """403 ``FORBIDDEN``: the subject or reservation belongs to another tenant."""

    code: ClassVar[ErrorCode] = ErrorCode.FORBIDDEN


@final
@attrs.frozen(kw_only=True)
class NotFound(_ServerErrorFields):
    """404 ``NOT_FOUND``: no such reservation, or no budget at any derived scope."""

    code: ClassVar[ErrorCode] = ErrorCode.NOT_FOUND


@final
@attrs.frozen(kw_only=True)
class BudgetExceeded(_ServerErrorFields):
    """409 ``BUDGET_EXCEEDED``: not enough remaining budget for the amount."""

    code: ClassVar[ErrorCode] = ErrorCode.BUDGET_EXCEEDED


@final
@attrs.frozen(kw_only=True)
class BudgetFrozen(_ServerErrorFields):
    """409 ``BUDGET_FROZEN``: a budget on the scope path is frozen."""

    code: ClassVar[ErrorCode] = ErrorCode.BUDGET_FROZEN


@final
@attrs.frozen(kw_only=True)
class BudgetClosed(_ServerErrorFields):
    """409 ``BUDGET_CLOSED``: a budget on the scope path is permanently closed."""

    code: ClassVar[ErrorCode] = ErrorCode.BUDGET_CLOSED


@final
@attrs.frozen(kw_only=True)
class ReservationExpired(_ServerErrorFields):
    """410 ``RESERVATION_EXPIRED``: the reservation's lease (and grace) has run out."""

    code: ClassVar[ErrorCode] = ErrorCode.RESERVATION_EXPIRED


@final
@attrs.frozen(kw_only=True)
class ReservationFinalized(_ServerErrorFields):
    """409 ``RESERVATION_FINALIZED``: the reservation was already committed or released."""

    code: ClassVar[ErrorCode] = ErrorCode.RESERVATION_FINALIZED


@final
@attrs.frozen(kw_only=True)
class IdempotencyMismatch(_ServerErrorFields):
    """409 ``IDEMPOTENCY_MISMATCH``: the key was used before with a different payload."""

    code: ClassVar[ErrorCode] = ErrorCode.IDEMPOTENCY_MISMATCH


@final
@attrs.frozen(kw_only=True)
class UnitMismatch(_ServerErrorFields):
    """400 ``UNIT_MISMATCH``: the amount's unit is not the budget's or reservation's unit."""

    code: ClassVar[ErrorCode] = ErrorCode.UNIT_MISMATCH


@final
@attrs.frozen(kw_only=True)
class OverdraftLimitExceeded(_ServerErrorFields):
    """409 ``OVERDRAFT_LIMIT_EXCEEDED``: the overdraft limit is reached or a scope is over limit."""

    code: ClassVar[ErrorCode] = ErrorCode.OVERDRAFT_LIMIT_EXCEEDED


@final
@attrs.frozen(kw_only=True)
class DebtOutstanding(_ServerErrorFields):
    """409 ``DEBT_OUTSTANDING``: a scope carries debt and allows no overdraft."""

    code: ClassVar[ErrorCode] = ErrorCode.DEBT_OUTSTANDING


@final
@attrs.frozen(kw_only=True)
class MaxExtensionsExceeded(_ServerErrorFields):
    """409 ``MAX_EXTENSIONS_EXCEEDED``: the tenant's extension limit for a reservation is used."""

    code: ClassVar[ErrorCode] = ErrorCode.MAX_EXTENSIONS_EXCEEDED


@final
@attrs.frozen(kw_only=True)
class LimitExceeded(_ServerErrorFields):
    """429 ``LIMIT_EXCEEDED``: the server throttles; ``retry_after`` says how long to wait."""

    code: ClassVar[ErrorCode] = ErrorCode.LIMIT_EXCEEDED


@final
@attrs.frozen(kw_only=True)
class TenantClosed(_ServerErrorFields):
    """409 ``TENANT_CLOSED``: the owning tenant is closed."""

    code: ClassVar[ErrorCode] = ErrorCode.TENANT_CLOSED


@final
@attrs.frozen(kw_only=True)
class InternalError(_ServerErrorFields):
    """500 ``INTERNAL_ERROR``: the server failed."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL_ERROR


@final
@attrs.frozen(kw_only=True)
class UnknownServerError(_ServerErrorFields):
    """An error envelope whose ``error`` code this version of cycleguard does not know.

    ``error_code`` keeps the server's code verbatim.
    """

    error_code: str


@final
@attrs.frozen(kw_only=True)
class Denied:
    """``decision=DENY`` from ``decide`` or a dry-run reservation.

    ``reason_code`` is the server's open reason string (see
    :class:`~cycleguard.ReasonCode`); ``retry_after_ms`` is the server's hint, if any.
    """

    reason_code: str | None
    retry_after_ms: int | None = None
    affected_scopes: tuple[str, ...] = ()
    request_id: str | None = None
    trace_id: str | None = None


@final
@attrs.frozen
class ValidationIssue:
    """One broken rule: ``field`` is a dotted path into the request."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@final
@attrs.frozen
class ValidationFailed:
    """The request broke one or more protocol rules; nothing was sent.

    >>> ValidationFailed((ValidationIssue("ttl_ms", "must be at least 1000"),)).message
    'ttl_ms: must be at least 1000'
    """

    issues: tuple[ValidationIssue, ...]

    @property
    def message(self) -> str:
        """All issues on one line."""
        return "; ".join(str(issue) for issue in self.issues)


@final
@attrs.frozen(kw_only=True)
class ConnectionFailed:
    """No usable connection, or the connection broke before a full response arrived.

    If ``request_sent`` is true the server may have acted on the request: retry it
    with the same idempotency key, never a new one.
    """

    message: str
    request_sent: bool = False


@final
@attrs.frozen(kw_only=True)
class TimedOut:
    """A timeout fired; ``phase`` says which one."""

    phase: Literal["connect", "write", "read", "pool"]
    message: str


@final
@attrs.frozen(kw_only=True)
class InvalidResponse:
    """The answer is not a schema-valid protocol response. The outcome is ambiguous.

    ``retry_after`` keeps a ``Retry-After`` header that came with it (a bodyless 429).
    """

    message: str
    status: int | None = None
    request_id: str | None = None
    trace_id: str | None = None
    retry_after: float | None = None


@final
@attrs.frozen(kw_only=True)
class TransportUnavailable:
    """The transport cannot send here: it is closed or cannot run on this event loop."""

    message: str


KnownServerError: TypeAlias = (
    InvalidRequest
    | Unauthorized
    | Forbidden
    | NotFound
    | BudgetExceeded
    | BudgetFrozen
    | BudgetClosed
    | ReservationExpired
    | ReservationFinalized
    | IdempotencyMismatch
    | UnitMismatch
    | OverdraftLimitExceeded
    | DebtOutstanding
    | MaxExtensionsExceeded
    | LimitExceeded
    | TenantClosed
    | InternalError
)
"""An error envelope whose code this version knows."""

ServerError: TypeAlias = KnownServerError | UnknownServerError
"""An error envelope the server sent."""

TransportError: TypeAlias = ConnectionFailed | TimedOut | InvalidResponse | TransportUnavailable
"""A failure below the protocol: no answer, or no valid answer."""

CyclesError: TypeAlias = ServerError | Denied | ValidationFailed | TransportError
"""Every failure a Cycles client call can return."""

SERVER_ERROR_BY_CODE: dict[ErrorCode, type[KnownServerError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        BudgetExceeded,
        BudgetFrozen,
        BudgetClosed,
        ReservationExpired,
        ReservationFinalized,
        IdempotencyMismatch,
        UnitMismatch,
        OverdraftLimitExceeded,
        DebtOutstanding,
        MaxExtensionsExceeded,
        LimitExceeded,
        TenantClosed,
        InternalError,
    )
}

_BUDGET_FAMILY = (
    BudgetExceeded,
    BudgetFrozen,
    BudgetClosed,
    OverdraftLimitExceeded,
    DebtOutstanding,
    Denied,
)


def is_retryable(error: CyclesError) -> bool:
    """Whether repeating the same request (with the same idempotency key) may succeed.

    >>> is_retryable(TimedOut(phase="read", message="slow"))
    True
    >>> is_retryable(BudgetExceeded(status=409, message="no budget"))
    False
    """
    match error:
        case ConnectionFailed() | TimedOut() | LimitExceeded() | InternalError():
            return True
        case InvalidResponse(status=status):
            return status is None or status >= 500 or 200 <= status < 300
        case UnknownServerError(status=status):
            return status >= 500 or status == 429
        case _:
            return False


def retry_after(error: CyclesError) -> float | None:
    """Seconds the server asked the caller to wait before retrying, if it said.

    For a DENY this is the decision's ``retry_after_ms`` hint, in seconds.
    """
    match error:
        case Denied(retry_after_ms=ms):
            return None if ms is None else ms / 1000
        case ValidationFailed() | ConnectionFailed() | TimedOut() | TransportUnavailable():
            return None
        case _:
            return error.retry_after


def is_budget_error(error: CyclesError) -> bool:
    """Whether the failure means the budget (not the request or the network) said no."""
    return isinstance(error, _BUDGET_FAMILY)
