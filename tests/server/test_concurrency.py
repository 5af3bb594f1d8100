"""32 concurrent clients against one budget over loopback: no overspend, exact attribution."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, cast

import anyio
import httpx
import pytest

from tests.server._api import Api, amount, json_of, new_key

if TYPE_CHECKING:
    from tests.server.conftest import Live

pytestmark = pytest.mark.anyio

CLIENTS = 32
ROUNDS = 6
ROOT_BUDGET = 2_000


async def test_concurrent_clients_never_overspend(api: Api, live: Live) -> None:
    await api.budget(allocated=ROOT_BUDGET)
    for index in range(CLIENTS):
        await api.budget(f"/agent:a{index}", allocated=150)
    charged: dict[str, int] = {}
    outcomes: dict[int, int] = {}

    async def client(index: int) -> None:
        rng = random.Random(index)
        agent = f"a{index}"
        subject = api.subject(agent=agent)
        async with httpx.AsyncClient(
            base_url=live.base_url, headers=api.headers, timeout=30
        ) as http:
            for _ in range(ROUNDS):
                estimate = rng.randint(10, 60)
                policy = rng.choice(["REJECT", "ALLOW_IF_AVAILABLE"])
                reserved = await http.post(
                    "/v1/reservations",
                    json={
                        "idempotency_key": new_key(),
                        "subject": subject,
                        "action": {"kind": "llm.completion", "name": "m"},
                        "estimate": amount(estimate),
                        "overage_policy": policy,
                    },
                )
                outcomes[reserved.status_code] = outcomes.get(reserved.status_code, 0) + 1
                if reserved.status_code != 200:
                    assert reserved.status_code == 409, reserved.text
                    continue
                rid = json_of(reserved)["reservation_id"]
                if rng.random() < 0.2:
                    released = await http.post(
                        f"/v1/reservations/{rid}/release", json={"idempotency_key": new_key()}
                    )
                    assert released.status_code == 200
                    continue
                actual = rng.randint(0, estimate + 20)
                committed = await http.post(
                    f"/v1/reservations/{rid}/commit",
                    json={"idempotency_key": new_key(), "actual": amount(actual)},
                )
                if committed.status_code == 200:
                    value = cast("dict[str, int]", json_of(committed)["charged"])["amount"]
                    charged[agent] = charged.get(agent, 0) + value
                else:
                    assert (committed.status_code, json_of(committed)["error"]) == (
                        409,
                        "BUDGET_EXCEEDED",
                    )
                    await http.post(
                        f"/v1/reservations/{rid}/release", json={"idempotency_key": new_key()}
                    )

    async with anyio.create_task_group() as group:
        for index in range(CLIENTS):
            group.start_soon(client, index)

    assert outcomes.get(200, 0) > CLIENTS
    rows = {str(row["scope_path"]): row for row in await api.balances()}
    total = 0
    for index in range(CLIENTS):
        leaf = await api.balance(f"/agent:a{index}")
        assert leaf["spent"] == charged.get(f"a{index}", 0)
        assert leaf["reserved"] == 0
        assert 0 <= leaf["spent"] <= 150
        total += leaf["spent"]
    root = await api.balance()
    assert root["spent"] == total == sum(charged.values())
    assert root["spent"] <= ROOT_BUDGET
    assert root["reserved"] == 0
    assert root["debt"] == 0
    for row in rows.values():
        numbers = {
            k: cast("dict[str, int]", v)["amount"] for k, v in row.items() if isinstance(v, dict)
        }
        assert numbers["allocated"] == (
            numbers["remaining"] + numbers["spent"] + numbers["reserved"] + numbers["debt"]
        )
