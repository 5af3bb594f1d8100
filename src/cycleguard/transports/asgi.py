"""``AsgiTransport``: call an ASGI 3 application in process, with no socket.

This is how tests (and applications that embed the Cycles server) talk to the
Starlette server in the same process. It uses only anyio, so it runs on asyncio
and on trio, and needs no optional dependency.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Self, TypeAlias, cast, final
from urllib.parse import unquote, urlsplit

import anyio
import anyio.lowlevel
import attrs
from returns.result import Failure, Result, Success

from cycleguard._core._errors import ConnectionFailed, TimedOut, TransportError
from cycleguard._core._http import Headers, HttpRequest, HttpResponse, header_value
from cycleguard.transports._util import DEFAULT_TIMEOUTS, check_request, closed

if TYPE_CHECKING:
    from types import TracebackType
    from urllib.parse import SplitResult

    from cycleguard._core._http import Timeouts

__all__ = (
    "AsgiApp",
    "AsgiMessage",
    "AsgiReceive",
    "AsgiScope",
    "AsgiSend",
    "AsgiTransport",
)

AsgiScope: TypeAlias = MutableMapping[str, object]
"""The connection scope handed to the app (Starlette's ``Scope`` fits)."""

AsgiMessage: TypeAlias = MutableMapping[str, object]
"""One ASGI event, such as ``{"type": "http.response.start", ...}``."""

AsgiReceive: TypeAlias = Callable[[], Awaitable[AsgiMessage]]
"""The ``receive`` callable an app awaits for request events."""

AsgiSend: TypeAlias = Callable[[AsgiMessage], Awaitable[None]]
"""The ``send`` callable an app awaits to emit response events."""

AsgiApp: TypeAlias = Callable[[AsgiScope, AsgiReceive, AsgiSend], Awaitable[None]]
"""An ASGI 3 application: ``await app(scope, receive, send)``."""

_DEFAULT_PORTS = {"http": 80, "https": 443}

# What uvicorn answers when an app fails or returns before starting a response.
_INTERNAL_SERVER_ERROR = HttpResponse(
    500,
    (("content-type", "text/plain; charset=utf-8"), ("connection", "close")),
    b"Internal Server Error",
)


def _protocol_error(message: str) -> RuntimeError:
    return RuntimeError(f"ASGI protocol error: {message}")


def _response_headers(raw: object) -> Headers:
    if not isinstance(raw, Iterable) or isinstance(raw, bytes | str):
        raise _protocol_error("'headers' must be an iterable of [name, value] byte pairs")
    headers: list[tuple[str, str]] = []
    for item in cast("Iterable[object]", raw):
        pair = tuple(cast("Iterable[object]", item)) if isinstance(item, list | tuple) else ()
        if len(pair) != 2:
            raise _protocol_error("each header must be a [name, value] pair")
        name, value = pair
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise _protocol_error("header names and values must be bytes")
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    return tuple(headers)


def _scope_headers(request: HttpRequest, split: SplitResult) -> list[tuple[bytes, bytes]]:
    headers = [
        (name.lower().encode("ascii"), value.encode("ascii")) for name, value in request.headers
    ]
    # Add what an HTTP/1.1 client puts on the wire, so the app sees what a server would.
    if header_value(request.headers, "host") is None:
        headers.insert(0, (b"host", split.netloc.rpartition("@")[2].encode("ascii")))
    if request.body and header_value(request.headers, "content-length") is None:
        headers.append((b"content-length", str(len(request.body)).encode("ascii")))
    return headers


@final
class _Exchange:
    """The state of one request/response exchange with the app."""

    def __init__(
        self, body: bytes, read_timeout: float | None, deadline: anyio.CancelScope
    ) -> None:
        self._body = body
        self._body_delivered = False
        self._read_timeout = read_timeout
        self._deadline = deadline
        self.status: int | None = None
        self.headers: Headers = ()
        self.body_parts: list[bytes] = []
        self.complete = anyio.Event()
        self.extend_deadline()

    def extend_deadline(self) -> None:
        """Give the app another read timeout from now; none once the response is complete."""
        if self.complete.is_set() or self._read_timeout is None:
            self._deadline.deadline = math.inf
        else:
            self._deadline.deadline = anyio.current_time() + self._read_timeout

    async def receive(self) -> AsgiMessage:
        if not self._body_delivered:
            self._body_delivered = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        # Like a server, report the disconnect only once the response is complete.
        await self.complete.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: AsgiMessage) -> None:
        kind = message.get("type")
        if self.status is None:
            if kind != "http.response.start":
                raise _protocol_error(f"expected 'http.response.start', got {kind!r}")
            status = message.get("status")
            if not isinstance(status, int) or isinstance(status, bool):
                raise _protocol_error("'status' must be an int")
            self.headers = _response_headers(message.get("headers", ()))
            self.status = status
        elif not self.complete.is_set():
            if kind != "http.response.body":
                raise _protocol_error(f"expected 'http.response.body', got {kind!r}")
            body = message.get("body", b"")
            if not isinstance(body, bytes | bytearray):
                raise _protocol_error("'body' must be bytes")
            self.body_parts.append(bytes(body))
            if not message.get("more_body", False):
                self.complete.set()
        else:
            raise _protocol_error(f"{kind!r} sent after the response was complete")
        self.extend_deadline()
        await anyio.lowlevel.checkpoint()

    def outcome(self, *, timed_out: bool) -> Result[HttpResponse, TransportError]:
        if self.complete.is_set() and self.status is not None:
            return Success(HttpResponse(self.status, self.headers, b"".join(self.body_parts)))
        if timed_out:
            return Failure(
                TimedOut(phase="read", message="the ASGI app sent no response data in time")
            )
        if self.status is None:
            return Success(_INTERNAL_SERVER_ERROR)
        return Failure(
            ConnectionFailed(
                message="the ASGI app stopped before finishing the response body",
                request_sent=True,
            )
        )


@final
class AsgiTransport:
    """Calls an ASGI 3 application in process for each request; asyncio and trio.

    The app sees what a server would pass it: an ``http`` scope with the method, the
    raw path and query, the request headers (names lowercased, plus ``host`` and
    ``content-length`` when the request lacks them), the body as one
    ``http.request`` event, and ``http.disconnect`` once the response is complete.
    ``send`` returns when the app returns, so background tasks run first.

    Only ``timeouts.read`` applies: the time the app may take before its first
    response event and between events, reported as ``TimedOut(phase="read")`` after
    the app is cancelled. If the app fails:

    - with ``raise_app_exceptions=True`` (the default, best for tests) the exception
      propagates from :meth:`send`;
    - otherwise the result is what uvicorn would give a client: a plain
      ``500 Internal Server Error`` if no response had started, or
      ``ConnectionFailed(request_sent=True)`` if it had but was not finished.

    Lifespan events are not sent; run the app's startup yourself if it needs one.

    Args:
        app: The ASGI 3 application, for example a ``starlette.applications.Starlette``.
        timeouts: Only ``read`` is used (see above).
        raise_app_exceptions: Re-raise exceptions from the app instead of mapping them.
        client: The ``(host, port)`` the app sees as the peer address.

    Example::

        app = Starlette(routes=[...])
        async with AsgiTransport(app) as transport:
            result = await transport.send(HttpRequest("GET", "http://testserver/v1/balances"))
    """

    def __init__(
        self,
        app: AsgiApp,
        *,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        raise_app_exceptions: bool = True,
        client: tuple[str, int] = ("127.0.0.1", 123),
    ) -> None:
        self._app = app
        self._read_timeout = timeouts.read
        self._raise_app_exceptions = raise_app_exceptions
        self._client = client
        self._closed = False

    async def send(self, request: HttpRequest) -> Result[HttpResponse, TransportError]:
        """Run the app for ``request`` and return its whole response, or a failure value.

        Raises:
            UsageError: ``request`` cannot be sent as HTTP/1.1 (see the message).
            Exception: whatever the app raised, if ``raise_app_exceptions`` is true.
        """
        await anyio.lowlevel.checkpoint()
        if self._closed:
            return Failure(closed("AsgiTransport"))
        check_request(request)
        scope = self._scope(request)
        deadline = anyio.CancelScope()
        exchange = _Exchange(request.body, self._read_timeout, deadline)
        with deadline:
            try:
                await self._app(scope, exchange.receive, exchange.send)
            except Exception:  # as uvicorn does: an app's crash becomes a 500, or propagates
                if self._raise_app_exceptions:
                    raise
        result = exchange.outcome(timed_out=deadline.cancelled_caught)
        if request.method == "HEAD":  # a server sends no body for HEAD, whatever the app wrote
            return result.map(lambda response: attrs.evolve(response, body=b""))
        return result

    async def aclose(self) -> None:
        """Mark the transport closed (the app is not told). Safe to call more than once."""
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

    def _scope(self, request: HttpRequest) -> AsgiScope:
        split = urlsplit(request.url)
        raw_path = split.path or "/"
        host = split.hostname or ""
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": split.scheme,
            "path": unquote(raw_path),
            "raw_path": raw_path.encode("ascii"),
            "query_string": split.query.encode("ascii"),
            "root_path": "",
            "headers": _scope_headers(request, split),
            "client": self._client,
            "server": (host, split.port or _DEFAULT_PORTS[split.scheme]),
            "extensions": {},
        }
