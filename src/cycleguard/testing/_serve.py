"""Serve an ASGI app on a loopback port with uvicorn, in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

from cycleguard._core._errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Generator

    from cycleguard.transports.asgi import AsgiApp

__all__ = ("serve_in_thread",)


@contextmanager
def serve_in_thread(
    app: AsgiApp, *, host: str = "127.0.0.1", lifespan: bool = False
) -> Generator[str]:
    """Run ``app`` under uvicorn on a free port of ``host``; yield its base URL.

    The socket listens before the server thread starts, so a client may connect
    at once. The server runs its own asyncio loop in the thread, whatever event
    loop the caller uses; leaving the block stops it (within a few seconds).
    With ``lifespan`` the app's startup (the embedded Cycles server opens its
    store there) completes before the URL is yielded.

    Raises:
        UsageError: uvicorn is not installed (``cycleguard[server]``).

    Example::

        with serve_in_thread(FakeOpenAI()) as base_url:   # "http://127.0.0.1:PORT"
            ...
    """
    try:
        import uvicorn
    except ImportError:
        raise UsageError("serving needs uvicorn: install cycleguard[server]") from None

    # With proto IPPROTO_TCP asyncio sets TCP_NODELAY on accepted connections; with 0
    # it does not, and every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        sock.listen(128)
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            lifespan="on" if lifespan else "off",
            log_level="warning",
            access_log=False,
            http="h11",
            ws="none",
            loop="asyncio",
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="cycleguard-fake", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 15
        while lifespan and not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        try:
            yield f"http://{host}:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=15)
    finally:
        sock.close()
