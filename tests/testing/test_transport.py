"""AsgiStreamingTransport: bodies stream, stay flat in memory, and break like sockets do."""

from __future__ import annotations

import tracemalloc
from typing import TYPE_CHECKING, cast

import anyio
import httpx2
import pytest

from cycleguard.testing import AsgiStreamingTransport, FakeOpenAI, OpenAIUsage, Reply

from .._sdk import SDK_STREAMS, collect_garbage

if TYPE_CHECKING:
    from cycleguard.transports.asgi import AsgiApp, AsgiReceive, AsgiScope, AsgiSend

pytestmark = [SDK_STREAMS, pytest.mark.usefixtures(collect_garbage.__name__)]

URL = "http://app.invalid/path?q=1"


async def _start(send: AsgiSend, status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"x-app", b"1")]})


async def _chunk(send: AsgiSend, body: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": more})


def _client(app: AsgiApp) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=AsgiStreamingTransport(app))


@pytest.mark.anyio
async def test_scope_and_body_reach_the_app() -> None:
    """The app sees the method, path, query, headers and body a server would pass."""
    seen: list[tuple[object, ...]] = []

    async def app(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        message = await receive()
        seen.append((scope["method"], scope["path"], scope["query_string"], message["body"]))
        headers = dict(cast("list[tuple[bytes, bytes]]", scope["headers"]))
        seen.append((headers[b"x-test"],))
        await _start(send)
        await _chunk(send, b"ok", more=False)

    async with _client(app) as http:
        response = await http.post(URL, content=b"payload", headers={"X-Test": "v"})
    assert (response.status_code, response.text, response.headers["x-app"]) == (200, "ok", "1")
    assert seen == [("POST", "/path", b"q=1", b"payload"), (b"v",)]


@pytest.mark.anyio
async def test_client_reads_before_the_app_finishes() -> None:
    """The first chunk arrives while the app still waits to send the second.

    (``httpx2.ASGITransport`` buffers the whole body: this would deadlock there.)
    """
    first_read = anyio.Event()

    async def app(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        await receive()
        await _start(send)
        await _chunk(send, b"first")
        await first_read.wait()
        await _chunk(send, b"second", more=False)

    async with _client(app) as http, http.stream("GET", URL) as response:
        parts = response.aiter_raw()
        with anyio.fail_after(5):
            assert await anext(parts) == b"first"
            first_read.set()
            assert await anext(parts) == b"second"
        await parts.aclose()


@pytest.mark.anyio
async def test_memory_stays_flat_for_a_long_body() -> None:
    """64 MiB streamed in 256 KiB chunks never holds more than a few chunks."""
    block = b"x" * (256 * 1024)

    async def app(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        await receive()
        await _start(send)
        for _ in range(256):
            await _chunk(send, block)
        await _chunk(send, b"", more=False)

    total = 0
    tracemalloc.start()
    try:
        async with _client(app) as http, http.stream("GET", URL) as response:
            async for piece in response.aiter_raw():
                total += len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 256 * len(block)
    assert peak < 8 * len(block)


@pytest.mark.anyio
async def test_fake_stream_is_generated_lazily() -> None:
    """A 1 MiB reply streamed through the SDK: peak memory stays far below its size."""
    text = ("w" * 8191 + " ") * 128
    fake = FakeOpenAI()
    fake.push(Reply(text="warm up"), Reply(text=text, usage=OpenAIUsage(completion_tokens=128)))
    received = 0
    async with fake.client() as sdk:
        warm_up = await sdk.chat.completions.create(model="m", messages=[], stream=True)
        assert len([chunk async for chunk in warm_up]) == 4  # the SDK builds its models once
        stream = await sdk.chat.completions.create(model="m", messages=[], stream=True)
        tracemalloc.start()
        try:
            async for chunk in stream:
                received += sum(len(c.delta.content or "") for c in chunk.choices)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert received == len(text)
    assert peak < len(text) // 4


@pytest.mark.anyio
async def test_unfinished_body_is_a_dropped_connection() -> None:
    """An app that returns mid-body: the client reads what came, then RemoteProtocolError."""

    async def app(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        await receive()
        await _start(send)
        await _chunk(send, b"partial")

    async with _client(app) as http, http.stream("GET", URL) as response:
        parts = response.aiter_raw()
        assert await anext(parts) == b"partial"
        with pytest.raises(httpx2.RemoteProtocolError):
            await anext(parts)


@pytest.mark.anyio
async def test_app_failing_mid_body_is_a_dropped_connection() -> None:
    """An app that raises mid-body: RemoteProtocolError, caused by the app's error."""

    async def app(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        await receive()
        await _start(send)
        await _chunk(send, b"partial")
        raise ValueError("app bug")

    async with _client(app) as http:
        with pytest.raises(httpx2.RemoteProtocolError) as caught:
            await http.get(URL)
    assert isinstance(caught.value.__cause__, ValueError)


@pytest.mark.anyio
async def test_app_failing_before_a_response_propagates() -> None:
    """An app that raises before starting a response: its own exception, unwrapped."""

    async def app(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        raise LookupError("no route")

    async with _client(app) as http:
        with pytest.raises(LookupError, match="no route"):
            await http.get(URL)


@pytest.mark.anyio
async def test_app_returning_without_a_response() -> None:
    """An app that never starts a response: like a server that hung up."""

    async def app(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        await receive()

    async with _client(app) as http:
        with pytest.raises(httpx2.RemoteProtocolError, match="without sending a response"):
            await http.get(URL)


@pytest.mark.anyio
async def test_closing_early_cancels_the_app() -> None:
    """A client that stops reading: the endless app is cancelled, not left running."""
    stopped = anyio.Event()

    async def app(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        await receive()
        await _start(send)
        try:
            while True:
                await _chunk(send, b"tick")
        finally:
            stopped.set()

    async with _client(app) as http:
        async with http.stream("GET", URL) as response:
            async for _ in response.aiter_raw():
                break
        with anyio.fail_after(5):
            await stopped.wait()


@pytest.mark.anyio
async def test_concurrent_requests_interleave() -> None:
    """Two streams at once, each served by its own app task."""
    release = anyio.Event()

    async def app(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        await receive()
        await _start(send)
        await _chunk(send, str(scope["path"]).encode())
        await release.wait()
        await _chunk(send, b"!", more=False)

    bodies: dict[str, bytes] = {}

    async def fetch(http: httpx2.AsyncClient, path: str) -> None:
        response = await http.get(f"http://app.invalid{path}")
        bodies[path] = response.content

    async with _client(app) as http, anyio.create_task_group() as group:
        group.start_soon(fetch, http, "/a")
        group.start_soon(fetch, http, "/b")
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert bodies == {"/a": b"/a!", "/b": b"/b!"}


@pytest.mark.anyio
async def test_must_be_entered_first() -> None:
    """Using the transport outside ``async with`` is a clear error."""

    async def app(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        await _start(send)

    http = _client(app)
    with pytest.raises(RuntimeError, match="use `async with`"):
        await http.get(URL)
    await http.aclose()


@pytest.mark.anyio
async def test_caller_exceptions_are_not_wrapped() -> None:
    """An exception inside the client block comes out as itself, not in an ExceptionGroup."""

    async def app(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        await _start(send)

    with pytest.raises(KeyError):
        async with _client(app):
            raise KeyError("mine")
