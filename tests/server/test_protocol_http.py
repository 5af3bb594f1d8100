"""Strict input, idempotency and correlation headers over loopback HTTP."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, cast

import anyio
import pytest

from tests.server._api import ACTION, Api, Json, amount, json_of, new_key
from tests.server.conftest import make_tenant

if TYPE_CHECKING:
    import httpx

    from tests.server.conftest import Live

pytestmark = pytest.mark.anyio


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, str(json_of(response)["error"])


def reserve_body(api: Api, **changes: object) -> Json:
    return {
        "idempotency_key": new_key(),
        "subject": api.subject(),
        "action": ACTION,
        "estimate": amount(10),
        **changes,
    }


# Strict input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"surprise": 1}, "surprise"),
        ({"subject": {"tenant": "x", "team": "y"}}, "team"),
        ({"estimate": {"unit": "TOKENS", "amount": 1, "currency": "USD"}}, "currency"),
        ({"ttl_ms": 999}, "ttl_ms"),
        ({"ttl_ms": 86_400_001}, "ttl_ms"),
        ({"grace_period_ms": 60_001}, "grace_period_ms"),
        ({"estimate": {"unit": "TOKENS", "amount": -1}}, "negative"),
        ({"estimate": {"unit": "TOKENS", "amount": 2**63}}, "int64"),
        ({"estimate": {"unit": "TOKENS", "amount": 1.5}}, "estimate"),
        ({"estimate": {"unit": "GOLD", "amount": 1}}, "estimate"),
        ({"ttl_ms": None}, "null"),
        ({"dry_run": "yes"}, "dry_run"),
        ({"subject": {"dimensions": {"run": "1"}}}, "subject"),
        ({"subject": {"tenant": "has space"}}, "subject.tenant"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"action": {"kind": "k" * 65, "name": "n"}}, "action.kind"),
        ({"overage_policy": "SOMETIMES"}, "overage_policy"),
    ],
)
async def test_bad_bodies_are_400_naming_the_problem(api: Api, changes: Json, named: str) -> None:
    response = await api.http.post(
        "/v1/reservations", json=reserve_body(api, **changes), headers=api.headers
    )
    assert error_of(response) == (400, "INVALID_REQUEST")
    assert named in str(json_of(response)["message"])


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b'{"a":1}garbage', b"\xff\xfe"])
async def test_malformed_json_is_400(api: Api, raw: bytes) -> None:
    for path in ("/v1/reservations", "/v1/decide", "/v1/events", "/v1/reservations/x/commit"):
        response = await api.http.post(path, content=raw, headers=api.headers)
        assert error_of(response) == (400, "INVALID_REQUEST")


async def test_header_and_body_keys_must_match(api: Api) -> None:
    await api.budget()
    body = reserve_body(api)
    mismatch = await api.http.post(
        "/v1/reservations",
        json=body,
        headers={**api.headers, "X-Idempotency-Key": "other"},
    )
    assert error_of(mismatch) == (400, "INVALID_REQUEST")
    assert "X-Idempotency-Key" in str(json_of(mismatch)["message"])
    same = await api.http.post(
        "/v1/reservations",
        json=body,
        headers={**api.headers, "X-Idempotency-Key": str(body["idempotency_key"])},
    )
    assert same.status_code == 200


async def test_unknown_routes_and_methods_use_the_envelope(api: Api) -> None:
    assert error_of(await api.http.get("/v2/nothing")) == (404, "NOT_FOUND")
    assert (await api.http.delete("/v1/decide")).status_code == 405


# Idempotency ----------------------------------------------------------------------


async def test_reserve_replay_is_verbatim_with_fresh_remaining_ttl(api: Api) -> None:
    await api.budget()
    body = reserve_body(api, ttl_ms=10_000)
    first = json_of(await api.http.post("/v1/reservations", json=body, headers=api.headers))
    api.clock.advance(3_000)
    again = json_of(await api.http.post("/v1/reservations", json=body, headers=api.headers))
    assert again["reservation_id"] == first["reservation_id"]
    assert again["remaining_ttl_ms"] == 7_000
    assert {k: v for k, v in again.items() if k != "remaining_ttl_ms"} == {
        k: v for k, v in first.items() if k != "remaining_ttl_ms"
    }
    assert (await api.balance())["reserved"] == 10
    await api.release(str(first["reservation_id"]))
    after = json_of(await api.http.post("/v1/reservations", json=body, headers=api.headers))
    assert after["remaining_ttl_ms"] == 0


async def test_changed_payload_is_a_mismatch_and_failures_are_not_remembered(api: Api) -> None:
    body = reserve_body(api)
    assert error_of(await api.http.post("/v1/reservations", json=body, headers=api.headers)) == (
        404,
        "NOT_FOUND",
    )
    await api.budget()
    created = await api.http.post("/v1/reservations", json=body, headers=api.headers)
    assert created.status_code == 200
    changed = {**body, "estimate": amount(11)}
    mismatch = await api.http.post("/v1/reservations", json=changed, headers=api.headers)
    assert error_of(mismatch) == (409, "IDEMPOTENCY_MISMATCH")
    # key order and spacing do not matter: the comparison is on canonical JSON
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=2).encode()
    replay = await api.http.post(
        "/v1/reservations",
        content=reordered,
        headers={**api.headers, "content-type": "application/json"},
    )
    assert json_of(replay)["reservation_id"] == json_of(created)["reservation_id"]


async def test_dry_run_and_live_share_one_key_space(api: Api) -> None:
    await api.budget()
    body = reserve_body(api, dry_run=True)
    assert (
        await api.http.post("/v1/reservations", json=body, headers=api.headers)
    ).status_code == 200
    live = {**body, "dry_run": False}
    assert error_of(await api.http.post("/v1/reservations", json=live, headers=api.headers)) == (
        409,
        "IDEMPOTENCY_MISMATCH",
    )


async def test_commit_release_extend_decide_event_replays(api: Api) -> None:
    await api.budget()
    rid = await api.hold(100)
    commit = await api.commit(rid, 40, key="c")
    await api.event(5)  # the budget moves on; a replay still shows the original answer
    assert json_of(await api.commit(rid, 40, key="c")) == json_of(commit)
    assert error_of(await api.commit(rid, 41, key="c")) == (409, "IDEMPOTENCY_MISMATCH")
    assert error_of(await api.commit(rid, 40, key="other")) == (409, "RESERVATION_FINALIZED")

    other = await api.hold(10)
    released = await api.release(other, key="r", reason="x")
    assert json_of(await api.release(other, key="r", reason="x")) == json_of(released)
    assert error_of(await api.release(other, key="r", reason="y")) == (409, "IDEMPOTENCY_MISMATCH")

    third = await api.hold(10, ttl_ms=10_000)
    extended = json_of(await api.extend(third, 1_000, key="e"))
    api.clock.advance(500)
    replay = json_of(await api.extend(third, 1_000, key="e"))
    assert replay["expires_at_ms"] == extended["expires_at_ms"]
    assert replay["remaining_ttl_ms"] == cast("int", extended["remaining_ttl_ms"]) - 500
    assert error_of(await api.extend(third, 2_000, key="e")) == (409, "IDEMPOTENCY_MISMATCH")

    decided = json_of(await api.decide(1, key="d"))
    assert json_of(await api.decide(1, key="d")) == decided
    assert error_of(await api.decide(2, key="d")) == (409, "IDEMPOTENCY_MISMATCH")

    event = await api.event(3, key="ev")
    replayed = await api.event(3, key="ev")
    assert replayed.status_code == 201
    assert json_of(replayed) == json_of(event)
    assert error_of(await api.event(4, key="ev")) == (409, "IDEMPOTENCY_MISMATCH")
    assert (await api.balance())["spent"] == 40 + 5 + 3


async def test_keys_are_per_tenant(api: Api, http: httpx.AsyncClient, live: Live) -> None:
    other = await make_tenant(http, live)
    await api.budget()
    await other.budget()
    mine = json_of(await api.reserve(1, key="shared"))
    theirs = json_of(await other.reserve(2, key="shared"))
    assert mine["reservation_id"] != theirs["reservation_id"]


async def test_concurrent_requests_with_one_key_create_one_reservation(api: Api) -> None:
    await api.budget()
    body = reserve_body(api)
    answers: list[Json] = []

    async def send() -> None:
        response = await api.http.post("/v1/reservations", json=body, headers=api.headers)
        answers.append(json_of(response))

    async with anyio.create_task_group() as group:
        for _ in range(12):
            group.start_soon(send)
    assert len({str(answer["reservation_id"]) for answer in answers}) == 1
    assert (await api.balance())["reserved"] == 10
    listed = await api.http.get("/v1/reservations", headers=api.headers)
    assert len(cast("list[Json]", json_of(listed)["reservations"])) == 1


# Correlation headers -------------------------------------------------------------


async def test_trace_id_precedence_and_echo(api: Api) -> None:
    parent = "0af7651916cd43dd8448eb211c80319c"
    flat = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{parent}-b7ad6b7169203331-01"
    cases: list[tuple[dict[str, str], str | None]] = [
        ({"traceparent": traceparent}, parent),
        ({"X-Cycles-Trace-Id": flat}, flat),
        ({"traceparent": traceparent, "X-Cycles-Trace-Id": flat}, parent),
        ({"traceparent": "00-zz-nonsense", "X-Cycles-Trace-Id": flat}, flat),
        ({"traceparent": f"00-{'0' * 32}-b7ad6b7169203331-01"}, None),
        ({"X-Cycles-Trace-Id": "0" * 32}, None),
        ({"X-Cycles-Trace-Id": flat.upper()}, None),
    ]
    for headers, expected in cases:
        ok = await api.http.get(
            "/v1/balances", params={"tenant": api.tenant_id}, headers={**api.headers, **headers}
        )
        assert ok.status_code == 200
        trace_id = ok.headers["x-cycles-trace-id"]
        assert trace_id == expected if expected else trace_id not in {"0" * 32, flat.upper()}
        failed = await api.http.get("/v1/balances", headers={**api.headers, **headers})
        assert failed.status_code == 400
        if expected:
            assert json_of(failed)["trace_id"] == expected


async def test_every_response_has_a_fresh_request_id_and_the_tenant(api: Api) -> None:
    first = await api.http.get(
        "/v1/balances", params={"tenant": api.tenant_id}, headers=api.headers
    )
    second = await api.http.get(
        "/v1/balances", params={"tenant": api.tenant_id}, headers=api.headers
    )
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert first.headers["x-cycles-tenant"] == api.tenant_id
    unauthorized = await api.http.get("/v1/balances", params={"tenant": api.tenant_id})
    assert error_of(unauthorized) == (401, "UNAUTHORIZED")
    assert "x-cycles-trace-id" in unauthorized.headers
