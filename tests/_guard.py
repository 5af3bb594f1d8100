"""Helpers for the LLM integration tests: a provisioned tenant, and what reached Cycles.

:func:`ledger` provisions a tenant on the embedded server (loopback HTTP), with
an optional caps policy on ``agent:*`` scopes, and yields a :class:`Ledger`: a
Cycles client whose requests are logged, so a test can read the estimate that
was reserved and the body of every commit and release.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, cast, final

import attrs

from cycleguard import Amount, Balance, CyclesClient, Subject
from tests._embedded import Embedded, FaultyTransport, admin, faulty, is_operation, provision

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from cycleguard._core._json import JsonObject

COMMIT = is_operation("POST", "/commit")
RELEASE = is_operation("POST", "/release")
RESERVE = is_operation("POST", "/v1/reservations")
EVENTS = is_operation("POST", "/v1/events")

BOT = Subject(agent="bot")
"""The subject a caps policy applies to (see :func:`ledger`)."""


@final
@attrs.frozen
class Ledger:
    """A tenant's Cycles client and the log of every request it sent."""

    client: CyclesClient
    transport: FaultyTransport
    tenant_id: str

    def commits(self) -> list[JsonObject]:
        """Every commit body sent, oldest first."""
        return [
            cast("JsonObject", json.loads(request.body)) for request in self.transport.sent(COMMIT)
        ]

    def releases(self) -> list[JsonObject]:
        """Every release body sent."""
        return [
            cast("JsonObject", json.loads(request.body)) for request in self.transport.sent(RELEASE)
        ]

    def reservations(self) -> list[JsonObject]:
        """Every reservation-create body sent."""
        return [
            cast("JsonObject", json.loads(request.body)) for request in self.transport.sent(RESERVE)
        ]

    def estimate(self) -> int:
        """The estimate of the only reservation made."""
        (body,) = self.reservations()
        estimate = cast("dict[str, object]", body["estimate"])
        return cast("int", estimate["amount"])

    def committed(self) -> int:
        """The actual amount of the only commit sent."""
        (body,) = self.commits()
        actual = cast("dict[str, object]", body["actual"])
        return cast("int", actual["amount"])

    async def root(self) -> Balance:
        """The tenant's root balance."""
        found = await self.client.get_balances(subject=Subject(tenant=self.tenant_id))
        rows = [row for row in found.unwrap().balances if row.scope == f"tenant:{self.tenant_id}"]
        (row,) = rows
        return row

    async def assert_settled(self, spent: int) -> None:
        """Nothing is held any more and exactly ``spent`` was charged."""
        row = await self.root()
        assert row.reserved is not None
        assert row.reserved.amount == 0, f"still reserved: {row.reserved}"
        assert row.spent is not None
        assert row.spent.amount == spent, f"spent {row.spent.amount}, expected {spent}"


@asynccontextmanager
async def ledger(
    embedded: Embedded,
    *,
    budget: int = 1_000_000,
    unit: str = "TOKENS",
    caps: JsonObject | None = None,
) -> AsyncGenerator[Ledger]:
    """A fresh tenant with ``budget`` at its root (and at ``agent:bot`` when capped)."""
    budgets = {"": budget} if caps is None else {"": budget, "/agent:bot": budget}
    tenant = await provision(embedded, budgets, unit=unit)
    if caps is not None:
        await admin(
            embedded,
            "POST",
            "/v1/admin/policies",
            {
                "tenant_id": tenant.tenant_id,
                "name": "caps for bots",
                "scope_pattern": f"tenant:{tenant.tenant_id}/agent:*",
                "priority": 10,
                "caps": caps,
            },
        )
    transport = faulty(tenant)
    async with tenant.client(transport) as client:
        yield Ledger(client, transport, tenant.tenant_id)


def amount_of(value: object) -> Amount:
    """An ``{"unit", "amount"}`` body as an :class:`Amount`."""
    from cycleguard import Unit

    fields = cast("dict[str, object]", value)
    return Amount(Unit(cast("str", fields["unit"])), cast("int", fields["amount"]))
