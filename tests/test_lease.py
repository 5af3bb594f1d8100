"""The lease against the embedded server: commit, release, refusal, shielded cleanup."""

from __future__ import annotations

import json

import anyio
import pytest
from returns.pipeline import is_successful

from cycleguard import Action, Amount, ReservationStatus, Subject
from cycleguard._core._state import LeaseState
from cycleguard._lease import AlreadyFinalized, open_reservation
from cycleguard._settlement import Committed
from cycleguard.errors import BudgetExceeded, ConnectionFailed
from tests._embedded import Embedded, Tenant, faulty, is_operation, provision

pytestmark = pytest.mark.anyio

ACTION = Action("llm.completion", "openai:gpt-4o-mini")
RESERVE = is_operation("POST", "/v1/reservations")
COMMIT = is_operation("POST", "/commit")
RELEASE = is_operation("POST", "/release")


async def balance(tenant: Tenant) -> tuple[int, int, int]:
    """(remaining, reserved, spent) at the tenant scope."""
    async with tenant.client() as client:
        found = await client.get_balances()
    (row,) = found.unwrap().balances
    assert row.reserved is not None
    assert row.spent is not None
    return row.remaining.amount, row.reserved.amount, row.spent.amount


async def active_count(tenant: Tenant) -> int:
    async with tenant.client() as client:
        rows = [r async for r in client.iter_reservations(status=ReservationStatus.ACTIVE)]
    return len(rows)


async def test_commit_charges_actual_and_returns_the_rest(embedded: Embedded) -> None:
    """Reserve 500, commit 120: spent 120, nothing reserved, lease COMMITTED."""
    tenant = await provision(embedded, {"": 1_000})
    async with tenant.client() as client:
        async with open_reservation(client, action=ACTION, estimate=Amount.tokens(500)) as got:
            lease = got.unwrap()
            assert lease.reserved == Amount.tokens(500)
            assert lease.affected_scopes == (f"tenant:{tenant.tenant_id}",)
            assert await balance(tenant) == (500, 500, 0)
            committed = await lease.commit(Amount.tokens(120))
            assert isinstance(committed.unwrap(), Committed)
            assert lease.state is LeaseState.COMMITTED
    assert await balance(tenant) == (880, 0, 120)


async def test_second_finalization_is_refused_and_never_sent(embedded: Embedded) -> None:
    """After a commit, commit and release are refused as values; no request goes out."""
    tenant = await provision(embedded, {"": 1_000})
    transport = faulty(tenant)
    async with tenant.client(transport) as client:
        async with open_reservation(client, action=ACTION, estimate=Amount.tokens(10)) as got:
            lease = got.unwrap()
            await lease.commit(Amount.tokens(5))
            again = await lease.commit(Amount.tokens(5))
            release = await lease.release("late")
    refused = AlreadyFinalized(reservation_id=lease.reservation_id, state=LeaseState.COMMITTED)
    assert again.failure() == refused
    assert release.failure() == refused
    assert len(transport.sent(COMMIT)) == 1
    assert transport.sent(RELEASE) == []
    assert await balance(tenant) == (995, 0, 5)


async def test_explicit_release_returns_everything(embedded: Embedded) -> None:
    """release() gives the whole hold back and is sent once, with the given reason."""
    tenant = await provision(embedded, {"": 1_000})
    transport = faulty(tenant)
    async with tenant.client(transport) as client:
        async with open_reservation(client, action=ACTION, estimate=Amount.tokens(300)) as got:
            lease = got.unwrap()
            released = await lease.release("model refused")
            assert released.unwrap().released == Amount.tokens(300)
            assert lease.state is LeaseState.RELEASED
    (request,) = transport.sent(RELEASE)
    assert json.loads(request.body)["reason"] == "model refused"
    assert await balance(tenant) == (1_000, 0, 0)


async def test_leaving_without_finalizing_releases(embedded: Embedded) -> None:
    """An early exit releases with a reason that says so."""
    tenant = await provision(embedded, {"": 1_000})
    transport = faulty(tenant)
    async with tenant.client(transport) as client:
        async with open_reservation(client, action=ACTION, estimate=Amount.tokens(300)) as got:
            assert is_successful(got)
    (request,) = transport.sent(RELEASE)
    assert json.loads(request.body)["reason"] == "guarded block ended without commit or release"
    assert await balance(tenant) == (1_000, 0, 0)


async def test_exception_releases_and_propagates(embedded: Embedded) -> None:
    """The block's exception propagates unchanged after a release naming it."""
    tenant = await provision(embedded, {"": 1_000})
    transport = faulty(tenant)

    class ModelBrokeError(Exception):
        pass

    with pytest.raises(ModelBrokeError):  # noqa: PT012  # the block is what raises
        async with tenant.client(transport) as client:
            async with open_reservation(client, action=ACTION, estimate=Amount.tokens(50)) as got:
                assert is_successful(got)
                raise ModelBrokeError
    (request,) = transport.sent(RELEASE)
    assert json.loads(request.body)["reason"] == "guarded block raised ModelBrokeError"
    assert await active_count(tenant) == 0


async def test_cancellation_releases_under_shield_and_propagates(embedded: Embedded) -> None:
    """A cancelled block still releases (shielded); the cancellation reaches its scope."""
    tenant = await provision(embedded, {"": 1_000})
    transport = faulty(tenant)
    async with tenant.client(transport) as client:
        with anyio.CancelScope() as scope:
            async with open_reservation(client, action=ACTION, estimate=Amount.tokens(50)) as got:
                assert is_successful(got)
                scope.cancel()
                await anyio.sleep(10)
            pytest.fail("the cancellation did not propagate")  # pragma: no cover
    assert scope.cancelled_caught
    (request,) = transport.sent(RELEASE)
    assert json.loads(request.body)["reason"] == "guarded block was cancelled"
    assert await balance(tenant) == (1_000, 0, 0)


async def test_denial_yields_the_failure_and_runs_nothing(embedded: Embedded) -> None:
    """Over budget, the block gets BudgetExceeded and no lease; nothing is released."""
    tenant = await provision(embedded, {"": 100})
    transport = faulty(tenant)
    async with tenant.client(transport) as client:
        async with open_reservation(client, action=ACTION, estimate=Amount.tokens(101)) as got:
            assert isinstance(got.failure(), BudgetExceeded)
    assert transport.sent(RELEASE) == []


async def test_create_retries_once_with_the_same_key(embedded: Embedded) -> None:
    """A create whose answer was lost is retried with its key: one reservation results."""
    tenant = await provision(embedded, {"": 1_000})
    transport = faulty(tenant)
    transport.fail(RESERVE, ConnectionFailed(message="reset", request_sent=True), moment="after")
    async with tenant.client(transport) as client:
        async with open_reservation(client, action=ACTION, estimate=Amount.tokens(70)) as got:
            lease = got.unwrap()
            await lease.commit(Amount.tokens(70))
    first, second = transport.sent(RESERVE)
    assert json.loads(first.body)["idempotency_key"] == json.loads(second.body)["idempotency_key"]
    assert await balance(tenant) == (930, 0, 70)


Point = tuple[str, str]
POINTS: list[Point] = [
    (operation, moment)
    for operation in ("reserve", "commit", "release")
    for moment in ("before", "after")
]


@pytest.mark.parametrize(("operation", "moment"), POINTS)
async def test_cancellation_at_every_await_point(
    embedded: Embedded, operation: str, moment: str
) -> None:
    """Cancelled before or after each request: nothing stays ACTIVE, nothing is charged twice."""
    tenant = await provision(embedded, {"": 1_000})
    transport = faulty(tenant)
    matcher = {"reserve": RESERVE, "commit": COMMIT, "release": RELEASE}[operation]
    async with tenant.client(transport) as client:
        with anyio.CancelScope() as scope:
            transport.cancel(matcher, "before" if moment == "before" else "after", scope)
            async with open_reservation(client, action=ACTION, estimate=Amount.tokens(100)) as got:
                lease = got.unwrap()
                if operation == "release":
                    await lease.release("done")
                else:
                    await lease.commit(Amount.tokens(40))
                await anyio.sleep(10)  # reached only if nothing cancelled yet
    assert scope.cancelled_caught
    assert await active_count(tenant) == 0
    remaining, reserved, spent = await balance(tenant)
    assert reserved == 0
    assert spent in {0, 40}
    assert remaining == 1_000 - spent
    if operation == "commit":
        assert spent == 40  # the commit is shielded: known spend is settled
    assert len(transport.sent(COMMIT)) <= 1


async def test_subject_defaults_and_override(embedded: Embedded) -> None:
    """The lease's subject is the client's default merged with the call's fields."""
    tenant = await provision(embedded, {"": 1_000, "/agent:bot": 200})
    async with (
        tenant.client() as client,
        open_reservation(
            client, action=ACTION, estimate=Amount.tokens(10), subject=Subject(agent="bot")
        ) as got,
    ):
        lease = got.unwrap()
        assert lease.subject == Subject(tenant=tenant.tenant_id, agent="bot")
        assert lease.affected_scopes[-1] == f"tenant:{tenant.tenant_id}/agent:bot"
        await lease.release()
