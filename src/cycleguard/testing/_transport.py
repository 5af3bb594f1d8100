"""``AsgiStreamingTransport``: an httpx2 transport that streams an in-process ASGI app.

``httpx2.ASGITransport`` runs the app to completion and buffers the whole body
before the client sees a byte, so a client cannot watch a stream arrive, a
long stream costs its full size in memory, and an app that stops half-way looks
like a complete (short) response. This transport runs each request's app in a
task of its own and hands the body over one ASGI message at a time: nothing is
buffered, and a body the app leaves unfinished surfaces, as on a real socket,
as ``httpx2.RemoteProtocolError`` (which the SDKs report as a connection error).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Final, Self, TypeAlias, cast, final

import anyio
import anyio.lowlevel
import attrs
import httpx2

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from types import TracebackType

    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from cycleguard.transports.asgi import AsgiApp, AsgiMessage, AsgiScope

__all__ = ("AsgiStreamingTransport",)

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@final
@attrs.frozen
class _Start:
    status: int
    headers: list[tuple[bytes, bytes]]


@final
@attrs.frozen
class _Chunk:
    body: bytes
    more: bool


@final
@attrs.frozen
class _Returned:
    """The app returned (normally)."""


@final
@attrs.frozen
class _Failed:
    error: Exception


_Event = _Start | _Chunk | _Returned | _Failed


def _cut(cause: BaseException | None = None) -> httpx2.RemoteProtocolError:
    error = httpx2.RemoteProtocolError(
        "peer closed connection without sending complete message body"
    )
    error.__cause__ = cause
    return error


_Done: TypeAlias = "Callable[[_Call], None]"


def _headers(raw: object) -> list[tuple[bytes, bytes]]:
    pairs = cast("Iterable[Sequence[bytes]]", raw or ())
    return [(bytes(pair[0]), bytes(pair[1])) for pair in pairs]


@final
class _Call:
    """One request: the app's task on one side, the response body on the other."""

    def __init__(self, body: bytes, on_done: _Done) -> None:
        self._body: bytes | None = body
        self._on_done = on_done
        sender, receiver = anyio.create_memory_object_stream[_Event](0)
        self._sender: MemoryObjectSendStream[_Event] = sender
        self._receiver: MemoryObjectReceiveStream[_Event] = receiver
        self._gone = anyio.Event()  # the client has the whole body, or left
        self._scope = anyio.CancelScope()
        self._complete = False

    async def run(self, app: AsgiApp, scope: AsgiScope) -> None:
        try:
            with self._scope, self._sender:
                try:
                    await app(scope, self._receive, self._send)
                except Exception as error:  # noqa: BLE001 - handed to the client side
                    await self._emit(_Failed(error))
                else:
                    await self._emit(_Returned())
        finally:
            self._on_done(self)

    async def _receive(self) -> AsgiMessage:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: AsgiMessage) -> None:
        await anyio.lowlevel.checkpoint()  # where an abandoned app gets cancelled
        if self._gone.is_set():
            return  # the client left: like a server, drop what it can no longer read
        match message.get("type"):
            case "http.response.start":
                status = message.get("status")
                if not isinstance(status, int):
                    raise TypeError("ASGI 'status' must be an int")
                await self._emit(_Start(status, _headers(message.get("headers"))))
            case "http.response.body":
                body = message.get("body", b"")
                if not isinstance(body, bytes | bytearray):
                    raise TypeError("ASGI 'body' must be bytes")
                await self._emit(_Chunk(bytes(body), bool(message.get("more_body", False))))
            case other:
                raise TypeError(f"unexpected ASGI message {other!r}")

    async def _emit(self, event: _Event) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self._sender.send(event)  # fails once the client side is closed

    async def _next(self) -> _Event:
        try:
            return await self._receiver.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return _Returned()

    async def head(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Wait for the response's status and headers."""
        match await self._next():
            case _Start(status=status, headers=headers):
                return status, headers
            case _Failed(error=error):
                self.abort()
                raise error
            case _Returned():
                self.abort()
                raise httpx2.RemoteProtocolError("Server disconnected without sending a response.")
            case _Chunk():
                self.abort()
                raise TypeError("ASGI app sent a body before 'http.response.start'")

    async def chunk(self) -> bytes | None:
        """The next piece of the body; ``None`` once it is complete."""
        if self._complete:
            return None
        match await self._next():
            case _Chunk(body=body, more=more):
                if not more:
                    self._finish()
                return body
            case _Failed(error=error):
                self.abort()
                raise _cut(error)
            case _Returned():
                self.abort()
                raise _cut()
            case _Start():
                self.abort()
                raise TypeError("ASGI app started a second response")

    def _finish(self) -> None:
        """The body is complete: let the app finish on its own."""
        self._complete = True
        self._gone.set()
        self._receiver.close()

    def abort(self) -> None:
        """The client is gone before the end: stop the app."""
        self._gone.set()
        self._scope.cancel()
        self._receiver.close()
        self._sender.close()


@final
class _Body(httpx2.AsyncByteStream):
    def __init__(self, call: _Call) -> None:
        self._call = call

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        while True:
            piece = await self._call.chunk()
            if piece is None:
                raise StopAsyncIteration
            if piece:
                return piece

    async def aclose(self) -> None:
        self._call.abort()


@final
class AsgiStreamingTransport(httpx2.AsyncBaseTransport):
    """Calls an ASGI 3 app in process and streams its responses; asyncio and trio.

    It must be entered (``async with``, which ``async with httpx2.AsyncClient(
    transport=...)`` does) before use: each request runs in a task of the
    transport's task group, cancelled when the transport closes.

    The app gets the request body as one ``http.request`` message and
    ``http.disconnect`` once its response is complete or abandoned. If the app
    raises before it starts a response the exception propagates to the caller;
    if it stops (by returning or raising) before finishing the body, reading the
    body raises ``httpx2.RemoteProtocolError``. Timeouts are not applied.

    Args:
        app: The ASGI 3 application.
        client: The ``(host, port)`` the app sees as the peer.

    Example::

        async with httpx2.AsyncClient(transport=AsgiStreamingTransport(app)) as http:
            async with http.stream("POST", "http://fake/v1/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    ...
    """

    def __init__(self, app: AsgiApp, *, client: tuple[str, int] = ("127.0.0.1", 123)) -> None:
        self._app = app
        self._client = client
        self._group: TaskGroup | None = None
        self._calls: set[_Call] = set()
        self._closed = False

    async def __aenter__(self) -> Self:
        if self._group is not None or self._closed:
            raise RuntimeError("an AsgiStreamingTransport can be entered only once")
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()
        group, self._group = self._group, None
        if group is not None:
            group.cancel_scope.cancel()
            # The caller's exception is not the group's: passing it would wrap it
            # in an ExceptionGroup. The apps never raise (their errors go to the
            # response), so the group only has its own cancellation to absorb.
            await group.__aexit__(None, None, None)

    async def aclose(self) -> None:
        """Stop every running app; later requests fail. Safe to call more than once."""
        self._closed = True
        for call in list(self._calls):
            call.abort()
        await anyio.lowlevel.checkpoint()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Run the app for ``request``; return once its response has started."""
        group = self._group
        if group is None or self._closed:
            raise RuntimeError(
                "AsgiStreamingTransport is not open: use `async with` (or "
                "`async with httpx2.AsyncClient(transport=...)`)"
            )
        body = await request.aread()
        call = _Call(body, self._calls.discard)
        self._calls.add(call)
        group.start_soon(call.run, self._app, self._scope(request))
        try:
            status, headers = await call.head()
        except BaseException:  # stop the app task whatever happened, then re-raise
            call.abort()
            raise
        return httpx2.Response(
            status,
            headers=headers,
            stream=_Body(call),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    def _scope(self, request: httpx2.Request) -> AsgiScope:
        url = request.url
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?")[0],
            "query_string": url.query,
            "root_path": "",
            "headers": [(name.lower(), value) for name, value in request.headers.raw],
            "client": self._client,
            "server": (url.host, url.port or _DEFAULT_PORTS.get(url.scheme, 80)),
            "extensions": {},
        }
