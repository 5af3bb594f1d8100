"""Helpers for tests that drive the real openai and anthropic SDKs.

The SDKs' async streams leave their inner async generators
(``AsyncStream._iter_events``, ``SSEDecoder.aiter_bytes``,
``httpx2.Response.aiter_bytes``, ...) suspended rather than closed: always when
a stream raises part-way, and for openai even on a normal end (it ``break``s
out of the event loop at ``data: [DONE]``). Under asyncio they are closed
quietly when collected; under trio the collection emits ``ResourceWarning``,
which this suite turns into errors. That is the SDKs' doing and harmless (trio
closes them), so modules that stream through an SDK apply :data:`SDK_STREAMS`
and the :func:`collect_garbage` fixture flushes leftovers while the filter
still applies.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, TypeVar

import pytest

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Callable, Generator

T = TypeVar("T")

SDK_STREAMS = pytest.mark.filterwarnings(
    r"ignore:Async generator '(openai|anthropic|httpx2|httpcore2)\.[\w.]+' was garbage "
    r"collected:ResourceWarning"
)
"""Ignore trio's warning about async generators an SDK stream abandoned (see module)."""


@pytest.fixture
def collect_garbage() -> Generator[None]:
    """Collect cyclic garbage at teardown, while the test's warning filters still apply."""
    yield
    gc.collect()


async def drain(stream: AsyncIterable[T], sink: Callable[[T], object] = lambda _: None) -> None:
    """Read ``stream`` to its end (or its exception), handing each item to ``sink``."""
    async for item in stream:
        sink(item)
