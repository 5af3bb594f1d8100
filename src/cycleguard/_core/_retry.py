"""Settlement retry rules: backoff with jitter, ``Retry-After`` clamping, outcome classes.

Everything here is a pure function of its inputs. Randomness comes from an
injected :class:`random.Random`, time from the caller; nothing sleeps.

The classification follows the outcome table the official Cycles SDKs share
(recovery profile 0.3, §2.6), checked in order:

1. A success value is settled (the exchange already demands the exact status,
   200 for a commit and 201 for an event, and a schema-valid body).
2. No valid answer (lost connection, timeout, non-2xx-success, malformed body,
   wrong 2xx status): ambiguous, retry with the same key.
3. HTTP 429, or the ``LIMIT_EXCEEDED`` code at any status: rate limited; keep
   the record and honour ``Retry-After`` (clamped to one hour).
4. HTTP 401/403 (or the ``UNAUTHORIZED``/``FORBIDDEN`` codes): keep the record
   and stop for this run; never release.
5. 5xx: retry with the same key.
6. Commits only: HTTP 410 (body optional) or ``RESERVATION_EXPIRED``: switch to
   the ``POST /v1/events`` fallback with the same key.
7. Commits only: ``RESERVATION_FINALIZED``: finished, nothing more to send.
8. Any other 4xx with a code this version knows and that is not retryable: a
   genuine rejection; the record may be removed.
9. Any other 4xx (no code, an unknown code, a retryable code): keep the record,
   stop for this run.

Status comes before code, so a bodyless 410 still triggers the event
fallback and a bodyless 429 still counts as rate limiting.
"""

from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING, Literal, final

import attrs

from cycleguard._core._errors import (
    ConnectionFailed,
    CyclesError,
    Denied,
    Forbidden,
    InternalError,
    InvalidResponse,
    LimitExceeded,
    ReservationExpired,
    ReservationFinalized,
    TimedOut,
    TransportUnavailable,
    Unauthorized,
    UnknownServerError,
    ValidationFailed,
    retry_after,
)

if TYPE_CHECKING:
    import random

MAX_HONOURED_DELAY = 3600.0
"""Upper bound, in seconds, on any server-requested or restored wait (one hour)."""

Operation = Literal["commit", "event"]
"""Which settlement request an answer belongs to."""


class Disposition(enum.Enum):
    """What a failed settlement attempt means for the journaled record.

    ``RETRY``, ``RATE_LIMITED``: keep the record; try again with the same key.
    ``AUTH_STOP``, ``STOP``: keep the record; stop trying in this run.
    ``EXPIRED``: (commits) switch the record to event mode, post the event now.
    ``FINALIZED``: (commits) the reservation is already finalized; remove the record.
    ``REJECTED``: a genuine, understood rejection; remove the record.
    """

    RETRY = "retry"
    RATE_LIMITED = "rate_limited"
    AUTH_STOP = "auth_stop"
    STOP = "stop"
    EXPIRED = "expired"
    FINALIZED = "finalized"
    REJECTED = "rejected"

    @property
    def keeps_record(self) -> bool:
        """Whether the durable record must stay (the spend is not settled yet)."""
        return self not in {Disposition.FINALIZED, Disposition.REJECTED}


def _status_of(error: CyclesError) -> int | None:
    match error:
        case InvalidResponse(status=status):
            return status
        case ConnectionFailed() | TimedOut() | TransportUnavailable() | ValidationFailed():
            return None
        case Denied():
            return None
        case _:
            return error.status


def classify(error: CyclesError, operation: Operation) -> Disposition:
    """The disposition of a failed commit or event attempt (see the module docstring).

    >>> classify(TimedOut(phase="read", message="slow"), "commit")
    <Disposition.RETRY: 'retry'>
    >>> classify(InvalidResponse(message="no body", status=410), "commit")
    <Disposition.EXPIRED: 'expired'>
    >>> classify(InvalidResponse(message="no body", status=410), "event")
    <Disposition.STOP: 'stop'>
    >>> classify(UnknownServerError(error_code="NEW", status=422, message="?"), "commit")
    <Disposition.STOP: 'stop'>
    """
    match error:
        case ConnectionFailed() | TimedOut():
            return Disposition.RETRY
        case TransportUnavailable() | ValidationFailed() | Denied():
            # Nothing was (or can be) sent from here; keep the record for a later run.
            return Disposition.STOP
        case _:
            pass
    status = _status_of(error)
    if status is None or 200 <= status < 400:
        return Disposition.RETRY
    if status == 429 or isinstance(error, LimitExceeded):
        return Disposition.RATE_LIMITED
    if status in {401, 403} or isinstance(error, Unauthorized | Forbidden):
        return Disposition.AUTH_STOP
    if status >= 500:
        return Disposition.RETRY
    if operation == "commit":
        if status == 410 or isinstance(error, ReservationExpired):
            return Disposition.EXPIRED
        if isinstance(error, ReservationFinalized):
            return Disposition.FINALIZED
    if isinstance(error, InvalidResponse | UnknownServerError | InternalError):
        # A codeless 4xx (a proxy page), a code from a newer server, or a
        # retryable code on a 4xx: not understood, so never destroy the record.
        return Disposition.STOP
    return Disposition.REJECTED


def clamp_retry_after(seconds: float | None, cap: float = MAX_HONOURED_DELAY) -> float | None:
    """A server-requested delay made safe: ``None`` when unusable, at most ``cap`` (one hour).

    >>> clamp_retry_after(2.0), clamp_retry_after(86_400.0), clamp_retry_after(-1.0)
    (2.0, 3600.0, None)
    """
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, cap, MAX_HONOURED_DELAY)


def retry_after_of(error: CyclesError, cap: float = MAX_HONOURED_DELAY) -> float | None:
    """The clamped ``Retry-After`` a failed settlement attempt carried, if any.

    A decision's ``retry_after_ms`` hint (:class:`~cycleguard.errors.Denied`) is
    not a settlement delay and does not count.
    """
    if isinstance(error, Denied):
        return None
    return clamp_retry_after(retry_after(error), cap)


def not_before_ms(now_ms: int, retry_after: float, cap: float = MAX_HONOURED_DELAY) -> int:
    """The absolute wall-clock floor (epoch ms) for a retry ``retry_after`` seconds away.

    >>> not_before_ms(1_000, 2.0), not_before_ms(0, 1e9)
    (3000, 3600000)
    """
    clamped = clamp_retry_after(retry_after, cap) or 0.0
    return now_ms + math.ceil(clamped * 1000)


def remaining_floor(not_before: int | None, now_ms: int, cap: float = MAX_HONOURED_DELAY) -> float:
    """Seconds still to wait for a persisted floor; 0 when none is pending, at most one hour.

    A floor restored from disk may be corrupt or far away; it never parks a
    record for more than :data:`MAX_HONOURED_DELAY`.

    >>> remaining_floor(5_000, 2_000), remaining_floor(1_000, 2_000), remaining_floor(None, 0)
    (3.0, 0.0, 0.0)
    """
    if not_before is None or not_before <= now_ms:
        return 0.0
    return min((not_before - now_ms) / 1000, cap, MAX_HONOURED_DELAY)


@final
@attrs.frozen(kw_only=True)
class Backoff:
    """Exponential backoff with downward jitter.

    The wait before retry ``n`` (0-based) is ``min(initial * multiplier**n,
    max_delay)``, shortened by a random fraction of at most ``jitter``, so the
    deterministic schedule is an upper bound of the total wait.

    >>> import random
    >>> schedule = Backoff(initial=0.5, multiplier=2.0, max_delay=30.0, jitter=0.0)
    >>> [schedule.delay(n, random.Random(0)) for n in range(4)]
    [0.5, 1.0, 2.0, 4.0]
    >>> 0.8 <= Backoff(jitter=0.2).delay(1, random.Random(7)) <= 1.0
    True
    """

    initial: float = attrs.field(default=0.5, validator=attrs.validators.ge(0.0))
    multiplier: float = attrs.field(default=2.0, validator=attrs.validators.ge(1.0))
    max_delay: float = attrs.field(default=30.0, validator=attrs.validators.ge(0.0))
    jitter: float = attrs.field(
        default=0.2, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )

    def ceiling(self, retry: int) -> float:
        """The un-jittered wait before retry ``retry`` (0-based)."""
        if retry < 0:
            return 0.0
        # Exponent growth is capped before it can overflow a float.
        exponent = min(retry, 1024)
        try:
            raw = self.initial * self.multiplier**exponent
        except OverflowError:
            return self.max_delay
        return min(raw, self.max_delay)

    def delay(self, retry: int, rng: random.Random) -> float:
        """The jittered wait before retry ``retry`` (0-based)."""
        ceiling = self.ceiling(retry)
        return ceiling * (1.0 - self.jitter * rng.random())

    def total_ceiling(self, retries: int) -> float:
        """The most that ``retries`` waits can add up to.

        >>> Backoff(jitter=0.0).total_ceiling(5)
        15.5
        """
        return sum(self.ceiling(n) for n in range(retries))
