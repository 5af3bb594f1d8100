"""AsgiTransport specifics: the scope an app sees, Starlette apps, and failing apps.

The exchange itself (exact bytes, timeouts, cancellation) is covered by the
conformance suite, which runs the loopback app in process through this transport.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import anyio
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cycleguard.errors import ConnectionFailed, UsageError
from cycleguard.transports import HttpRequest, Timeouts
from cycleguard.transports.asgi import AsgiTransport

from .conformance import expect_failure, expect_response, kind

if TYPE_CHECKING:
    from starlette.requests import Request

    from cycleguard.transports.asgi import AsgiMessage, AsgiReceive, AsgiScope, AsgiSend

URL: Final = "http://cycles.test:8080/v1/a%2Fb%20c?tenant=acme&x=%C3%A9"


async def _ok(send: AsgiSend) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.anyio
async def test_scope_is_what_a_server_would_pass() -> None:
    """The http scope carries the request as uvicorn would present it."""
    scopes: list[AsgiScope] = []
    bodies: list[AsgiMessage] = []

    async def app(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        scopes.append(scope)
        bodies.append(await receive())
        await _ok(send)

    request = HttpRequest("PUT", URL, (("X-Cycles-API-Key", "k"), ("X-Multi", "1")), b"{}")
    async with AsgiTransport(app, client=("10.0.0.9", 4242)) as transport:
        assert expect_response(await transport.send(request)).body == b"ok"

    [scope] = scopes
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "PUT"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/v1/a/b c"
    assert scope["raw_path"] == b"/v1/a%2Fb%20c"
    assert scope["query_string"] == b"tenant=acme&x=%C3%A9"
    assert scope["root_path"] == ""
    assert scope["server"] == ("cycles.test", 8080)
    assert scope["client"] == ("10.0.0.9", 4242)
    assert scope["headers"] == [
        (b"host", b"cycles.test:8080"),
        (b"x-cycles-api-key", b"k"),
        (b"x-multi", b"1"),
        (b"content-length", b"2"),
    ]
    assert bodies == [{"type": "http.request", "body": b"{}", "more_body": False}]


@pytest.mark.anyio
async def test_head_responses_have_no_body() -> None:
    """As on the wire, a HEAD response carries headers only, even if the app wrote a body."""

    async def app(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        await _ok(send)

    async with AsgiTransport(app) as transport:
        response = expect_response(await transport.send(HttpRequest("HEAD", "http://t/")))
    assert (response.status, response.body) == (200, b"")


@pytest.mark.anyio
async def test_default_ports_and_https() -> None:
    """Without a port in the URL the scope names the scheme's default port."""
    servers: list[object] = []

    async def app(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        servers.append((scope["scheme"], scope["server"]))
        await _ok(send)

    async with AsgiTransport(app) as transport:
        for url in ("http://cycles.test/", "https://cycles.test/x"):
            expect_response(await transport.send(HttpRequest("GET", url)))
    assert servers == [("http", ("cycles.test", 80)), ("https", ("cycles.test", 443))]


async def _hello(request: Request) -> Response:
    return JSONResponse(
        {
            "path": request.url.path,
            "tenant": request.query_params["tenant"],
            "key": request.headers["x-cycles-api-key"],
            "body": (await request.body()).decode(),
        },
        status_code=201,
        headers={"X-Request-Id": "req-1"},
    )


async def _boom(request: Request) -> Response:
    raise ValueError("handler bug")


STARLETTE: Final = Starlette(
    routes=[
        Route("/v1/{rest:path}", _hello, methods=["POST"]),
        Route("/boom", _boom),
    ]
)


@pytest.mark.anyio
async def test_starlette_app_in_process() -> None:
    """A Starlette app is a valid AsgiApp (statically) and answers in process."""
    request = HttpRequest("POST", URL, (("X-Cycles-API-Key", "k1"),), b"payload")
    async with AsgiTransport(STARLETTE) as transport:
        response = expect_response(await transport.send(request))
    assert response.status == 201
    assert response.header("x-request-id") == "req-1"
    assert response.body == (b'{"path":"/v1/a/b c","tenant":"acme","key":"k1","body":"payload"}')


@pytest.mark.anyio
async def test_app_exceptions_propagate_by_default() -> None:
    """With raise_app_exceptions left on, the app's exception reaches the caller."""
    async with AsgiTransport(STARLETTE) as transport:
        with pytest.raises(ValueError, match="handler bug"):
            await transport.send(HttpRequest("GET", "http://cycles.test/boom"))


@pytest.mark.anyio
async def test_starlette_error_becomes_its_500_when_not_raising() -> None:
    """With raise_app_exceptions=False, Starlette's own 500 response is returned."""
    async with AsgiTransport(STARLETTE, raise_app_exceptions=False) as transport:
        response = expect_response(await transport.send(HttpRequest("GET", "http://t/boom")))
    assert response.status == 500
    assert response.body == b"Internal Server Error"


@pytest.mark.anyio
async def test_failing_before_the_response_gives_uvicorns_500() -> None:
    """An app that raises, or returns, before responding yields uvicorn's plain 500."""

    async def raises(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        raise RuntimeError("startup bug")

    async def returns(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        return

    for app in (raises, returns):
        async with AsgiTransport(app, raise_app_exceptions=False) as transport:
            response = expect_response(await transport.send(HttpRequest("GET", "http://t/")))
        assert response.status == 500
        assert response.header("content-type") == "text/plain; charset=utf-8"
        assert response.body == b"Internal Server Error"


@pytest.mark.anyio
async def test_failing_mid_body_is_a_broken_connection() -> None:
    """An app that stops after part of the body looks like a connection cut short."""

    async def partial(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"par", "more_body": True})
        raise RuntimeError("crashed mid-stream")

    async with AsgiTransport(partial, raise_app_exceptions=False) as transport:
        failure = expect_failure(await transport.send(HttpRequest("GET", "http://t/")))
    assert isinstance(failure, ConnectionFailed)
    assert kind(failure) == "ConnectionFailed(request_sent=True)"


@pytest.mark.anyio
async def test_app_breaking_the_asgi_protocol_gets_an_error() -> None:
    """Messages out of order raise inside the app, as a server would make them."""

    async def body_first(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        await send({"type": "http.response.body", "body": b"too early"})

    async def twice(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        await _ok(send)
        await send({"type": "http.response.body", "body": b"after the end"})

    async def bad_headers(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [("a", "b")]})

    for app in (body_first, twice, bad_headers):
        async with AsgiTransport(app) as transport:
            with pytest.raises(RuntimeError, match="ASGI protocol error"):
                await transport.send(HttpRequest("GET", "http://t/"))


@pytest.mark.anyio
async def test_unsendable_request_never_reaches_the_app() -> None:
    """Request checks run first: the app is not called for a request HTTP cannot carry."""
    calls: list[AsgiScope] = []

    async def app(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        calls.append(scope)
        await _ok(send)

    async with AsgiTransport(app) as transport:
        with pytest.raises(UsageError):
            await transport.send(HttpRequest("GET", "http://t/", (("X-Key", "a\nb"),)))
    assert calls == []


async def _never_answers(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
    await anyio.sleep_forever()


@pytest.mark.anyio
async def test_cancellation_propagates_even_when_app_errors_are_mapped() -> None:
    """raise_app_exceptions=False maps Exception, never the loop's cancellation."""
    async with AsgiTransport(_never_answers, raise_app_exceptions=False) as transport:
        with anyio.move_on_after(0.2) as scope:
            await transport.send(HttpRequest("GET", "http://t/"))
            pytest.fail("send returned although it was cancelled")
    assert scope.cancelled_caught


@pytest.mark.anyio
async def test_read_timeout_when_app_errors_are_mapped() -> None:
    """The read timeout cancels the app and is reported as such, not as an app failure."""
    timeouts = Timeouts(read=0.2)
    async with AsgiTransport(_never_answers, timeouts=timeouts, raise_app_exceptions=False) as t:
        failure = expect_failure(await t.send(HttpRequest("GET", "http://t/")))
    assert kind(failure) == "TimedOut(phase='read')"
