"""The HTTP edge shared by both planes: ids, trace ids, strict bodies and the error envelope.

Everything here is synchronous and free of I/O; the Starlette handlers in
:mod:`cycleguard.server.app` call it.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Generic, TypeVar, cast, final

import attrs
from returns.pipeline import is_successful
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from cycleguard._core._errors import ErrorCode
from cycleguard._core._validation import Request, reservation_id_issues, validate
from cycleguard._core._wire import STRICT, decode, structure
from cycleguard.server.records import (
    JsonText,
    Rejection,
    Reply,
    compact_json,
    read_json,
    rejection,
)
from cycleguard.server.runtime import canonical_digest

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from starlette.types import Message, Receive

    from cycleguard._core._errors import ValidationIssue
    from cycleguard._core._json import JsonObject, JsonValue

__all__ = (
    "RUNTIME_HEADERS",
    "Decoded",
    "RequestContext",
    "check_idempotency_header",
    "decode_body",
    "decode_request",
    "invalid",
    "raw_response",
    "read_body",
    "render",
    "request_context",
    "runtime_headers",
    "trace_id_from",
)

T = TypeVar("T")
R = TypeVar("R", bound=Request)

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@final
@attrs.frozen
class RequestContext:
    """Per-request correlation: a fresh request id and the effective trace id."""

    request_id: str
    trace_id: str


def _random_id() -> str:
    """32 random hex digits, as ``secrets.token_hex(16)`` makes them (without its layers)."""
    return os.urandom(16).hex()


def _new_trace_id() -> str:
    while True:
        trace_id = _random_id()
        if trace_id != _ZERO_TRACE:
            return trace_id


def trace_id_from(traceparent: str | None, flat: str | None) -> str:
    """The trace id by the protocol's precedence: ``traceparent``, then the flat header.

    Malformed or all-zero values count as absent; with neither valid, a new
    random id is made.

    >>> trace_id_from(None, "0af7651916cd43dd8448eb211c80319c")
    '0af7651916cd43dd8448eb211c80319c'
    """
    if traceparent is not None:
        match = _TRACEPARENT.fullmatch(traceparent.strip())
        if match and match.group(1) != _ZERO_TRACE and match.group(2) != _ZERO_SPAN:
            return match.group(1)
    if flat is not None:
        value = flat.strip()
        if _TRACE_ID.fullmatch(value) and value != _ZERO_TRACE:
            return value
    return _new_trace_id()


def request_context(headers: Mapping[str, str]) -> RequestContext:
    """The correlation ids of a request with these (case-insensitive) headers."""
    return RequestContext(
        request_id=_random_id(),
        trace_id=trace_id_from(headers.get("traceparent"), headers.get("x-cycles-trace-id")),
    )


def _answer(
    outcome: Reply | Rejection, context: RequestContext
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (with the correlation ids every response carries) and JSON body."""
    headers = {"x-request-id": context.request_id, "x-cycles-trace-id": context.trace_id}
    if isinstance(outcome, Reply):
        if outcome.tenant is not None:
            headers["x-cycles-tenant"] = outcome.tenant
        body: JsonObject = outcome.body
        status = outcome.status
    else:
        envelope: dict[str, JsonValue] = {
            "error": outcome.error,
            "message": outcome.message,
            "request_id": context.request_id,
            "trace_id": context.trace_id,
        }
        if outcome.details is not None:
            envelope["details"] = outcome.details
        body, status = envelope, outcome.status
    text = body.text if type(body) is JsonText else compact_json(body)
    return status, headers, text.encode("utf-8")


def render(outcome: Reply | Rejection, context: RequestContext) -> Response:
    """The HTTP response for an outcome, with the correlation headers every response carries."""
    status, headers, body = _answer(outcome, context)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def raw_response(outcome: Reply | Rejection, context: RequestContext) -> tuple[Message, Message]:
    """The ASGI messages of :func:`render`'s response (the same status, headers and body)."""
    status, headers, body = _answer(outcome, context)
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    raw.append((b"content-length", str(len(body)).encode("latin-1")))
    raw.append((b"content-type", b"application/json"))
    start: Message = {"type": "http.response.start", "status": status, "headers": raw}
    return start, {"type": "http.response.body", "body": body}


RUNTIME_HEADERS = frozenset(
    (
        b"x-cycles-api-key",
        b"x-admin-api-key",
        b"x-idempotency-key",
        b"traceparent",
        b"x-cycles-trace-id",
    )
)
"""Every request header the runtime plane's POST endpoints read."""


def runtime_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The :data:`RUNTIME_HEADERS` of an ASGI request, the first of each (as Starlette reads
    them). ASGI header names are lower-case."""
    found: dict[str, str] = {}
    for name, value in raw:
        if name in RUNTIME_HEADERS:
            found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return found


async def read_body(receive: Receive) -> bytes:
    """The whole body of an ASGI request (as Starlette's ``Request.body``)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def invalid(message: str, issues: tuple[ValidationIssue, ...] = ()) -> Rejection:
    """A 400 ``INVALID_REQUEST``, listing each broken rule in ``details.issues``."""
    details: JsonObject | None = None
    if issues:
        details = {"issues": [{"field": i.field, "message": i.message} for i in issues]}
    return rejection(ErrorCode.INVALID_REQUEST, message, details)


def decode_body(raw: bytes, cls: type[T]) -> T | Rejection:
    """Strictly decode a JSON object body into ``cls``: unknown fields, nulls,
    wrong types and out-of-range integers are all 400."""
    if not raw.strip():
        return invalid("Request body is empty; a JSON object is required")
    decoded = decode(raw, cls, converter=STRICT)
    if not is_successful(decoded):
        return invalid(f"Invalid request body: {decoded.failure()}")
    return decoded.unwrap()


@final
@attrs.frozen
class Decoded(Generic[R]):
    """A protocol request that passed every check, and the digest of its payload."""

    request: R
    digest: str


def decode_request(raw: bytes, cls: type[R]) -> Decoded[R] | Rejection:
    """Strictly decode and check a protocol request (field rules: :func:`validate`);
    its idempotency digest is taken from the JSON as sent (:func:`canonical_digest`)."""
    if not raw.strip():
        return invalid("Request body is empty; a JSON object is required")
    try:
        data = read_json(raw)
    except ValueError as error:  # orjson.JSONDecodeError and UnicodeDecodeError included
        return invalid(f"Invalid request body: body is not JSON: {error}")
    if not isinstance(data, dict):
        return invalid(f"Invalid request body: expected a JSON object, got {type(data).__name__}")
    body = cast("dict[str, object]", data)
    structured = structure(body, cls, converter=STRICT)
    if not is_successful(structured):
        return invalid(f"Invalid request body: {structured.failure()}")
    request = structured.unwrap()
    issues = validate(request)
    if issues:
        return invalid("Invalid request: " + "; ".join(str(i) for i in issues), issues)
    return Decoded(request, canonical_digest(body))


def check_idempotency_header(header: str | None, request: R | Rejection) -> R | Rejection:
    """``X-Idempotency-Key``, when sent, must equal the body's ``idempotency_key``."""
    if isinstance(request, Rejection) or header is None or header == request.idempotency_key:
        return request
    return invalid("X-Idempotency-Key header does not match idempotency_key in the request body")


def check_reservation_id(reservation_id: str) -> Rejection | None:
    """A reservation id in a path must be 1 to 128 characters."""
    issues = reservation_id_issues(reservation_id)
    if issues:
        return invalid("Invalid reservation id: " + "; ".join(str(i) for i in issues), issues)
    return None
