"""Real HTTP servers on 127.0.0.1 for tests, and the small ASGI app they serve.

- ``serve_in_thread`` (from :mod:`cycleguard.testing`) runs any ASGI app under uvicorn
  in a thread, on a socket bound (and listening) before the thread starts, so clients
  can connect at once: no start-up polling.
- :class:`LoopbackApp` is a raw ASGI app (no framework, no asyncio calls) whose answers
  describe exactly what arrived. It runs under uvicorn and in process
  (``AsgiTransport``), on asyncio and on trio.
- :func:`raw_http_server` answers every connection with fixed bytes, for what no
  well-behaved server sends (malformed status lines, early disconnects, cut bodies).
- :func:`refusing_port` holds a port bound but not listening: connections are refused.

Routes of :class:`LoopbackApp`:

``/echo/...`` (any method)
    200 with a JSON description of the request: method, raw path, query string,
    headers (as received, in order) and base64 body. Parse it with :func:`parse_echo`.
``/status/{code}``
    That status, with the headers of :data:`STATUS_HEADERS` and :func:`status_body`.
``/bytes/{n}``
    200 with :func:`pattern_bytes` ``(n)``.
``/digest``
    200 with JSON ``{"length": ..., "sha256": ...}`` of the request body.
``/hang/{token}``
    Sets :meth:`LoopbackApp.arrival` ``(token)``, then waits for the client to go away
    without answering.
``/stall/{token}``
    Starts a 10-byte response, sends 5 bytes, sets the arrival event, then waits for
    the client to go away.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, cast, final

import anyio
import attrs
from anyio.abc import SocketAttribute

from cycleguard.testing import serve_in_thread

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Generator, Iterable, Sequence

    from anyio.abc import SocketStream

    from cycleguard.transports.asgi import AsgiMessage, AsgiReceive, AsgiScope, AsgiSend

HOST = "127.0.0.1"

STATUS_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Test-One", "Value, With Spaces"),
    ("x-multi", "first"),
    ("X-Multi", "second"),
)
"""Headers ``/status/{code}`` sends (plus ``content-type``), in this order."""

_NO_BODY_STATUSES = frozenset({204, 304})


def status_body(status: int) -> bytes:
    """The body ``/status/{status}`` sends: binary-unsafe on purpose."""
    if status in _NO_BODY_STATUSES:
        return b""
    return f"status={status};".encode() + b"\x00\xff\r\n\xc3\xa9"


def pattern_bytes(size: int) -> bytes:
    """``size`` deterministic bytes covering every byte value."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]


@final
@attrs.frozen
class Echo:
    """What ``/echo/...`` saw."""

    method: str
    raw_path: str
    query_string: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _pair(item: object) -> tuple[str, str]:
    assert isinstance(item, list | tuple)
    name, value = cast("Sequence[object]", item)
    if isinstance(name, bytes) and isinstance(value, bytes):
        return name.decode("latin-1"), value.decode("latin-1")
    assert isinstance(name, str)
    assert isinstance(value, str)
    return name, value


def parse_echo(body: bytes) -> Echo:
    """Decode the JSON body of an ``/echo`` response."""
    data: object = json.loads(body)
    assert isinstance(data, dict)
    fields = cast("dict[str, object]", data)
    headers = fields["headers"]
    assert isinstance(headers, list)
    return Echo(
        method=str(fields["method"]),
        raw_path=str(fields["raw_path"]),
        query_string=str(fields["query_string"]),
        headers=tuple(_pair(item) for item in cast("Iterable[object]", headers)),
        body=base64.b64decode(str(fields["body"])),
    )


def _header_pairs(scope: AsgiScope) -> list[tuple[str, str]]:
    raw = scope["headers"]
    assert isinstance(raw, list | tuple)
    return [_pair(item) for item in cast("Iterable[object]", raw)]


def _scope_bytes(scope: AsgiScope, key: str) -> bytes:
    value = scope[key]
    assert isinstance(value, bytes)
    return value


async def _read_body(receive: AsgiReceive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body = message.get("body", b"")
        assert isinstance(body, bytes)
        parts.append(body)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


async def _wait_for_disconnect(receive: AsgiReceive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _respond(
    send: AsgiSend, status: int, headers: Sequence[tuple[str, str]], body: bytes
) -> None:
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    if status not in _NO_BODY_STATUSES:
        raw.append((b"content-length", str(len(body)).encode()))
    start: AsgiMessage = {"type": "http.response.start", "status": status, "headers": raw}
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _respond_json(send: AsgiSend, payload: object) -> None:
    body = json.dumps(payload).encode()
    await _respond(send, 200, [("content-type", "application/json")], body)


@final
class LoopbackApp:
    """The test app; see the module docstring for its routes. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrivals: dict[str, threading.Event] = {}

    def arrival(self, token: str) -> threading.Event:
        """The event set when a ``/hang/{token}`` or ``/stall/{token}`` request arrives."""
        with self._lock:
            return self._arrivals.setdefault(token, threading.Event())

    async def __call__(self, scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        """Serve one ASGI ``http`` request (other scope types are ignored)."""
        if scope["type"] != "http":
            return
        raw_path = _scope_bytes(scope, "raw_path").decode("ascii")
        first, _, rest = raw_path.lstrip("/").partition("/")
        body = await _read_body(receive)
        match first:
            case "echo":
                await _respond_json(
                    send,
                    {
                        "method": scope["method"],
                        "raw_path": raw_path,
                        "query_string": _scope_bytes(scope, "query_string").decode("ascii"),
                        "headers": _header_pairs(scope),
                        "body": base64.b64encode(body).decode("ascii"),
                    },
                )
            case "status":
                status = int(rest)
                headers = [("content-type", "application/octet-stream"), *STATUS_HEADERS]
                await _respond(send, status, headers, status_body(status))
            case "bytes":
                await _respond(send, 200, [], pattern_bytes(int(rest)))
            case "digest":
                digest = {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
                await _respond_json(send, digest)
            case "hang":
                self.arrival(rest).set()
                await _wait_for_disconnect(receive)
            case "stall":
                start: AsgiMessage = {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"10")],
                }
                await send(start)
                await send({"type": "http.response.body", "body": b"12345", "more_body": True})
                self.arrival(rest).set()
                await _wait_for_disconnect(receive)
            case _:
                await _respond(send, 404, [], b"no such route")


@final
@attrs.frozen
class LoopbackServer:
    """A running loopback server: where it listens and the app it serves."""

    base_url: str
    app: LoopbackApp


@contextmanager
def serve_loopback() -> Generator[LoopbackServer]:
    """Serve a fresh :class:`LoopbackApp` under uvicorn; yield where and what."""
    app = LoopbackApp()
    with serve_in_thread(app) as base_url:
        yield LoopbackServer(base_url=base_url, app=app)


@contextmanager
def refusing_port() -> Generator[str]:
    """Yield a base URL on a port that is bound but not listening: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind((HOST, 0))
        yield f"http://{HOST}:{sock.getsockname()[1]}"


@asynccontextmanager
async def raw_http_server(reply: bytes) -> AsyncGenerator[str]:
    """Serve ``reply`` (then close) to every connection, in the current event loop.

    The request head is read first, so the client has sent its request in full
    before the reply (or, for ``reply=b""``, the bare close) arrives.
    """

    async def answer(stream: SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                try:
                    head += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
            if reply:
                await stream.send(reply)

    listener = await anyio.create_tcp_listener(local_host=HOST)
    port = listener.extra(SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, answer)
        yield f"http://{HOST}:{port}"
        group.cancel_scope.cancel()
