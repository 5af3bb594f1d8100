"""guarded(): the caller's typed failure stays its own; spend is committed exactly."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, final

import attrs
import pytest
from returns.result import Failure, Result, Success

from cycleguard import Action, Amount, Caps, StandardMetrics, Subject
from cycleguard._guarded import Spent, guarded
from cycleguard.errors import BudgetExceeded, Denied, UsageError
from tests._embedded import Embedded, faulty, is_operation, provision

if TYPE_CHECKING:
    from cycleguard._lease import Lease

pytestmark = pytest.mark.anyio

ACTION = Action("llm.completion", "openai:gpt-4o-mini")
COMMIT = is_operation("POST", "/commit")
EVENTS = is_operation("POST", "/v1/events")
RELEASE = is_operation("POST", "/release")


@final
@attrs.frozen
class ModelError:
    """A caller's own typed error (stands in for a provider's)."""

    status: int
    retry_after: float | None = None


async def test_success_commits_the_reported_amount(embedded: Embedded) -> None:
    """The function's value comes back; its actual and metrics are committed."""
    tenant = await provision(embedded, {"": 1_000})
    transport = faulty(tenant)

    async def call(lease: Lease) -> Result[Spent[str], ModelError]:
        assert lease.reserved == Amount.tokens(500)
        return Success(
            Spent(
                value="summary",
                actual=Amount.tokens(321),
                metrics=StandardMetrics(tokens_output=21),
            )
        )

    async with tenant.client(transport) as client:
        result = await guarded(client, call, action=ACTION, estimate=Amount.tokens(500))
        balances = await client.get_balances()
    assert result == Success("summary")
    (commit,) = transport.sent(COMMIT)
    body = json.loads(commit.body)
    assert body["actual"] == {"unit": "TOKENS", "amount": 321}
    assert body["metrics"] == {"tokens_output": 21}
    (row,) = balances.unwrap().balances
    assert row.spent == Amount.tokens(321)


async def test_callers_failure_is_returned_unchanged_and_released(embedded: Embedded) -> None:
    """The caller's ModelError is the failure value; the reservation is released for it."""
    tenant = await provision(embedded, {"": 1_000})
    transport = faulty(tenant)

    async def call(_: Lease) -> Result[Spent[str], ModelError]:
        return Failure(ModelError(status=429, retry_after=2.0))

    async with tenant.client(transport) as client:
        result = await guarded(client, call, action=ACTION, estimate=Amount.tokens(500))
    assert result == Failure(ModelError(status=429, retry_after=2.0))
    (release,) = transport.sent(RELEASE)
    assert json.loads(release.body)["reason"] == "guarded call failed: ModelError"
    assert transport.sent(COMMIT) == []
    assert transport.sent(EVENTS) == []  # no settlement of any kind without a known actual


async def test_denial_never_runs_the_function(embedded: Embedded) -> None:
    """Over budget the function is never called; the Cycles failure says why."""
    tenant = await provision(embedded, {"": 100})
    calls: list[Lease] = []

    async def call(lease: Lease) -> Result[Spent[str], ModelError]:
        calls.append(lease)
        return Success(Spent(value="x", actual=Amount.tokens(1)))

    async with tenant.client() as client:
        result = await guarded(client, call, action=ACTION, estimate=Amount.tokens(101))
    assert isinstance(result.failure(), BudgetExceeded)
    assert calls == []


async def test_caps_reach_the_function(embedded: Embedded) -> None:
    """A policy's caps arrive on the lease (ALLOW_WITH_CAPS) before the call runs."""
    tenant = await provision(embedded, {"": 1_000, "/agent:bot": 500})
    from tests._embedded import admin

    await admin(
        embedded,
        "POST",
        "/v1/admin/policies",
        {
            "tenant_id": tenant.tenant_id,
            "name": "cap bot",
            "scope_pattern": f"tenant:{tenant.tenant_id}/agent:*",
            "priority": 10,
            "caps": {"max_tokens": 256, "tool_denylist": ["shell"]},
        },
    )
    seen: list[Caps | None] = []

    async def call(lease: Lease) -> Result[Spent[int], ModelError]:
        seen.append(lease.caps)
        return Success(Spent(value=1, actual=Amount.tokens(10)))

    async with tenant.client() as client:
        result = await guarded(
            client, call, action=ACTION, estimate=Amount.tokens(300), subject=Subject(agent="bot")
        )
    assert result == Success(1)
    (caps,) = seen
    assert caps is not None
    assert caps.max_tokens == 256
    assert caps.filter_tools(["search", "shell"]) == ("search",)


async def test_commit_rejected_for_good_is_the_cycles_error(embedded: Embedded) -> None:
    """Under REJECT an actual above the estimate is refused: that error is returned."""
    from cycleguard import OveragePolicy

    tenant = await provision(embedded, {"": 1_000})

    async def call(_: Lease) -> Result[Spent[str], ModelError]:
        return Success(Spent(value="long", actual=Amount.tokens(900)))

    async with tenant.client() as client:
        result = await guarded(
            client,
            call,
            action=ACTION,
            estimate=Amount.tokens(100),
            overage_policy=OveragePolicy.REJECT,
        )
    assert isinstance(result.failure(), BudgetExceeded)


async def test_function_that_finalizes_its_lease_is_misuse(embedded: Embedded) -> None:
    """guarded owns finalization: a function that commits itself gets a UsageError."""
    tenant = await provision(embedded, {"": 1_000})

    async def call(lease: Lease) -> Result[Spent[str], ModelError]:
        await lease.commit(Amount.tokens(1))
        return Success(Spent(value="x", actual=Amount.tokens(1)))

    async with tenant.client() as client:
        with pytest.raises(UsageError, match="finalized its lease itself"):
            await guarded(client, call, action=ACTION, estimate=Amount.tokens(10))


async def test_deny_on_a_dry_run_policy_carries_retry_hint() -> None:
    """Denied keeps retry_after_ms; it is a budget error."""
    from cycleguard.errors import is_budget_error, retry_after

    denied = Denied(reason_code="BUDGET_EXCEEDED", retry_after_ms=1500)
    assert is_budget_error(denied)
    assert retry_after(denied) == 1.5
