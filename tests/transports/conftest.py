"""Fixtures for transport tests: one real loopback HTTP server for the whole session."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests._loopback import serve_loopback

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests._loopback import LoopbackServer


@pytest.fixture(scope="session")
def loopback() -> Iterator[LoopbackServer]:
    """uvicorn serving the loopback test app on 127.0.0.1, in a background thread."""
    with serve_loopback() as server:
        yield server
