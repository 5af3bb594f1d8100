"""What lets every example run offline: an embedded Cycles server, in process.

The examples' own code is what you would write against a real Cycles server
and a real provider; only this harness is a stand-in. It starts the embedded
server (memory store) in the current event loop, seeds one tenant (``acme``)
with a budget, an API key and optionally a caps policy for ``agent:*``
scopes, and hands back a :class:`~cycleguard.CyclesClient` wired to it. The
provider side is :class:`~cycleguard.testing.FakeOpenAI` or
:class:`~cycleguard.testing.FakeAnthropic`, whose ``client()`` is the real SDK.

Against real services you would instead write::

    async with CyclesClient.from_env() as cycles, openai.AsyncOpenAI() as client:
        ...
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from cycleguard import Amount, Caps, ClientConfig, CyclesClient, Subject, Unit
from cycleguard.server.admin_models import (
    ApiKeyCreateRequest,
    BudgetCreateRequest,
    PolicyCreateRequest,
    TenantCreateRequest,
)
from cycleguard.server.app import CyclesServer
from cycleguard.server.clock import SystemClock
from cycleguard.server.seed import Seed, apply_seed
from cycleguard.server.stores.memory import memory_store
from cycleguard.transports.asgi import AsgiTransport

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

TENANT = "acme"


@asynccontextmanager
async def offline_cycles(
    *, allocated: int = 100_000, unit: Unit = Unit.TOKENS, agent_caps: Caps | None = None
) -> AsyncGenerator[CyclesClient]:
    """A Cycles client for tenant ``acme``, whose root budget is ``allocated`` ``unit``.

    With ``agent_caps``, a policy grants ``ALLOW_WITH_CAPS`` with those caps to
    every ``agent:*`` scope (and ``agent:planner`` gets a budget of its own).
    """
    budgets = [
        BudgetCreateRequest(
            tenant_id=TENANT,
            scope=f"tenant:{TENANT}",
            unit=unit,
            allocated=Amount(unit, allocated),
        )
    ]
    policies: list[PolicyCreateRequest] = []
    if agent_caps is not None:
        budgets.append(
            BudgetCreateRequest(
                tenant_id=TENANT,
                scope=f"tenant:{TENANT}/agent:planner",
                unit=unit,
                allocated=Amount(unit, allocated),
            )
        )
        policies.append(
            PolicyCreateRequest(
                tenant_id=TENANT,
                name="agents are capped",
                scope_pattern=f"tenant:{TENANT}/agent:*",
                caps=agent_caps,
            )
        )
    seed = Seed(
        tenants=(TenantCreateRequest(tenant_id=TENANT, name="Acme"),),
        api_keys=(ApiKeyCreateRequest(tenant_id=TENANT, name="examples"),),
        budgets=tuple(budgets),
        policies=tuple(policies),
    )
    server = CyclesServer(open_store=memory_store, sweep_interval=None)
    async with server.running():
        (key,) = await apply_seed(server.store, seed, SystemClock())
        config = ClientConfig(
            base_url="http://cycles.local", api_key=key.secret, subject=Subject(tenant=TENANT)
        )
        async with CyclesClient(config, transport=AsgiTransport(server.app)) as cycles:
            yield cycles
