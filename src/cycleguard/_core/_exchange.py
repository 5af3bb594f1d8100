"""Pure request building and response interpretation for each runtime endpoint.

The client module only moves bytes: it asks this module for an
:class:`~cycleguard._core._http.HttpRequest`, hands it to a transport, and asks
this module what the :class:`~cycleguard._core._http.HttpResponse` means.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Generic, TypeVar, final
from urllib.parse import quote, urlencode

import attrs
from attrs import AttrsInstance
from returns.result import Failure, Result, Success

from cycleguard._core import _wire
from cycleguard._core._errors import (
    SERVER_ERROR_BY_CODE,
    CyclesError,
    Denied,
    ErrorCode,
    InvalidResponse,
    ServerError,
    UnknownServerError,
)
from cycleguard._core._http import Headers, HttpRequest, HttpResponse
from cycleguard._core._models import (
    BalanceResponse,
    CommitResponse,
    Decision,
    DecisionResponse,
    ErrorResponse,
    EventCreateResponse,
    ReasonCode,
    ReleaseResponse,
    Reservation,
    ReservationCreateResponse,
    ReservationDetail,
    ReservationExtendResponse,
    ReservationListResponse,
    ResponseMeta,
    UnknownReasonCode,
)

T = TypeVar("T", bound=AttrsInstance)
Query = Mapping[str, str | int | bool | datetime | enum.Enum | None]


@final
@attrs.frozen
class Endpoint(Generic[T]):
    """One runtime operation: where it lives and what a success looks like."""

    operation: str
    method: str
    path: str
    success_status: int
    response_type: type[T]
    carries_meta: bool = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda self: "meta" in attrs.fields_dict(self.response_type), takes_self=True
        ),
    )


DECIDE = Endpoint("decide", "POST", "/v1/decide", 200, DecisionResponse)
CREATE_RESERVATION = Endpoint(
    "createReservation", "POST", "/v1/reservations", 200, ReservationCreateResponse
)
LIST_RESERVATIONS = Endpoint(
    "listReservations", "GET", "/v1/reservations", 200, ReservationListResponse
)
GET_RESERVATION = Endpoint(
    "getReservation", "GET", "/v1/reservations/{reservation_id}", 200, ReservationDetail
)
COMMIT_RESERVATION = Endpoint(
    "commitReservation", "POST", "/v1/reservations/{reservation_id}/commit", 200, CommitResponse
)
RELEASE_RESERVATION = Endpoint(
    "releaseReservation", "POST", "/v1/reservations/{reservation_id}/release", 200, ReleaseResponse
)
EXTEND_RESERVATION = Endpoint(
    "extendReservation",
    "POST",
    "/v1/reservations/{reservation_id}/extend",
    200,
    ReservationExtendResponse,
)
GET_BALANCES = Endpoint("getBalances", "GET", "/v1/balances", 200, BalanceResponse)
CREATE_EVENT = Endpoint("createEvent", "POST", "/v1/events", 201, EventCreateResponse)


def _query_value(value: str | int | bool | datetime | enum.Enum) -> str:
    match value:
        case bool():
            return "true" if value else "false"
        case datetime():
            return value.isoformat()
        case enum.Enum():
            return str(value.value)
        case _:
            return str(value)


def build_url(
    base_url: str,
    endpoint: Endpoint[T],
    *,
    reservation_id: str | None = None,
    query: Query | None = None,
) -> str:
    """The absolute URL of ``endpoint``; path parameters are percent-encoded.

    >>> build_url("http://h:1/", GET_RESERVATION, reservation_id="a/b")
    'http://h:1/v1/reservations/a%2Fb'
    >>> build_url("http://h:1", GET_BALANCES, query={"tenant": "t", "agent": None})
    'http://h:1/v1/balances?tenant=t'
    """
    if query is None:
        query = {}
    path = endpoint.path
    if reservation_id is not None:
        path = path.replace("{reservation_id}", quote(reservation_id, safe=""))
    url = base_url.rstrip("/") + path
    pairs = [(key, _query_value(value)) for key, value in query.items() if value is not None]
    return f"{url}?{urlencode(pairs)}" if pairs else url


def build_request(
    endpoint: Endpoint[T],
    url: str,
    headers: Headers,
    body: object | None = None,
    idempotency_key: str | None = None,
) -> HttpRequest:
    """An HTTP request for ``endpoint``, with the JSON body and the idempotency header."""
    extra: Headers = ()
    payload = b""
    if body is not None:
        payload = _wire.encode(body)
        extra = (("Content-Type", "application/json"),)
    if idempotency_key is not None:
        extra = (*extra, ("X-Idempotency-Key", idempotency_key))
    return HttpRequest(endpoint.method, url, headers + extra, payload)


def _as_int(raw: str | None) -> int | None:
    if raw is None or not raw.strip().isdigit():
        return None
    return int(raw.strip())


def response_meta(response: HttpResponse) -> ResponseMeta:
    """The protocol headers of a response."""
    headers = {name.lower(): value for name, value in reversed(response.headers)}
    return ResponseMeta(
        status=response.status,
        request_id=headers.get("x-request-id"),
        trace_id=headers.get("x-cycles-trace-id"),
        tenant=headers.get("x-cycles-tenant"),
        rate_limit_remaining=_as_int(headers.get("x-ratelimit-remaining")),
        rate_limit_reset=_as_int(headers.get("x-ratelimit-reset")),
    )


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in delta-seconds; the HTTP-date form is not valid in this protocol.

    >>> parse_retry_after("3"), parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT")
    (3.0, None)
    """
    if value is None or not value.strip().isdigit():
        return None
    return float(int(value.strip()))


def server_error(response: HttpResponse, meta: ResponseMeta) -> ServerError | InvalidResponse:
    """Map an error response to its error value; a body that is no envelope is ambiguous."""
    decoded = _wire.decode(response.body, ErrorResponse)
    if not isinstance(decoded, Success):
        return InvalidResponse(
            message=f"HTTP {response.status} without a protocol error envelope",
            status=response.status,
            request_id=meta.request_id,
            trace_id=meta.trace_id,
            retry_after=parse_retry_after(response.header("Retry-After")),
        )
    envelope = decoded.unwrap()
    trace_id = envelope.trace_id or meta.trace_id
    retry = parse_retry_after(response.header("Retry-After"))
    try:
        code = ErrorCode(envelope.error)
    except ValueError:
        return UnknownServerError(
            error_code=envelope.error,
            status=response.status,
            message=envelope.message,
            request_id=envelope.request_id,
            trace_id=trace_id,
            details=envelope.details,
            retry_after=retry,
        )
    return SERVER_ERROR_BY_CODE[code](
        status=response.status,
        message=envelope.message,
        request_id=envelope.request_id,
        trace_id=trace_id,
        details=envelope.details,
        retry_after=retry,
    )


def interpret(response: HttpResponse, endpoint: Endpoint[T]) -> Result[T, CyclesError]:
    """What ``response`` means for ``endpoint``: the typed answer or a failure value."""
    meta = response_meta(response)
    if response.status == endpoint.success_status:
        decoded = _wire.decode(
            response.body, endpoint.response_type, meta=meta if endpoint.carries_meta else None
        )
        if isinstance(decoded, Success):
            return Success(decoded.unwrap())
        return Failure(
            InvalidResponse(
                message=f"{endpoint.operation}: {decoded.failure()}",
                status=response.status,
                request_id=meta.request_id,
                trace_id=meta.trace_id,
            )
        )
    if response.status >= 400:
        return Failure(server_error(response, meta))
    return Failure(
        InvalidResponse(
            message=f"{endpoint.operation}: unexpected HTTP {response.status}",
            status=response.status,
            request_id=meta.request_id,
            trace_id=meta.trace_id,
        )
    )


def reason_text(code: ReasonCode | UnknownReasonCode | None) -> str | None:
    """The wire string of a reason code."""
    return None if code is None else code.value


def denial(
    decision: Decision,
    reason_code: ReasonCode | UnknownReasonCode | None,
    retry_after_ms: int | None,
    affected_scopes: tuple[str, ...] | None,
    meta: ResponseMeta | None,
) -> Denied | None:
    """A :class:`Denied` value when ``decision`` is DENY, else ``None``."""
    if decision is not Decision.DENY:
        return None
    return Denied(
        reason_code=reason_text(reason_code),
        retry_after_ms=retry_after_ms,
        affected_scopes=affected_scopes or (),
        request_id=meta.request_id if meta else None,
        trace_id=meta.trace_id if meta else None,
    )


def decision_outcome(response: DecisionResponse) -> Result[DecisionResponse, CyclesError]:
    """A DENY decision becomes a :class:`Denied` failure."""
    denied = denial(
        response.decision,
        response.reason_code,
        response.retry_after_ms,
        response.affected_scopes,
        response.meta,
    )
    return Failure(denied) if denied else Success(response)


def dry_run_outcome(
    response: ReservationCreateResponse,
) -> Result[ReservationCreateResponse, CyclesError]:
    """A dry run that says DENY becomes a :class:`Denied` failure."""
    denied = denial(
        response.decision,
        response.reason_code,
        response.retry_after_ms,
        response.affected_scopes,
        response.meta,
    )
    return Failure(denied) if denied else Success(response)


def live_reservation(response: ReservationCreateResponse) -> Result[Reservation, CyclesError]:
    """Refine a live create response into a :class:`Reservation`, or say why it is invalid."""
    denied = denial(
        response.decision,
        response.reason_code,
        response.retry_after_ms,
        response.affected_scopes,
        response.meta,
    )
    if denied:
        return Failure(denied)
    if (
        response.reservation_id is None
        or response.reserved is None
        or response.expires_at_ms is None
    ):
        meta = response.meta
        return Failure(
            InvalidResponse(
                message="createReservation: a live grant lacks reservation_id, reserved or "
                "expires_at_ms",
                status=meta.status if meta else None,
                request_id=meta.request_id if meta else None,
                trace_id=meta.trace_id if meta else None,
            )
        )
    return Success(
        Reservation(
            reservation_id=response.reservation_id,
            decision=response.decision,
            reserved=response.reserved,
            expires_at_ms=response.expires_at_ms,
            affected_scopes=response.affected_scopes,
            scope_path=response.scope_path,
            remaining_ttl_ms=response.remaining_ttl_ms,
            caps=response.caps,
            balances=response.balances,
            cycles_evidence=response.cycles_evidence,
            meta=response.meta,
        )
    )
