"""A Cycles server under uvicorn on 127.0.0.1, in a background thread, lifespan on.

The Cycles server opens its store and sweeper in its lifespan, so it needs it on.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from cycleguard.testing import serve_in_thread

if TYPE_CHECKING:
    from collections.abc import Generator

    from starlette.applications import Starlette

HOST = "127.0.0.1"


@contextmanager
def serve_app(app: Starlette) -> Generator[str]:
    """Serve ``app`` until the block ends; yield its base URL once it is ready."""
    with serve_in_thread(app, lifespan=True) as base_url:
        yield base_url
