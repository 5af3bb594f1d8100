"""The heartbeat arithmetic: the protocol's normative algorithm, pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cycleguard._core._errors import (
    BudgetExceeded,
    ConnectionFailed,
    CyclesError,
    LimitExceeded,
    MaxExtensionsExceeded,
    NotFound,
    ReservationExpired,
    ReservationFinalized,
    TenantClosed,
    TimedOut,
)
from cycleguard._core._heartbeat import (
    LeaseTiming,
    RetrySameKey,
    Stop,
    Wait,
    after_failure,
    after_grant,
)

FAR = 10**13


def grant(
    remaining: int | None,
    *,
    ttl: int = 60_000,
    timeout: float | None = 10_000,
    sent: int = 0,
    received: int = 0,
    previous: LeaseTiming | None = None,
    expires: int = FAR,
) -> tuple[LeaseTiming, object]:
    return after_grant(
        previous,
        ttl_ms=ttl,
        request_timeout_ms=timeout,
        sent_at_ms=sent,
        received_at_ms=received,
        expires_at_ms=expires,
        remaining_ttl_ms=remaining,
    )


def test_spec_worked_example() -> None:
    """Lead 60 s, timeout 10 s, rtt 1.5 s: budget 10 s, margin 3 s, next beat after 35.5 s."""
    timing, plan = grant(60_000, received=1_500)
    assert (timing.attempt_budget_ms, timing.safety_margin_ms) == (10_000, 3_000)
    assert plan == Wait(35_500)


def test_unbounded_timeout_means_extend_now() -> None:
    """With no request timeout the attempt budget is infinite: the delay is zero."""
    assert grant(60_000, timeout=None)[1] == Wait(0)


def test_two_zero_delays_in_a_row_stop() -> None:
    """One immediate fresh extend is allowed; a second zero delay stops (no busy loop)."""
    timing, plan = grant(20_000)
    assert plan == Wait(0)
    _, again = grant(20_000, previous=timing, received=10)
    assert isinstance(again, Stop)
    assert not again.lease_lost


def test_zero_delay_then_enough_lead_resumes() -> None:
    """An immediate extend that yields a real lead goes back to normal beats."""
    timing, _ = grant(20_000)
    timing, plan = grant(40_000, previous=timing, received=5)
    assert plan == Wait(40_000 - 5 - 21_000)
    assert timing.zero_delay_beats == 0


def test_fallback_uses_measured_grant_and_bounded_cadence() -> None:
    """Without remaining_ttl_ms: lead = ttl - rtt at first, then plus what expiry moved."""
    timing, plan = grant(None, ttl=120_000, received=1_000, expires=1_000_000)
    assert timing.lead_floor_ms == 119_000
    assert plan == Wait(30_000)  # min(ttl / 2, 30 s)
    timing, plan = grant(
        None, ttl=120_000, previous=timing, sent=30_000, received=30_500, expires=1_120_000
    )
    assert timing.lead_floor_ms == 119_000 - (30_500 - 1_000) + 120_000
    assert plan == Wait(30_000)


@pytest.mark.parametrize(
    "error",
    [
        ReservationExpired(status=410, message="m"),
        ReservationFinalized(status=409, message="m"),
        NotFound(status=404, message="m"),
    ],
)
def test_lost_lease_codes_stop_and_mark_lost(error: CyclesError) -> None:
    """Expired, finalized or unknown reservations end the heartbeat and the lease."""
    timing, _ = grant(60_000)
    _, plan = after_failure(timing, error, now_ms=30_000, retry=None)
    assert isinstance(plan, Stop)
    assert plan.lease_lost


@pytest.mark.parametrize(
    "error",
    [
        MaxExtensionsExceeded(status=409, message="m"),
        TenantClosed(status=409, message="m"),
        BudgetExceeded(status=409, message="m"),
    ],
)
def test_other_terminal_and_4xx_stop_without_losing(error: CyclesError) -> None:
    """Extension limit, closed tenant and other rejections stop; the lease is still held."""
    timing, _ = grant(60_000)
    _, plan = after_failure(timing, error, now_ms=30_000, retry=None)
    assert isinstance(plan, Stop)
    assert not plan.lease_lost


def test_transient_failure_retries_within_the_window() -> None:
    """delay = min(30 s, lead / 4, window); the same key is reused."""
    timing, _ = grant(60_000, timeout=5_000)
    state, plan = after_failure(
        timing, TimedOut(phase="read", message="x"), now_ms=20_000, retry=None
    )
    # lead 40 s, window 40 - 5 - 1 = 34 s, lead / 4 = 10 s
    assert plan == RetrySameKey(10_000)
    assert state is not None
    _, plan = after_failure(timing, ConnectionFailed(message="x"), now_ms=50_000, retry=state)
    # lead 10 s, window 4 s
    assert plan == RetrySameKey(2_500)


def test_no_window_means_stop() -> None:
    """When the remaining lead cannot fit another attempt, the heartbeat stops."""
    timing, _ = grant(60_000, timeout=5_000)
    _, plan = after_failure(timing, TimedOut(phase="read", message="x"), now_ms=58_000, retry=None)
    assert plan == Stop("no safe recovery window remains", lease_lost=False)


def test_retry_after_only_inside_the_window() -> None:
    """429's Retry-After is honoured when it fits, otherwise the heartbeat stops."""
    timing, _ = grant(60_000, timeout=5_000)
    fits = LimitExceeded(status=429, message="slow down", retry_after=3.0)
    assert after_failure(timing, fits, now_ms=20_000, retry=None)[1] == RetrySameKey(3_000)
    too_long = LimitExceeded(status=429, message="slow down", retry_after=60.0)
    assert isinstance(after_failure(timing, too_long, now_ms=20_000, retry=None)[1], Stop)


def test_window_that_does_not_shrink_stops() -> None:
    """Failures with no time passing and no smaller window cannot loop forever."""
    timing, _ = grant(60_000, timeout=5_000)
    error = ConnectionFailed(message="x")
    state, _ = after_failure(timing, error, now_ms=20_000, retry=None)
    _, plan = after_failure(timing, error, now_ms=20_000, retry=state)
    assert plan == Stop("the recovery window is not shrinking", lease_lost=False)


@given(
    remaining=st.integers(0, 86_400_000),
    rtt=st.integers(0, 20_000),
    timeout=st.integers(1, 60_000),
)
def test_next_beat_always_leaves_room_for_two_attempts(
    remaining: int, rtt: int, timeout: int
) -> None:
    """Whenever a positive delay is planned, two attempts and the margin still fit after it."""
    timing, plan = grant(remaining, timeout=timeout, received=rtt)
    assert isinstance(plan, Wait)
    if plan.delay_ms > 0:
        left = timing.lead_floor_ms - plan.delay_ms
        assert left >= 2 * timing.attempt_budget_ms + timing.safety_margin_ms
