"""The heartbeat loop on the embedded server, in virtual time: leases outlive their TTL."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
from returns.pipeline import is_successful

from cycleguard import Action, Amount, ReservationStatus
from cycleguard._heartbeat import (
    HeartbeatEvent,
    HeartbeatExtended,
    HeartbeatRetrying,
    HeartbeatStopped,
)
from cycleguard._lease import open_reservation
from cycleguard.errors import ConnectionFailed
from cycleguard.server.clock import ManualClock
from tests._embedded import (
    Embedded,
    VirtualClock,
    admin,
    faulty,
    in_process,
    is_operation,
    provision,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio


@pytest.fixture
async def local() -> AsyncIterator[Embedded]:
    """The server in this event loop, on a clock the virtual client time drives."""
    async with in_process(ManualClock()) as server:
        yield server


ACTION = Action("llm.completion", "openai:gpt-4o-mini")
EXTEND = is_operation("POST", "/extend")
TTL_MS = 30_000


async def test_ten_ttls_keep_the_lease_within_the_extension_limit(local: Embedded) -> None:
    """A block lasting ten TTLs stays ACTIVE, extends at most the tenant's limit, and commits."""
    tenant = await provision(local, {"": 1_000}, max_reservation_extensions=10)
    clock = VirtualClock(local.clock)
    events: list[HeartbeatEvent] = []
    async with (
        tenant.client() as client,
        open_reservation(
            client,
            action=ACTION,
            estimate=Amount.tokens(100),
            ttl_ms=TTL_MS,
            clock=clock,
            on_heartbeat=events.append,
        ) as got,
    ):
        lease = got.unwrap()
        first_expiry = lease.expires_at_ms
        for _ in range(10):
            await clock.advance(TTL_MS / 1000)
            detail = await client.get_reservation(lease.reservation_id)
            assert detail.unwrap().status is ReservationStatus.ACTIVE
        assert lease.expires_at_ms > first_expiry + 9 * TTL_MS
        committed = await lease.commit(Amount.tokens(80))
        assert is_successful(committed)
    extended = [e for e in events if isinstance(e, HeartbeatExtended)]
    assert 9 <= len(extended) <= 10
    assert not any(isinstance(e, HeartbeatStopped) for e in events)


async def test_extension_limit_stops_the_heartbeat_visibly(
    local: Embedded, caplog: pytest.LogCaptureFixture
) -> None:
    """MAX_EXTENSIONS_EXCEEDED stops the heartbeat with a warning; the work still commits."""
    caplog.set_level(logging.WARNING, logger="cycleguard")
    tenant = await provision(local, {"": 1_000}, max_reservation_extensions=2)
    clock = VirtualClock(local.clock)
    events: list[HeartbeatEvent] = []
    async with (
        tenant.client() as client,
        open_reservation(
            client,
            action=ACTION,
            estimate=Amount.tokens(10),
            ttl_ms=TTL_MS,
            clock=clock,
            on_heartbeat=events.append,
        ) as got,
    ):
        lease = got.unwrap()
        for _ in range(4):
            await clock.advance(TTL_MS / 1000)
        stop = lease.heartbeat_stop
        assert stop is not None
        assert stop.reason == "server answered MaxExtensionsExceeded"
        assert lease.lost is None
        assert is_successful(await lease.commit(Amount.tokens(10)))
    assert isinstance(events[-1], HeartbeatStopped)
    assert lease.reservation_id in caplog.text
    assert "stopped" in caplog.text


async def test_finalized_elsewhere_marks_the_lease_lost(local: Embedded) -> None:
    """An admin release under the lease's feet: the next extend learns it, the lease is lost."""
    tenant = await provision(local, {"": 1_000})
    clock = VirtualClock(local.clock)
    async with (
        tenant.client() as client,
        open_reservation(
            client, action=ACTION, estimate=Amount.tokens(10), ttl_ms=TTL_MS, clock=clock
        ) as got,
    ):
        lease = got.unwrap()
        await admin(
            local,
            "POST",
            f"/v1/reservations/{lease.reservation_id}/release",
            {"idempotency_key": "admin-release-1", "reason": "[INCIDENT_FORCE_RELEASE]"},
        )
        await clock.advance(TTL_MS / 1000)
        assert lease.lost is not None
        assert "ReservationFinalized" in lease.lost.reason


async def test_transport_failures_are_observable_and_not_fatal(
    local: Embedded, caplog: pytest.LogCaptureFixture
) -> None:
    """Failed extends are retried with the same key, reported, and the work goes on."""
    caplog.set_level(logging.WARNING, logger="cycleguard")
    tenant = await provision(local, {"": 1_000})
    clock = VirtualClock(local.clock)
    transport = faulty(tenant)
    transport.fail(EXTEND, ConnectionFailed(message="reset", request_sent=True), times=2)
    events: list[HeartbeatEvent] = []
    async with (
        tenant.client(transport) as client,
        open_reservation(
            client,
            action=ACTION,
            estimate=Amount.tokens(10),
            ttl_ms=TTL_MS,
            clock=clock,
            on_heartbeat=events.append,
        ) as got,
    ):
        lease = got.unwrap()
        await clock.advance(2 * TTL_MS / 1000)
        assert is_successful(await lease.commit(Amount.tokens(7)))
    retries = [e for e in events if isinstance(e, HeartbeatRetrying)]
    assert len(retries) == 2
    assert isinstance(retries[0].error, ConnectionFailed)
    keys = [request.header("X-Idempotency-Key") for request in transport.sent(EXTEND)]
    assert keys[0] == keys[1] == keys[2]  # same key through the retries
    assert any(isinstance(e, HeartbeatExtended) for e in events)
    assert f"reservation {lease.reservation_id}" in caplog.text
    assert "retrying with the same idempotency key" in caplog.text


async def test_no_heartbeat_when_disabled(local: Embedded) -> None:
    """heartbeat=False sends no extend, even long past the TTL."""
    tenant = await provision(local, {"": 1_000})
    clock = VirtualClock(local.clock)
    transport = faulty(tenant)
    async with (
        tenant.client(transport) as client,
        open_reservation(
            client,
            action=ACTION,
            estimate=Amount.tokens(10),
            ttl_ms=TTL_MS,
            clock=clock,
            heartbeat=False,
        ) as got,
    ):
        lease = got.unwrap()
        await clock.advance(TTL_MS / 2000)
        await lease.release()
    assert transport.sent(EXTEND) == []


async def test_heartbeat_ends_with_the_block(local: Embedded) -> None:
    """After the block, no extend is ever sent again."""
    tenant = await provision(local, {"": 1_000})
    clock = VirtualClock(local.clock)
    transport = faulty(tenant)
    async with tenant.client(transport) as client:
        async with open_reservation(
            client, action=ACTION, estimate=Amount.tokens(10), ttl_ms=TTL_MS, clock=clock
        ) as got:
            await got.unwrap().commit(Amount.tokens(1))
        sent = len(transport.sent(EXTEND))
        await clock.advance(3 * TTL_MS / 1000)
        assert len(transport.sent(EXTEND)) == sent
