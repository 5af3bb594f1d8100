"""Runs the conformance suite (``conformance.py``) against every transport.

To add a transport, add one ``TransportCase`` line to the list it belongs to:

- ``WIRE``: transports that speak HTTP over a socket. They run every check.
- ``IN_PROCESS``: transports that call an ASGI app directly. There is no socket, so
  the wire checks (refused port, malformed bytes, early close) have nothing to test
  and are not parametrized for them.
- ``DOUBLES``: test doubles; only the close lifecycle applies to them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import pytest

from cycleguard.transports import HttpRequest, HttpResponse
from cycleguard.transports.aiohttp import AiohttpTransport
from cycleguard.transports.asgi import AsgiTransport
from cycleguard.transports.h11 import H11Transport
from cycleguard.transports.httpx import HttpxTransport
from cycleguard.transports.httpx2 import Httpx2Transport
from cycleguard.transports.mock import MockTransport

from . import conformance
from .conformance import Target, TransportCase, TransportFactory, matrix

if TYPE_CHECKING:
    from tests._loopback import LoopbackServer


def _ok(request: HttpRequest) -> HttpResponse:
    return HttpResponse(200, (), b"status=200;\x00\xff\r\n\xc3\xa9")


WIRE: Final = [
    TransportCase("httpx", lambda target, t: HttpxTransport(timeouts=t)),
    TransportCase("httpx2", lambda target, t: Httpx2Transport(timeouts=t)),
    # aiohttp is asyncio-only; test_aiohttp.py checks what it does under trio.
    TransportCase("aiohttp", lambda target, t: AiohttpTransport(timeouts=t), ("asyncio",)),
    TransportCase("h11", lambda target, t: H11Transport(target.base_url, timeouts=t)),
]
IN_PROCESS: Final = [
    TransportCase("asgi", lambda target, t: AsgiTransport(target.app, timeouts=t)),
]
DOUBLES: Final = [
    TransportCase("mock", lambda target, t: MockTransport(_ok)),
]

EXCHANGE: Final = matrix([*WIRE, *IN_PROCESS])
LIFECYCLE: Final = matrix([*WIRE, *IN_PROCESS, *DOUBLES])
WIRE_ONLY: Final = matrix(WIRE)


def _target(server: LoopbackServer) -> Target:
    return Target(base_url=server.base_url, app=server.app)


def _factory(case: TransportCase) -> TransportFactory:
    return case.factory


@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "case"), EXCHANGE)
async def test_request_arrives_exactly(case: TransportCase, loopback: LoopbackServer) -> None:
    """Method, path, query, headers and body reach the server byte for byte."""
    await conformance.check_request_arrives_exactly(_factory(case), _target(loopback))


@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "case"), EXCHANGE)
async def test_response_arrives_exactly(case: TransportCase, loopback: LoopbackServer) -> None:
    """2xx, 4xx and 5xx statuses, headers and body bytes come back unchanged."""
    await conformance.check_response_arrives_exactly(_factory(case), _target(loopback))


@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "case"), EXCHANGE)
async def test_large_bodies(case: TransportCase, loopback: LoopbackServer) -> None:
    """Multi-MiB request and response bodies survive intact."""
    await conformance.check_large_bodies(_factory(case), _target(loopback))


@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "case"), EXCHANGE)
async def test_concurrent_sends(case: TransportCase, loopback: LoopbackServer) -> None:
    """Concurrent sends on one transport each get their own answer."""
    await conformance.check_concurrent_sends(_factory(case), _target(loopback))


@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "case"), EXCHANGE)
async def test_read_timeout(case: TransportCase, loopback: LoopbackServer) -> None:
    """A silent server, before or during the body, gives TimedOut(phase='read')."""
    await conformance.check_read_timeout(_factory(case), _target(loopback))


@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "case"), EXCHANGE)
async def test_cancellation_propagates(case: TransportCase, loopback: LoopbackServer) -> None:
    """Cancelling an in-flight send raises; the transport stays usable."""
    await conformance.check_cancellation_propagates(_factory(case), _target(loopback))


@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "case"), LIFECYCLE)
async def test_unsendable_requests(case: TransportCase, loopback: LoopbackServer) -> None:
    """Requests HTTP/1.1 cannot carry raise UsageError without quoting secrets."""
    await conformance.check_unsendable_requests(_factory(case), _target(loopback))


@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "case"), LIFECYCLE)
async def test_close_lifecycle(case: TransportCase, loopback: LoopbackServer) -> None:
    """aclose is idempotent; send after it returns TransportUnavailable."""
    await conformance.check_close_lifecycle(_factory(case), _target(loopback))


@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "case"), WIRE_ONLY)
async def test_connection_refused(case: TransportCase, loopback: LoopbackServer) -> None:
    """A refused connection is ConnectionFailed(request_sent=False)."""
    await conformance.check_connection_refused(_factory(case), _target(loopback))


@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "case"), WIRE_ONLY)
async def test_malformed_response(case: TransportCase, loopback: LoopbackServer) -> None:
    """Bytes that are not HTTP give InvalidResponse, with no secret in the message."""
    await conformance.check_malformed_response(_factory(case), _target(loopback))


@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "case"), WIRE_ONLY)
async def test_closed_before_response(case: TransportCase, loopback: LoopbackServer) -> None:
    """A close before any answer is ConnectionFailed(request_sent=True)."""
    await conformance.check_closed_before_response(_factory(case), _target(loopback))


@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "case"), WIRE_ONLY)
async def test_truncated_body(case: TransportCase, loopback: LoopbackServer) -> None:
    """A close in the middle of the body is ConnectionFailed(request_sent=True)."""
    await conformance.check_truncated_body(_factory(case), _target(loopback))
