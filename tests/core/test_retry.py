"""Settlement retry rules: the outcome table, backoff with jitter, Retry-After clamping."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cycleguard._core._errors import (
    SERVER_ERROR_BY_CODE,
    BudgetExceeded,
    ConnectionFailed,
    CyclesError,
    Denied,
    ErrorCode,
    Forbidden,
    IdempotencyMismatch,
    InternalError,
    InvalidRequest,
    InvalidResponse,
    LimitExceeded,
    NotFound,
    ReservationExpired,
    ReservationFinalized,
    TimedOut,
    TransportUnavailable,
    Unauthorized,
    UnknownServerError,
    ValidationFailed,
)
from cycleguard._core._retry import (
    MAX_HONOURED_DELAY,
    Backoff,
    Disposition,
    Operation,
    clamp_retry_after,
    classify,
    not_before_ms,
    remaining_floor,
    retry_after_of,
)

R = Disposition


def ambiguous(status: int | None) -> InvalidResponse:
    return InvalidResponse(message="not a schema-valid answer", status=status)


# The §2.6 table, row by row ------------------------------------------------------------

TABLE: list[tuple[str, CyclesError, Operation, Disposition]] = [
    # Other 2xx, malformed body, JSON null: ambiguous, same key.
    ("202 valid body", ambiguous(202), "commit", R.RETRY),
    ("200 missing charged", ambiguous(200), "commit", R.RETRY),
    ("201 malformed event", ambiguous(201), "event", R.RETRY),
    ("200 on an event", ambiguous(200), "event", R.RETRY),
    ("no status at all", ambiguous(None), "commit", R.RETRY),
    # Transport error, timeout, 5xx: retry.
    ("lost response", ConnectionFailed(message="reset", request_sent=True), "commit", R.RETRY),
    ("read timeout", TimedOut(phase="read", message="slow"), "event", R.RETRY),
    ("500 envelope", InternalError(status=500, message="boom"), "commit", R.RETRY),
    ("502 proxy page", ambiguous(502), "commit", R.RETRY),
    (
        "503 unknown code",
        UnknownServerError(error_code="X", status=503, message=""),
        "event",
        R.RETRY,
    ),
    # 429 or LIMIT_EXCEEDED at any status: rate limited.
    (
        "429",
        LimitExceeded(status=429, message="slow down", retry_after=2.0),
        "commit",
        R.RATE_LIMITED,
    ),
    ("bodyless 429", ambiguous(429), "commit", R.RATE_LIMITED),
    (
        "429 unknown code",
        UnknownServerError(error_code="X", status=429, message=""),
        "event",
        R.RATE_LIMITED,
    ),
    ("LIMIT_EXCEEDED on 400", LimitExceeded(status=400, message="odd"), "commit", R.RATE_LIMITED),
    ("LIMIT_EXCEEDED on 503", LimitExceeded(status=503, message="odd"), "event", R.RATE_LIMITED),
    # 401/403: keep, stop this run.
    ("401", Unauthorized(status=401, message="bad key"), "commit", R.AUTH_STOP),
    ("403", Forbidden(status=403, message="other tenant"), "event", R.AUTH_STOP),
    ("bodyless 401", ambiguous(401), "commit", R.AUTH_STOP),
    ("403 with another code", BudgetExceeded(status=403, message="odd"), "commit", R.AUTH_STOP),
    # Commit: 410 or RESERVATION_EXPIRED -> event fallback.
    ("410", ReservationExpired(status=410, message="gone"), "commit", R.EXPIRED),
    ("bodyless 410", ambiguous(410), "commit", R.EXPIRED),
    (
        "410 unknown code",
        UnknownServerError(error_code="X", status=410, message=""),
        "commit",
        R.EXPIRED,
    ),
    ("EXPIRED on 409", ReservationExpired(status=409, message="odd"), "commit", R.EXPIRED),
    # Commit: RESERVATION_FINALIZED -> done.
    ("finalized", ReservationFinalized(status=409, message="done"), "commit", R.FINALIZED),
    # Known non-retryable 4xx -> genuine rejection.
    ("idempotency mismatch", IdempotencyMismatch(status=409, message="x"), "commit", R.REJECTED),
    ("budget exceeded event", BudgetExceeded(status=409, message="x"), "event", R.REJECTED),
    ("invalid request", InvalidRequest(status=400, message="x"), "commit", R.REJECTED),
    ("not found", NotFound(status=404, message="x"), "commit", R.REJECTED),
    ("expired code on an event", ReservationExpired(status=409, message="x"), "event", R.REJECTED),
    ("finalized on an event", ReservationFinalized(status=409, message="x"), "event", R.REJECTED),
    # Other 4xx: no code, unknown code, retryable code -> keep, stop.
    ("codeless 400", ambiguous(400), "commit", R.STOP),
    ("codeless 404 proxy page", ambiguous(404), "event", R.STOP),
    ("bodyless 410 on an event", ambiguous(410), "event", R.STOP),
    (
        "unknown code 422",
        UnknownServerError(error_code="NEW", status=422, message=""),
        "commit",
        R.STOP,
    ),
    ("INTERNAL_ERROR on 400", InternalError(status=400, message="contradiction"), "commit", R.STOP),
    # Nothing sent or sendable here: keep, stop.
    ("transport closed", TransportUnavailable(message="closed"), "commit", R.STOP),
    ("invalid locally", ValidationFailed(()), "event", R.STOP),
    ("deny", Denied(reason_code="BUDGET_EXCEEDED"), "commit", R.STOP),
]


@pytest.mark.parametrize(
    ("error", "operation", "expected"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_outcome_table(error: CyclesError, operation: Operation, expected: Disposition) -> None:
    """Each row of the profile's outcome table (§2.6) classifies as the peers do."""
    assert classify(error, operation) is expected


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.value)
def test_every_known_code_on_a_409_keeps_or_removes_as_the_table_says(code: ErrorCode) -> None:
    """Only known, non-retryable codes remove a record; auth codes and retryable ones keep it."""
    error = SERVER_ERROR_BY_CODE[code](status=409, message="x")
    disposition = classify(error, "commit")
    if code in {ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN}:
        assert disposition is R.AUTH_STOP
    elif code is ErrorCode.LIMIT_EXCEEDED:
        assert disposition is R.RATE_LIMITED
    elif code is ErrorCode.INTERNAL_ERROR:
        assert disposition is R.STOP
    elif code is ErrorCode.RESERVATION_EXPIRED:
        assert disposition is R.EXPIRED
    elif code is ErrorCode.RESERVATION_FINALIZED:
        assert disposition is R.FINALIZED
    else:
        assert disposition is R.REJECTED


def test_only_removal_dispositions_drop_the_record() -> None:
    """Everything but FINALIZED and REJECTED keeps the durable record."""
    assert {d for d in Disposition if not d.keeps_record} == {R.FINALIZED, R.REJECTED}


@given(status=st.integers(min_value=100, max_value=599), op=st.sampled_from(["commit", "event"]))
def test_no_status_ever_rejects_without_a_known_code(status: int, op: Operation) -> None:
    """A codeless answer never destroys a record, whatever its status."""
    assert classify(ambiguous(status), op).keeps_record


# Retry-After ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_seconds", "expected"),
    [
        (None, None),
        (0.0, 0.0),
        (2.0, 2.0),
        (3600.0, 3600.0),
        (3601.0, 3600.0),
        (1e300, 3600.0),
        (-1.0, None),
        (math.inf, None),
        (math.nan, None),
    ],
)
def test_retry_after_is_clamped_to_an_hour(
    given_seconds: float | None, expected: float | None
) -> None:
    """Negative, infinite and NaN delays are unusable; anything longer than an hour is an hour."""
    assert clamp_retry_after(given_seconds) == expected


def test_retry_after_cap_can_only_lower_the_bound() -> None:
    """A policy cap lowers the bound; it never raises it past one hour."""
    assert clamp_retry_after(100.0, cap=10.0) == 10.0
    assert clamp_retry_after(7200.0, cap=10_000.0) == MAX_HONOURED_DELAY


def test_retry_after_comes_only_from_server_errors() -> None:
    """A server error's header is used; transport failures and bodyless answers have none."""
    assert retry_after_of(LimitExceeded(status=429, message="x", retry_after=2.0)) == 2.0
    assert retry_after_of(LimitExceeded(status=429, message="x", retry_after=99_999.0)) == 3600.0
    assert retry_after_of(LimitExceeded(status=429, message="x")) is None
    assert retry_after_of(ambiguous(429)) is None
    assert retry_after_of(TimedOut(phase="read", message="x")) is None


def test_floor_is_absolute_and_restored_with_a_bound() -> None:
    """A floor is now + delay in epoch ms; restoring it waits the rest, at most an hour."""
    floor = not_before_ms(1_700_000_000_000, 2.0)
    assert floor == 1_700_000_002_000
    assert remaining_floor(floor, 1_700_000_000_500) == 1.5
    assert remaining_floor(floor, floor) == 0.0
    assert remaining_floor(floor, floor + 1) == 0.0
    assert remaining_floor(None, 0) == 0.0
    # A corrupt or hostile floor days ahead parks the record for one hour only.
    assert remaining_floor(10**15, 0) == MAX_HONOURED_DELAY


# Backoff -------------------------------------------------------------------------------


def test_default_schedule_matches_the_official_sdks_without_jitter() -> None:
    """0.5 s doubling to a 30 s cap: 0.5, 1, 2, 4, 8, 16, 30, 30."""
    backoff = Backoff(jitter=0.0)
    assert [backoff.ceiling(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


@given(retry=st.integers(min_value=0, max_value=10_000), seed=st.integers())
def test_jitter_only_shortens_the_wait(retry: int, seed: int) -> None:
    """A jittered wait lies in [(1 - jitter) * ceiling, ceiling]: the schedule bounds the total."""
    backoff = Backoff(jitter=0.25)
    delay = backoff.delay(retry, random.Random(seed))
    ceiling = backoff.ceiling(retry)
    assert 0.75 * ceiling <= delay <= ceiling <= backoff.max_delay


def test_jitter_comes_from_the_injected_random() -> None:
    """The same seed gives the same schedule; different seeds spread retries apart."""
    backoff = Backoff(jitter=0.5)
    first = [backoff.delay(n, random.Random(1)) for n in range(5)]
    again = [backoff.delay(n, random.Random(1)) for n in range(5)]
    other = [backoff.delay(n, random.Random(2)) for n in range(5)]
    assert first == again
    assert first != other


def test_huge_multipliers_do_not_overflow() -> None:
    """An exponent that would overflow a float is capped at max_delay."""
    assert Backoff(multiplier=1e308, max_delay=7.0, jitter=0.0).ceiling(5_000) == 7.0


@pytest.mark.parametrize(
    "kwargs", [{"initial": -1.0}, {"multiplier": 0.5}, {"max_delay": -1.0}, {"jitter": 1.5}]
)
def test_backoff_rejects_nonsense(kwargs: dict[str, float]) -> None:
    """Negative delays, shrinking multipliers and jitter above 100 % are refused."""
    with pytest.raises(ValueError):
        Backoff(**kwargs)
