"""What each HTTP answer means: typed success, typed server error, or ambiguity."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from returns.pipeline import is_successful

from cycleguard import Amount, Decision, DecisionResponse, ReservationCreateResponse
from cycleguard._core import _exchange
from cycleguard._core._errors import (
    SERVER_ERROR_BY_CODE,
    BudgetExceeded,
    CyclesError,
    Denied,
    ErrorCode,
    InvalidResponse,
    LimitExceeded,
    ServerError,
    UnknownServerError,
)
from cycleguard._core._http import Headers, HttpResponse

if TYPE_CHECKING:
    from returns.result import Result

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def response(status: int, body: object, headers: Headers = ()) -> HttpResponse:
    return HttpResponse(status, headers, json.dumps(body).encode())


def failure_of(result: Result[object, CyclesError]) -> CyclesError:
    assert not is_successful(result), result
    return result.failure()


def server_failure(result: Result[object, CyclesError]) -> ServerError:
    error = failure_of(result)
    assert isinstance(error, ServerError), error
    return error


def envelope(code: str) -> dict[str, object]:
    return {"error": code, "message": "why", "request_id": "req-1", "trace_id": TRACE}


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_maps_to_its_variant(code: ErrorCode) -> None:
    """Each of the 17 protocol codes becomes its own final class, carrying the envelope."""
    error = server_failure(
        _exchange.interpret(response(409, envelope(code.value)), _exchange.DECIDE)
    )
    assert type(error) is SERVER_ERROR_BY_CODE[code]
    assert (error.status, error.message, error.request_id, error.trace_id) == (
        409,
        "why",
        "req-1",
        TRACE,
    )


def test_all_seventeen_codes_are_mapped() -> None:
    """The table covers the whole ErrorCode enum."""
    assert len(SERVER_ERROR_BY_CODE) == len(ErrorCode) == 17


def test_unknown_error_code_is_kept() -> None:
    """A future error code is an UnknownServerError holding the code, not a crash."""
    error = failure_of(_exchange.interpret(response(409, envelope("QUOTA_GONE")), _exchange.DECIDE))
    assert error == UnknownServerError(
        error_code="QUOTA_GONE", status=409, message="why", request_id="req-1", trace_id=TRACE
    )


def test_retry_after_is_parsed_from_delta_seconds() -> None:
    """429 carries Retry-After in seconds; the HTTP-date form is not valid here."""
    seconds = response(429, envelope("LIMIT_EXCEEDED"), (("Retry-After", "7"),))
    error = failure_of(_exchange.interpret(seconds, _exchange.DECIDE))
    assert isinstance(error, LimitExceeded)
    assert error.retry_after == 7.0
    dated = response(
        429, envelope("LIMIT_EXCEEDED"), (("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT"),)
    )
    assert server_failure(_exchange.interpret(dated, _exchange.DECIDE)).retry_after is None


def test_bodyless_429_keeps_its_retry_after() -> None:
    """A 429 from a proxy (no envelope) is ambiguous but still says how long to wait."""
    raw = HttpResponse(429, (("Retry-After", "4"),), b"slow down")
    error = failure_of(_exchange.interpret(raw, _exchange.COMMIT_RESERVATION))
    assert error == InvalidResponse(
        message="HTTP 429 without a protocol error envelope", status=429, retry_after=4.0
    )


def test_trace_id_falls_back_to_the_header() -> None:
    """An envelope without trace_id takes the X-Cycles-Trace-Id header."""
    body = {"error": "BUDGET_EXCEEDED", "message": "m", "request_id": "r"}
    error = failure_of(
        _exchange.interpret(response(409, body, (("X-Cycles-Trace-Id", TRACE),)), _exchange.DECIDE)
    )
    assert isinstance(error, BudgetExceeded)
    assert error.trace_id == TRACE


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (502, "<html>bad gateway</html>"),
        (404, {"detail": "Not Found"}),
        (200, {"decision": 1}),
        (204, None),
        (302, None),
    ],
)
def test_answers_that_are_not_protocol_answers_are_invalid(status: int, body: object) -> None:
    """Proxies' error pages, wrong shapes and unexpected statuses are InvalidResponse."""
    raw = HttpResponse(
        status, (), body.encode() if isinstance(body, str) else json.dumps(body).encode()
    )
    error = failure_of(_exchange.interpret(raw, _exchange.DECIDE))
    assert isinstance(error, InvalidResponse)
    assert error.status == status


def test_success_carries_response_meta() -> None:
    """Request id, trace id, tenant and rate-limit headers reach the caller."""
    headers = (
        ("X-Request-Id", "req-9"),
        ("X-Cycles-Trace-Id", TRACE),
        ("X-Cycles-Tenant", "acme"),
        ("X-RateLimit-Remaining", "41"),
        ("X-RateLimit-Reset", "1712956830"),
    )
    result = _exchange.interpret(response(200, {"decision": "ALLOW"}, headers), _exchange.DECIDE)
    meta = result.unwrap().meta
    assert meta is not None
    assert (
        meta.request_id,
        meta.trace_id,
        meta.tenant,
        meta.rate_limit_remaining,
        meta.rate_limit_reset,
    ) == (
        "req-9",
        TRACE,
        "acme",
        41,
        1712956830,
    )


def test_events_succeed_with_201_only() -> None:
    """createEvent answers 201; a 200 is not the protocol's answer."""
    body = {"status": "APPLIED", "event_id": "e1"}
    assert is_successful(_exchange.interpret(response(201, body), _exchange.CREATE_EVENT))
    assert isinstance(
        failure_of(_exchange.interpret(response(200, body), _exchange.CREATE_EVENT)),
        InvalidResponse,
    )


def test_deny_decision_becomes_denied() -> None:
    """DENY is a Denied failure that keeps reason, retry hint and scopes."""
    decided = DecisionResponse(
        decision=Decision.DENY, reason_code=None, retry_after_ms=250, affected_scopes=("tenant:a",)
    )
    assert failure_of(_exchange.decision_outcome(decided)) == Denied(
        reason_code=None, retry_after_ms=250, affected_scopes=("tenant:a",)
    )
    allowed = DecisionResponse(decision=Decision.ALLOW)
    assert _exchange.decision_outcome(allowed).unwrap() is allowed


def test_live_grant_needs_its_fields() -> None:
    """A live ALLOW without a reservation id is not a grant: the outcome is ambiguous."""
    partial = ReservationCreateResponse(decision=Decision.ALLOW, affected_scopes=("tenant:a",))
    assert isinstance(failure_of(_exchange.live_reservation(partial)), InvalidResponse)
    full = ReservationCreateResponse(
        decision=Decision.ALLOW,
        affected_scopes=("tenant:a",),
        reservation_id="r1",
        reserved=Amount.tokens(5),
        expires_at_ms=10,
        remaining_ttl_ms=9,
    )
    granted = _exchange.live_reservation(full).unwrap()
    assert (granted.reservation_id, granted.reserved, granted.expires_at_ms) == (
        "r1",
        Amount.tokens(5),
        10,
    )


def test_urls_encode_path_parameters_and_skip_unset_queries() -> None:
    """Reservation ids are percent-encoded; None query values are left out."""
    url = _exchange.build_url("http://h:1/", _exchange.COMMIT_RESERVATION, reservation_id="a b/c")
    assert url == "http://h:1/v1/reservations/a%20b%2Fc/commit"
    listed = _exchange.build_url(
        "http://h",
        _exchange.LIST_RESERVATIONS,
        query={"tenant": "t", "limit": 5, "status": None, "x": True},
    )
    assert listed == "http://h/v1/reservations?tenant=t&limit=5&x=true"
