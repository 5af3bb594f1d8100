"""MockTransport: plain and async handlers, simulated failures, and misuse."""

from __future__ import annotations

from typing import Final

import anyio
import anyio.lowlevel
import pytest

from cycleguard.errors import (
    ConnectionFailed,
    InvalidResponse,
    TimedOut,
    TransportError,
    TransportUnavailable,
    UsageError,
)
from cycleguard.transports import HttpRequest, HttpResponse
from cycleguard.transports.mock import MockOutcome, MockTransport

from .conformance import expect_failure, expect_response

REQUEST: Final = HttpRequest(
    "POST", "http://cycles.test/v1/reservations", (("X-Cycles-API-Key", "k"),), b"{}"
)
RESPONSE: Final = HttpResponse(201, (("Content-Type", "application/json"),), b'{"ok": true}')


@pytest.mark.anyio
async def test_plain_handler_sees_the_request_and_answers() -> None:
    """A plain function gets the request unchanged; its response comes back as Success."""
    seen: list[HttpRequest] = []

    def handler(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        return RESPONSE

    async with MockTransport(handler) as transport:
        assert expect_response(await transport.send(REQUEST)) is RESPONSE
    assert seen == [REQUEST]


@pytest.mark.anyio
async def test_async_handler_answers() -> None:
    """An async function works the same way, and may await."""

    async def handler(request: HttpRequest) -> HttpResponse:
        await anyio.lowlevel.checkpoint()
        return RESPONSE

    async with MockTransport(handler) as transport:
        assert expect_response(await transport.send(REQUEST)) is RESPONSE


@pytest.mark.anyio
@pytest.mark.parametrize(
    "failure",
    [
        ConnectionFailed(message="refused", request_sent=False),
        ConnectionFailed(message="reset", request_sent=True),
        TimedOut(phase="read", message="slow"),
        InvalidResponse(message="garbage"),
        TransportUnavailable(message="closed"),
    ],
)
async def test_handler_can_simulate_each_failure(failure: TransportError) -> None:
    """A failure value returned by the handler (plain or async) comes back as Failure."""

    def plain(request: HttpRequest) -> MockOutcome:
        return failure

    async def awaited(request: HttpRequest) -> MockOutcome:
        return failure

    for handler in (MockTransport(plain), MockTransport(awaited)):
        assert expect_failure(await handler.send(REQUEST)) is failure


@pytest.mark.anyio
async def test_handler_returning_something_else_is_a_usage_error() -> None:
    """Returning neither a response nor a failure value is reported clearly."""

    def wrong(request: HttpRequest) -> object:
        return {"status": 200}

    transport = MockTransport(wrong)  # type: ignore[arg-type]  # the misuse under test
    with pytest.raises(UsageError, match="returned dict"):
        await transport.send(REQUEST)


@pytest.mark.anyio
async def test_handler_exceptions_propagate() -> None:
    """An exception in the handler is a bug in the test and surfaces as is."""

    def broken(request: HttpRequest) -> HttpResponse:
        raise KeyError("no such route")

    with pytest.raises(KeyError, match="no such route"):
        await MockTransport(broken).send(REQUEST)


@pytest.mark.anyio
async def test_requests_are_checked_like_a_real_transport() -> None:
    """A header value with a line break raises UsageError before the handler runs."""
    calls: list[HttpRequest] = []

    def handler(request: HttpRequest) -> HttpResponse:
        calls.append(request)
        return RESPONSE

    bad = HttpRequest("GET", "http://cycles.test/", (("X-Cycles-API-Key", "k\r\nX: 1"),))
    with pytest.raises(UsageError):
        await MockTransport(handler).send(bad)
    assert calls == []


@pytest.mark.anyio
async def test_send_is_a_cancellation_point() -> None:
    """Even with a plain handler, send raises if its scope is already cancelled."""
    calls: list[HttpRequest] = []

    def handler(request: HttpRequest) -> HttpResponse:
        calls.append(request)
        return RESPONSE

    transport = MockTransport(handler)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await transport.send(REQUEST)
    assert scope.cancelled_caught
    assert calls == []


@pytest.mark.anyio
async def test_closed_transport_does_not_call_the_handler() -> None:
    """After aclose (twice), send returns TransportUnavailable without calling the handler."""
    calls: list[HttpRequest] = []

    def handler(request: HttpRequest) -> HttpResponse:
        calls.append(request)
        return RESPONSE

    transport = MockTransport(handler)
    await transport.aclose()
    await transport.aclose()
    failure = expect_failure(await transport.send(REQUEST))
    assert isinstance(failure, TransportUnavailable)
    assert calls == []
