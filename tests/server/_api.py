"""A thin test client for one tenant of a live server: builds bodies, keeps keys apart."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, cast

import attrs
import httpx

from cycleguard.server.clock import ManualClock

if TYPE_CHECKING:
    from collections.abc import Mapping

ADMIN_KEY = "test-admin-key"
ADMIN = {"X-Admin-API-Key": ADMIN_KEY}
ACTION = {"kind": "llm.completion", "name": "openai:gpt-4o-mini"}

Json = dict[str, object]


def new_key() -> str:
    """A fresh idempotency key."""
    return uuid.uuid4().hex


def amount(value: int, unit: str = "TOKENS") -> Json:
    """An ``Amount`` body."""
    return {"unit": unit, "amount": value}


def json_of(response: httpx.Response) -> Json:
    """The response body as a JSON object."""
    body: object = response.json()
    assert isinstance(body, dict)
    return cast("Json", body)


@attrs.define
class Api:
    """One tenant on a live server: its id, its key, the shared client and clock."""

    http: httpx.AsyncClient
    clock: ManualClock
    tenant_id: str
    secret: str

    @property
    def headers(self) -> dict[str, str]:
        """The tenant key header."""
        return {"X-Cycles-API-Key": self.secret}

    def subject(self, **levels: object) -> Json:
        """A subject under this tenant."""
        return {"tenant": self.tenant_id, **levels}

    def scope(self, suffix: str = "") -> str:
        """A scope path under this tenant (``suffix`` like ``/agent:bot``)."""
        return f"tenant:{self.tenant_id}{suffix}"

    async def budget(
        self, suffix: str = "", allocated: int = 1_000, unit: str = "TOKENS", **extra: object
    ) -> Json:
        """Create a budget at ``tenant:<id><suffix>`` with the admin key."""
        body: Json = {
            "tenant_id": self.tenant_id,
            "scope": self.scope(suffix),
            "unit": unit,
            "allocated": amount(allocated, unit),
            **extra,
        }
        response = await self.http.post("/v1/admin/budgets", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        return json_of(response)

    def _reserve_body(
        self,
        estimate: int,
        subject: Json | None,
        unit: str,
        key: str | None,
        extra: Mapping[str, object],
    ) -> Json:
        return {
            "idempotency_key": key or new_key(),
            "subject": subject or self.subject(),
            "action": ACTION,
            "estimate": amount(estimate, unit),
            **extra,
        }

    async def reserve(
        self,
        estimate: int,
        *,
        subject: Json | None = None,
        unit: str = "TOKENS",
        key: str | None = None,
        **extra: object,
    ) -> httpx.Response:
        """``POST /v1/reservations``."""
        body = self._reserve_body(estimate, subject, unit, key, extra)
        return await self.http.post("/v1/reservations", json=body, headers=self.headers)

    async def hold(
        self,
        estimate: int,
        *,
        subject: Json | None = None,
        unit: str = "TOKENS",
        key: str | None = None,
        **extra: object,
    ) -> str:
        """Reserve and return the reservation id (must succeed)."""
        body = self._reserve_body(estimate, subject, unit, key, extra)
        response = await self.http.post("/v1/reservations", json=body, headers=self.headers)
        assert response.status_code == 200, response.text
        return str(json_of(response)["reservation_id"])

    async def commit(
        self,
        reservation_id: str,
        actual: int,
        *,
        unit: str = "TOKENS",
        key: str | None = None,
        **extra: object,
    ) -> httpx.Response:
        """``POST /v1/reservations/{id}/commit``."""
        body: Json = {"idempotency_key": key or new_key(), "actual": amount(actual, unit), **extra}
        return await self.http.post(
            f"/v1/reservations/{reservation_id}/commit", json=body, headers=self.headers
        )

    async def release(
        self,
        reservation_id: str,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: object,
    ) -> httpx.Response:
        """``POST /v1/reservations/{id}/release``."""
        body: Json = {"idempotency_key": key or new_key(), **extra}
        return await self.http.post(
            f"/v1/reservations/{reservation_id}/release",
            json=body,
            headers=self.headers if headers is None else headers,
        )

    async def extend(
        self, reservation_id: str, by_ms: int, *, key: str | None = None
    ) -> httpx.Response:
        """``POST /v1/reservations/{id}/extend``."""
        body: Json = {"idempotency_key": key or new_key(), "extend_by_ms": by_ms}
        return await self.http.post(
            f"/v1/reservations/{reservation_id}/extend", json=body, headers=self.headers
        )

    async def decide(
        self,
        estimate: int,
        *,
        subject: Json | None = None,
        unit: str = "TOKENS",
        key: str | None = None,
    ) -> httpx.Response:
        """``POST /v1/decide``."""
        body: Json = {
            "idempotency_key": key or new_key(),
            "subject": subject or self.subject(),
            "action": ACTION,
            "estimate": amount(estimate, unit),
        }
        return await self.http.post("/v1/decide", json=body, headers=self.headers)

    async def event(
        self,
        actual: int,
        *,
        subject: Json | None = None,
        unit: str = "TOKENS",
        key: str | None = None,
        **extra: object,
    ) -> httpx.Response:
        """``POST /v1/events``."""
        body: Json = {
            "idempotency_key": key or new_key(),
            "subject": subject or self.subject(),
            "action": ACTION,
            "actual": amount(actual, unit),
            **extra,
        }
        return await self.http.post("/v1/events", json=body, headers=self.headers)

    async def balances(self, **filters: str) -> list[Json]:
        """``GET /v1/balances`` rows (filters default to this tenant)."""
        params = filters or {"tenant": self.tenant_id}
        response = await self.http.get("/v1/balances", params=params, headers=self.headers)
        assert response.status_code == 200, response.text
        return cast("list[Json]", json_of(response)["balances"])

    async def balance(self, suffix: str = "", unit: str = "TOKENS") -> dict[str, int | bool]:
        """One budget's numbers by name: remaining, reserved, spent, debt, allocated..."""
        for row in await self.balances():
            if (
                row["scope_path"] == self.scope(suffix)
                and cast("Json", row["remaining"])["unit"] == unit
            ):
                numbers: dict[str, int | bool] = {
                    name: cast("int", cast("Json", value)["amount"])
                    for name, value in row.items()
                    if isinstance(value, dict)
                }
                numbers["is_over_limit"] = bool(row.get("is_over_limit", False))
                return numbers
        raise AssertionError(f"no balance for {self.scope(suffix)} {unit}")

    async def get(self, reservation_id: str) -> httpx.Response:
        """``GET /v1/reservations/{id}``."""
        return await self.http.get(f"/v1/reservations/{reservation_id}", headers=self.headers)
