"""``AiohttpTransport``: the transport protocol on ``aiohttp.ClientSession``, asyncio only.

Install with ``pip install cycleguard[aiohttp]``. aiohttp is built on asyncio and
cannot run under trio: there, :meth:`AiohttpTransport.send` returns
:class:`~cycleguard.errors.TransportUnavailable` (a value, never an exception).
Use :mod:`cycleguard.transports.httpx` or :mod:`cycleguard.transports.httpx2` on trio.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Final, Self, final

import aiohttp
import anyio
import anyio.lowlevel
import yarl
from returns.result import Failure, Result, Success

from cycleguard._core._errors import TransportError, TransportUnavailable
from cycleguard._core._http import Headers, HttpRequest, HttpResponse
from cycleguard.transports._mapping import (
    ExceptionMap,
    connection_failed,
    invalid_response,
    timed_out,
)
from cycleguard.transports._util import DEFAULT_TIMEOUTS, check_request, closed, decode_headers

if TYPE_CHECKING:
    from types import TracebackType

    from cycleguard._core._http import Timeouts

__all__ = ("AiohttpTransport",)

_ERRORS: Final = ExceptionMap(
    {
        # aiohttp's connect timeout covers waiting for a pooled connection too.
        aiohttp.ConnectionTimeoutError: timed_out(
            "connect", "connecting (or waiting for a free connection) took too long"
        ),
        aiohttp.SocketTimeoutError: timed_out("read", "no response data within the read timeout"),
        aiohttp.ServerTimeoutError: timed_out("read", "the request timed out"),
        aiohttp.ClientConnectorError: connection_failed("could not connect", request_sent=False),
        aiohttp.ServerFingerprintMismatch: connection_failed(
            "the server certificate fingerprint does not match", request_sent=False
        ),
        aiohttp.ServerDisconnectedError: connection_failed(
            "the server closed the connection before a full response", request_sent=True
        ),
        # A body cut short (the usual case) or one whose transfer or content encoding is broken.
        aiohttp.ClientPayloadError: connection_failed(
            "the response body is incomplete", request_sent=True
        ),
        aiohttp.ClientOSError: connection_failed("the connection broke", request_sent=True),
        aiohttp.ClientConnectionError: connection_failed("the connection broke", request_sent=True),
        # Raised for a status line or headers aiohttp cannot parse.
        aiohttp.ClientResponseError: invalid_response("malformed HTTP response"),
        aiohttp.ClientError: connection_failed("aiohttp error", request_sent=True),
    }
)

# Only the request's own headers go out, plus Host and Content-Length.
_SKIP_AUTO_HEADERS: Final = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


def _not_on_asyncio() -> str | None:
    """Why aiohttp cannot run in the current task, or ``None`` if it can."""
    try:
        import sniffio  # installed with trio, not with aiohttp
    except ModuleNotFoundError:  # without sniffio there is no trio, so this is asyncio
        return None
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        library = "no known async library"
    if library == "asyncio":
        return None
    return (
        f"AiohttpTransport needs asyncio (aiohttp is asyncio-only) but is running on {library};"
        " use HttpxTransport or Httpx2Transport there"
    )


def _wire_headers(headers: Headers) -> list[tuple[str, str]]:
    # ClientSession remembers which names it has seen case-sensitively but stores
    # them case-insensitively, so "X-A: 1" then "x-a: 2" would keep only "x-a: 2"
    # (aiohttp 3.14). Spelling each repeat like its first occurrence keeps both.
    first_spelling: dict[str, str] = {}
    return [(first_spelling.setdefault(name.lower(), name), value) for name, value in headers]


def _client_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    # aiohttp has no write or pool timeout of its own: ``connect`` bounds the wait for
    # a pooled connection plus connecting, ``sock_connect`` the connect alone, and a
    # stalled upload shows up as a read timeout.
    acquire = (
        None
        if timeouts.connect is None or timeouts.pool is None
        else timeouts.connect + timeouts.pool
    )
    return aiohttp.ClientTimeout(
        total=None, connect=acquire, sock_connect=timeouts.connect, sock_read=timeouts.read
    )


@final
class AiohttpTransport:
    """Sends each request with an ``aiohttp.ClientSession``; asyncio only.

    Under trio (or any loop but asyncio) :meth:`send` returns
    :class:`~cycleguard.errors.TransportUnavailable` with a message saying so.

    Exactly the request's own headers go out, plus ``Host`` and ``Content-Length``;
    a borrowed session adds its own default headers. Redirects are never followed and
    4xx/5xx answers are responses, not errors, even if the session says otherwise.
    aiohttp has no separate write or pool timeout: ``timeouts.pool`` is added to the
    connect timeout, and a stalled upload is reported as a read timeout.

    Args:
        session: A session of your own to send through. The transport only borrows it:
            ``aclose()`` leaves it open, and closing it stays your job. If omitted, the
            transport opens a session on its first send (a session needs a running
            asyncio loop), owns it, and closes it in ``aclose()``.
        timeouts: Applied to every request, also on a borrowed session.

    Example::

        async with AiohttpTransport(timeouts=Timeouts(read=10.0)) as transport:
            result = await transport.send(HttpRequest("GET", "http://127.0.0.1:7878/v1/balances"))
    """

    def __init__(
        self, session: aiohttp.ClientSession | None = None, *, timeouts: Timeouts = DEFAULT_TIMEOUTS
    ) -> None:
        self._session = session
        self._owns_session = session is None
        self._timeout = _client_timeout(timeouts)
        self._closed = False

    async def send(self, request: HttpRequest) -> Result[HttpResponse, TransportError]:
        """Send ``request`` and return the whole response, or a transport failure value.

        Raises:
            UsageError: ``request`` cannot be sent as HTTP/1.1 (see the message).
        """
        unavailable = self._unavailable()
        if unavailable is not None:
            await anyio.lowlevel.checkpoint()
            return Failure(unavailable)
        check_request(request)
        session = self._open_session()
        try:
            async with session.request(
                request.method,
                yarl.URL(request.url, encoded=True),  # send the URL exactly as given
                headers=_wire_headers(request.headers),
                # BytesIO keeps Content-Length, and large bytes bodies would warn.
                data=io.BytesIO(request.body) if request.body else None,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                allow_redirects=False,
                raise_for_status=False,
                timeout=self._timeout,
            ) as response:
                body = await response.read()
        except _ERRORS.types as exc:
            return Failure(_ERRORS.failure(exc, request))
        return Success(
            HttpResponse(
                status=response.status, headers=decode_headers(response.raw_headers), body=body
            )
        )

    async def aclose(self) -> None:
        """Close the session if this transport owns it. Safe to call more than once."""
        if self._closed:
            await anyio.lowlevel.checkpoint()
            return
        self._closed = True
        session = self._session
        if not self._owns_session or session is None:
            await anyio.lowlevel.checkpoint()
            return
        with anyio.CancelScope(shield=True):  # cleanup must finish even if we are cancelled
            await session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _unavailable(self) -> TransportUnavailable | None:
        if self._closed:
            return closed("AiohttpTransport")
        reason = _not_on_asyncio()
        if reason is not None:
            return TransportUnavailable(message=reason)
        if self._session is not None and self._session.closed:
            return TransportUnavailable(message="the borrowed aiohttp session is closed")
        return None

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),  # stateless: no cookies between requests
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                raise_for_status=False,
            )
        return self._session
