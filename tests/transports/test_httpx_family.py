"""The httpx and httpx2 exception tables, one exception at a time.

Each library's own ``MockTransport`` raises the exception inside a real
``AsyncClient``, so this goes through the public ``HttpxTransport`` /
``Httpx2Transport`` exactly as a network failure would. Timeout phases other than
``read`` (and pool exhaustion) are hard to provoke reliably on loopback, so this is
where they are pinned.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

import httpx
import httpx2
import pytest

from cycleguard.transports import HttpRequest
from cycleguard.transports.httpx import HttpxTransport
from cycleguard.transports.httpx2 import Httpx2Transport

from .conformance import SECRET, expect_failure, kind

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator
    from types import ModuleType

    from cycleguard.transports import Transport

REQUEST: Final = HttpRequest(
    "GET", "http://cycles.test/v1/balances", (("X-Cycles-API-Key", SECRET),)
)

CASES: Final = [
    ("ConnectTimeout", "timed out", "TimedOut(phase='connect')"),
    ("ReadTimeout", "timed out", "TimedOut(phase='read')"),
    ("WriteTimeout", "timed out", "TimedOut(phase='write')"),
    ("PoolTimeout", "timed out", "TimedOut(phase='pool')"),
    ("TimeoutException", "timed out", "TimedOut(phase='read')"),
    ("ConnectError", "[Errno 111] Connection refused", "ConnectionFailed(request_sent=False)"),
    ("ProxyError", "407 from proxy", "ConnectionFailed(request_sent=False)"),
    ("UnsupportedProtocol", "no transport for 'ftp'", "ConnectionFailed(request_sent=False)"),
    ("LocalProtocolError", "Illegal header value", "ConnectionFailed(request_sent=False)"),
    ("ReadError", "[Errno 104] Connection reset by peer", "ConnectionFailed(request_sent=True)"),
    ("WriteError", "[Errno 32] Broken pipe", "ConnectionFailed(request_sent=True)"),
    ("CloseError", "close failed", "ConnectionFailed(request_sent=True)"),
    ("NetworkError", "network down", "ConnectionFailed(request_sent=True)"),
    (
        "RemoteProtocolError",
        "Server disconnected without sending a response.",
        "ConnectionFailed(request_sent=True)",
    ),
    (
        "RemoteProtocolError",
        "peer closed connection without sending complete message body (received 5 bytes)",
        "ConnectionFailed(request_sent=True)",
    ),
    ("RemoteProtocolError", "illegal status line: bytearray(b'x')", "InvalidResponse"),
    ("ProtocolError", "protocol error", "InvalidResponse"),
    ("DecodingError", "Error -3 while decompressing data", "InvalidResponse"),
]


def _exception(module: ModuleType, name: str, message: str) -> Exception:
    cls = getattr(module, name)
    assert isinstance(cls, type)
    assert issubclass(cls, Exception)
    return cls(message)


@asynccontextmanager
async def _httpx_raising(exc: BaseException) -> AsyncGenerator[Transport]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        yield HttpxTransport(client)


@asynccontextmanager
async def _httpx2_raising(exc: BaseException) -> AsyncGenerator[Transport]:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise exc

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client:
        yield Httpx2Transport(client)


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "message", "expected"), CASES)
async def test_httpx_exception_table(name: str, message: str, expected: str) -> None:
    """Each httpx exception becomes the failure value its entry promises."""
    async with _httpx_raising(_exception(httpx, name, message)) as transport:
        failure = expect_failure(await transport.send(REQUEST))
    assert kind(failure) == expected
    assert name in failure.message


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "message", "expected"), CASES)
async def test_httpx2_exception_table(name: str, message: str, expected: str) -> None:
    """Each httpx2 exception becomes the failure value its entry promises."""
    async with _httpx2_raising(_exception(httpx2, name, message)) as transport:
        failure = expect_failure(await transport.send(REQUEST))
    assert kind(failure) == expected
    assert name in failure.message


@pytest.mark.anyio
async def test_secrets_are_removed_from_library_messages() -> None:
    """A library message quoting the API key reaches the caller with the key redacted."""
    text = f"reset while sending key {SECRET}"
    async with _httpx_raising(httpx.ReadError(text)) as transport:
        first = expect_failure(await transport.send(REQUEST))
    async with _httpx2_raising(httpx2.ReadError(text)) as transport:
        second = expect_failure(await transport.send(REQUEST))
    for failure in (first, second):
        assert SECRET not in failure.message
        assert "<redacted>" in failure.message


@pytest.mark.anyio
async def test_local_protocol_error_text_is_never_shown() -> None:
    """h11 quotes the bad header value; that text is left out even without a secret header."""
    leaked = "Illegal header value b'private-token-value'"
    async with _httpx_raising(httpx.LocalProtocolError(leaked)) as transport:
        failure = expect_failure(await transport.send(HttpRequest("GET", "http://cycles.test/")))
    assert "private-token-value" not in failure.message


@pytest.mark.anyio
async def test_exceptions_outside_the_table_propagate() -> None:
    """A bug (here a RuntimeError in the client's transport) is not turned into a value."""
    async with _httpx_raising(RuntimeError("bug")) as transport:
        with pytest.raises(RuntimeError, match="bug"):
            await transport.send(REQUEST)
