"""The ASGI machinery the fakes share: routing, the script queue, recording, responses.

A fake is a plain ASGI 3 application (no framework), so it runs in process on
asyncio or trio and under any ASGI server. Streams are produced frame by frame
from synchronous generators: memory stays flat however long the reply, and a
``cut`` returns from the app without finishing the body, which a server turns
into a dropped connection (uvicorn logs one line) and the in-process transport
into ``httpx2.RemoteProtocolError``.
"""

from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeAlias, cast

import anyio.lowlevel

from cycleguard._core._errors import UsageError
from cycleguard.testing._script import HttpError, RecordedRequest, Reply
from cycleguard.testing._wire import CUT, dumps

if TYPE_CHECKING:
    from collections.abc import (
        Awaitable,
        Callable,
        Generator,
        Iterable,
        Iterator,
        Mapping,
        Sequence,
    )

    from cycleguard._core._json import JsonObject
    from cycleguard.testing._script import Headers, ScriptItem
    from cycleguard.testing._transport import AsgiStreamingTransport
    from cycleguard.testing._wire import Frame
    from cycleguard.transports.asgi import AsgiMessage, AsgiReceive, AsgiScope, AsgiSend

__all__ = ("DEFAULT_REPLY", "Exchange", "FakeProvider", "Handler", "Respond")

DEFAULT_REPLY = Reply()
"""What a fake answers when its queue is empty, unless told otherwise."""


class Respond:
    """Sends one response over ASGI ``send``."""

    __slots__ = ("_send",)

    def __init__(self, send: AsgiSend) -> None:
        self._send = send

    async def _start(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        start: AsgiMessage = {"type": "http.response.start", "status": status, "headers": raw}
        await self._send(start)

    async def json(self, status: int, body: object, headers: Iterable[tuple[str, str]]) -> None:
        """A whole JSON response."""
        data = dumps(body).encode()
        await self._start(
            status,
            [
                ("content-type", "application/json"),
                ("content-length", str(len(data))),
                *headers,
            ],
        )
        await self._send({"type": "http.response.body", "body": data, "more_body": False})

    async def frames(
        self, frames: Iterator[Frame], headers: Iterable[tuple[str, str]], *, content_type: str
    ) -> None:
        """A chunked body, one frame at a time; stop without finishing it at ``CUT``."""
        await self._start(200, [("content-type", content_type), *headers])
        for frame in frames:
            if frame is CUT:
                return  # an unfinished body: the server drops the connection
            await self._send(
                {"type": "http.response.body", "body": cast("bytes", frame), "more_body": True}
            )
            await anyio.lowlevel.checkpoint()
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})


class Exchange:
    """One request as a route handler sees it."""

    __slots__ = ("item", "number", "request")

    def __init__(self, request: RecordedRequest, item: ScriptItem | None, number: int) -> None:
        self.request: RecordedRequest = request
        self.item: ScriptItem | None = item
        self.number: int = number

    @property
    def body(self) -> JsonObject:
        """The request's JSON body."""
        return self.request.json

    @property
    def streaming(self) -> bool:
        """Whether the request asked for a stream."""
        return self.body.get("stream") is True

    def model(self, reply: Reply) -> str:
        """The model to report: the reply's, else the request's."""
        if reply.model is not None:
            return reply.model
        requested = self.body.get("model")
        return requested if isinstance(requested, str) else "fake-model"


Handler: TypeAlias = "Callable[[Exchange, Respond], Awaitable[None]]"
"""A route: renders a :class:`Reply` for one endpoint."""


async def _read_body(receive: AsgiReceive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message.get("type") != "http.request":
            break
        body = message.get("body", b"")
        if isinstance(body, bytes | bytearray):
            parts.append(bytes(body))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


async def _client_left_within(seconds: float, receive: AsgiReceive) -> bool:
    """Hold the answer back ``seconds``; ``True`` if the client hung up meanwhile.

    A server's graceful shutdown waits for its requests, so a delayed answer
    must end as soon as nobody is waiting for it.
    """
    with anyio.move_on_after(seconds):
        while (await receive()).get("type") != "http.disconnect":
            pass
        return True
    return False


def _scope_headers(scope: AsgiScope) -> Headers:
    raw = scope.get("headers") or ()
    pairs: list[tuple[str, str]] = []
    for item in cast("Iterable[Sequence[bytes]]", raw):
        name, value = item[0], item[1]
        pairs.append((name.decode("latin-1"), value.decode("latin-1")))
    return tuple(pairs)


async def _lifespan(receive: AsgiReceive, send: AsgiSend) -> None:
    while True:
        message = await receive()
        kind = message.get("type")
        if kind == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif kind == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class FakeProvider:
    """Shared state and dispatch of a fake provider API. Thread-safe.

    Subclasses name their routes and render replies and errors in their
    provider's wire format.
    """

    _name = "fake"

    def __init__(self, *, default: Reply | None) -> None:
        self._lock = threading.Lock()
        self._script: deque[ScriptItem] = deque()
        self._requests: list[RecordedRequest] = []
        self._default = default
        self._counter = 0
        if default is not None:
            self._check(default)

    # Scripting ---------------------------------------------------------------

    def _check(self, item: ScriptItem) -> None:
        """Refuse items this provider cannot render (raise ``UsageError``)."""

    def push(self, *items: ScriptItem) -> None:
        """Queue answers: each request takes the next one, in order.

        When the queue is empty, requests get the ``default`` reply (or, with
        ``default=None``, an HTTP 500 saying the script ran out).

        Raises:
            UsageError: an item does not fit this provider (for example
                Anthropic usage on the OpenAI fake).
        """
        for item in items:
            self._check(item)
        with self._lock:
            self._script.extend(items)

    @property
    def pending(self) -> int:
        """How many scripted answers are still queued."""
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> tuple[RecordedRequest, ...]:
        """Every request received so far, oldest first."""
        with self._lock:
            return tuple(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        """The most recent request.

        Raises:
            UsageError: no request has arrived yet.
        """
        with self._lock:
            if not self._requests:
                raise UsageError(f"the {self._name} fake has received no request yet")
            return self._requests[-1]

    def reset(self) -> None:
        """Forget the queued answers and the recorded requests."""
        with self._lock:
            self._script.clear()
            self._requests.clear()

    def _take(self, request: RecordedRequest) -> Exchange:
        with self._lock:
            self._requests.append(request)
            self._counter += 1
            item = self._script.popleft() if self._script else self._default
            return Exchange(request, item, self._counter)

    # Running -----------------------------------------------------------------

    def transport(self) -> AsgiStreamingTransport:
        """An httpx2 transport that calls this fake in process (enter it before use)."""
        from cycleguard.testing._transport import AsgiStreamingTransport

        return AsgiStreamingTransport(self)

    @contextmanager
    def serve(self, *, host: str = "127.0.0.1") -> Generator[str]:
        """Serve this fake with uvicorn on a free loopback port; yield the base URL.

        >>> from cycleguard.testing import FakeOpenAI
        >>> with FakeOpenAI().serve() as url:
        ...     url.startswith("http://127.0.0.1:")
        True
        """
        from cycleguard.testing._serve import serve_in_thread

        with serve_in_thread(self, host=host) as base_url:
            yield base_url

    # ASGI --------------------------------------------------------------------

    def _routes(self) -> Mapping[str, Handler]:
        raise NotImplementedError

    def _error_body(self, error: HttpError, exchange: Exchange) -> tuple[object, Headers]:
        raise NotImplementedError

    async def __call__(self, scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        """Serve one ASGI ``http`` (or ``lifespan``) connection."""
        if scope.get("type") == "lifespan":
            await _lifespan(receive, send)
            return
        if scope.get("type") != "http":
            return
        body = await _read_body(receive)
        method = str(scope.get("method", "GET"))
        path = str(scope.get("path", "/"))
        exchange = self._take(RecordedRequest(method, path, _scope_headers(scope), body))
        respond = Respond(send)
        handler = self._routes().get(path) if method == "POST" else None
        if handler is None:
            error = HttpError(status=404, message=f"the {self._name} fake has no {method} {path}")
            await self.send_error(error, exchange, respond)
            return
        match exchange.item:
            case None:
                error = HttpError(status=500, message=f"the {self._name} fake's script is empty")
                await self.send_error(error, exchange, respond)
            case HttpError() as error:
                await self.send_error(error, exchange, respond)
            case Reply(delay=delay):
                if delay and await _client_left_within(delay, receive):
                    return
                await handler(exchange, respond)

    async def send_error(self, error: HttpError, exchange: Exchange, respond: Respond) -> None:
        """Answer with ``error`` in the provider's envelope."""
        body, headers = self._error_body(error, exchange)
        await respond.json(error.status, body, (*headers, *error.header_pairs()))

    async def send_cut_json(
        self, body: object, headers: Iterable[tuple[str, str]], respond: Respond
    ) -> None:
        """Half of a JSON body, then a dropped connection."""
        data = dumps(body).encode()
        frames: list[Frame] = [data[: len(data) // 2], CUT]
        await respond.frames(iter(frames), headers, content_type="application/json")
