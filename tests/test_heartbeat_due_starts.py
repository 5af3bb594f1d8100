"""The heartbeat on the event loop's own clock: no task until the first beat is due.

The embedded server runs in the test's event loop; the client uses the default
clock (real time), with timeouts small enough that the first beat falls due
about half a second into a 3.5 s lease.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

import anyio
import pytest

from cycleguard import Action, Amount, Timeouts
from cycleguard._heartbeat import HeartbeatEvent, HeartbeatExtended, due_starts
from cycleguard._lease import open_reservation
from cycleguard.server.clock import ManualClock
from tests._embedded import Embedded, in_process, provision

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

ACTION = Action("llm.completion", "openai:gpt-4o-mini")
TTL_MS = 3_500
QUICK = Timeouts(connect=0.2, read=0.3, write=0.2)  # attempt budget 1 s: first beat ~0.5 s in
REQUEST = contextvars.ContextVar[str]("REQUEST", default="none")


@pytest.fixture
async def local() -> AsyncIterator[Embedded]:
    """The server in this event loop."""
    async with in_process(ManualClock()) as server:
        yield server


async def test_a_block_shorter_than_the_first_beat_starts_no_heartbeat(local: Embedded) -> None:
    """Nothing is extended and nothing stays registered once the block has ended."""
    tenant = await provision(local, {"": 1_000})
    events: list[HeartbeatEvent] = []
    async with (
        tenant.client(timeouts=QUICK) as client,
        open_reservation(
            client,
            action=ACTION,
            estimate=Amount.tokens(10),
            ttl_ms=TTL_MS,
            on_heartbeat=events.append,
        ) as got,
    ):
        lease = got.unwrap()
        await anyio.sleep(0.05)
        await lease.commit(Amount.tokens(5))
    assert events == []
    assert due_starts().pending == 0


async def test_a_long_block_is_extended_once_the_first_beat_is_due(local: Embedded) -> None:
    """The heartbeat starts when its first beat is due, in the context the block began with."""
    tenant = await provision(local, {"": 1_000})
    events: list[tuple[HeartbeatEvent, str]] = []
    REQUEST.set("block-context")
    async with (
        tenant.client(timeouts=QUICK) as client,
        open_reservation(
            client,
            action=ACTION,
            estimate=Amount.tokens(10),
            ttl_ms=TTL_MS,
            on_heartbeat=lambda event: events.append((event, REQUEST.get())),
        ) as got,
    ):
        lease = got.unwrap()
        first_expiry = lease.expires_at_ms
        await anyio.sleep(1.3)
        await lease.commit(Amount.tokens(5))
    extended = [event for event, _ in events if isinstance(event, HeartbeatExtended)]
    assert len(extended) == 1  # at ~0.5 s; the server (on a manual clock) then grants ~4 s more
    assert {context for _, context in events} == {"block-context"}
    assert lease.expires_at_ms > first_expiry
    assert due_starts().pending == 0
