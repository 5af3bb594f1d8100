"""Authentication, tenant isolation, permissions, suspension and closing, over loopback."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import pytest

from cycleguard.server.clock import format_ms
from tests.server._api import ADMIN, Api, Json, json_of
from tests.server.conftest import make_tenant

if TYPE_CHECKING:
    import httpx

    from tests.server.conftest import Live

pytestmark = pytest.mark.anyio


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, str(json_of(response)["error"])


async def test_missing_unknown_revoked_and_expired_keys_are_401(
    api: Api, http: httpx.AsyncClient
) -> None:
    params = {"tenant": api.tenant_id}
    assert error_of(await http.get("/v1/balances", params=params)) == (401, "UNAUTHORIZED")
    bogus = {"X-Cycles-API-Key": "cyc_live_" + "x" * 32}
    assert error_of(await http.get("/v1/balances", params=params, headers=bogus)) == (
        401,
        "UNAUTHORIZED",
    )
    key = json_of(
        await http.post(
            "/v1/admin/api-keys",
            json={
                "tenant_id": api.tenant_id,
                "name": "short",
                "expires_at": format_ms(api.clock.now_ms() + 60_000),
            },
            headers=ADMIN,
        )
    )
    short = {"X-Cycles-API-Key": str(key["key_secret"])}
    assert (await http.get("/v1/balances", params=params, headers=short)).status_code == 200
    revoked = await http.delete(
        f"/v1/admin/api-keys/{key['key_id']}", params={"reason": "leaked"}, headers=ADMIN
    )
    assert json_of(revoked)["status"] == "REVOKED"
    assert error_of(await http.get("/v1/balances", params=params, headers=short)) == (
        401,
        "UNAUTHORIZED",
    )
    later = json_of(
        await http.post(
            "/v1/admin/api-keys",
            json={
                "tenant_id": api.tenant_id,
                "name": "later",
                "expires_at": format_ms(api.clock.now_ms() + 1_000),
            },
            headers=ADMIN,
        )
    )
    api.clock.advance(1_000)
    expired = {"X-Cycles-API-Key": str(later["key_secret"])}
    assert error_of(await http.get("/v1/balances", params=params, headers=expired)) == (
        401,
        "UNAUTHORIZED",
    )


async def test_another_tenants_objects_are_403(
    api: Api, http: httpx.AsyncClient, live: Live
) -> None:
    other = await make_tenant(http, live)
    await api.budget()
    await other.budget()
    theirs = await other.hold(10)
    foreign = other.subject()
    assert error_of(await api.reserve(1, subject=foreign)) == (403, "FORBIDDEN")
    assert error_of(await api.decide(1, subject=foreign)) == (403, "FORBIDDEN")
    assert error_of(await api.event(1, subject=foreign)) == (403, "FORBIDDEN")
    assert error_of(await api.commit(theirs, 1)) == (403, "FORBIDDEN")
    assert error_of(await api.release(theirs)) == (403, "FORBIDDEN")
    assert error_of(await api.extend(theirs, 1_000)) == (403, "FORBIDDEN")
    assert error_of(await api.get(theirs)) == (403, "FORBIDDEN")
    balances = await http.get(
        "/v1/balances", params={"tenant": other.tenant_id}, headers=api.headers
    )
    assert error_of(balances) == (403, "FORBIDDEN")
    listing = await http.get(
        "/v1/reservations", params={"tenant": other.tenant_id}, headers=api.headers
    )
    assert error_of(listing) == (403, "FORBIDDEN")
    # what a tenant lists and sees is only its own
    mine = json_of(await http.get("/v1/reservations", headers=api.headers))
    assert mine["reservations"] == []
    rows = await api.balances(tenant=api.tenant_id)
    assert all(str(row["scope_path"]).startswith(api.scope()) for row in rows)
    assert (await other.balance())["reserved"] == 10


async def test_the_admin_key_reads_and_releases_on_behalf(
    api: Api, http: httpx.AsyncClient
) -> None:
    await api.budget()
    rid = await api.hold(10)
    assert error_of(await http.get("/v1/reservations", headers=ADMIN)) == (400, "INVALID_REQUEST")
    listed = json_of(
        await http.get("/v1/reservations", params={"tenant": api.tenant_id}, headers=ADMIN)
    )
    assert [r["reservation_id"] for r in cast("list[Json]", listed["reservations"])] == [rid]
    assert (await http.get(f"/v1/reservations/{rid}", headers=ADMIN)).status_code == 200
    released = await api.release(rid, headers=ADMIN, reason="[INCIDENT_FORCE_RELEASE]")
    assert released.status_code == 200
    assert released.headers["x-cycles-tenant"] == api.tenant_id
    assert error_of(await http.post("/v1/decide", json={}, headers=ADMIN)) == (401, "UNAUTHORIZED")
    wrong = {"X-Admin-API-Key": "nope"}
    assert error_of(await http.get(f"/v1/reservations/{rid}", headers=wrong)) == (
        401,
        "UNAUTHORIZED",
    )


async def test_permissions_limit_a_key(api: Api, http: httpx.AsyncClient) -> None:
    await api.budget()
    created = await http.post(
        "/v1/admin/api-keys",
        json={"tenant_id": api.tenant_id, "name": "reader", "permissions": ["balances:read"]},
        headers=ADMIN,
    )
    reader = {"X-Cycles-API-Key": str(json_of(created)["key_secret"])}
    assert (
        await http.get("/v1/balances", params={"tenant": api.tenant_id}, headers=reader)
    ).status_code == 200
    body = {
        "idempotency_key": "k",
        "subject": api.subject(),
        "action": {"kind": "a", "name": "b"},
        "estimate": {"unit": "TOKENS", "amount": 1},
    }
    assert error_of(await http.post("/v1/reservations", json=body, headers=reader)) == (
        403,
        "FORBIDDEN",
    )
    assert error_of(await http.post("/v1/decide", json=body, headers=reader)) == (403, "FORBIDDEN")
    introspected = json_of(await http.get("/v1/auth/introspect", headers=reader))
    assert introspected["permissions"] == ["balances:read"]
    assert cast("Json", introspected["capabilities"])["manage_reservations"] is False


async def test_a_suspended_tenant_settles_but_starts_nothing(
    api: Api, http: httpx.AsyncClient
) -> None:
    await api.budget()
    held = await api.hold(10)
    other = await api.hold(10)
    patched = await http.patch(
        f"/v1/admin/tenants/{api.tenant_id}", json={"status": "SUSPENDED"}, headers=ADMIN
    )
    assert json_of(patched)["status"] == "SUSPENDED"
    assert error_of(await api.reserve(1)) == (403, "FORBIDDEN")
    dry = json_of(await api.reserve(1, dry_run=True))
    assert (dry["decision"], dry["reason_code"]) == ("DENY", "TENANT_SUSPENDED")
    decided = json_of(await api.decide(1))
    assert (decided["decision"], decided["reason_code"]) == ("DENY", "TENANT_SUSPENDED")
    assert (await api.commit(held, 5)).status_code == 200
    assert (await api.release(other)).status_code == 200
    await http.patch(f"/v1/admin/tenants/{api.tenant_id}", json={"status": "ACTIVE"}, headers=ADMIN)
    assert (await api.reserve(1)).status_code == 200


async def test_closing_a_tenant_cascades(api: Api, http: httpx.AsyncClient) -> None:
    await api.budget()
    rid = await api.hold(10)
    closed = await http.patch(
        f"/v1/admin/tenants/{api.tenant_id}", json={"status": "CLOSED"}, headers=ADMIN
    )
    assert json_of(closed)["status"] == "CLOSED"
    assert "closed_at" in json_of(closed)
    assert error_of(await api.reserve(1)) == (401, "UNAUTHORIZED")
    assert error_of(await api.release(rid, headers=ADMIN)) == (409, "TENANT_CLOSED")
    detail = json_of(await http.get(f"/v1/reservations/{rid}", headers=ADMIN))
    assert detail["status"] == "RELEASED"
    ledger = json_of(
        await http.get(
            "/v1/admin/budgets/lookup",
            params={"scope": api.scope(), "unit": "TOKENS"},
            headers=ADMIN,
        )
    )
    assert (ledger["status"], cast("Json", ledger["reserved"])["amount"]) == ("CLOSED", 0)
    keys = json_of(
        await http.get("/v1/admin/api-keys", params={"tenant_id": api.tenant_id}, headers=ADMIN)
    )
    assert {k["status"] for k in cast("list[Json]", keys["keys"])} == {"REVOKED"}
    again = await http.post(
        "/v1/admin/api-keys", json={"tenant_id": api.tenant_id, "name": "x"}, headers=ADMIN
    )
    assert error_of(again) == (409, "TENANT_CLOSED")
    reopen = await http.patch(
        f"/v1/admin/tenants/{api.tenant_id}", json={"status": "ACTIVE"}, headers=ADMIN
    )
    assert error_of(reopen) == (400, "INVALID_REQUEST")
    reclose = await http.patch(
        f"/v1/admin/tenants/{api.tenant_id}", json={"status": "CLOSED"}, headers=ADMIN
    )
    assert reclose.status_code == 200
