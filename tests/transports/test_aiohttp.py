"""AiohttpTransport outside asyncio: a clear ``TransportUnavailable``, never a traceback.

Everything else about it is checked by the conformance suite, on asyncio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from cycleguard.errors import TransportUnavailable
from cycleguard.transports import HttpRequest
from cycleguard.transports.aiohttp import AiohttpTransport

from .conformance import expect_failure

if TYPE_CHECKING:
    from tests._loopback import LoopbackServer


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])  # the point of this test is trio
async def test_under_trio_send_returns_transport_unavailable(loopback: LoopbackServer) -> None:
    """Under trio, send returns TransportUnavailable naming asyncio and trio; aclose works."""
    async with AiohttpTransport() as transport:
        result = await transport.send(HttpRequest("GET", loopback.base_url + "/status/200"))
        failure = expect_failure(result)
        assert isinstance(failure, TransportUnavailable)
        assert "asyncio" in failure.message
        assert "trio" in failure.message
        # Still a value on the second try: nothing was half set up by the first.
        again = expect_failure(await transport.send(HttpRequest("GET", loopback.base_url)))
        assert again == failure
