"""Shared fixtures: every async test runs on asyncio and on trio."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests._embedded import ADMIN_KEY, Embedded

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each ``@pytest.mark.anyio`` test once per event loop."""
    return str(request.param)


@pytest.fixture(autouse=True, scope="session")
def _private_journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep every test's settlement journal out of the user's state directory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CYCLES_JOURNAL_DIR", str(tmp_path_factory.mktemp("journal")))
        yield


@pytest.fixture(scope="session")
def embedded() -> Iterator[Embedded]:
    """The embedded Cycles server (memory store) on loopback, with a manual clock."""
    from cycleguard.server.app import CyclesServer
    from cycleguard.server.clock import ManualClock
    from cycleguard.server.stores.memory import memory_store
    from tests.server._live import serve_app

    clock = ManualClock()
    server = CyclesServer(
        open_store=memory_store, clock=clock, admin_key=ADMIN_KEY, sweep_interval=0.05
    )
    with serve_app(server.app) as base_url:
        yield Embedded(base_url, clock)
