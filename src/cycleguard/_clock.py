"""The clock the lifecycle reads and sleeps on; replaceable in tests."""

from __future__ import annotations

from typing import Protocol, final

import anyio


class Clock(Protocol):
    """Monotonic seconds and a matching sleep."""

    def now(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` on this clock (a cancellation point)."""
        ...


@final
class EventLoopClock:
    """The running event loop's clock (``anyio.current_time`` / ``anyio.sleep``).

    Under trio this follows ``trio.testing.MockClock`` when one is installed.
    """

    def now(self) -> float:
        """The event loop's monotonic time."""
        return anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the event loop."""
        await anyio.sleep(seconds)


def to_ms(seconds: float) -> int:
    """Whole milliseconds, rounded down."""
    return int(seconds * 1000)
