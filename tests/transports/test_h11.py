"""H11Transport against purpose-built, misbehaving HTTP servers on 127.0.0.1.

Every server here is an anyio TCP listener running inside the test's own task group,
so the same test runs on asyncio and on trio.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import h11
import pytest
import trustme
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.tls import TLSListener
from returns.result import Failure, Result, Success

from cycleguard._core._errors import UsageError
from cycleguard.errors import (
    ConnectionFailed,
    InvalidResponse,
    TimedOut,
    TransportError,
    TransportUnavailable,
)
from cycleguard.transports import HttpRequest, HttpResponse, Timeouts
from cycleguard.transports.h11 import H11Transport

Handler = Callable[[ByteStream, int], Awaitable[None]]
"""Serves one accepted connection; the int counts connections from 0."""

FAST = Timeouts(connect=2.0, read=2.0, write=2.0, pool=2.0)


# -- servers -------------------------------------------------------------------------


@asynccontextmanager
async def serve(handler: Handler, *, tls: ssl.SSLContext | None = None) -> AsyncGenerator[int]:
    """Run ``handler`` for every connection to a fresh 127.0.0.1 port; yield the port."""
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = tcp.extra(SocketAttribute.local_port)
    accepted = 0

    async def handle(stream: ByteStream) -> None:
        nonlocal accepted
        index = accepted
        accepted += 1
        async with stream:
            await handler(stream, index)

    async with anyio.create_task_group() as tg:
        if tls is None:
            tg.start_soon(tcp.serve, handle)
        else:
            listener = TLSListener(tcp, tls, standard_compatible=False)
            tg.start_soon(listener.serve, handle)
        try:
            yield port
        finally:
            tg.cancel_scope.cancel()
    await tcp.aclose()


async def read_request(
    stream: ByteStream, conn: h11.Connection
) -> tuple[h11.Request, bytes] | None:
    """Read one whole request; ``None`` if the client closed the connection first."""
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                data = b""
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return request, bytes(body)
        else:
            return None


def ok(body: bytes = b'{"ok":true}', *extra: tuple[str, str]) -> bytes:
    """A whole keep-alive response with a Content-Length body."""
    head = [b"HTTP/1.1 200 OK", b"Content-Type: application/json"]
    head += [f"{k}: {v}".encode() for k, v in extra]
    head.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def keep_alive(stream: ByteStream, index: int) -> None:
    """A well-behaved server: answer every request on the connection, echoing it."""
    del index
    conn = h11.Connection(h11.SERVER)
    while (got := await read_request(stream, conn)) is not None:
        request, body = got
        echo = b"%s %s %d" % (request.method, request.target, len(body))
        data = conn.send(
            h11.Response(
                status_code=200,
                headers=[
                    (b"content-length", b"%d" % len(echo)),
                    *[(b"x-echo-" + k, v) for k, v in request.headers],
                ],
            )
        )
        data = (data or b"") + (conn.send(h11.Data(data=echo)) or b"")
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send(data)
        conn.start_next_cycle()


def post(port: int, path: str = "/v1/reservations", body: bytes = b'{"a":1}') -> HttpRequest:
    return HttpRequest(
        "POST",
        f"http://127.0.0.1:{port}{path}",
        (("Content-Type", "application/json"), ("X-Cycles-API-Key", "secret-key")),
        body,
    )


def response_of(result: Result[HttpResponse, TransportError]) -> HttpResponse:
    assert isinstance(result, Success), result
    response: HttpResponse = result.unwrap()
    return response


def failure_of(result: Result[HttpResponse, TransportError]) -> TransportError:
    assert isinstance(result, Failure), result
    failure: TransportError = result.failure()
    return failure


# -- happy paths ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_content_length_bodies_and_connection_reuse() -> None:
    async with serve(keep_alive) as port, H11Transport(f"http://127.0.0.1:{port}") as transport:
        for _ in range(3):
            response = response_of(await transport.send(post(port, "/v1/reservations?x=1")))
            assert response.status == 200
            assert response.body == b"POST /v1/reservations?x=1 7"
            assert response.header("x-echo-host") == f"127.0.0.1:{port}"
            assert response.header("x-echo-content-length") == "7"
            assert response.header("x-echo-x-cycles-api-key") == "secret-key"
        get = HttpRequest("GET", f"http://127.0.0.1:{port}")
        assert response_of(await transport.send(get)).body == b"GET / 0"
        stats = transport.statistics()
        assert stats.connections_opened == 1
        assert stats.connections_idle == 1
        assert stats.requests_sent == 4
        assert stats.retries == 0


@pytest.mark.anyio
async def test_chunked_and_close_delimited_bodies() -> None:
    async def handler(stream: ByteStream, index: int) -> None:
        conn = h11.Connection(h11.SERVER)
        if await read_request(stream, conn) is None:
            return
        if index == 0:
            await stream.send(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
            )
            await stream.send(b"6\r\n world\r\n0\r\n\r\n")
        else:  # HTTP/1.0 style: the body ends when the connection does
            await stream.send(b"HTTP/1.0 200 OK\r\n\r\nuntil ")
            await stream.send(b"the end")

    async with serve(handler) as port, H11Transport(f"http://127.0.0.1:{port}") as transport:
        chunked = response_of(await transport.send(post(port)))
        assert chunked.body == b"hello world"
        assert transport.statistics().connections_idle == 1
        closed = response_of(await transport.send(post(port)))
        assert closed.body == b"until the end"
        stats = transport.statistics()
        assert stats.connections_opened == 2  # the chunked one is gone: it had an extra write
        assert stats.connections_open == 0  # the close-delimited one cannot be reused


# -- connections the server closes ---------------------------------------------------


@pytest.mark.anyio
async def test_connection_closed_while_idle_is_not_reused() -> None:
    server_closed = anyio.Event()

    async def handler(stream: ByteStream, index: int) -> None:
        conn = h11.Connection(h11.SERVER)
        if await read_request(stream, conn) is not None:
            await stream.send(ok())  # keep-alive promised, then closed while idle
        if index == 0:
            await stream.aclose()
            server_closed.set()

    async with serve(handler) as port, H11Transport(f"http://127.0.0.1:{port}") as transport:
        assert response_of(await transport.send(post(port))).status == 200
        await server_closed.wait()
        await anyio.sleep(0.05)  # let the client's loop see the end of stream
        assert response_of(await transport.send(post(port))).status == 200
        stats = transport.statistics()
        assert stats.connections_opened == 2
        assert stats.retries == 0  # noticed before sending, not by a failed attempt


@pytest.mark.anyio
async def test_dead_reused_connection_is_retried_once_on_a_fresh_one() -> None:
    async def handler(stream: ByteStream, index: int) -> None:
        conn = h11.Connection(h11.SERVER)
        if await read_request(stream, conn) is None:
            return
        if index == 0:
            await stream.send(ok(b"first"))
            await read_request(
                stream, h11.Connection(h11.SERVER)
            )  # read the second request, close unanswered
            return
        await stream.send(ok(b"fresh"))

    async with serve(handler) as port, H11Transport(f"http://127.0.0.1:{port}") as transport:
        assert response_of(await transport.send(post(port))).body == b"first"
        assert response_of(await transport.send(post(port))).body == b"fresh"
        stats = transport.statistics()
        assert (stats.retries, stats.connections_opened, stats.requests_sent) == (1, 2, 3)


@pytest.mark.anyio
async def test_retry_happens_once_then_fails_as_a_value() -> None:
    async def handler(stream: ByteStream, index: int) -> None:
        del index
        await read_request(stream, h11.Connection(h11.SERVER))  # then close, unanswered

    async with serve(handler) as port, H11Transport(f"http://127.0.0.1:{port}") as transport:
        failure = failure_of(await transport.send(post(port)))
        assert isinstance(failure, ConnectionFailed)
        assert failure.request_sent
        stats = transport.statistics()
        assert (stats.retries, stats.connections_opened, stats.connections_open) == (1, 2, 0)


@pytest.mark.anyio
async def test_close_mid_response_is_a_failure_and_not_retried() -> None:
    async def handler(stream: ByteStream, index: int) -> None:
        del index
        if await read_request(stream, h11.Connection(h11.SERVER)) is not None:
            await stream.send(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')

    async with serve(handler) as port, H11Transport(f"http://127.0.0.1:{port}") as transport:
        failure = failure_of(await transport.send(post(port)))
        assert isinstance(failure, ConnectionFailed)
        assert failure.request_sent
        assert "before the response was complete" in failure.message
        stats = transport.statistics()
        assert (stats.retries, stats.connections_open) == (0, 0)


@pytest.mark.anyio
async def test_close_after_a_partial_status_line_is_not_retried() -> None:
    async def handler(stream: ByteStream, index: int) -> None:
        del index
        if await read_request(stream, h11.Connection(h11.SERVER)) is not None:
            await stream.send(b"HTTP/1.1 2")

    async with serve(handler) as port, H11Transport(f"http://127.0.0.1:{port}") as transport:
        failure = failure_of(await transport.send(post(port)))
        assert isinstance(failure, ConnectionFailed)
        assert transport.statistics().retries == 0


@pytest.mark.anyio
async def test_unsolicited_bytes_after_a_response_retire_the_connection() -> None:
    async def handler(stream: ByteStream, index: int) -> None:
        del index
        while await read_request(stream, h11.Connection(h11.SERVER)) is not None:
            await stream.send(ok(b"one") + ok(b"two"))  # two answers to one request

    async with serve(handler) as port, H11Transport(f"http://127.0.0.1:{port}") as transport:
        assert response_of(await transport.send(post(port))).body == b"one"
        assert response_of(await transport.send(post(port))).body == b"one"
        assert transport.statistics().connections_opened == 2


# -- timeouts ------------------------------------------------------------------------


async def silent(stream: ByteStream, index: int) -> None:
    """Read the request, then say nothing until the client goes away."""
    del index
    if await read_request(stream, h11.Connection(h11.SERVER)) is not None:
        with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await stream.receive()


@pytest.mark.anyio
async def test_slow_server_read_timeout() -> None:
    timeouts = Timeouts(connect=2.0, write=2.0, read=0.2, pool=2.0)
    async with (
        serve(silent) as port,
        H11Transport(f"http://127.0.0.1:{port}", timeouts=timeouts) as transport,
    ):
        started = time.monotonic()
        failure = failure_of(await transport.send(post(port)))
        assert time.monotonic() - started < 1.5
        assert isinstance(failure, TimedOut)
        assert failure.phase == "read"
        assert transport.statistics().connections_open == 0


@pytest.mark.anyio
async def test_server_that_never_reads_write_timeout() -> None:
    # A listener that never accepts: the kernel completes the handshake and buffers
    # what fits in a small receive window, then the client's send blocks.
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        request = HttpRequest("POST", f"http://127.0.0.1:{port}/", (), b"x" * (16 * 1024 * 1024))
        timeouts = Timeouts(connect=2.0, write=0.3, read=2.0, pool=2.0)
        async with H11Transport(f"http://127.0.0.1:{port}", timeouts=timeouts) as transport:
            failure = failure_of(await transport.send(request))
            assert isinstance(failure, TimedOut)
            assert failure.phase == "write"
            assert transport.statistics().connections_open == 0


@pytest.mark.anyio
async def test_stalled_tls_handshake_connect_timeout() -> None:
    async def handler(stream: ByteStream, index: int) -> None:
        del index
        await stream.receive()  # the ClientHello, which is never answered
        with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await stream.receive()

    timeouts = Timeouts(connect=0.3, write=2.0, read=2.0, pool=2.0)
    async with (
        serve(handler) as port,
        H11Transport(f"https://127.0.0.1:{port}", timeouts=timeouts) as transport,
    ):
        failure = failure_of(await transport.send(_get(f"https://127.0.0.1:{port}/")))
        assert isinstance(failure, TimedOut)
        assert failure.phase == "connect"


def _get(url: str) -> HttpRequest:
    return HttpRequest("GET", url)


# -- bad responses -------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 2OO OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
@pytest.mark.anyio
async def test_malformed_response_is_invalid_response(answer: bytes) -> None:
    async def handler(stream: ByteStream, index: int) -> None:
        del index
        if await read_request(stream, h11.Connection(h11.SERVER)) is not None:
            await stream.send(answer)
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await stream.receive()

    async with serve(handler) as port, H11Transport(f"http://127.0.0.1:{port}") as transport:
        failure = failure_of(await transport.send(post(port)))
        assert isinstance(failure, InvalidResponse)
        stats = transport.statistics()
        assert (stats.retries, stats.connections_open) == (0, 0)


@pytest.mark.parametrize(
    "answer",
    [
        ok(b"x" * 101),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"3c\r\n" + b"y" * 60 + b"\r\n" for _ in range(3))
        + b"0\r\n\r\n",
    ],
    ids=["content-length", "chunked"],
)
@pytest.mark.anyio
async def test_oversized_response_is_invalid_response(answer: bytes) -> None:
    async def handler(stream: ByteStream, index: int) -> None:
        del index
        if await read_request(stream, h11.Connection(h11.SERVER)) is not None:
            await stream.send(answer)
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await stream.receive()

    url = "http://127.0.0.1:{}"
    async with (
        serve(handler) as port,
        H11Transport(url.format(port), max_response_bytes=100) as transport,
    ):
        failure = failure_of(await transport.send(post(port)))
        assert isinstance(failure, InvalidResponse)
        assert "max_response_bytes=100" in failure.message
        assert failure.status == 200
        assert transport.statistics().connections_open == 0


# -- cancellation and the pool -------------------------------------------------------


@pytest.mark.anyio
async def test_cancellation_mid_request_discards_the_connection() -> None:
    got_request = anyio.Event()
    client_closed = anyio.Event()

    async def handler(stream: ByteStream, index: int) -> None:
        if index > 0:
            await keep_alive(stream, index)
            return
        if await read_request(stream, h11.Connection(h11.SERVER)) is not None:
            got_request.set()
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await stream.receive()
            client_closed.set()

    async with serve(handler) as port:
        transport = H11Transport(f"http://127.0.0.1:{port}", max_connections=1, timeouts=FAST)
        async with transport:
            async with anyio.create_task_group() as tg:
                tg.start_soon(transport.send, post(port))
                await got_request.wait()
                tg.cancel_scope.cancel()
            with anyio.fail_after(2):
                await client_closed.wait()
            stats = transport.statistics()
            assert (stats.connections_open, stats.requests_waiting) == (0, 0)
            # The only slot is free again, and the next request gets a new connection.
            assert response_of(await transport.send(post(port))).status == 200
            assert transport.statistics().connections_opened == 2


@pytest.mark.anyio
async def test_pool_exhaustion_waits_then_times_out() -> None:
    got_request = anyio.Event()

    async def handler(stream: ByteStream, index: int) -> None:
        if index > 0:
            await keep_alive(stream, index)
            return
        if await read_request(stream, h11.Connection(h11.SERVER)) is not None:
            got_request.set()
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await stream.receive()

    timeouts = Timeouts(connect=2.0, write=2.0, read=30.0, pool=0.3)
    async with serve(handler) as port:
        transport = H11Transport(f"http://127.0.0.1:{port}", max_connections=1, timeouts=timeouts)
        async with transport, anyio.create_task_group() as tg:
            tg.start_soon(transport.send, post(port))
            await got_request.wait()
            started = time.monotonic()
            failure = failure_of(await transport.send(post(port)))
            assert isinstance(failure, TimedOut)
            assert failure.phase == "pool"
            assert 0.25 < time.monotonic() - started < 2
            # A waiter cancelled while queued leaves no trace either.
            with anyio.move_on_after(0.1):
                await transport.send(post(port))
            assert transport.statistics().requests_waiting == 0
            tg.cancel_scope.cancel()
        # Everything is released: the single slot serves the next request at once.
        async with H11Transport(f"http://127.0.0.1:{port}", max_connections=1) as fresh:
            assert response_of(await fresh.send(post(port))).status == 200


@pytest.mark.anyio
async def test_requests_queue_for_a_bounded_pool() -> None:
    async def handler(stream: ByteStream, index: int) -> None:
        del index
        while await read_request(stream, h11.Connection(h11.SERVER)) is not None:
            await anyio.sleep(0.02)
            await stream.send(ok())

    results: list[Result[HttpResponse, TransportError]] = []

    async def one(transport: H11Transport, port: int) -> None:
        results.append(await transport.send(post(port)))

    async with serve(handler) as port:
        transport = H11Transport(f"http://127.0.0.1:{port}", max_connections=2, timeouts=FAST)
        async with transport:
            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(one, transport, port)
            assert [response_of(r).status for r in results] == [200] * 10
            stats = transport.statistics()
            assert stats.connections_opened == 2
            assert stats.connections_idle == 2


# -- TLS -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.tempfile() as path:
        context.load_cert_chain(path)
    return context


@pytest.mark.anyio
async def test_tls_with_a_trusted_test_certificate(ca: trustme.CA) -> None:
    client_context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
    async with serve(keep_alive, tls=server_context(ca)) as port:
        url = f"https://127.0.0.1:{port}"
        async with H11Transport(url, ssl_context=client_context) as transport:
            for _ in range(2):
                response = response_of(await transport.send(_get(f"{url}/v1/balances")))
                assert response.body == b"GET /v1/balances 0"
            assert transport.statistics().connections_opened == 1


@pytest.mark.anyio
async def test_tls_default_context_rejects_an_unknown_ca(ca: trustme.CA) -> None:
    async with serve(keep_alive, tls=server_context(ca)) as port:
        url = f"https://127.0.0.1:{port}"
        async with H11Transport(url) as transport:
            failure = failure_of(await transport.send(_get(url)))
            assert isinstance(failure, ConnectionFailed)
            assert not failure.request_sent
            assert "CERTIFICATE_VERIFY_FAILED" in failure.message or "certif" in failure.message


# -- misuse, closing -----------------------------------------------------------------


@pytest.mark.anyio
async def test_connection_refused_is_a_failure_value() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    await listener.aclose()
    async with H11Transport(f"http://127.0.0.1:{port}") as transport:
        failure = failure_of(await transport.send(post(port)))
        assert isinstance(failure, ConnectionFailed)
        assert not failure.request_sent
        assert transport.statistics().retries == 0


@pytest.mark.anyio
async def test_other_origins_are_refused_without_network() -> None:
    async with H11Transport("http://127.0.0.1:9/prefix") as transport:
        for url in ("http://127.0.0.2:9/x", "https://127.0.0.1:9/x", "http://127.0.0.1:99/"):
            failure = failure_of(await transport.send(_get(url)))
            assert isinstance(failure, TransportUnavailable)
            assert "http://127.0.0.1:9" in failure.message
        assert transport.statistics().connections_opened == 0


@pytest.mark.anyio
async def test_equivalent_spellings_of_the_origin_are_accepted() -> None:
    async with serve(keep_alive) as port, H11Transport(f"http://127.0.0.1:{port}") as transport:
        bodies = [
            response_of(await transport.send(_get(f"HTTP://127.0.0.1:{port}/a#frag"))).body,
            response_of(await transport.send(_get(f"http://127.0.0.1:{port}?q=1"))).body,
        ]
        assert bodies == [b"GET /a 0", b"GET /?q=1 0"]


@pytest.mark.anyio
async def test_unwritable_header_raises_usage_error_without_the_value() -> None:
    async with H11Transport("http://127.0.0.1:9") as transport:
        request = HttpRequest("GET", "http://127.0.0.1:9/", (("X-Cycles-API-Key", "sec\r\nret"),))
        with pytest.raises(UsageError) as caught:
            await transport.send(request)
        assert "X-Cycles-API-Key" in str(caught.value)
        assert "sec" not in str(caught.value)


@pytest.mark.anyio
async def test_aclose_closes_idle_connections_and_is_idempotent() -> None:
    closed_by_client = anyio.Event()

    async def handler(stream: ByteStream, index: int) -> None:
        await keep_alive(stream, index)
        closed_by_client.set()

    async with serve(handler) as port:
        transport = H11Transport(f"http://127.0.0.1:{port}")
        assert response_of(await transport.send(post(port))).status == 200
        await transport.aclose()
        await transport.aclose()
        with anyio.fail_after(2):
            await closed_by_client.wait()
        assert transport.statistics().connections_open == 0
        failure = failure_of(await transport.send(post(port)))
        assert isinstance(failure, TransportUnavailable)


@pytest.mark.anyio
async def test_aclose_ends_requests_in_flight() -> None:
    got_request = anyio.Event()

    async def handler(stream: ByteStream, index: int) -> None:
        del index
        if await read_request(stream, h11.Connection(h11.SERVER)) is not None:
            got_request.set()
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await stream.receive()

    results: list[Result[HttpResponse, TransportError]] = []
    async with serve(handler) as port:
        transport = H11Transport(f"http://127.0.0.1:{port}")

        async def one() -> None:
            results.append(await transport.send(post(port)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            await got_request.wait()
            await transport.aclose()
        assert isinstance(failure_of(results[0]), TransportUnavailable)
        assert transport.statistics().connections_open == 0


@pytest.mark.anyio
async def test_keepalive_expiry_retires_idle_connections() -> None:
    async with (
        serve(keep_alive) as port,
        H11Transport(f"http://127.0.0.1:{port}", keepalive_expiry=0.0) as transport,
    ):
        for _ in range(2):
            assert response_of(await transport.send(post(port))).status == 200
        assert transport.statistics().connections_opened == 2


@pytest.mark.parametrize(
    ("url", "max_connections", "max_response_bytes"),
    [
        ("ftp://example.com", 1, 1),
        ("example.com", 1, 1),
        ("http://user:pw@example.com", 1, 1),
        ("http://example.com:99999", 1, 1),
        ("http://example.com", 0, 1),
        ("http://example.com", 1, -1),
    ],
)
def test_bad_configuration_is_a_usage_error(
    url: str, max_connections: int, max_response_bytes: int
) -> None:
    with pytest.raises(UsageError) as caught:
        H11Transport(url, max_connections=max_connections, max_response_bytes=max_response_bytes)
    assert "pw" not in str(caught.value)


def test_repr_and_statistics_are_plain_values() -> None:
    transport = H11Transport("https://cycles.example.com", max_connections=3)
    assert repr(transport) == "H11Transport('https://cycles.example.com:443', max_connections=3)"
    stats = transport.statistics()
    assert stats.max_connections == 3
    assert stats.connections_open == 0


# -- event loops -----------------------------------------------------------------


@pytest.mark.parametrize("first_backend", ["asyncio", "trio"])
def test_a_transport_belongs_to_the_loop_it_was_first_used_on(first_backend: str) -> None:
    transports: list[H11Transport] = []
    ports: list[int] = []

    async def closing_server(stream: ByteStream, index: int) -> None:
        del index
        if await read_request(stream, h11.Connection(h11.SERVER)) is not None:
            await stream.send(ok(b"bye", ("Connection", "close")))

    async def first_use() -> None:
        async with serve(closing_server) as port:
            transport = H11Transport(f"http://127.0.0.1:{port}")
            transports.append(transport)
            ports.append(port)
            assert response_of(await transport.send(post(port))).body == b"bye"

    async def later_use() -> None:
        failure = failure_of(await transports[0].send(post(ports[0])))
        assert isinstance(failure, TransportUnavailable)
        assert "event loop" in failure.message

    anyio.run(first_use, backend=first_backend)
    anyio.run(later_use, backend="asyncio")
    anyio.run(later_use, backend="trio")
    anyio.run(transports[0].aclose, backend="asyncio")


def test_aclose_from_another_loop_still_closes_trio_connections() -> None:
    transports: list[H11Transport] = []

    async def first_use() -> None:
        async with serve(keep_alive) as port:
            transport = H11Transport(f"http://127.0.0.1:{port}")
            transports.append(transport)
            assert response_of(await transport.send(post(port))).status == 200
        assert transport.statistics().connections_idle == 1

    anyio.run(first_use, backend="trio")
    anyio.run(transports[0].aclose, backend="asyncio")  # no raise, no unclosed socket
    assert transports[0].statistics().connections_open == 0


# -- the generic anyio channel (the fallback when the loop is neither) ---------------


@pytest.fixture
def generic_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make H11Transport use plain anyio streams and scopes on either loop."""
    import cycleguard.transports.h11 as module

    monkeypatch.setattr(module, "running_on_asyncio", lambda: False)
    monkeypatch.setattr(module, "running_on_trio", lambda: False)


@pytest.mark.anyio
@pytest.mark.usefixtures("generic_channel")
async def test_generic_anyio_channel_exchanges_reuses_and_times_out() -> None:
    async def handler(stream: ByteStream, index: int) -> None:
        if index == 0:
            conn = h11.Connection(h11.SERVER)
            if await read_request(stream, conn) is not None:
                await stream.send(ok(b"one"))  # then closed while idle
            return
        await silent(stream, index)

    timeouts = Timeouts(connect=2.0, write=2.0, read=0.2, pool=2.0)
    async with (
        serve(handler) as port,
        H11Transport(f"http://127.0.0.1:{port}", timeouts=timeouts) as transport,
    ):
        assert response_of(await transport.send(post(port))).body == b"one"
        await anyio.sleep(0.1)
        failure = failure_of(await transport.send(post(port)))
        assert isinstance(failure, TimedOut)
        assert failure.phase == "read"
        stats = transport.statistics()
        assert (stats.connections_opened, stats.retries, stats.connections_open) == (2, 0, 0)
