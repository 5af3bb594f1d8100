"""``MockTransport``: a transport that answers with your function, for tests.

Like ``httpx.MockTransport``: the handler receives each
:class:`~cycleguard.transports.HttpRequest` and returns an
:class:`~cycleguard.transports.HttpResponse`, or a transport failure value
(:class:`~cycleguard.errors.ConnectionFailed`, :class:`~cycleguard.errors.TimedOut`,
…) to simulate the network failing. It may be a plain or an ``async`` function.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Self, TypeAlias, final

import anyio.lowlevel
from returns.result import Failure, Result, Success

from cycleguard._core._errors import (
    ConnectionFailed,
    InvalidResponse,
    TimedOut,
    TransportError,
    TransportUnavailable,
    UsageError,
)
from cycleguard._core._http import HttpRequest, HttpResponse
from cycleguard.transports._util import check_request, closed

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ("MockHandler", "MockOutcome", "MockTransport")

MockOutcome: TypeAlias = HttpResponse | TransportError
"""What a handler answers: a response, or the failure the network would produce."""

MockHandler: TypeAlias = Callable[[HttpRequest], MockOutcome | Awaitable[MockOutcome]]
"""A plain or ``async`` function from request to :data:`MockOutcome`."""


def _as_result(outcome: object) -> Result[HttpResponse, TransportError]:
    if isinstance(outcome, HttpResponse):
        return Success(outcome)
    if isinstance(outcome, ConnectionFailed | TimedOut | InvalidResponse | TransportUnavailable):
        return Failure(outcome)
    raise UsageError(
        f"MockTransport handler returned {type(outcome).__name__}; expected an HttpResponse"
        " or a transport failure value (ConnectionFailed, TimedOut, InvalidResponse,"
        " TransportUnavailable)"
    )


@final
class MockTransport:
    """Answers every request with ``handler``, in process; runs on asyncio and on trio.

    Requests are checked as a real transport checks them (a header value with a line
    break raises :class:`~cycleguard.errors.UsageError`), ``send`` is a cancellation
    point, and after :meth:`aclose` it returns
    :class:`~cycleguard.errors.TransportUnavailable`. Exceptions the handler raises
    propagate unchanged: they are bugs in the test, not network conditions.

    Args:
        handler: A plain or ``async`` function from request to response or failure value.

    Example::

        def handler(request: HttpRequest) -> HttpResponse | TransportError:
            if request.url.endswith("/v1/reservations"):
                return TimedOut(phase="read", message="simulated")
            return HttpResponse(200, (("Content-Type", "application/json"),), b"{}")

        transport = MockTransport(handler)
    """

    def __init__(self, handler: MockHandler) -> None:
        self._handler = handler
        self._closed = False

    async def send(self, request: HttpRequest) -> Result[HttpResponse, TransportError]:
        """Return the handler's answer to ``request`` as a ``Result``.

        Raises:
            UsageError: ``request`` cannot be sent as HTTP/1.1, or the handler returned
                something that is neither a response nor a transport failure value.
        """
        await anyio.lowlevel.checkpoint()
        if self._closed:
            return Failure(closed("MockTransport"))
        check_request(request)
        outcome: object = self._handler(request)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        return _as_result(outcome)

    async def aclose(self) -> None:
        """Mark the transport closed. Safe to call more than once."""
        self._closed = True
        await anyio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
