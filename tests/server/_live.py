"""A Cycles server under uvicorn on 127.0.0.1, in a background thread, lifespan on;
or in-process on the test's own loop.

The Cycles server opens its store and sweeper in its lifespan, so it needs it on.
"""

from __future__ import annotations

from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING

import httpx

from cycleguard.testing import serve_in_thread
from tests.server._schema import validate_response

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Generator

    from starlette.applications import Starlette

    from cycleguard.server.app import CyclesServer

HOST = "127.0.0.1"


@contextmanager
def serve_app(app: Starlette) -> Generator[str]:
    """Serve ``app`` until the block ends; yield its base URL once it is ready."""
    with serve_in_thread(app, lifespan=True) as base_url:
        yield base_url


@asynccontextmanager
async def in_process(server: CyclesServer) -> AsyncGenerator[httpx.AsyncClient]:
    """Run ``server`` on this loop; yield a client calling its app directly through the
    ASGI transport, every response checked against the spec."""
    async with (
        server.running(),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=server.app),
            base_url="http://cycles.test",
            event_hooks={"response": [validate_response]},
        ) as http,
    ):
        yield http
