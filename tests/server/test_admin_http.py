"""The admin plane over loopback HTTP: tenants, keys, budgets, funding, policies."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, cast

import pytest

from cycleguard.server.app import CyclesServer
from cycleguard.server.stores.memory import memory_store
from tests.server._api import ADMIN, Api, Json, amount, json_of
from tests.server._live import in_process

if TYPE_CHECKING:
    from collections.abc import Mapping

    import httpx

    from tests.server.conftest import Live

pytestmark = pytest.mark.anyio


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, str(json_of(response)["error"])


def tenant_id() -> str:
    return "t-" + uuid.uuid4().hex[:12]


async def test_tenants_create_get_list_update(http: httpx.AsyncClient) -> None:
    tid = tenant_id()
    body = {
        "tenant_id": tid,
        "name": "Acme",
        "metadata": {"team": "ml"},
        "max_reservation_extensions": 3,
    }
    created = await http.post("/v1/admin/tenants", json=body, headers=ADMIN)
    assert created.status_code == 201
    assert json_of(created)["max_reservation_extensions"] == 3
    again = await http.post("/v1/admin/tenants", json=body, headers=ADMIN)
    assert again.status_code == 200
    assert json_of(again) == json_of(created)
    assert json_of(await http.get(f"/v1/admin/tenants/{tid}", headers=ADMIN))["name"] == "Acme"
    assert error_of(await http.get("/v1/admin/tenants/t-missing", headers=ADMIN)) == (
        404,
        "TENANT_NOT_FOUND",
    )
    updated = json_of(
        await http.patch(
            f"/v1/admin/tenants/{tid}",
            json={"name": "Acme Inc", "default_commit_overage_policy": "REJECT"},
            headers=ADMIN,
        )
    )
    assert (updated["name"], updated["default_commit_overage_policy"]) == ("Acme Inc", "REJECT")
    listed = json_of(await http.get("/v1/admin/tenants", params={"search": tid}, headers=ADMIN))
    assert [t["tenant_id"] for t in cast("list[Json]", listed["tenants"])] == [tid]
    page = json_of(await http.get("/v1/admin/tenants", params={"limit": "1"}, headers=ADMIN))
    assert len(cast("list[Json]", page["tenants"])) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"tenant_id": "UPPER", "name": "x"},
        {"tenant_id": "ab", "name": "x"},
        {"tenant_id": "ok-id", "name": "x", "default_reservation_ttl_ms": 10},
        {"tenant_id": "ok-id", "name": "x", "extra": 1},
        {"tenant_id": "ok-id"},
    ],
)
async def test_bad_tenant_bodies_are_400(http: httpx.AsyncClient, body: Json) -> None:
    assert error_of(await http.post("/v1/admin/tenants", json=body, headers=ADMIN)) == (
        400,
        "INVALID_REQUEST",
    )


async def test_admin_endpoints_need_the_admin_key(api: Api, http: httpx.AsyncClient) -> None:
    body = {"tenant_id": tenant_id(), "name": "x"}
    assert error_of(await http.post("/v1/admin/tenants", json=body)) == (401, "UNAUTHORIZED")
    assert error_of(await http.post("/v1/admin/tenants", json=body, headers=api.headers)) == (
        401,
        "UNAUTHORIZED",
    )
    wrong = {"X-Admin-API-Key": "guess"}
    assert error_of(await http.get("/v1/admin/tenants", headers=wrong)) == (401, "UNAUTHORIZED")


async def test_keys_show_their_secret_once(api: Api, http: httpx.AsyncClient) -> None:
    created = json_of(
        await http.post(
            "/v1/admin/api-keys",
            json={"tenant_id": api.tenant_id, "name": "ci", "permissions": ["balances:read"]},
            headers=ADMIN,
        )
    )
    secret = str(created["key_secret"])
    assert secret.startswith("cyc_live_")
    assert str(created["key_prefix"]) == secret[:14]
    listed = await http.get(
        "/v1/admin/api-keys", params={"tenant_id": api.tenant_id}, headers=ADMIN
    )
    assert secret not in listed.text
    keys = cast("list[Json]", json_of(listed)["keys"])
    assert {k["key_id"] for k in keys} >= {created["key_id"]}
    assert all("secret" not in name and "hash" not in name for k in keys for name in k)
    assert error_of(await http.delete("/v1/admin/api-keys/key_nope", headers=ADMIN)) == (
        404,
        "NOT_FOUND",
    )
    await http.delete(f"/v1/admin/api-keys/{created['key_id']}", headers=ADMIN)
    assert error_of(
        await http.delete(f"/v1/admin/api-keys/{created['key_id']}", headers=ADMIN)
    ) == (
        409,
        "KEY_REVOKED",
    )
    revoked = json_of(
        await http.get(
            "/v1/admin/api-keys",
            params={"status": "REVOKED", "tenant_id": api.tenant_id},
            headers=ADMIN,
        )
    )
    assert [k["key_id"] for k in cast("list[Json]", revoked["keys"])] == [created["key_id"]]
    bad = await http.post(
        "/v1/admin/api-keys",
        json={"tenant_id": api.tenant_id, "name": "x", "permissions": ["everything"]},
        headers=ADMIN,
    )
    assert error_of(bad) == (400, "INVALID_REQUEST")
    nobody = await http.post(
        "/v1/admin/api-keys", json={"tenant_id": "t-none", "name": "x"}, headers=ADMIN
    )
    assert error_of(nobody) == (400, "TENANT_NOT_FOUND")


async def test_budgets_by_admin_or_tenant_key(api: Api, http: httpx.AsyncClient) -> None:
    by_tenant = await http.post(
        "/v1/admin/budgets",
        json={"scope": api.scope("/agent:A"), "unit": "TOKENS", "allocated": amount(5)},
        headers=api.headers,
    )
    assert by_tenant.status_code == 201, by_tenant.text
    assert json_of(by_tenant)["scope"] == api.scope("/agent:a")
    with_tenant = await http.post(
        "/v1/admin/budgets",
        json={
            "tenant_id": api.tenant_id,
            "scope": api.scope(),
            "unit": "TOKENS",
            "allocated": amount(5),
        },
        headers=api.headers,
    )
    assert error_of(with_tenant) == (400, "INVALID_REQUEST")
    no_tenant = await http.post(
        "/v1/admin/budgets",
        json={"scope": api.scope(), "unit": "TOKENS", "allocated": amount(5)},
        headers=ADMIN,
    )
    assert error_of(no_tenant) == (400, "INVALID_REQUEST")
    created = await api.budget(allocated=100)
    assert (created["overdraft_limit"], created["is_over_limit"]) == (amount(0), False)
    duplicate = await http.post(
        "/v1/admin/budgets",
        json={
            "tenant_id": api.tenant_id,
            "scope": api.scope(),
            "unit": "TOKENS",
            "allocated": amount(5),
        },
        headers=ADMIN,
    )
    assert error_of(duplicate) == (409, "DUPLICATE_RESOURCE")
    for scope in (
        "tenant:someone-else",
        "agent:x",
        f"{api.scope()}/team:x",
        f"agent:x/{api.scope()}",
    ):
        outside = await http.post(
            "/v1/admin/budgets",
            json={
                "tenant_id": api.tenant_id,
                "scope": scope,
                "unit": "TOKENS",
                "allocated": amount(5),
            },
            headers=ADMIN,
        )
        assert error_of(outside) == (400, "INVALID_REQUEST"), scope
    mismatched = await http.post(
        "/v1/admin/budgets",
        json={
            "tenant_id": api.tenant_id,
            "scope": api.scope("/app:z"),
            "unit": "TOKENS",
            "allocated": amount(5, "CREDITS"),
        },
        headers=ADMIN,
    )
    assert error_of(mismatched) == (400, "INVALID_REQUEST")
    listed = json_of(await http.get("/v1/admin/budgets", headers=api.headers))
    assert [b["scope"] for b in cast("list[Json]", listed["ledgers"])] == [
        api.scope(),
        api.scope("/agent:a"),
    ]
    filtered = json_of(
        await http.get(
            "/v1/admin/budgets", params={"scope_prefix": api.scope("/agent")}, headers=api.headers
        )
    )
    assert len(cast("list[Json]", filtered["ledgers"])) == 1
    found = await http.get(
        "/v1/admin/budgets/lookup",
        params={"scope": api.scope(), "unit": "TOKENS"},
        headers=api.headers,
    )
    assert json_of(found)["allocated"] == amount(100)
    missing = await http.get(
        "/v1/admin/budgets/lookup", params={"scope": api.scope(), "unit": "CREDITS"}, headers=ADMIN
    )
    assert error_of(missing) == (404, "BUDGET_NOT_FOUND")
    foreign = await http.get(
        "/v1/admin/budgets/lookup",
        params={"scope": "tenant:other-tenant", "unit": "TOKENS"},
        headers=api.headers,
    )
    assert error_of(foreign) == (403, "FORBIDDEN")


async def test_funding_operations(api: Api, http: httpx.AsyncClient) -> None:
    await api.budget(allocated=100, overdraft_limit=amount(50))
    rid = await api.hold(100, overage_policy="ALLOW_WITH_OVERDRAFT")
    await api.commit(rid, 130)  # spent 100, debt 30, remaining -30
    params = {"scope": api.scope(), "unit": "TOKENS", "tenant_id": api.tenant_id}

    async def fund(body: Mapping[str, object], headers: dict[str, str] = ADMIN) -> httpx.Response:
        return await http.post("/v1/admin/budgets/fund", params=params, json=body, headers=headers)

    repaid = json_of(await fund({"operation": "REPAY_DEBT", "amount": amount(40)}))
    assert (repaid["previous_debt"], repaid["new_debt"], repaid["new_remaining"]) == (
        amount(30),
        amount(0),
        amount(10),
    )
    credit = json_of(await fund({"operation": "CREDIT", "amount": amount(50)}, api.headers))
    assert (credit["new_allocated"], credit["new_remaining"]) == (amount(190), amount(60))
    assert error_of(await fund({"operation": "DEBIT", "amount": amount(61)})) == (
        409,
        "BUDGET_EXCEEDED",
    )
    debit = json_of(await fund({"operation": "DEBIT", "amount": amount(60)}))
    assert debit["new_remaining"] == amount(0)
    reset = json_of(await fund({"operation": "RESET", "amount": amount(500)}))
    assert (reset["new_allocated"], reset["new_remaining"]) == (amount(500), amount(370))
    period = json_of(
        await fund({"operation": "RESET_SPENT", "amount": amount(200), "spent": amount(20)})
    )
    assert (period["new_spent"], period["new_remaining"]) == (amount(20), amount(180))
    assert error_of(await fund({"operation": "CREDIT", "amount": amount(1, "CREDITS")})) == (
        400,
        "UNIT_MISMATCH",
    )
    assert error_of(
        await fund({"operation": "CREDIT", "amount": amount(1), "spent": amount(1)})
    ) == (400, "INVALID_REQUEST")
    keyed = {"operation": "CREDIT", "amount": amount(5), "idempotency_key": "f1"}
    first = json_of(await fund(keyed))
    assert json_of(await fund(keyed)) == first
    assert error_of(await fund({**keyed, "amount": amount(6)})) == (409, "IDEMPOTENCY_MISMATCH")
    assert (await api.balance())["allocated"] == 205
    no_tenant = await http.post(
        "/v1/admin/budgets/fund",
        params={"scope": api.scope(), "unit": "TOKENS"},
        json={"operation": "CREDIT", "amount": amount(1)},
        headers=ADMIN,
    )
    assert error_of(no_tenant) == (400, "INVALID_REQUEST")


async def test_update_recomputes_over_limit_and_freeze_rules(
    api: Api, http: httpx.AsyncClient
) -> None:
    await api.budget(allocated=100, overdraft_limit=amount(50))
    rid = await api.hold(100, overage_policy="ALLOW_WITH_OVERDRAFT")
    await api.commit(rid, 140)  # debt 40
    params = {"scope": api.scope(), "unit": "TOKENS"}
    lowered = json_of(
        await http.patch(
            "/v1/admin/budgets", params=params, json={"overdraft_limit": amount(10)}, headers=ADMIN
        )
    )
    assert lowered["is_over_limit"] is True
    assert error_of(await api.reserve(0)) == (409, "OVERDRAFT_LIMIT_EXCEEDED")
    raised = json_of(
        await http.patch(
            "/v1/admin/budgets",
            params=params,
            json={"overdraft_limit": amount(40), "commit_overage_policy": "REJECT"},
            headers=ADMIN,
        )
    )
    assert (raised["is_over_limit"], raised["commit_overage_policy"]) == (False, "REJECT")
    assert error_of(
        await http.patch(
            "/v1/admin/budgets",
            params=params,
            json={"overdraft_limit": amount(1, "CREDITS")},
            headers=ADMIN,
        )
    ) == (400, "UNIT_MISMATCH")
    assert error_of(
        await http.patch("/v1/admin/budgets", params=params, json={}, headers=api.headers)
    ) == (401, "UNAUTHORIZED")
    assert (
        await http.post("/v1/admin/budgets/freeze", params=params, headers=ADMIN)
    ).status_code == 200
    assert error_of(await http.post("/v1/admin/budgets/freeze", params=params, headers=ADMIN)) == (
        409,
        "BUDGET_FROZEN",
    )
    fund = await http.post(
        "/v1/admin/budgets/fund",
        params={**params, "tenant_id": api.tenant_id},
        json={"operation": "CREDIT", "amount": amount(1)},
        headers=ADMIN,
    )
    assert error_of(fund) == (409, "BUDGET_FROZEN")
    assert (
        await http.post(
            "/v1/admin/budgets/unfreeze", params=params, json={"reason": "ok"}, headers=ADMIN
        )
    ).status_code == 200
    assert (
        await http.post("/v1/admin/budgets/unfreeze", params=params, headers=ADMIN)
    ).status_code == 409
    missing = await http.post(
        "/v1/admin/budgets/freeze",
        params={"scope": api.scope("/agent:x"), "unit": "TOKENS"},
        headers=ADMIN,
    )
    assert error_of(missing) == (404, "BUDGET_NOT_FOUND")


async def test_policies_create_list_update(api: Api, http: httpx.AsyncClient) -> None:
    body = {
        "name": "bots",
        "scope_pattern": f"tenant:{api.tenant_id}/agent:*",
        "caps": {"max_tokens": 10},
    }
    created = await http.post("/v1/admin/policies", json=body, headers=api.headers)
    assert created.status_code == 201, created.text
    policy = json_of(created)
    assert (policy["priority"], policy["status"]) == (0, "ACTIVE")
    assert error_of(await http.post("/v1/admin/policies", json=body, headers=api.headers)) == (
        409,
        "DUPLICATE_RESOURCE",
    )
    bad = {"name": "bad", "scope_pattern": "agent:x/tenant:y"}
    assert error_of(await http.post("/v1/admin/policies", json=bad, headers=api.headers)) == (
        400,
        "INVALID_REQUEST",
    )
    needs_tenant = await http.get("/v1/admin/policies", headers=ADMIN)
    assert error_of(needs_tenant) == (400, "INVALID_REQUEST")
    listed = json_of(
        await http.get("/v1/admin/policies", params={"tenant_id": api.tenant_id}, headers=ADMIN)
    )
    assert [p["policy_id"] for p in cast("list[Json]", listed["policies"])] == [policy["policy_id"]]
    updated = json_of(
        await http.patch(
            f"/v1/admin/policies/{policy['policy_id']}",
            json={"priority": 9, "status": "DISABLED"},
            headers=ADMIN,
        )
    )
    assert (updated["priority"], updated["status"]) == (9, "DISABLED")
    await api.budget()
    assert json_of(await api.reserve(1, subject=api.subject(agent="z")))["decision"] == "ALLOW"
    assert error_of(await http.patch("/v1/admin/policies/pol_nope", json={}, headers=ADMIN)) == (
        404,
        "NOT_FOUND",
    )


async def test_introspection(api: Api, http: httpx.AsyncClient) -> None:
    admin = json_of(await http.get("/v1/auth/introspect", headers=ADMIN))
    assert (admin["auth_type"], admin["permissions"]) == ("admin", ["*"])
    assert all(cast("dict[str, bool]", admin["capabilities"]).values())
    tenant = json_of(await http.get("/v1/auth/introspect", headers=api.headers))
    assert (tenant["auth_type"], tenant["tenant_id"]) == ("tenant", api.tenant_id)
    assert cast("dict[str, bool]", tenant["capabilities"])["manage_tenants"] is False
    assert error_of(await http.get("/v1/auth/introspect")) == (401, "UNAUTHORIZED")


async def test_without_an_admin_key_the_admin_plane_is_closed(live: Live) -> None:
    del live
    server = CyclesServer(open_store=memory_store, admin_key=None, sweep_interval=None)
    async with in_process(server) as client:
        response = await client.get("/v1/admin/tenants", headers={"X-Admin-API-Key": ""})
        assert error_of(response) == (401, "UNAUTHORIZED")
        assert "disabled" in str(json_of(response)["message"])
