"""The app in-process through the ASGI transport: it runs on the test's own loop, trio included."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, cast

import pytest

from cycleguard.server.app import CyclesServer
from cycleguard.server.clock import ManualClock
from cycleguard.server.records import RESERVATION_RETENTION_MS
from cycleguard.server.stores.memory import memory_store
from cycleguard.server.stores.sqlite import sqlite_store
from tests.server._api import ADMIN, ADMIN_KEY, Api, Json, json_of
from tests.server._live import in_process
from tests.server._schema import response_problems

if TYPE_CHECKING:
    from pathlib import Path

    from starlette.types import ASGIApp, Receive, Scope, Send

pytestmark = pytest.mark.anyio


class _PassThrough:
    """A middleware that changes nothing, so the app serves every route through Starlette."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


@pytest.mark.parametrize("routing", ["direct", "starlette"])
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_reserve_commit_and_sweep_in_process(kind: str, routing: str, tmp_path: Path) -> None:
    clock = ManualClock()
    open_store = memory_store if kind == "memory" else partial(sqlite_store, tmp_path / "c.db")
    server = CyclesServer(
        open_store=open_store, clock=clock, admin_key=ADMIN_KEY, sweep_interval=None
    )
    if routing == "starlette":
        server.app.add_middleware(_PassThrough)
    async with in_process(server) as http:
        await http.post(
            "/v1/admin/tenants", json={"tenant_id": "acme", "name": "Acme"}, headers=ADMIN
        )
        key = json_of(
            await http.post(
                "/v1/admin/api-keys", json={"tenant_id": "acme", "name": "k"}, headers=ADMIN
            )
        )
        api = Api(http=http, clock=clock, tenant_id="acme", secret=str(key["key_secret"]))
        await api.budget(allocated=100)
        rid = await api.hold(40, ttl_ms=1_000, grace_period_ms=0)
        committed = await api.hold(10)
        answer = await api.commit(committed, 10, key="c1")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["x-cycles-tenant"] == "acme"
        assert len(answer.headers["x-request-id"]) == len(answer.headers["x-cycles-trace-id"]) == 32
        assert (await api.commit(committed, 10, key="c1")).content == answer.content
        clock.advance(1_001)
        report = await server.sweep_once()
        assert (report.expired, report.purged) == (1, 0)
        row = await api.balance()
        assert (row["remaining"], row["reserved"], row["spent"]) == (90, 0, 10)
        assert (await api.get(rid)).status_code == 410


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_finished_reservations_are_removed_when_their_retention_ends(
    kind: str, tmp_path: Path
) -> None:
    """Committed, released and expired reservations stay readable for the retention
    period, then the sweeper removes them (for good: SQLite restarts without them);
    the budget keeps what they spent, and an active reservation is not removed."""
    clock = ManualClock()
    open_store = memory_store if kind == "memory" else partial(sqlite_store, tmp_path / "c.db")
    secret = ""
    rids: list[str] = []
    restarts = ("after restart",) if kind == "sqlite" else ()  # a memory store starts empty
    for attempt in ("first run", *restarts):
        server = CyclesServer(
            open_store=open_store, clock=clock, admin_key=ADMIN_KEY, sweep_interval=None
        )
        async with in_process(server) as http:
            if attempt == "first run":
                await http.post(
                    "/v1/admin/tenants", json={"tenant_id": "acme", "name": "Acme"}, headers=ADMIN
                )
                created = await http.post(
                    "/v1/admin/api-keys", json={"tenant_id": "acme", "name": "k"}, headers=ADMIN
                )
                secret = str(json_of(created)["key_secret"])
            api = Api(http=http, clock=clock, tenant_id="acme", secret=secret)
            if attempt == "after restart":
                for rid in rids:
                    assert (await api.get(rid)).status_code == 404
                row = await api.balance()
                assert (row["remaining"], row["reserved"], row["spent"]) == (70, 20, 10)
                continue
            await api.budget(allocated=100)
            committed = await api.hold(10)
            assert (await api.commit(committed, 10)).status_code == 200
            released = await api.hold(10)
            assert (await api.release(released)).status_code == 200
            expired = await api.hold(10, ttl_ms=1_000, grace_period_ms=0)
            clock.advance(1_001)
            rids = [committed, released, expired]
            report = await server.sweep_once()
            assert (report.expired, report.removed) == (1, 0)
            clock.advance(RESERVATION_RETENTION_MS - 1_001)  # retention ends for two
            assert (await server.sweep_once()).removed == 0
            assert (await api.get(committed)).status_code == 200
            clock.advance(1)
            assert (await server.sweep_once()).removed == 2
            assert (await api.get(expired)).status_code == 410
            clock.advance(1_000)  # it lapsed 1,000 ms after the other two finished
            active = await api.hold(20)
            assert (await server.sweep_once()).removed == 1
            for rid in rids:
                assert (await api.get(rid)).status_code == 404
            assert (await api.get(active)).status_code == 200
            listed = json_of(await http.get("/v1/reservations", headers=api.headers))
            rows = cast("list[Json]", listed["reservations"])
            assert [row["reservation_id"] for row in rows] == [active]
            row = await api.balance()
            assert (row["remaining"], row["reserved"], row["spent"]) == (70, 20, 10)


def test_the_schema_helper_catches_bad_bodies() -> None:
    assert response_problems("GET", "/v1/balances", 200, {"balances": []}) == []
    assert response_problems("GET", "/v1/balances", 200, {"balances": [], "extra": 1})
    assert response_problems("GET", "/v1/balances", 404, {"error": "NOT_FOUND"})
    assert response_problems("POST", "/v1/decide", 200, {"decision": "MAYBE"})
    envelope = {"error": "NOT_FOUND", "message": "m", "request_id": "r"}
    assert response_problems("GET", "/v1/nothing", 404, envelope) == []
    assert response_problems("POST", "/v1/admin/tenants", 201, {"tenant_id": "acme"})
