"""``kill -9`` in the middle of traffic: after a restart nothing acknowledged is lost and
no reservation is half-applied (SQLite store, a real server process)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, cast

import anyio
import httpx
import pytest

from tests.server._api import amount, new_key
from tests.server._process import ServerProcess

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

SEED = """
[[tenants]]
tenant_id = "durable"
name = "Durable"

[[api_keys]]
tenant_id = "durable"
name = "load"

[[budgets]]
tenant_id = "durable"
scope = "tenant:durable"
unit = "TOKENS"
allocated = 100_000_000

[[budgets]]
tenant_id = "durable"
scope = "tenant:durable/agent:a"
unit = "TOKENS"
allocated = 100_000_000
"""

Json = dict[str, object]


async def _traffic(
    base_url: str,
    secret: str,
    acked_reserves: dict[str, int],
    acked_commits: dict[str, int],
    stop: anyio.Event,
) -> None:
    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(
            base_url=base_url, headers={"X-Cycles-API-Key": secret}, timeout=5
        ) as http:
            while not stop.is_set():
                estimate = rng.randint(1, 100)
                try:
                    reserved = await http.post(
                        "/v1/reservations",
                        json={
                            "idempotency_key": new_key(),
                            "subject": {"tenant": "durable", "agent": "a"},
                            "action": {"kind": "llm.completion", "name": "m"},
                            "estimate": amount(estimate),
                        },
                    )
                    if reserved.status_code != 200:
                        continue
                    rid = str(reserved.json()["reservation_id"])
                    acked_reserves[rid] = estimate
                    if rng.random() < 0.5:
                        continue  # left ACTIVE
                    actual = rng.randint(0, estimate)
                    committed = await http.post(
                        f"/v1/reservations/{rid}/commit",
                        json={"idempotency_key": new_key(), "actual": amount(actual)},
                    )
                    if committed.status_code == 200:
                        acked_commits[rid] = actual
                except httpx.TransportError:
                    return  # the server is gone

    async with anyio.create_task_group() as group:
        for seed in range(8):
            group.start_soon(worker, seed)


# A request in flight when the server dies leaves httpx's request-body iterator
# unfinished; trio reports that when it is collected. It is the client's side of the
# kill, not a leak in the code under test.
@pytest.mark.filterwarnings(
    "ignore:Async generator 'httpx._content.ByteStream.__aiter__' was garbage collected"
    ":ResourceWarning"
)
async def test_kill_9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    seed = tmp_path / "seed.toml"
    seed.write_text(SEED)
    db = tmp_path / "cycles.db"
    server = ServerProcess(["--db", str(db), "--seed", str(seed)])
    acked_reserves: dict[str, int] = {}
    acked_commits: dict[str, int] = {}
    stop = anyio.Event()
    try:
        base_url = server.wait_ready()
        secret = next(line.rsplit(": ", 1)[1] for line in server.stdout if "API key" in line)
        async with anyio.create_task_group() as group:
            group.start_soon(_traffic, base_url, secret, acked_reserves, acked_commits, stop)
            while len(acked_reserves) < 150:  # noqa: ASYNC110 - polling a counter the traffic fills
                await anyio.sleep(0.02)
            server.kill()  # mid-traffic: requests are in flight
            stop.set()
    finally:
        server.kill()
    assert len(acked_reserves) >= 150

    restarted = ServerProcess(["--db", str(db)])
    try:
        base_url = restarted.wait_ready()
        async with httpx.AsyncClient(
            base_url=base_url, headers={"X-Cycles-API-Key": secret}, timeout=10
        ) as http:
            rows: list[Json] = []
            cursor: str | None = None
            while True:
                params = {"limit": "200", **({"cursor": cursor} if cursor else {})}
                page = (await http.get("/v1/reservations", params=params)).json()
                rows += cast("list[Json]", page["reservations"])
                cursor = page.get("next_cursor")
                if not cursor:
                    break
            listed = await http.get("/v1/balances", params={"tenant": "durable"})
            balances = cast("list[Json]", listed.json()["balances"])
    finally:
        assert restarted.stop() == 0
    stored = {str(row["reservation_id"]): row for row in rows}
    # every acknowledged reservation and commit survived, exactly as acknowledged
    assert set(acked_reserves) <= set(stored)
    for rid, estimate in acked_reserves.items():
        assert cast("Json", stored[rid]["reserved"])["amount"] == estimate
    for rid, actual in acked_commits.items():
        assert stored[rid]["status"] == "COMMITTED"
        assert cast("Json", stored[rid]["committed"])["amount"] == actual
    # and every stored reservation is whole: the budgets account for exactly what is stored
    held = sum(
        cast("int", cast("Json", row["reserved"])["amount"])
        for row in rows
        if row["status"] == "ACTIVE"
    )
    spent = sum(
        cast("int", cast("Json", row["committed"])["amount"])
        for row in rows
        if row["status"] == "COMMITTED"
    )
    assert len(balances) == 2
    for balance in balances:
        numbers = {
            name: cast("int", cast("Json", value)["amount"])
            for name, value in balance.items()
            if isinstance(value, dict)
        }
        assert (numbers["reserved"], numbers["spent"]) == (held, spent)
        assert (
            numbers["allocated"]
            == numbers["remaining"] + numbers["spent"] + numbers["reserved"] + numbers["debt"]
        )
