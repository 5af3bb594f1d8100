"""Heartbeat scheduling arithmetic (the protocol's normative extend algorithm), pure.

All times are integer milliseconds on the client's monotonic clock, except
``expires_at_ms`` values, which are the server's. The effectful loop in
:mod:`cycleguard._heartbeat` feeds this module what happened and does what it
says.

After a schema-valid create or extend answer carrying ``remaining_ttl_ms``::

    rtt            = received - sent
    lead_floor     = max(0, remaining_ttl_ms - rtt)
    attempt_budget = max(request_timeout, 1000, 2 * max_rtt)
    safety_margin  = max(1000, 2 * max_rtt)
    next_delay     = max(0, lead_floor - (2 * attempt_budget + safety_margin))

Without ``remaining_ttl_ms`` the lead is bounded below by the measured grant:
the lease lasts at least ``ttl`` past the create request's send time, and each
extension adds what the server's ``expires_at_ms`` moved by; beats then come at
most every ``min(ttl / 2, 30 s)``.
"""

from __future__ import annotations

import math
from typing import final

import attrs

from cycleguard._core._errors import (
    CyclesError,
    LimitExceeded,
    MaxExtensionsExceeded,
    NotFound,
    ReservationExpired,
    ReservationFinalized,
    TenantClosed,
    UnknownServerError,
    is_retryable,
)

MIN_BUDGET_MS = 1_000
MAX_RETRY_DELAY_MS = 30_000
FALLBACK_MAX_CADENCE_MS = 30_000
INFINITY = math.inf


@final
@attrs.frozen(kw_only=True)
class LeaseTiming:
    """What the planner knows after the last successful create or extend."""

    ttl_ms: int
    request_timeout_ms: float
    max_rtt_ms: int
    lead_floor_ms: int
    confirmed_at_ms: int
    expires_at_ms: int
    authoritative: bool
    zero_delay_beats: int = 0

    @property
    def attempt_budget_ms(self) -> float:
        """How long one attempt may take, rounded up; infinite for an unbounded timeout."""
        return max(self.request_timeout_ms, MIN_BUDGET_MS, 2 * self.max_rtt_ms)

    @property
    def safety_margin_ms(self) -> int:
        """Slack kept beyond the attempts themselves."""
        return max(MIN_BUDGET_MS, 2 * self.max_rtt_ms)

    def current_lead_ms(self, now_ms: int) -> int:
        """The lease time known to remain at ``now_ms``."""
        return max(0, self.lead_floor_ms - max(0, now_ms - self.confirmed_at_ms))


@final
@attrs.frozen
class Wait:
    """Sleep ``delay_ms`` and then extend with a fresh idempotency key."""

    delay_ms: int


@final
@attrs.frozen
class RetrySameKey:
    """Sleep ``delay_ms`` and repeat the failed extend with the same idempotency key."""

    delay_ms: int


@final
@attrs.frozen
class Stop:
    """Stop heartbeating; ``reason`` says why (for the warning and the lease)."""

    reason: str
    lease_lost: bool


Plan = Wait | RetrySameKey | Stop
"""What the heartbeat loop does next."""

TERMINAL_ERRORS = (
    ReservationExpired,
    ReservationFinalized,
    MaxExtensionsExceeded,
    TenantClosed,
    NotFound,
)
_LOST = (ReservationExpired, ReservationFinalized, NotFound)


def _floor_int(value: float) -> int:
    return 0 if value <= 0 else (int(value) if value != INFINITY else 2**62)


def _next_delay(timing: LeaseTiming) -> int:
    if not timing.authoritative:
        cadence = min(timing.ttl_ms // 2, FALLBACK_MAX_CADENCE_MS)
        reserve = 2 * timing.attempt_budget_ms + timing.safety_margin_ms
        return min(cadence, _floor_int(timing.lead_floor_ms - reserve))
    reserve = 2 * timing.attempt_budget_ms + timing.safety_margin_ms
    return _floor_int(timing.lead_floor_ms - reserve)


def after_grant(
    previous: LeaseTiming | None,
    *,
    ttl_ms: int,
    request_timeout_ms: float | None,
    sent_at_ms: int,
    received_at_ms: int,
    expires_at_ms: int,
    remaining_ttl_ms: int | None,
) -> tuple[LeaseTiming, Plan]:
    """Plan the next beat after a schema-valid create (``previous is None``) or extend.

    >>> timing, plan = after_grant(None, ttl_ms=60_000, request_timeout_ms=10_000,
    ...     sent_at_ms=0, received_at_ms=1_500, expires_at_ms=10**12, remaining_ttl_ms=60_000)
    >>> plan
    Wait(delay_ms=35500)
    """
    rtt = max(0, received_at_ms - sent_at_ms)
    max_rtt = max(rtt, previous.max_rtt_ms if previous else 0)
    timeout = INFINITY if request_timeout_ms is None else math.ceil(request_timeout_ms)
    if remaining_ttl_ms is not None:
        lead = max(0, remaining_ttl_ms - rtt)
        authoritative = True
    elif previous is None:
        # The server set expiry at (its) now + ttl no earlier than our send time.
        lead = max(0, ttl_ms - rtt)
        authoritative = False
    else:
        granted = max(0, expires_at_ms - previous.expires_at_ms)
        lead = previous.current_lead_ms(received_at_ms) + granted
        authoritative = False
    timing = LeaseTiming(
        ttl_ms=ttl_ms,
        request_timeout_ms=timeout,
        max_rtt_ms=max_rtt,
        lead_floor_ms=lead,
        confirmed_at_ms=received_at_ms,
        expires_at_ms=expires_at_ms,
        authoritative=authoritative,
        zero_delay_beats=previous.zero_delay_beats if previous else 0,
    )
    delay = _next_delay(timing)
    if delay > 0:
        if timing.zero_delay_beats:
            timing = attrs.evolve(timing, zero_delay_beats=0)
        return timing, Wait(delay)
    if previous is not None and timing.zero_delay_beats >= 1:
        return timing, Stop("the lease cannot cover another extend attempt", lease_lost=False)
    # One immediate fresh extend is allowed; a second zero delay in a row stops.
    return attrs.evolve(timing, zero_delay_beats=timing.zero_delay_beats + 1), Wait(0)


@final
@attrs.frozen(kw_only=True)
class RetryState:
    """What the planner remembers across failed attempts of one extend."""

    last_failed_at_ms: int
    last_window_ms: float
    immediate_used: bool = False


def after_failure(
    timing: LeaseTiming,
    error: CyclesError,
    *,
    now_ms: int,
    retry: RetryState | None,
) -> tuple[RetryState | None, Plan]:
    """Plan after a failed extend attempt.

    >>> from cycleguard._core._errors import TimedOut
    >>> timing, _ = after_grant(None, ttl_ms=60_000, request_timeout_ms=5_000,
    ...     sent_at_ms=0, received_at_ms=0, expires_at_ms=10**12, remaining_ttl_ms=60_000)
    >>> after_failure(timing, TimedOut(phase="read", message="slow"), now_ms=40_000, retry=None)[1]
    RetrySameKey(delay_ms=5000)
    """
    if isinstance(error, TERMINAL_ERRORS):
        return None, Stop(f"server answered {type(error).__name__}", isinstance(error, _LOST))
    if not is_retryable(error):
        return None, Stop(f"extend rejected: {type(error).__name__}", lease_lost=False)
    lead = timing.current_lead_ms(now_ms)
    window = lead - timing.attempt_budget_ms - timing.safety_margin_ms
    if window < 0:
        return None, Stop("no safe recovery window remains", lease_lost=False)
    if retry is not None and now_ms <= retry.last_failed_at_ms and window >= retry.last_window_ms:
        return None, Stop("the recovery window is not shrinking", lease_lost=False)
    if window == 0:
        if retry is not None and retry.immediate_used:
            return None, Stop("the immediate retry failed", lease_lost=False)
        return (
            RetryState(last_failed_at_ms=now_ms, last_window_ms=window, immediate_used=True),
            RetrySameKey(0),
        )
    delay = _floor_int(min(MAX_RETRY_DELAY_MS, lead / 4, window))
    if isinstance(error, LimitExceeded | UnknownServerError) and error.retry_after is not None:
        wanted = math.ceil(error.retry_after * 1000)
        if wanted > window:
            return None, Stop("Retry-After exceeds the recovery window", lease_lost=False)
        delay = wanted
    return RetryState(last_failed_at_ms=now_ms, last_window_ms=window), RetrySameKey(delay)
