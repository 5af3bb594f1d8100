"""Every failure a cycleguard call can return, as values to ``match`` on.

See :mod:`cycleguard._core._errors` for the hierarchy. The recipe::

    result = await client.create_reservation(...)
    if not is_successful(result):
        match result.failure():
            case BudgetExceeded(message=message):
                ...
"""

from __future__ import annotations

from cycleguard._core._errors import BudgetClosed as BudgetClosed
from cycleguard._core._errors import BudgetExceeded as BudgetExceeded
from cycleguard._core._errors import BudgetFrozen as BudgetFrozen
from cycleguard._core._errors import ConnectionFailed as ConnectionFailed
from cycleguard._core._errors import CyclesError as CyclesError
from cycleguard._core._errors import DebtOutstanding as DebtOutstanding
from cycleguard._core._errors import Denied as Denied
from cycleguard._core._errors import ErrorCode as ErrorCode
from cycleguard._core._errors import Forbidden as Forbidden
from cycleguard._core._errors import IdempotencyMismatch as IdempotencyMismatch
from cycleguard._core._errors import InternalError as InternalError
from cycleguard._core._errors import InvalidRequest as InvalidRequest
from cycleguard._core._errors import InvalidResponse as InvalidResponse
from cycleguard._core._errors import LimitExceeded as LimitExceeded
from cycleguard._core._errors import MaxExtensionsExceeded as MaxExtensionsExceeded
from cycleguard._core._errors import NotFound as NotFound
from cycleguard._core._errors import OverdraftLimitExceeded as OverdraftLimitExceeded
from cycleguard._core._errors import ReservationExpired as ReservationExpired
from cycleguard._core._errors import ReservationFinalized as ReservationFinalized
from cycleguard._core._errors import ServerError as ServerError
from cycleguard._core._errors import TenantClosed as TenantClosed
from cycleguard._core._errors import TimedOut as TimedOut
from cycleguard._core._errors import TransportError as TransportError
from cycleguard._core._errors import TransportUnavailable as TransportUnavailable
from cycleguard._core._errors import Unauthorized as Unauthorized
from cycleguard._core._errors import UnitMismatch as UnitMismatch
from cycleguard._core._errors import UnknownServerError as UnknownServerError
from cycleguard._core._errors import UsageError as UsageError
from cycleguard._core._errors import ValidationFailed as ValidationFailed
from cycleguard._core._errors import ValidationIssue as ValidationIssue
from cycleguard._core._errors import is_budget_error as is_budget_error
from cycleguard._core._errors import is_retryable as is_retryable
from cycleguard._core._errors import retry_after as retry_after

__all__ = (
    "CyclesError",
    "ServerError",
    "TransportError",
    "ErrorCode",
    "InvalidRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "BudgetExceeded",
    "BudgetFrozen",
    "BudgetClosed",
    "ReservationExpired",
    "ReservationFinalized",
    "IdempotencyMismatch",
    "UnitMismatch",
    "OverdraftLimitExceeded",
    "DebtOutstanding",
    "MaxExtensionsExceeded",
    "LimitExceeded",
    "TenantClosed",
    "InternalError",
    "UnknownServerError",
    "Denied",
    "ValidationFailed",
    "ValidationIssue",
    "ConnectionFailed",
    "TimedOut",
    "InvalidResponse",
    "TransportUnavailable",
    "UsageError",
    "is_budget_error",
    "is_retryable",
    "retry_after",
)
