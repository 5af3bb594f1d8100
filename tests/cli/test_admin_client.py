"""``cycleguard.admin.AdminClient`` on asyncio and trio: the embedded server in process,
and a mock transport for what a real server never answers."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, cast

import pytest
from returns.pipeline import is_successful

if TYPE_CHECKING:
    from returns.result import Result

from cycleguard import Amount, Caps, Unit
from cycleguard.admin import (
    AdminClient,
    ApiKeyCreateRequest,
    BudgetCreateRequest,
    BudgetFundingRequest,
    BudgetStatusTransitionRequest,
    BudgetUpdateRequest,
    FundingOperation,
    PolicyCreateRequest,
    PolicyStatus,
    PolicyUpdateRequest,
    TenantCreateRequest,
    TenantStatus,
    TenantUpdateRequest,
)
from cycleguard.errors import (
    ConnectionFailed,
    InvalidResponse,
    NotFound,
    Unauthorized,
    UnknownServerError,
    ValidationFailed,
)
from cycleguard.server.clock import ManualClock
from cycleguard.transports import HttpRequest, HttpResponse
from cycleguard.transports.asgi import AsgiTransport
from cycleguard.transports.mock import MockTransport
from tests._embedded import ADMIN_KEY, in_process

if TYPE_CHECKING:
    from cycleguard._core._json import JsonObject
    from cycleguard.errors import CyclesError, TransportError

pytestmark = pytest.mark.anyio

URL = "http://cycles.test"


def ok(result: Result[JsonObject, CyclesError]) -> JsonObject:
    assert is_successful(result), result
    return result.unwrap()


def failed(result: Result[JsonObject, CyclesError]) -> CyclesError:
    assert not is_successful(result), result
    return result.failure()


async def test_every_call_against_the_embedded_server() -> None:
    async with in_process(ManualClock()) as server:
        assert server.app is not None
        admin = AdminClient(URL, admin_key=ADMIN_KEY, transport=AsgiTransport(server.app))
        async with admin:
            created = ok(await admin.create_tenant(TenantCreateRequest(tenant_id="acme", name="A")))
            assert created["status"] == "ACTIVE"
            assert ok(await admin.get_tenant("acme"))["name"] == "A"
            renamed = await admin.update_tenant("acme", TenantUpdateRequest(name="Acme"))
            assert ok(renamed)["name"] == "Acme"
            tenants = ok(await admin.list_tenants(status="ACTIVE", limit=10))["tenants"]
            assert [cast("JsonObject", t)["tenant_id"] for t in cast("list[object]", tenants)] == [
                "acme"
            ]

            key = ok(await admin.create_api_key(ApiKeyCreateRequest(tenant_id="acme", name="k")))
            secret = str(key["key_secret"])
            assert (
                len(cast("list[object]", ok(await admin.list_api_keys(tenant_id="acme"))["keys"]))
                == 1
            )

            # With the admin key, the tenant comes from the scope.
            budget = BudgetCreateRequest(
                scope="tenant:acme", unit=Unit.TOKENS, allocated=Amount.tokens(1_000)
            )
            assert ok(await admin.create_budget(budget))["tenant_id"] == "acme"
            funding = BudgetFundingRequest(
                operation=FundingOperation.CREDIT, amount=Amount.tokens(500)
            )
            funded = ok(await admin.fund_budget("tenant:acme", Unit.TOKENS, funding))
            assert funded["new_allocated"] == {"unit": "TOKENS", "amount": 1_500}
            updated = await admin.update_budget(
                "tenant:acme", Unit.TOKENS, BudgetUpdateRequest(overdraft_limit=Amount.tokens(9))
            )
            assert ok(updated)["overdraft_limit"] == {"unit": "TOKENS", "amount": 9}
            frozen = await admin.freeze_budget(
                "tenant:acme", Unit.TOKENS, BudgetStatusTransitionRequest(reason="audit")
            )
            assert ok(frozen)["status"] == "FROZEN"
            assert ok(await admin.unfreeze_budget("tenant:acme", Unit.TOKENS))["status"] == "ACTIVE"
            looked_up = ok(await admin.lookup_budget("tenant:acme", Unit.TOKENS))
            assert looked_up["allocated"] == {"unit": "TOKENS", "amount": 1_500}
            ledgers = ok(await admin.list_budgets(tenant_id="acme", unit=Unit.TOKENS))["ledgers"]
            assert len(cast("list[object]", ledgers)) == 1

            policy = ok(
                await admin.create_policy(
                    PolicyCreateRequest(
                        name="p", scope_pattern="tenant:acme/agent:*", caps=Caps(max_tokens=5)
                    )
                )
            )
            disabled = await admin.update_policy(
                str(policy["policy_id"]), PolicyUpdateRequest(status=PolicyStatus.DISABLED)
            )
            assert ok(disabled)["status"] == "DISABLED"
            policies = ok(await admin.list_policies(tenant_id="acme", status="DISABLED"))
            assert len(cast("list[object]", policies["policies"])) == 1

            revoked = await admin.revoke_api_key(str(key["key_id"]), reason="done")
            assert ok(revoked)["status"] == "REVOKED"
            closed = await admin.update_tenant(
                "acme", TenantUpdateRequest(status=TenantStatus.CLOSED)
            )
            assert ok(closed)["status"] == "CLOSED"
            assert isinstance(failed(await admin.get_tenant("ghost")), UnknownServerError)

        assert secret.startswith("cyc_")


async def test_a_tenant_key_acts_for_its_own_tenant() -> None:
    async with in_process(ManualClock()) as server:
        assert server.app is not None
        async with AdminClient(URL, admin_key=ADMIN_KEY, transport=AsgiTransport(server.app)) as a:
            ok(await a.create_tenant(TenantCreateRequest(tenant_id="acme", name="A")))
            key = ok(await a.create_api_key(ApiKeyCreateRequest(tenant_id="acme", name="k")))
        tenant = AdminClient(
            URL, api_key=str(key["key_secret"]), transport=AsgiTransport(server.app)
        )
        async with tenant:
            request = BudgetCreateRequest(
                scope="tenant:acme/app:x", unit=Unit.CREDITS, allocated=Amount.credits(3)
            )
            assert ok(await tenant.create_budget(request))["tenant_id"] == "acme"
            funding = BudgetFundingRequest(
                operation=FundingOperation.DEBIT, amount=Amount.credits(1)
            )
            funded = ok(await tenant.fund_budget("tenant:acme/app:x", Unit.CREDITS, funding))
            assert funded["new_allocated"] == {"unit": "CREDITS", "amount": 2}
            # Tenants are the admin key's alone.
            assert isinstance(failed(await tenant.list_tenants()), Unauthorized)


def test_keys_never_show_in_the_repr() -> None:
    admin = AdminClient(URL, admin_key="admin-s3cret", api_key="tenant-s3cret")
    assert repr(admin) == "AdminClient(base_url='http://cycles.test')"


async def test_a_broken_rule_sends_nothing() -> None:
    sent: list[HttpRequest] = []

    def handler(request: HttpRequest) -> HttpResponse:
        sent.append(request)
        return HttpResponse(200, (), b"{}")

    async with AdminClient(URL, admin_key="k", transport=MockTransport(handler)) as admin:
        result = await admin.create_tenant(TenantCreateRequest(tenant_id="No!", name=""))
    error = failed(result)
    assert isinstance(error, ValidationFailed)
    assert [issue.field for issue in error.issues] == ["tenant_id", "name"]
    assert sent == []


def answering(status: int, body: bytes) -> MockTransport:
    return MockTransport(lambda _: HttpResponse(status, (), body))


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, b"[]"), (200, b"not json"), (204, b""), (302, b"{}"), (502, b"<html>")],
)
async def test_what_is_no_json_object_is_an_invalid_response(status: int, body: bytes) -> None:
    async with AdminClient(URL, admin_key="k", transport=answering(status, body)) as admin:
        error = failed(await admin.list_tenants())
    assert isinstance(error, InvalidResponse)
    assert error.status == status


async def test_an_error_envelope_is_its_error_value() -> None:
    envelope = {"error": "NOT_FOUND", "message": "gone", "request_id": "r1"}
    transport = answering(404, json.dumps(envelope).encode())
    async with AdminClient(URL, admin_key="k", transport=transport) as admin:
        error = failed(await admin.get_tenant("x"))
    assert error == NotFound(status=404, message="gone", request_id="r1")


async def test_transport_failures_pass_through(caplog: pytest.LogCaptureFixture) -> None:
    refused = ConnectionFailed(message="refused")

    def handler(request: HttpRequest) -> TransportError:
        return refused

    caplog.set_level(logging.DEBUG, logger="cycleguard")
    transport = MockTransport(handler)
    async with AdminClient(URL, admin_key="admin-s3cret", transport=transport) as admin:
        assert failed(await admin.list_api_keys(tenant_id="acme")) == refused
    assert caplog.records, "the failure is logged"
    assert "admin-s3cret" not in caplog.text


async def test_requests_carry_the_right_key_path_and_query() -> None:
    sent: list[HttpRequest] = []

    def handler(request: HttpRequest) -> HttpResponse:
        sent.append(request)
        return HttpResponse(200, (), b"{}")

    both = AdminClient(URL, admin_key="adm", api_key="ten", transport=MockTransport(handler))
    tenant_only = AdminClient(URL, api_key="ten", transport=MockTransport(handler))
    async with both, tenant_only:
        await both.revoke_api_key("key/1", reason="a b")
        await both.fund_budget(
            "tenant:acme/agent:x",
            Unit.TOKENS,
            BudgetFundingRequest(operation=FundingOperation.CREDIT, amount=Amount.tokens(1)),
        )
        await tenant_only.list_budgets(unit=Unit.TOKENS)
        await tenant_only.get_tenant("acme")
    revoke, fund, listing, tenant = sent
    assert (revoke.method, revoke.url) == ("DELETE", f"{URL}/v1/admin/api-keys/key%2F1?reason=a+b")
    assert revoke.header("X-Admin-API-Key") == "adm"
    assert fund.url == (
        f"{URL}/v1/admin/budgets/fund?scope=tenant%3Aacme%2Fagent%3Ax&unit=TOKENS&tenant_id=acme"
    )
    assert json.loads(fund.body) == {
        "operation": "CREDIT",
        "amount": {"unit": "TOKENS", "amount": 1},
    }
    assert listing.url == f"{URL}/v1/admin/budgets?unit=TOKENS"
    assert listing.header("X-Cycles-API-Key") == "ten"
    assert listing.header("X-Admin-API-Key") is None
    # Tenants take the admin key only: a tenant key is not offered there.
    assert tenant.header("X-Cycles-API-Key") is None
