"""A live Cycles server per store kind (memory, SQLite) for the whole session, and a
fresh tenant per test. Every response is validated against the spec's schemas."""

from __future__ import annotations

import uuid
from functools import partial
from typing import TYPE_CHECKING

import attrs
import httpx
import pytest

from cycleguard.server.app import CyclesServer
from cycleguard.server.clock import ManualClock
from cycleguard.server.stores.memory import memory_store
from cycleguard.server.stores.sqlite import sqlite_store
from tests.server._api import ADMIN, ADMIN_KEY, Api, json_of
from tests.server._live import serve_app
from tests.server._schema import validate_response

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Generator


@attrs.frozen
class Live:
    """A running server: its URL, its clock, its store kind and the server object."""

    base_url: str
    clock: ManualClock
    kind: str
    server: CyclesServer


@pytest.fixture(scope="session", params=["memory", "sqlite"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Generator[Live]:
    """One server per store kind, shared by every test of the session."""
    kind = str(request.param)
    clock = ManualClock()
    open_store = (
        memory_store
        if kind == "memory"
        else partial(sqlite_store, tmp_path_factory.mktemp("db") / "cycles.db")
    )
    server = CyclesServer(
        open_store=open_store, clock=clock, admin_key=ADMIN_KEY, sweep_interval=0.02
    )
    with serve_app(server.app) as base_url:
        yield Live(base_url=base_url, clock=clock, kind=kind, server=server)


@pytest.fixture
async def http(live: Live) -> AsyncGenerator[httpx.AsyncClient]:
    """A client whose every response is checked against the spec."""
    async with httpx.AsyncClient(
        base_url=live.base_url, timeout=20, event_hooks={"response": [validate_response]}
    ) as client:
        yield client


async def make_tenant(http: httpx.AsyncClient, live: Live, **settings: object) -> Api:
    """A new tenant with a default-permission key."""
    tenant_id = "t-" + uuid.uuid4().hex[:12]
    created = await http.post(
        "/v1/admin/tenants",
        json={"tenant_id": tenant_id, "name": "Test", **settings},
        headers=ADMIN,
    )
    assert created.status_code == 201, created.text
    key = await http.post(
        "/v1/admin/api-keys", json={"tenant_id": tenant_id, "name": "test"}, headers=ADMIN
    )
    assert key.status_code == 201, key.text
    return Api(
        http=http, clock=live.clock, tenant_id=tenant_id, secret=str(json_of(key)["key_secret"])
    )


@pytest.fixture
async def api(http: httpx.AsyncClient, live: Live) -> Api:
    """A fresh tenant for this test."""
    return await make_tenant(http, live)
