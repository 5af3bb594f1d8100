"""The transport conformance suite: what every ``Transport`` must do, as reusable checks.

Each ``check_*`` is an async function that builds the transports it needs from a
:data:`TransportFactory`, talks to a :class:`Target` (the loopback server, or a raw
server or refusing port where the check says so) and closes everything again. A
check passes silently or fails an ``assert``.

The contract, check by check:

- the method, raw path and query, headers and body arrive exactly; the transport adds
  only ``Host`` and ``Content-Length`` (:func:`check_request_arrives_exactly`);
- the status, headers and body come back exactly, for 2xx, 4xx and 5xx
  (:func:`check_response_arrives_exactly`), also for bodies of several MiB
  (:func:`check_large_bodies`) and for concurrent sends (:func:`check_concurrent_sends`);
- a server that stops sending gives ``TimedOut(phase="read")``, before and during the
  body, and the transport stays usable (:func:`check_read_timeout`);
- cancelling an in-flight send raises the loop's cancellation exception (never a
  value), and the transport stays usable (:func:`check_cancellation_propagates`);
- requests that cannot be sent raise ``UsageError`` without quoting header values
  (:func:`check_unsendable_requests`);
- ``aclose`` is idempotent, and ``send`` after it gives ``TransportUnavailable``
  (:func:`check_close_lifecycle`);
- over a socket: a refused connection is ``ConnectionFailed(request_sent=False)``
  (:func:`check_connection_refused`); a malformed answer is ``InvalidResponse`` and
  its message holds no secret (:func:`check_malformed_response`); a close before or
  during the response is ``ConnectionFailed(request_sent=True)``
  (:func:`check_closed_before_response`, :func:`check_truncated_body`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final, final

import anyio
import anyio.to_thread
import attrs
import pytest
from returns.pipeline import is_successful

from cycleguard.errors import (
    ConnectionFailed,
    InvalidResponse,
    TimedOut,
    TransportError,
    TransportUnavailable,
    UsageError,
)
from cycleguard.transports import HttpRequest, HttpResponse, Timeouts, Transport
from tests._loopback import (
    STATUS_HEADERS,
    LoopbackApp,
    parse_echo,
    pattern_bytes,
    raw_http_server,
    refusing_port,
    status_body,
)

if TYPE_CHECKING:
    from returns.result import Result

ALL_BACKENDS: Final = ("asyncio", "trio")

SECRET: Final = "cyc_live_0123456789abcdef"
"""An API key that must never appear in a failure message."""

# Headers a transport may add on its own; everything else must be the caller's.
FRAMING_HEADERS: Final = frozenset({"host", "content-length"})

# Long enough for a loaded CI machine to answer a normal request well inside it.
SHORT_READ_TIMEOUT: Final = 0.5
ARRIVAL_WAIT: Final = 15.0
# A transport that ignores its read timeout fails the check after this, instead of hanging.
GIVE_UP: Final = 20.0


@final
@attrs.frozen
class Target:
    """Where a transport under test sends.

    Attributes:
        base_url: ``http://host:port`` of the server.
        app: The app behind ``base_url``; in-process transports call it directly.
    """

    base_url: str
    app: LoopbackApp

    def url(self, path: str) -> str:
        """``base_url`` joined with ``path`` (which starts with ``/``)."""
        return self.base_url + path

    def elsewhere(self, base_url: str) -> Target:
        """The same app, but a different address (for raw servers and refused ports)."""
        return Target(base_url=base_url, app=self.app)


TransportFactory = Callable[[Target, Timeouts], Transport]
"""Builds a fresh transport that sends to ``target`` with the given timeouts."""


@final
@attrs.frozen
class TransportCase:
    """One transport in the suite: a name, a factory, and the loops it runs on."""

    name: str
    factory: TransportFactory
    backends: tuple[str, ...] = ALL_BACKENDS


def matrix(cases: Sequence[TransportCase]) -> list[object]:
    """``(anyio_backend, case)`` parameters: each case on each of its own loops.

    Parametrizing ``anyio_backend`` directly (anyio's documented way to pin a test to
    a loop) leaves out the pairs a transport cannot run on, such as aiohttp on trio,
    instead of skipping them.
    """
    return [
        pytest.param(backend, case, id=f"{case.name}-{backend}")
        for case in cases
        for backend in case.backends
    ]


@asynccontextmanager
async def opened(transport: Transport) -> AsyncGenerator[Transport]:
    """Yield ``transport`` and close it afterwards, even if the check fails or is cancelled."""
    try:
        yield transport
    finally:
        with anyio.CancelScope(shield=True):
            await transport.aclose()


def expect_response(result: Result[HttpResponse, TransportError]) -> HttpResponse:
    """The response in ``result``; fails the check if it holds a failure."""
    assert is_successful(result), f"expected a response, got {result!r}"
    return result.unwrap()


def expect_failure(result: Result[HttpResponse, TransportError]) -> TransportError:
    """The failure in ``result``; fails the check if it holds a response."""
    assert not is_successful(result), f"expected a failure, got {result!r}"
    return result.failure()


def kind(failure: TransportError) -> str:
    """A short, comparable description of a failure: its class and the field that matters."""
    match failure:
        case TimedOut(phase=phase):
            return f"TimedOut(phase={phase!r})"
        case ConnectionFailed(request_sent=sent):
            return f"ConnectionFailed(request_sent={sent})"
        case InvalidResponse():
            return "InvalidResponse"
        case TransportUnavailable():
            return "TransportUnavailable"


def x_headers(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ``x-`` headers, names lowercased, values and order untouched."""
    return [(name.lower(), value) for name, value in headers if name.lower().startswith("x-")]


async def get_ok(transport: Transport, target: Target) -> None:
    """Assert that a plain request still works (after a timeout, a cancellation, …)."""
    response = expect_response(await transport.send(HttpRequest("GET", target.url("/status/200"))))
    assert response.status == 200
    assert response.body == status_body(200)


# --- exchange checks: loopback server, or the same app in process ----------------------------

_RAW_PATH: Final = "/echo/a%2Fb%20c/%C3%A9/~user"
_QUERY: Final = "x=1&y=%c3%a9&flag&z=a%26b&empty="
_REQUEST_HEADERS: Final = (
    ("Content-Type", "application/json"),
    ("X-Cycles-API-Key", SECRET),
    ("X-Multi", "one"),
    ("x-multi", "two, and more"),
    ("Idempotency-Key", "idem-0001"),
)
_REQUEST_BODY: Final = b'{"amount": 1, "unit": "USD_MICROCENTS", "note": "\xc3\xa9"}\x00\xff'


async def check_request_arrives_exactly(make: TransportFactory, target: Target) -> None:
    """Method, raw path and query, headers (order, duplicates, values) and body arrive as sent."""
    async with opened(make(target, Timeouts())) as transport:
        for method, body in (
            ("GET", b""),
            ("DELETE", b""),
            ("POST", _REQUEST_BODY),
            ("PUT", _REQUEST_BODY),
            ("PATCH", b"x"),
            ("POST", b""),
        ):
            request = HttpRequest(
                method, target.url(f"{_RAW_PATH}?{_QUERY}"), _REQUEST_HEADERS, body
            )
            response = expect_response(await transport.send(request))
            assert response.status == 200
            echo = parse_echo(response.body)
            assert echo.method == method
            assert echo.raw_path == _RAW_PATH
            assert echo.query_string == _QUERY
            assert echo.body == body
            sent = [(name.lower(), value) for name, value in _REQUEST_HEADERS]
            received = [(name.lower(), value) for name, value in echo.headers]
            assert [pair for pair in received if pair[0] not in FRAMING_HEADERS] == sent
            added = dict(pair for pair in received if pair[0] in FRAMING_HEADERS)
            assert added.get("host") == target.base_url.removeprefix("http://")
            if body or "content-length" in added:
                assert added.get("content-length") == str(len(body)), method


_STATUSES: Final = (200, 201, 204, 400, 401, 404, 409, 410, 429, 500, 503)


async def check_response_arrives_exactly(make: TransportFactory, target: Target) -> None:
    """Status, headers (order, duplicates, values) and body bytes come back as the server sent."""
    async with opened(make(target, Timeouts())) as transport:
        for status in _STATUSES:
            request = HttpRequest("GET", target.url(f"/status/{status}"))
            response = expect_response(await transport.send(request))
            assert response.status == status
            assert x_headers(response.headers) == x_headers(STATUS_HEADERS), status
            assert response.header("content-type") == "application/octet-stream"
            assert response.body == status_body(status)


_LARGE: Final = 5 * 1024 * 1024 + 7


async def check_large_bodies(make: TransportFactory, target: Target) -> None:
    """A body of several MiB goes out intact, and one comes back intact."""
    payload = pattern_bytes(_LARGE)[::-1]
    async with opened(make(target, Timeouts())) as transport:
        uploaded = expect_response(
            await transport.send(HttpRequest("POST", target.url("/digest"), body=payload))
        )
        assert json.loads(uploaded.body) == {
            "length": _LARGE,
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
        downloaded = expect_response(
            await transport.send(HttpRequest("GET", target.url(f"/bytes/{_LARGE}")))
        )
        assert downloaded.status == 200
        assert downloaded.body == pattern_bytes(_LARGE)


async def check_concurrent_sends(make: TransportFactory, target: Target) -> None:
    """Concurrent sends on one transport each get their own response."""
    bodies = [f"request {n}".encode() * (n + 1) for n in range(16)]
    echoed: dict[int, bytes] = {}
    async with opened(make(target, Timeouts())) as transport:

        async def one(n: int) -> None:
            request = HttpRequest("POST", target.url(f"/echo/{n}"), body=bodies[n])
            echo = parse_echo(expect_response(await transport.send(request)).body)
            assert echo.raw_path == f"/echo/{n}"
            echoed[n] = echo.body

        async with anyio.create_task_group() as group:
            for n in range(len(bodies)):
                group.start_soon(one, n)
    assert echoed == dict(enumerate(bodies))


async def check_read_timeout(make: TransportFactory, target: Target) -> None:
    """No data within the read timeout, before or during the body, is ``TimedOut("read")``."""
    timeouts = Timeouts(read=SHORT_READ_TIMEOUT)
    async with opened(make(target, timeouts)) as transport:
        for route in ("hang", "stall"):
            token = uuid.uuid4().hex
            with anyio.fail_after(GIVE_UP):
                result = await transport.send(HttpRequest("GET", target.url(f"/{route}/{token}")))
            assert target.app.arrival(token).is_set(), route
            failure = expect_failure(result)
            assert kind(failure) == "TimedOut(phase='read')", (route, failure)
        await get_ok(transport, target)


async def check_cancellation_propagates(make: TransportFactory, target: Target) -> None:
    """Cancelling an in-flight send raises the loop's cancellation; the transport lives on."""
    token = uuid.uuid4().hex
    arrived = target.app.arrival(token)
    seen: list[str] = []
    async with opened(make(target, Timeouts())) as transport:

        async def hang() -> None:
            try:
                await transport.send(HttpRequest("GET", target.url(f"/hang/{token}")))
            except anyio.get_cancelled_exc_class():
                seen.append("cancelled")
                raise
            seen.append("returned")

        with anyio.fail_after(GIVE_UP):
            async with anyio.create_task_group() as group:
                group.start_soon(hang)
                # The server (or in-process app) sets the event once the request is in.
                assert await anyio.to_thread.run_sync(arrived.wait, ARRIVAL_WAIT)
                group.cancel_scope.cancel()
        assert seen == ["cancelled"]
        await get_ok(transport, target)


async def check_unsendable_requests(make: TransportFactory, target: Target) -> None:
    """Requests HTTP/1.1 cannot carry raise ``UsageError``; messages never quote header values."""
    bad_requests = [
        HttpRequest("GET", target.url("/status/200"), (("X-Cycles-API-Key", f"{SECRET}\r\nX: y"),)),
        HttpRequest("GET", target.url("/status/200"), (("Authorization", f" {SECRET}"),)),
        HttpRequest("GET", target.url("/status/200"), (("Bad Name", "v"),)),
        HttpRequest("POST", target.url("/digest"), (("Content-Length", "99"),), b"short"),
        HttpRequest("GET", "ftp://127.0.0.1/file"),
        HttpRequest("GET", "/relative/only"),
        HttpRequest("GET", target.url("/with space")),
    ]
    async with opened(make(target, Timeouts())) as transport:
        for request in bad_requests:
            with pytest.raises(UsageError) as raised:
                await transport.send(request)
            assert SECRET not in str(raised.value)
        await get_ok(transport, target)


async def check_close_lifecycle(make: TransportFactory, target: Target) -> None:
    """``aclose`` is idempotent, used or not; ``send`` after it is ``TransportUnavailable``."""
    unused = make(target, Timeouts())
    await unused.aclose()
    await unused.aclose()
    failure = expect_failure(await unused.send(HttpRequest("GET", target.url("/status/200"))))
    assert isinstance(failure, TransportUnavailable)

    used = make(target, Timeouts())
    await get_ok(used, target)
    await used.aclose()
    await used.aclose()
    failure = expect_failure(await used.send(HttpRequest("GET", target.url("/status/200"))))
    assert isinstance(failure, TransportUnavailable)
    assert "closed" in failure.message


# --- wire checks: real sockets misbehaving ----------------------------------------------------


async def check_connection_refused(make: TransportFactory, target: Target) -> None:
    """A refused connection is ``ConnectionFailed(request_sent=False)``, without the secret."""
    with refusing_port() as base_url:
        elsewhere = target.elsewhere(base_url)
        async with opened(make(elsewhere, Timeouts())) as transport:
            request = HttpRequest(
                "GET", elsewhere.url("/status/200"), (("X-Cycles-API-Key", SECRET),)
            )
            failure = expect_failure(await transport.send(request))
    assert kind(failure) == "ConnectionFailed(request_sent=False)", failure
    assert SECRET not in failure.message


async def _raw_exchange(make: TransportFactory, target: Target, reply: bytes) -> TransportError:
    async with raw_http_server(reply) as base_url:
        elsewhere = target.elsewhere(base_url)
        async with opened(make(elsewhere, Timeouts())) as transport:
            request = HttpRequest("GET", elsewhere.url("/x"), (("X-Cycles-API-Key", SECRET),))
            return expect_failure(await transport.send(request))


async def check_malformed_response(make: TransportFactory, target: Target) -> None:
    """A malformed answer is ``InvalidResponse``; an echoed API key is not in the message."""
    for reply in (
        f"NOT-HTTP {SECRET}\r\n\r\n".encode(),
        f"HTTP/1.1 200 OK\r\nbroken header {SECRET}\r\nContent-Length: 0\r\n\r\n".encode(),
    ):
        failure = await _raw_exchange(make, target, reply)
        assert kind(failure) == "InvalidResponse", failure
        assert SECRET not in failure.message


async def check_closed_before_response(make: TransportFactory, target: Target) -> None:
    """A close after the request, before any answer, is ``ConnectionFailed(request_sent=True)``."""
    failure = await _raw_exchange(make, target, b"")
    assert kind(failure) == "ConnectionFailed(request_sent=True)", failure


async def check_truncated_body(make: TransportFactory, target: Target) -> None:
    """A close in the middle of the body is ``ConnectionFailed(request_sent=True)``."""
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of it"
    failure = await _raw_exchange(make, target, reply)
    assert kind(failure) == "ConnectionFailed(request_sent=True)", failure
