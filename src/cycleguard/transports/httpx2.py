"""``Httpx2Transport``: the transport protocol on ``httpx2.AsyncClient``, for asyncio and trio.

``openai>=3`` depends on ``httpx2`` (not ``httpx``), so with this transport an
application that guards OpenAI calls runs a single HTTP stack. Install with
``pip install cycleguard[httpx2]``. It behaves exactly like
:class:`cycleguard.transports.httpx.HttpxTransport`; only the library differs.

Do not hand the same ``httpx2.AsyncClient`` to the OpenAI SDK and to this transport
unless you mean both to share its pool, limits and event hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Self, final

import anyio
import anyio.lowlevel
import httpx2
from returns.result import Failure, Result, Success

from cycleguard._core._errors import TransportError, TransportUnavailable
from cycleguard._core._http import HttpRequest, HttpResponse
from cycleguard.transports._httpx_family import httpx_family_errors, timeout_extension
from cycleguard.transports._util import DEFAULT_TIMEOUTS, check_request, closed, decode_headers

if TYPE_CHECKING:
    from types import TracebackType

    from cycleguard._core._http import Timeouts

__all__ = ("Httpx2Transport",)

_ERRORS: Final = httpx_family_errors(
    connect_timeout=httpx2.ConnectTimeout,
    read_timeout=httpx2.ReadTimeout,
    write_timeout=httpx2.WriteTimeout,
    pool_timeout=httpx2.PoolTimeout,
    timeout_exception=httpx2.TimeoutException,
    connect_error=httpx2.ConnectError,
    read_error=httpx2.ReadError,
    write_error=httpx2.WriteError,
    network_error=httpx2.NetworkError,
    proxy_error=httpx2.ProxyError,
    unsupported_protocol=httpx2.UnsupportedProtocol,
    local_protocol_error=httpx2.LocalProtocolError,
    remote_protocol_error=httpx2.RemoteProtocolError,
    protocol_error=httpx2.ProtocolError,
    transport_error=httpx2.TransportError,
    decoding_error=httpx2.DecodingError,
)


@final
class Httpx2Transport:
    """Sends each request with an ``httpx2.AsyncClient``; runs on asyncio and on trio.

    It behaves like :class:`~cycleguard.transports.httpx.HttpxTransport`. Exactly the
    request's own headers go out, plus the ``Host`` and ``Content-Length``
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

        async with Httpx2Transport(timeouts=Timeouts(read=10.0)) as transport:
            result = await transport.send(HttpRequest("GET", "http://127.0.0.1:7878/v1/balances"))

        # Borrowing a client (it stays open after the transport closes):
        async with httpx2.AsyncClient(verify=my_ssl_context) as client:
            transport = Httpx2Transport(client)
            openai_client = AsyncOpenAI(http_client=httpx2.AsyncClient())  # its own client
    """

    def __init__(
        self, client: httpx2.AsyncClient | None = None, *, timeouts: Timeouts = DEFAULT_TIMEOUTS
    ) -> None:
        self._timeout = timeout_extension(timeouts)
        self._owns_client = client is None
        if client is None:
            client = httpx2.AsyncClient(timeout=httpx2.Timeout(**self._timeout))
        self._client = client
        self._closed = False

    async def send(self, request: HttpRequest) -> Result[HttpResponse, TransportError]:
        """Send ``request`` and return the whole response, or a transport failure value.

        Raises:
            UsageError: ``request`` cannot be sent as HTTP/1.1 (see the message).
        """
        if self._closed:
            await anyio.lowlevel.checkpoint()
            return Failure(closed("Httpx2Transport"))
        if self._client.is_closed:
            await anyio.lowlevel.checkpoint()
            return Failure(TransportUnavailable(message="the borrowed httpx2 client is closed"))
        check_request(request)
        outgoing = httpx2.Request(
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
