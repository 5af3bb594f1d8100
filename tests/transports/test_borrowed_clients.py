"""A transport built on the caller's own client or session borrows it: it never closes it.

Also: the transport's timeouts apply on a borrowed client, and a client its owner has
closed gives ``TransportUnavailable`` rather than an exception.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import aiohttp
import httpx
import httpx2
import pytest

from cycleguard.errors import TransportUnavailable
from cycleguard.transports import HttpRequest, Timeouts
from cycleguard.transports.aiohttp import AiohttpTransport
from cycleguard.transports.httpx import HttpxTransport
from cycleguard.transports.httpx2 import Httpx2Transport
from tests._loopback import parse_echo

from .conformance import (
    FRAMING_HEADERS,
    SHORT_READ_TIMEOUT,
    expect_failure,
    expect_response,
    kind,
)

if TYPE_CHECKING:
    from tests._loopback import LoopbackServer


def _get(server: LoopbackServer, path: str) -> HttpRequest:
    return HttpRequest("GET", server.base_url + path)


@pytest.mark.anyio
async def test_httpx_client_stays_open(loopback: LoopbackServer) -> None:
    """After aclose (twice), the caller's httpx client is open and still works."""
    async with httpx.AsyncClient() as client:
        transport = HttpxTransport(client)
        assert expect_response(await transport.send(_get(loopback, "/status/200"))).status == 200
        await transport.aclose()
        await transport.aclose()
        assert not client.is_closed
        assert (await client.get(loopback.base_url + "/status/201")).status_code == 201
    late = HttpxTransport(client)
    failure = expect_failure(await late.send(_get(loopback, "/status/200")))
    assert isinstance(failure, TransportUnavailable)
    await late.aclose()


@pytest.mark.anyio
async def test_httpx2_client_stays_open(loopback: LoopbackServer) -> None:
    """After aclose (twice), the caller's httpx2 client is open and still works."""
    async with httpx2.AsyncClient() as client:
        transport = Httpx2Transport(client)
        assert expect_response(await transport.send(_get(loopback, "/status/200"))).status == 200
        await transport.aclose()
        await transport.aclose()
        assert not client.is_closed
        assert (await client.get(loopback.base_url + "/status/201")).status_code == 201
    late = Httpx2Transport(client)
    failure = expect_failure(await late.send(_get(loopback, "/status/200")))
    assert isinstance(failure, TransportUnavailable)
    await late.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp is asyncio-only
async def test_aiohttp_session_stays_open(loopback: LoopbackServer) -> None:
    """After aclose (twice), the caller's aiohttp session is open and still works."""
    async with aiohttp.ClientSession() as session:
        transport = AiohttpTransport(session)
        assert expect_response(await transport.send(_get(loopback, "/status/200"))).status == 200
        await transport.aclose()
        await transport.aclose()
        assert not session.closed
        async with session.get(loopback.base_url + "/status/201") as response:
            assert response.status == 201
    late = AiohttpTransport(session)
    failure = expect_failure(await late.send(_get(loopback, "/status/200")))
    assert isinstance(failure, TransportUnavailable)
    await late.aclose()


@pytest.mark.anyio
async def test_httpx_family_timeouts_apply_to_borrowed_clients(loopback: LoopbackServer) -> None:
    """The transport's read timeout wins over a borrowed client's own (here: none)."""
    timeouts = Timeouts(read=SHORT_READ_TIMEOUT)
    async with httpx.AsyncClient(timeout=None) as one, httpx2.AsyncClient(timeout=None) as two:
        for transport in (
            HttpxTransport(one, timeouts=timeouts),
            Httpx2Transport(two, timeouts=timeouts),
        ):
            result = await transport.send(_get(loopback, f"/hang/{uuid.uuid4().hex}"))
            assert kind(expect_failure(result)) == "TimedOut(phase='read')"
            await transport.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp is asyncio-only
async def test_aiohttp_timeouts_apply_to_borrowed_sessions(loopback: LoopbackServer) -> None:
    """The transport's read timeout wins over a borrowed session's own (here: none)."""
    no_limit = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=no_limit) as session:
        transport = AiohttpTransport(session, timeouts=Timeouts(read=SHORT_READ_TIMEOUT))
        result = await transport.send(_get(loopback, f"/hang/{uuid.uuid4().hex}"))
        assert kind(expect_failure(result)) == "TimedOut(phase='read')"
        await transport.aclose()


_HEADERS = (("X-Cycles-API-Key", "k"), ("Content-Type", "application/json"))


def _assert_only_our_headers(body: bytes) -> None:
    received = [(name, value) for name, value in parse_echo(body).headers]
    ours = [(name.lower(), value) for name, value in _HEADERS]
    assert [pair for pair in received if pair[0] not in FRAMING_HEADERS] == ours


@pytest.mark.anyio
async def test_httpx_family_borrowed_clients_add_no_default_headers(
    loopback: LoopbackServer,
) -> None:
    """A borrowed client's default headers (User-Agent, Accept, …) are not sent."""
    request = HttpRequest("POST", loopback.base_url + "/echo/x", _HEADERS, b"{}")
    async with httpx.AsyncClient() as one, httpx2.AsyncClient() as two:
        for transport in (HttpxTransport(one), Httpx2Transport(two)):
            _assert_only_our_headers(expect_response(await transport.send(request)).body)
            await transport.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp is asyncio-only
async def test_aiohttp_borrowed_session_adds_no_auto_headers(loopback: LoopbackServer) -> None:
    """A borrowed session's automatic headers (User-Agent, Accept, …) are not sent."""
    request = HttpRequest("POST", loopback.base_url + "/echo/x", _HEADERS, b"{}")
    async with aiohttp.ClientSession() as session:
        transport = AiohttpTransport(session)
        _assert_only_our_headers(expect_response(await transport.send(request)).body)
        await transport.aclose()
