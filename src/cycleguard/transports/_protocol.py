"""The one interface every HTTP transport implements."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from returns.result import Result

    from cycleguard._core._errors import TransportError
    from cycleguard._core._http import HttpRequest, HttpResponse


class Transport(Protocol):
    """Sends one request and returns the response or a transport failure value.

    Implementations never raise for network conditions: a refused connection is
    :class:`~cycleguard.errors.ConnectionFailed`, a timeout is
    :class:`~cycleguard.errors.TimedOut`, a response that is not valid HTTP is
    :class:`~cycleguard.errors.InvalidResponse`. Cancellation always propagates.
    ``aclose`` is idempotent; sending after it returns
    :class:`~cycleguard.errors.TransportUnavailable`. A request HTTP/1.1 cannot
    carry (a header value with a line break, a relative URL) is programmer misuse
    and raises :class:`~cycleguard.errors.UsageError` before any I/O.
    """

    async def send(self, request: HttpRequest) -> Result[HttpResponse, TransportError]:
        """Send ``request`` and return the full response."""
        ...

    async def aclose(self) -> None:
        """Release every connection this transport owns. Safe to call twice."""
        ...
