"""``HttpxTransport``: the transport protocol on ``httpx.AsyncClient``, for asyncio and trio.

Install with ``pip install cycleguard[httpx]``. If you use ``openai>=3`` you already
have ``httpx2``; :mod:`cycleguard.transports.httpx2` avoids a second HTTP stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Self, final

import anyio
import anyio.lowlevel
import httpx
from returns.result import Failure, Result, Success

from cycleguard._core._errors import TransportError, TransportUnavailable
from cycleguard._core._http import HttpRequest, HttpResponse
from cycleguard.transports._httpx_family import httpx_family_errors, timeout_extension
from cycleguard.transports._util import DEFAULT_TIMEOUTS, check_request, closed, decode_headers

if TYPE_CHECKING:
    from types import TracebackType

    from cycleguard._core._http import Timeouts

__all__ = ("HttpxTransport",)

_ERRORS: Final = httpx_family_errors(
    connect_timeout=httpx.ConnectTimeout,
    read_timeout=httpx.ReadTimeout,
    write_timeout=httpx.WriteTimeout,
    pool_timeout=httpx.PoolTimeout,
    timeout_exception=httpx.TimeoutException,
    connect_error=httpx.ConnectError,
    read_error=httpx.ReadError,
    write_error=httpx.WriteError,
    network_error=httpx.NetworkError,
    proxy_error=httpx.ProxyError,
    unsupported_protocol=httpx.UnsupportedProtocol,
    local_protocol_error=httpx.LocalProtocolError,
    remote_protocol_error=httpx.RemoteProtocolError,
    protocol_error=httpx.ProtocolError,
    transport_error=httpx.TransportError,
    decoding_error=httpx.DecodingError,
)


@final
class HttpxTransport:
    """Sends each request with an ``httpx.AsyncClient``; runs on asyncio and on trio.

    Exactly the request's own headers go out, plus the ``Host`` and ``Content-Length``
    that HTTP needs: the client's default headers, cookies, params and ``base_url``
    are not applied (its transport, proxies, limits, TLS settings, auth and event
    hooks are). Redirects are never followed. Failures come back as values:
    :class:`~cycleguard.errors.ConnectionFailed`, :class:`~cycleguard.errors.TimedOut`
    with the phase that timed out, or :class:`~cycleguard.errors.InvalidResponse`.

    Args:
        client: A client of your own to send through. The transport only borrows it:
            ``aclose()`` leaves it open, and closing it stays your job. If omitted, the
            transport builds a client, owns it, and closes it in ``aclose()``.
        timeouts: Applied to every request, also on a borrowed client.

    Example::

        async with HttpxTransport(timeouts=Timeouts(read=10.0)) as transport:
            result = await transport.send(HttpRequest("GET", "http://127.0.0.1:7878/v1/balances"))

        # Borrowing a configured client (it stays open after the transport closes):
        async with httpx.AsyncClient(verify=my_ssl_context) as client:
            transport = HttpxTransport(client)
    """

    def __init__(
        self, client: httpx.AsyncClient | None = None, *, timeouts: Timeouts = DEFAULT_TIMEOUTS
    ) -> None:
        self._timeout = timeout_extension(timeouts)
        self._owns_client = client is None
        if client is None:
            client = httpx.AsyncClient(timeout=httpx.Timeout(**self._timeout))
        self._client = client
        self._closed = False

    async def send(self, request: HttpRequest) -> Result[HttpResponse, TransportError]:
        """Send ``request`` and return the whole response, or a transport failure value.

        Raises:
            UsageError: ``request`` cannot be sent as HTTP/1.1 (see the message).
        """
        if self._closed:
            await anyio.lowlevel.checkpoint()
            return Failure(closed("HttpxTransport"))
        if self._client.is_closed:
            await anyio.lowlevel.checkpoint()
            return Failure(TransportUnavailable(message="the borrowed httpx client is closed"))
        check_request(request)
        outgoing = httpx.Request(
            request.method,
            request.url,
            headers=list(request.headers),
            content=request.body,
            extensions={"timeout": self._timeout},
        )
        try:
            response = await self._client.send(outgoing, follow_redirects=False)
        except _ERRORS.types as exc:
            return Failure(_ERRORS.failure(exc, request))
        return Success(
            HttpResponse(
                status=response.status_code,
                headers=decode_headers(response.headers.raw),
                body=response.content,
            )
        )

    async def aclose(self) -> None:
        """Close the client if this transport owns it. Safe to call more than once."""
        if self._closed:
            await anyio.lowlevel.checkpoint()
            return
        self._closed = True
        if not self._owns_client:
            await anyio.lowlevel.checkpoint()
            return
        with anyio.CancelScope(shield=True):  # cleanup must finish even if we are cancelled
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
