"""The runtime plane over loopback HTTP: scopes, holds, settlement, overage, expiry, reads."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import anyio
import pytest

from cycleguard.server.clock import format_ms
from tests.server._api import ADMIN, Api, Json, amount, json_of
from tests.server.conftest import make_tenant

if TYPE_CHECKING:
    import httpx

    from tests.server.conftest import Live

pytestmark = pytest.mark.anyio

MAX = 2**63 - 1


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, str(json_of(response)["error"])


def identity(row: dict[str, int | bool]) -> bool:
    return row["allocated"] == row["remaining"] + row["spent"] + row["reserved"] + row["debt"]


# Scopes ------------------------------------------------------------------------


async def test_scopes_are_canonical_lower_cased_and_skip_gaps(api: Api) -> None:
    await api.budget()
    await api.budget("/workflow:refund")
    response = await api.reserve(10, subject=api.subject(workflow="Refund", toolset="Search"))
    assert response.status_code == 200, response.text
    body = json_of(response)
    root = api.scope()
    assert body["affected_scopes"] == [
        root,
        f"{root}/workflow:refund",
        f"{root}/workflow:refund/toolset:search",
    ]
    assert body["scope_path"] == f"{root}/workflow:refund/toolset:search"
    balances = cast("list[Json]", body["balances"])
    assert [b["scope_path"] for b in balances] == [root, f"{root}/workflow:refund"]
    assert [b["scope"] for b in balances] == [f"tenant:{api.tenant_id}", "workflow:refund"]
    assert (await api.balance("/workflow:refund"))["reserved"] == 10


async def test_no_budget_anywhere_is_404_and_another_unit_is_400(api: Api) -> None:
    missing = await api.reserve(10, subject=api.subject(agent="a"))
    assert error_of(missing) == (404, "NOT_FOUND")
    assert json_of(missing)["message"] == (
        f"Budget not found for provided scope: {api.scope('/agent:a')}"
    )
    await api.budget(unit="USD_MICROCENTS")
    wrong = await api.reserve(10)
    assert error_of(wrong) == (400, "UNIT_MISMATCH")
    assert json_of(wrong)["details"] == {
        "scope": api.scope(),
        "requested_unit": "TOKENS",
        "expected_units": ["USD_MICROCENTS"],
    }


async def test_reserve_is_atomic_across_scopes(api: Api) -> None:
    await api.budget(allocated=1_000)
    await api.budget("/agent:a", allocated=50)
    refused = await api.reserve(60, subject=api.subject(agent="a"))
    assert error_of(refused) == (409, "BUDGET_EXCEEDED")
    assert (await api.balance())["remaining"] == 1_000
    assert (await api.balance("/agent:a"))["remaining"] == 50


async def test_frozen_wins_over_insufficient_and_unfreeze_restores(api: Api) -> None:
    await api.budget(allocated=10)
    await api.budget("/agent:a", allocated=1_000)
    params = {"scope": api.scope("/agent:a"), "unit": "TOKENS"}
    frozen = await api.http.post(
        "/v1/admin/budgets/freeze", params=params, json={"reason": "audit"}, headers=ADMIN
    )
    assert frozen.status_code == 200
    assert json_of(frozen)["status"] == "FROZEN"
    assert error_of(await api.reserve(100, subject=api.subject(agent="a"))) == (
        409,
        "BUDGET_FROZEN",
    )
    assert (
        await api.http.post("/v1/admin/budgets/unfreeze", params=params, headers=ADMIN)
    ).status_code == 200
    assert error_of(await api.reserve(100, subject=api.subject(agent="a"))) == (
        409,
        "BUDGET_EXCEEDED",
    )


# Settlement and overage ----------------------------------------------------------


async def test_commit_below_estimate_returns_the_rest(api: Api) -> None:
    await api.budget()
    rid = await api.hold(100)
    response = await api.commit(rid, 70, metrics={"tokens_input": 5, "tokens_output": 65})
    assert response.status_code == 200
    body = json_of(response)
    assert body["status"] == "COMMITTED"
    assert body["charged"] == amount(70)
    assert body["released"] == amount(30)
    row = await api.balance()
    assert (row["remaining"], row["reserved"], row["spent"]) == (930, 0, 70)
    assert identity(row)


async def test_reject_policy_refuses_overage_and_keeps_the_hold(api: Api) -> None:
    await api.budget()
    rid = await api.hold(100, overage_policy="REJECT")
    assert error_of(await api.commit(rid, 101)) == (409, "BUDGET_EXCEEDED")
    assert (await api.balance())["reserved"] == 100
    assert (await api.commit(rid, 100)).status_code == 200


async def test_allow_if_available_caps_marks_over_limit_and_blocks_new_holds(api: Api) -> None:
    await api.budget(allocated=150)
    rid = await api.hold(100, overage_policy="ALLOW_IF_AVAILABLE")
    response = await api.commit(rid, 400)
    assert json_of(response)["charged"] == amount(150)
    row = await api.balance()
    assert (row["remaining"], row["spent"], row["debt"], row["is_over_limit"]) == (0, 150, 0, True)
    assert error_of(await api.reserve(0)) == (409, "OVERDRAFT_LIMIT_EXCEEDED")
    decided = json_of(await api.decide(0))
    assert (decided["decision"], decided["reason_code"]) == ("DENY", "OVERDRAFT_LIMIT_EXCEEDED")


async def test_overdraft_turns_the_uncovered_part_into_debt(api: Api) -> None:
    await api.budget(allocated=120, overdraft_limit=amount(100))
    rid = await api.hold(100, overage_policy="ALLOW_WITH_OVERDRAFT")
    response = await api.commit(rid, 150)
    assert response.status_code == 200
    assert json_of(response)["charged"] == amount(150)
    row = await api.balance()
    assert (row["spent"], row["debt"], row["remaining"], row["is_over_limit"]) == (
        120,
        30,
        -30,
        False,
    )
    assert identity(row)
    # debt within a positive overdraft limit does not block new holds once remaining covers them
    funded = await api.http.post(
        "/v1/admin/budgets/fund",
        params={"scope": api.scope(), "unit": "TOKENS", "tenant_id": api.tenant_id},
        json={"operation": "CREDIT", "amount": amount(100)},
        headers=ADMIN,
    )
    assert json_of(funded)["new_remaining"] == amount(70)
    assert (await api.reserve(10)).status_code == 200
    rid = await api.hold(0, overage_policy="ALLOW_WITH_OVERDRAFT")
    assert error_of(await api.commit(rid, 131)) == (409, "OVERDRAFT_LIMIT_EXCEEDED")
    assert (await api.commit(rid, 130)).status_code == 200
    row = await api.balance()
    assert (row["debt"], row["remaining"], row["reserved"]) == (100, -70, 10)
    assert identity(row)


async def test_release_returns_the_hold_once(api: Api) -> None:
    await api.budget()
    rid = await api.hold(100)
    response = await api.release(rid, reason="not needed")
    assert json_of(response) == {
        "status": "RELEASED",
        "released": amount(100),
        "balances": json_of(response)["balances"],
    }
    assert (await api.balance())["remaining"] == 1_000
    assert error_of(await api.release(rid)) == (409, "RESERVATION_FINALIZED")
    assert error_of(await api.commit(rid, 1)) == (409, "RESERVATION_FINALIZED")
    assert error_of(await api.commit("no-such-reservation", 1)) == (404, "NOT_FOUND")


async def test_commit_in_another_unit_is_400(api: Api) -> None:
    await api.budget()
    rid = await api.hold(100)
    assert error_of(await api.commit(rid, 1, unit="CREDITS")) == (400, "UNIT_MISMATCH")


async def test_amounts_are_exact_up_to_int64(api: Api) -> None:
    await api.budget(allocated=MAX)
    rid = await api.hold(MAX)
    assert (await api.balance())["reserved"] == MAX
    await api.commit(rid, MAX - 1)
    row = await api.balance()
    assert (row["spent"], row["remaining"], row["allocated"]) == (MAX - 1, 1, MAX)
    too_big = await api.reserve(MAX + 1)
    assert error_of(too_big) == (400, "INVALID_REQUEST")


# TTL, grace, extend, expiry --------------------------------------------------------


async def test_ttl_grace_and_extend_follow_server_time(api: Api) -> None:
    await api.budget()
    response = await api.reserve(100, ttl_ms=10_000, grace_period_ms=2_000)
    body = json_of(response)
    rid, expires = str(body["reservation_id"]), cast("int", body["expires_at_ms"])
    assert expires == api.clock.now_ms() + 10_000
    assert body["remaining_ttl_ms"] == 10_000
    api.clock.advance(4_000)
    extended = json_of(await api.extend(rid, 5_000))
    assert extended["status"] == "ACTIVE"
    assert extended["expires_at_ms"] == expires + 5_000
    assert extended["remaining_ttl_ms"] == 11_000
    api.clock.advance(11_001)  # past expires_at, inside grace
    assert error_of(await api.extend(rid, 1_000)) == (410, "RESERVATION_EXPIRED")
    assert (await api.commit(rid, 50)).status_code == 200


async def test_settlement_after_grace_is_410_and_the_hold_comes_back(api: Api) -> None:
    await api.budget()
    rid = await api.hold(100, ttl_ms=1_000, grace_period_ms=500)
    other = await api.hold(100, ttl_ms=1_000, grace_period_ms=500)
    api.clock.advance(1_501)
    assert error_of(await api.commit(rid, 10)) == (410, "RESERVATION_EXPIRED")
    assert error_of(await api.release(other)) == (410, "RESERVATION_EXPIRED")
    assert error_of(await api.get(rid)) == (410, "RESERVATION_EXPIRED")
    row = await api.balance()
    assert (row["remaining"], row["reserved"]) == (1_000, 0)


async def test_sweeper_expires_without_any_call(api: Api) -> None:
    await api.budget()
    rid = await api.hold(100, ttl_ms=1_000, grace_period_ms=0)
    api.clock.advance(1_001)
    for _ in range(500):  # the background sweeper runs every 20 ms of real time
        if (await api.balance())["reserved"] == 0:
            break
        await anyio.sleep(0.01)
    assert (await api.balance())["remaining"] == 1_000
    listed = await api.http.get(
        "/v1/reservations", params={"status": "EXPIRED"}, headers=api.headers
    )
    assert [r["reservation_id"] for r in cast("list[Json]", json_of(listed)["reservations"])] == [
        rid
    ]


async def test_max_extensions_and_ttl_cap_come_from_the_tenant(
    http: httpx.AsyncClient, live: Live
) -> None:
    api = await make_tenant(
        http,
        live,
        max_reservation_extensions=1,
        max_reservation_ttl_ms=20_000,
        default_reservation_ttl_ms=5_000,
    )
    await api.budget()
    default = json_of(await api.reserve(1))
    assert default["remaining_ttl_ms"] == 5_000
    capped = json_of(await api.reserve(1, ttl_ms=86_400_000))
    assert capped["remaining_ttl_ms"] == 20_000
    rid = str(capped["reservation_id"])
    assert (await api.extend(rid, 1_000)).status_code == 200
    assert error_of(await api.extend(rid, 1_000)) == (409, "MAX_EXTENSIONS_EXCEEDED")


# Dry run and decide ---------------------------------------------------------------


async def test_dry_run_evaluates_without_mutation(api: Api) -> None:
    await api.budget(allocated=100)
    allowed = json_of(await api.reserve(60, dry_run=True))
    assert allowed["decision"] == "ALLOW"
    for absent in ("reservation_id", "expires_at_ms", "remaining_ttl_ms"):
        assert absent not in allowed
    assert allowed["affected_scopes"] == [api.scope()]
    denied = json_of(await api.reserve(160, dry_run=True))
    assert (denied["decision"], denied["reason_code"]) == ("DENY", "BUDGET_EXCEEDED")
    nowhere = json_of(await api.reserve(1, dry_run=True, subject={"agent": "lost"}))
    assert (nowhere["decision"], nowhere["reason_code"]) == ("DENY", "BUDGET_NOT_FOUND")
    assert error_of(await api.reserve(1, dry_run=True, unit="CREDITS")) == (400, "UNIT_MISMATCH")
    row = await api.balance()
    assert (row["remaining"], row["reserved"]) == (100, 0)
    listed = await api.http.get("/v1/reservations", headers=api.headers)
    assert json_of(listed)["reservations"] == []


async def test_decide_never_answers_409(api: Api) -> None:
    await api.budget(allocated=100)
    assert json_of(await api.decide(50)) == {"decision": "ALLOW", "affected_scopes": [api.scope()]}
    denied = json_of(await api.decide(500))
    assert (denied["decision"], denied["reason_code"]) == ("DENY", "BUDGET_EXCEEDED")
    missing = json_of(await api.decide(1, subject=api.subject(agent="x")))
    assert missing["decision"] == "ALLOW"
    none = json_of(await api.decide(1, subject={"agent": "nowhere"}))
    assert (none["decision"], none["reason_code"]) == ("DENY", "BUDGET_NOT_FOUND")
    assert error_of(await api.decide(1, unit="CREDITS")) == (400, "UNIT_MISMATCH")
    assert (await api.balance())["reserved"] == 0


# Policies ------------------------------------------------------------------------


async def test_policy_caps_overage_and_ttl_shape_decisions(api: Api) -> None:
    await api.budget(allocated=100)
    policy = {
        "tenant_id": api.tenant_id,
        "name": "agents",
        "scope_pattern": f"tenant:{api.tenant_id}/agent:*",
        "priority": 5,
        "caps": {"max_tokens": 256, "tool_denylist": ["shell"]},
        "commit_overage_policy": "REJECT",
        "reservation_ttl_override": {"default_ttl_ms": 7_000},
    }
    created = await api.http.post("/v1/admin/policies", json=policy, headers=ADMIN)
    assert created.status_code == 201, created.text
    subject = api.subject(agent="bot")
    caps = {"max_tokens": 256, "tool_denylist": ["shell"]}
    reserved = json_of(await api.reserve(10, subject=subject))
    assert (reserved["decision"], reserved["caps"], reserved["remaining_ttl_ms"]) == (
        "ALLOW_WITH_CAPS",
        caps,
        7_000,
    )
    assert error_of(await api.commit(str(reserved["reservation_id"]), 11)) == (
        409,
        "BUDGET_EXCEEDED",
    )
    decided = json_of(await api.decide(1, subject=subject))
    assert (decided["decision"], decided["caps"]) == ("ALLOW_WITH_CAPS", caps)
    dry = json_of(await api.reserve(1, subject=subject, dry_run=True))
    assert dry["decision"] == "ALLOW_WITH_CAPS"
    plain = json_of(await api.reserve(1))
    assert plain["decision"] == "ALLOW"
    assert "caps" not in plain
    denied = json_of(await api.decide(1_000, subject=subject))
    assert denied["decision"] == "DENY"
    assert "caps" not in denied


# Events ----------------------------------------------------------------------------


async def test_events_apply_under_each_overage_policy(api: Api) -> None:
    await api.budget(allocated=100, overdraft_limit=amount(50))
    applied = await api.event(30)
    assert applied.status_code == 201
    body = json_of(applied)
    assert (body["status"], "charged" in body) == ("APPLIED", False)
    assert error_of(await api.event(80, overage_policy="REJECT")) == (409, "BUDGET_EXCEEDED")
    overdraft = json_of(await api.event(90, overage_policy="ALLOW_WITH_OVERDRAFT"))
    assert "charged" not in overdraft
    row = await api.balance()
    assert (row["spent"], row["debt"], row["remaining"]) == (100, 20, -20)
    assert error_of(await api.event(31, overage_policy="ALLOW_WITH_OVERDRAFT")) == (
        409,
        "OVERDRAFT_LIMIT_EXCEEDED",
    )
    capped = json_of(await api.event(10, overage_policy="ALLOW_IF_AVAILABLE"))
    assert capped["charged"] == amount(0)
    assert (await api.balance())["is_over_limit"] is True
    assert identity(await api.balance())


async def test_events_need_a_budget_in_the_unit_and_an_open_budget(api: Api) -> None:
    assert error_of(await api.event(1)) == (404, "NOT_FOUND")
    await api.budget()
    assert error_of(await api.event(1, unit="CREDITS")) == (400, "UNIT_MISMATCH")
    params = {"scope": api.scope(), "unit": "TOKENS"}
    await api.http.post("/v1/admin/budgets/freeze", params=params, headers=ADMIN)
    assert error_of(await api.event(1)) == (409, "BUDGET_FROZEN")


# Reads -----------------------------------------------------------------------------


async def test_balances_need_a_filter_and_match_segments(api: Api) -> None:
    await api.budget()
    await api.budget("/agent:a")
    await api.budget("/workspace:w/agent:b")
    missing = await api.http.get("/v1/balances", headers=api.headers)
    assert error_of(missing) == (400, "INVALID_REQUEST")
    agents = await api.balances(agent="A")
    assert [row["scope_path"] for row in agents] == [api.scope("/agent:a")]
    everything = await api.balances(tenant=api.tenant_id)
    assert len(everything) == 3
    assert all(
        identity(
            {
                k: cast("int", cast("Json", v)["amount"])
                for k, v in row.items()
                if isinstance(v, dict)
            }
        )
        for row in everything
    )


async def test_get_returns_the_detail(api: Api) -> None:
    await api.budget()
    rid = await api.hold(
        5, metadata={"run": {"id": 7}}, subject=api.subject(agent="x", dimensions={"run": "r1"})
    )
    await api.commit(rid, 4, metadata={"note": "done"})
    detail = json_of(await api.get(rid))
    assert detail["status"] == "COMMITTED"
    assert detail["committed"] == amount(4)
    assert detail["metadata"] == {"run": {"id": 7}}
    assert detail["committed_metadata"] == {"note": "done"}
    assert cast("Json", detail["subject"])["dimensions"] == {"run": "r1"}
    assert error_of(await api.get("missing")) == (404, "NOT_FOUND")
    assert error_of(await api.get("x" * 129)) == (400, "INVALID_REQUEST")


async def test_list_filters_sorts_and_pages(api: Api) -> None:
    await api.budget()
    ids: list[str] = []
    for index in range(5):
        api.clock.advance(10)
        ids.append(await api.hold(index + 1, key=f"k{index}"))
    await api.commit(ids[0], 1)
    await api.release(ids[1])
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2", "sort_by": "reserved", "sort_dir": "asc"}
        if cursor:
            params["cursor"] = cursor
        page = json_of(await api.http.get("/v1/reservations", params=params, headers=api.headers))
        seen += [str(r["reservation_id"]) for r in cast("list[Json]", page["reservations"])]
        cursor = cast("str | None", page.get("next_cursor"))
        assert page["has_more"] is (cursor is not None)
        if cursor is None:
            break
    assert seen == ids
    newest = json_of(await api.http.get("/v1/reservations", headers=api.headers))
    assert [r["reservation_id"] for r in cast("list[Json]", newest["reservations"])] == ids[::-1]
    active = json_of(
        await api.http.get("/v1/reservations", params={"status": "ACTIVE"}, headers=api.headers)
    )
    assert {r["reservation_id"] for r in cast("list[Json]", active["reservations"])} == set(ids[2:])
    by_key = json_of(
        await api.http.get(
            "/v1/reservations", params={"idempotency_key": "k3"}, headers=api.headers
        )
    )
    assert [r["reservation_id"] for r in cast("list[Json]", by_key["reservations"])] == [ids[3]]
    committed = cast(
        "list[Json]",
        json_of(
            await api.http.get(
                "/v1/reservations",
                params={"status": "COMMITTED", "include": "metadata,bogus"},
                headers=api.headers,
            )
        )["reservations"],
    )
    assert committed[0]["committed"] == amount(1)
    assert "finalized_at_ms" in committed[0]
    first = json_of(
        await api.http.get("/v1/reservations", params={"limit": "1"}, headers=api.headers)
    )
    other_filter = await api.http.get(
        "/v1/reservations",
        params={"limit": "1", "status": "ACTIVE", "cursor": str(first["next_cursor"])},
        headers=api.headers,
    )
    assert error_of(other_filter) == (400, "INVALID_REQUEST")


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "x"},
        {"status": "DONE"},
        {"sort_by": "nope"},
        {"sort_dir": "up"},
        {"from": "2024-01-02T00:00:00Z", "to": "2024-01-01T00:00:00Z"},
        {"from": "yesterday"},
        {"cursor": "!!"},
    ],
)
async def test_list_rejects_bad_parameters(api: Api, params: dict[str, str]) -> None:
    response = await api.http.get("/v1/reservations", params=params, headers=api.headers)
    assert error_of(response) == (400, "INVALID_REQUEST")


async def test_list_ignores_blank_and_unknown_parameters(api: Api) -> None:
    await api.budget()
    await api.hold(1)
    response = await api.http.get(
        "/v1/reservations", params={"from": "", "to": " ", "future_param": "1"}, headers=api.headers
    )
    assert len(cast("list[Json]", json_of(response)["reservations"])) == 1


async def test_time_windows_bound_created_and_finalized(api: Api) -> None:
    await api.budget()
    start = api.clock.now_ms()
    rid = await api.hold(1)
    api.clock.advance(5_000)
    await api.hold(1)
    window = {"from": format_ms(start), "to": format_ms(start + 1_000)}
    rows = json_of(await api.http.get("/v1/reservations", params=window, headers=api.headers))
    assert [r["reservation_id"] for r in cast("list[Json]", rows["reservations"])] == [rid]
    finalized = {"finalized_from": format_ms(start)}
    none = json_of(await api.http.get("/v1/reservations", params=finalized, headers=api.headers))
    assert none["reservations"] == []
    await api.release(rid)
    one = json_of(await api.http.get("/v1/reservations", params=finalized, headers=api.headers))
    assert [r["reservation_id"] for r in cast("list[Json]", one["reservations"])] == [rid]
