"""What a guarded stream costs per chunk: a 2,000-chunk chat stream, raw SDK vs guarded.

One run, one process, one event loop: the in-process ``FakeOpenAI`` streams the
same reply (1,997 text deltas, plus the role, finish and usage chunks: 2,000
chunks) to

- the raw ``openai`` SDK stream (``chat.completions.create(stream=True,
  stream_options={"include_usage": True})``), and
- :meth:`GuardedOpenAI.open_chat_stream` over the same SDK client, with the
  embedded Cycles server in process.

Each timing runs from the first ``__anext__`` to the moment the last chunk is
handed to the loop body, so it covers consuming the stream only: the
reservation (made before the stream opens) and the commit (made after the last
chunk, when the stream ends) are excluded, as the target says. Rounds
alternate raw and guarded so drift on a shared machine hits both; the overhead
is the median of the per-round ratios. End-to-end times (reserve, stream,
commit) are printed for context.

Target: the guarded stream at most 5% slower than the raw one.

Run: ``uv run python benchmarks/stream_overhead.py [--rounds N] [--backend asyncio|trio|both]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
from returns.pipeline import is_successful

from cycleguard import Amount, ClientConfig, CyclesClient, Subject, Unit
from cycleguard.openai import GuardedOpenAI
from cycleguard.server.admin_models import (
    ApiKeyCreateRequest,
    BudgetCreateRequest,
    TenantCreateRequest,
)
from cycleguard.server.app import CyclesServer
from cycleguard.server.clock import SystemClock
from cycleguard.server.seed import Seed, apply_seed
from cycleguard.server.stores.memory import memory_store
from cycleguard.testing import FakeOpenAI, OpenAIUsage, Reply
from cycleguard.transports.asgi import AsgiTransport

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator

    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

CHUNKS = 2_000
DELTAS = CHUNKS - 3  # the role chunk, the finish chunk and the usage chunk make 2,000
MODEL = "gpt-4o-mini"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Stream for a while."}]
WORDS = ("budget ", "token ", "stream ", "commit ", "reserve ", "release ", "cycles ")
REPLY = Reply(
    deltas=tuple(WORDS[i % len(WORDS)] for i in range(DELTAS)),
    usage=OpenAIUsage(prompt_tokens=12, completion_tokens=DELTAS),
)


async def consume(stream: AsyncIterator[ChatCompletionChunk]) -> tuple[float, int]:
    """Seconds from the first request for a chunk to the last chunk received; the count."""
    count = 0
    start = last = time.perf_counter()
    async for _chunk in stream:
        last = time.perf_counter()
        count += 1
    return last - start, count


async def raw_round(sdk: AsyncOpenAI) -> tuple[float, float, int]:
    began = time.perf_counter()
    stream = await sdk.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    consumed, count = await consume(stream)
    await stream.close()
    return consumed, time.perf_counter() - began, count


async def guarded_round(guard: GuardedOpenAI) -> tuple[float, float, int]:
    began = time.perf_counter()
    async with guard.open_chat_stream(model=MODEL, messages=MESSAGES) as opened:
        stream = opened.unwrap()
        consumed, count = await consume(stream)
    outcome = stream.outcome
    assert outcome is not None
    assert is_successful(outcome), outcome
    assert outcome.unwrap().actual == Amount.tokens(12 + DELTAS)
    return consumed, time.perf_counter() - began, count


@asynccontextmanager
async def cycles_client() -> AsyncGenerator[CyclesClient]:
    """A client of the embedded Cycles server, in process, with a budget that never runs out."""
    server = CyclesServer(open_store=memory_store, sweep_interval=None)
    seed = Seed(
        tenants=(TenantCreateRequest(tenant_id="bench", name="Bench"),),
        api_keys=(ApiKeyCreateRequest(tenant_id="bench", name="bench"),),
        budgets=(
            BudgetCreateRequest(
                tenant_id="bench",
                scope="tenant:bench",
                unit=Unit.TOKENS,
                allocated=Amount.tokens(10**12),
            ),
        ),
    )
    async with server.running():
        (key,) = await apply_seed(server.store, seed, SystemClock())
        config = ClientConfig(
            base_url="http://cycles.local", api_key=key.secret, subject=Subject(tenant="bench")
        )
        async with CyclesClient(config, transport=AsgiTransport(server.app)) as cycles:
            yield cycles


async def run(backend: str, rounds: int, warmup: int) -> None:
    fake = FakeOpenAI(default=REPLY)
    async with cycles_client() as cycles, fake.client() as sdk:
        guard = GuardedOpenAI(cycles, sdk)
        for _ in range(warmup):
            await raw_round(sdk)
            await guarded_round(guard)
        raw: list[tuple[float, float, int]] = []
        guarded: list[tuple[float, float, int]] = []
        for index in range(rounds):
            # Alternate which goes first, so neither always runs on a warmer loop.
            if index % 2:
                guarded.append(await guarded_round(guard))
                raw.append(await raw_round(sdk))
            else:
                raw.append(await raw_round(sdk))
                guarded.append(await guarded_round(guard))
    assert {count for *_, count in raw + guarded} == {CHUNKS}
    raw_times = [consumed for consumed, _, _ in raw]
    guarded_times = [consumed for consumed, _, _ in guarded]
    ratios = [g / r for g, r in zip(guarded_times, raw_times, strict=True)]
    overhead = (statistics.median(ratios) - 1) * 100
    per_chunk = (statistics.median(guarded_times) - statistics.median(raw_times)) / CHUNKS
    print(f"{backend}: {rounds} rounds")
    for label, times in (("raw    ", raw_times), ("guarded", guarded_times)):
        print(
            f"  consume {CHUNKS} chunks  {label} median {statistics.median(times) * 1000:8.1f} ms"
            f"  min {min(times) * 1000:8.1f} ms"
        )
    print(
        f"  overhead: {overhead:+.1f}% (median of per-round ratios; "
        f"{per_chunk * 1e6:+.2f} us per chunk)  target <= +5%  "
        f"{'OK' if overhead <= 5 else 'MISSED'}"
    )
    raw_total = statistics.median(total for _, total, _ in raw)
    guarded_total = statistics.median(total for _, total, _ in guarded)
    print(
        f"  end to end (incl. reserve + commit): raw {raw_total * 1000:.1f} ms, "
        f"guarded {guarded_total * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Guarded vs raw 2,000-chunk stream, per chunk.")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--backend", choices=("asyncio", "trio", "both"), default="both")
    args = parser.parse_args()
    backends = ("asyncio", "trio") if args.backend == "both" else (args.backend,)
    for backend in backends:
        anyio.run(run, backend, args.rounds, args.warmup, backend=backend)


if __name__ == "__main__":
    main()
