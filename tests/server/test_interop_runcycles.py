"""The official Python SDK (``runcycles`` 0.5.3, unchanged) against our server over loopback.

``runcycles`` ships no type information, so it is imported dynamically and the
few parts used here are described by protocols.
"""

from __future__ import annotations

import importlib
import uuid
from typing import TYPE_CHECKING, Protocol, cast

import httpx

from tests.server._api import ADMIN

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.server.conftest import Live


class _Response(Protocol):
    status: int
    body: dict[str, object] | None

    @property
    def is_success(self) -> bool: ...


class _Client(Protocol):
    def create_reservation(self, request: object) -> _Response: ...
    def commit_reservation(self, reservation_id: str, request: object) -> _Response: ...
    def release_reservation(self, reservation_id: str, request: object) -> _Response: ...
    def decide(self, request: object) -> _Response: ...
    def create_event(self, request: object) -> _Response: ...
    def get_balances(self, **query: str) -> _Response: ...
    def get_reservation(self, reservation_id: str) -> _Response: ...
    def close(self) -> None: ...


class _Model(Protocol):
    reservation_id: str

    def is_allowed(self) -> bool: ...


class _Value(Protocol):
    value: str


class _Amount(Protocol):
    amount: int


class _Balance(Protocol):
    spent: _Amount
    remaining: _Amount
    reserved: _Amount


class _Balances(Protocol):
    balances: list[_Balance]


class _Detail(Protocol):
    status: _Value


class _Decision(Protocol):
    decision: _Value


_sdk = importlib.import_module("runcycles")


def _model(name: str) -> Callable[..., object]:
    return cast("Callable[..., object]", getattr(_sdk, name))


def _validate(name: str, body: dict[str, object] | None) -> object:
    parse = cast("Callable[[object], object]", getattr(_sdk, name).model_validate)
    return parse(body)


def _tenant(live: Live) -> tuple[str, str]:
    tenant_id = "sdk-" + uuid.uuid4().hex[:10]
    with httpx.Client(base_url=live.base_url, headers=ADMIN) as admin:
        admin.post(
            "/v1/admin/tenants", json={"tenant_id": tenant_id, "name": "SDK"}
        ).raise_for_status()
        key = admin.post("/v1/admin/api-keys", json={"tenant_id": tenant_id, "name": "sdk"})
        key.raise_for_status()
        budget = {
            "tenant_id": tenant_id,
            "scope": f"tenant:{tenant_id}",
            "unit": "USD_MICROCENTS",
            "allocated": {"unit": "USD_MICROCENTS", "amount": 1_000_000},
        }
        admin.post("/v1/admin/budgets", json=budget).raise_for_status()
        return tenant_id, str(key.json()["key_secret"])


def test_the_official_sdk_runs_every_flow_unchanged(live: Live) -> None:
    tenant_id, secret = _tenant(live)
    config = _model("CyclesConfig")(
        base_url=live.base_url,
        api_key=secret,
        tenant=tenant_id,
        journal_enabled=False,
        retry_enabled=False,
    )
    client = cast("_Client", _model("CyclesClient")(config))
    unit: object = _sdk.Unit.USD_MICROCENTS
    subject = _model("Subject")(tenant=tenant_id, agent="sdk-agent")
    action = _model("Action")(kind="llm.completion", name="openai:gpt-4o-mini")

    def reserve(amount: int) -> str:
        request = _model("ReservationCreateRequest")(
            idempotency_key=uuid.uuid4().hex,
            subject=subject,
            action=action,
            estimate=_model("Amount")(unit=unit, amount=amount),
            ttl_ms=30_000,
        )
        response = client.create_reservation(request)
        assert response.is_success, response.body
        parsed = cast("_Model", _validate("ReservationCreateResponse", response.body))
        assert parsed.is_allowed()
        return str(parsed.reservation_id)

    try:
        committed = reserve(5_000)
        commit = client.commit_reservation(
            committed,
            _model("CommitRequest")(
                idempotency_key=uuid.uuid4().hex,
                actual=_model("Amount")(unit=unit, amount=4_000),
            ),
        )
        assert commit.is_success, commit.body
        _validate("CommitResponse", commit.body)

        released = reserve(2_000)
        release = client.release_reservation(
            released, _model("ReleaseRequest")(idempotency_key=uuid.uuid4().hex, reason="unused")
        )
        assert release.is_success, release.body
        _validate("ReleaseResponse", release.body)
        detail = client.get_reservation(released)
        assert cast("_Detail", _validate("ReservationDetail", detail.body)).status.value == (
            "RELEASED"
        )

        decision = client.decide(
            _model("DecisionRequest")(
                idempotency_key=uuid.uuid4().hex,
                subject=subject,
                action=action,
                estimate=_model("Amount")(unit=unit, amount=1_000),
            )
        )
        assert decision.is_success, decision.body
        parsed_decision = cast("_Decision", _validate("DecisionResponse", decision.body))
        assert parsed_decision.decision.value == "ALLOW"

        event = client.create_event(
            _model("EventCreateRequest")(
                idempotency_key=uuid.uuid4().hex,
                subject=subject,
                action=action,
                actual=_model("Amount")(unit=unit, amount=500),
            )
        )
        assert event.status == 201, event.body
        _validate("EventCreateResponse", event.body)

        balances = client.get_balances(tenant=tenant_id)
        assert balances.is_success, balances.body
        (row,) = cast("_Balances", _validate("BalanceResponse", balances.body)).balances
        assert (row.spent.amount, row.remaining.amount) == (4_500, 1_000_000 - 4_500)

        lifecycle = cast(
            "Callable[..., Callable[[Callable[[], str]], Callable[[], str]]]",
            _sdk.cycles,
        )

        def actual(result: str) -> int:
            assert result == "done"
            return 700

        @lifecycle(
            estimate=1_000,
            actual=actual,
            action_kind="llm.completion",
            action_name="gpt",
            unit="USD_MICROCENTS",
            client=client,
        )
        def guarded_call() -> str:
            return "done"

        assert guarded_call() == "done"
        after = client.get_balances(tenant=tenant_id)
        (row,) = cast("_Balances", _validate("BalanceResponse", after.body)).balances
        assert row.spent.amount == 4_500 + 700
        assert row.reserved.amount == 0
    finally:
        client.close()
