"""The server's clock: every expiry, TTL and timestamp decision reads it.

Injecting the clock keeps time-dependent rules testable without real sleeps:
tests hand the server a :class:`ManualClock` and move it forward.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, final

__all__ = ("Clock", "ManualClock", "SystemClock", "format_ms", "parse_datetime_ms")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class Clock(Protocol):
    """The authoritative server time in Unix milliseconds."""

    def now_ms(self) -> int:
        """The current server time, in milliseconds since the Unix epoch."""
        ...


@final
class SystemClock:
    """Wall-clock time from the operating system."""

    def now_ms(self) -> int:
        """The current wall-clock time in milliseconds."""
        return time.time_ns() // 1_000_000


@final
class ManualClock:
    """A clock that only moves when told to; safe to share between threads.

    >>> clock = ManualClock(1_000)
    >>> clock.advance(500)
    >>> clock.now_ms()
    1500
    """

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = start_ms
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        """The clock's current reading."""
        with self._lock:
            return self._now

    def advance(self, ms: int) -> None:
        """Move the clock forward by ``ms`` milliseconds (never backwards)."""
        if ms < 0:
            raise ValueError("a clock cannot move backwards")
        with self._lock:
            self._now += ms


def format_ms(ms: int) -> str:
    """An RFC 3339 UTC timestamp with millisecond precision.

    >>> format_ms(0)
    '1970-01-01T00:00:00.000Z'
    """
    moment = _EPOCH + ms * _MS
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_datetime_ms(text: str) -> int | None:
    """Parse an RFC 3339 date-time into Unix milliseconds; ``None`` if it is not one.

    A value without an offset is read as UTC.

    >>> parse_datetime_ms("1970-01-01T00:00:01Z")
    1000
    >>> parse_datetime_ms("yesterday") is None
    True
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MS
