"""A Cycles server under uvicorn on 127.0.0.1, in a background thread, lifespan on.

(``tests._loopback.serve_in_thread`` serves with the lifespan off; the Cycles
server opens its store and sweeper in its lifespan, so it needs it on.)
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from collections.abc import Generator

    from starlette.applications import Starlette

HOST = "127.0.0.1"


@contextmanager
def serve_app(app: Starlette) -> Generator[str]:
    """Serve ``app`` until the block ends; yield its base URL once it is ready."""
    # proto=IPPROTO_TCP lets asyncio set TCP_NODELAY on accepted connections (with proto 0
    # it does not, and every response waits ~40 ms for a delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(256)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level="warning",
        access_log=False,
        http="h11",
        ws="none",
        loop="asyncio",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="cycles-uvicorn", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive(), "the server thread died while starting"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not shut down"
