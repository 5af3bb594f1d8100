"""cycleguard.anthropic: the real ``anthropic`` SDK against FakeAnthropic, Cycles embedded.

The committed amount counts the cache (input + cache writes + cache reads +
output); a stream's input comes from ``message_start`` and its output from the
last ``message_delta``; the mid-stream ``event: error`` (HTTP 200) is classified
by its type; caps, units, pricing and errors behave as for OpenAI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import anthropic
import httpx2
import pytest
from returns.pipeline import is_successful

from cycleguard import Amount, Decision, JsonObject, Unit
from cycleguard.anthropic import (
    ActualSource,
    CapsForbidCall,
    GuardedAnthropic,
    MessageParams,
    MissingUsage,
    ProviderConnectionFailed,
    ProviderRateLimited,
    ProviderStatusError,
    ProviderStreamError,
    UsageMissing,
)
from cycleguard.errors import UsageError
from cycleguard.metering import (
    PriceBook,
    Rates,
    TokenCounter,
    TokenUsage,
    anthropic_prompt_tokens,
    estimate_amount,
)
from cycleguard.testing import AnthropicUsage, FakeAnthropic, HttpError, Reply, StreamFault
from tests._guard import BOT, ledger
from tests._sdk import SDK_STREAMS, collect_garbage

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from anthropic import AsyncAnthropic
    from anthropic.types import MessageParam, RawMessageStreamEvent, ToolParam

    from tests._embedded import Embedded

pytestmark = [pytest.mark.anyio, SDK_STREAMS, pytest.mark.usefixtures(collect_garbage.__name__)]

MODEL = "claude-haiku-4-5"
MESSAGES: list[MessageParam] = [{"role": "user", "content": "Say hello to the budget."}]
USAGE = AnthropicUsage(
    input_tokens=25,
    output_tokens=12,
    cache_creation_input_tokens=10,
    cache_read_input_tokens=100,
)
TOTAL = 25 + 10 + 100 + 12
COUNTER = TokenCounter.for_model(MODEL)


def tool(name: str) -> ToolParam:
    return {"name": name, "input_schema": {"type": "object"}}


def prompt_tokens(params: MessageParams) -> int:
    return anthropic_prompt_tokens(COUNTER, cast("dict[str, object]", params))


@pytest.fixture
def fake() -> FakeAnthropic:
    return FakeAnthropic()


@pytest.fixture
async def sdk(fake: FakeAnthropic) -> AsyncGenerator[AsyncAnthropic]:
    async with fake.client() as client:
        yield client


async def test_messages_commit_the_usage_with_the_cache(
    embedded: Embedded, fake: FakeAnthropic, sdk: AsyncAnthropic
) -> None:
    """input + cache writes + cache reads + output is committed; metrics carry the split."""
    fake.push(Reply(text="Hello, budget.", usage=USAGE))
    params: MessageParams = {
        "model": MODEL,
        "max_tokens": 300,
        "system": "Be terse.",
        "messages": MESSAGES,
    }
    async with ledger(embedded) as books:
        guarded = (await GuardedAnthropic(books.client, sdk).messages(**params)).unwrap()
        assert guarded.response.content[0].type == "text"
        assert guarded.charge.actual == Amount.tokens(TOTAL)
        assert guarded.charge.usage == TokenUsage(
            input_tokens=135, cached_input_tokens=100, cache_write_tokens=10, output_tokens=12
        )
        assert guarded.decision is Decision.ALLOW
        assert books.estimate() == prompt_tokens(params) + 300
        (reserved,) = books.reservations()
        assert reserved["action"] == {
            "kind": "llm.completion",
            "name": "anthropic:claude-haiku-4-5",
        }
        (commit,) = books.commits()
        metrics = cast("dict[str, object]", commit["metrics"])
        assert (metrics["tokens_input"], metrics["tokens_output"]) == (135, 12)
        assert metrics["model_version"] == MODEL
        assert metrics["custom"] == {"cached_input_tokens": 100, "cache_write_tokens": 10}
        assert commit["metadata"] == {"actual_source": "usage"}
        await books.assert_settled(TOTAL)


async def test_stream_commits_message_start_input_and_message_delta_output(
    embedded: Embedded, fake: FakeAnthropic, sdk: AsyncAnthropic
) -> None:
    """The events pass through unchanged; usage = message_start input + cumulative output."""
    fake.push(Reply(text="one two three", usage=USAGE), Reply(text="one two three", usage=USAGE))
    raw = await sdk.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES, stream=True)
    expected = [event.model_dump() async for event in raw]
    async with ledger(embedded) as books:
        guard = GuardedAnthropic(books.client, sdk)
        async with guard.open_message_stream(
            model=MODEL, max_tokens=100, messages=MESSAGES
        ) as opened:
            stream = opened.unwrap()
            events: list[RawMessageStreamEvent] = [event async for event in stream]
            assert stream.finished
        dumped = [event.model_dump() for event in events]
        for event in (*dumped, *expected):  # message ids carry the request number
            message = event.get("message")
            if isinstance(message, dict):
                message["id"] = "msg"
        assert dumped == expected
        assert stream.outcome is not None
        charge = stream.outcome.unwrap()
        assert charge.actual == Amount.tokens(TOTAL)
        assert charge.usage is not None
        assert charge.usage.cached_input_tokens == 100
        await books.assert_settled(TOTAL)
    assert fake.last_request.json["stream"] is True


async def test_mid_stream_error_event_is_classified_by_its_type(
    embedded: Embedded, fake: FakeAnthropic, sdk: AsyncAnthropic
) -> None:
    """``event: error`` on the 200 stream: ProviderStreamError(overloaded_error), partial charge.

    The prompt comes from message_start (cache counted); the output is counted locally.
    """
    fake.push(Reply(text="alpha beta gamma", usage=USAGE, fault=StreamFault.error(after=1)))
    async with ledger(embedded) as books:
        guard = GuardedAnthropic(books.client, sdk)
        async with guard.open_message_stream(
            model=MODEL, max_tokens=100, messages=MESSAGES
        ) as opened:
            stream = opened.unwrap()
            _ = [event async for event in stream]
        assert stream.outcome is not None
        failure = stream.outcome.failure()
        assert isinstance(failure, ProviderStreamError)
        assert isinstance(failure.error, anthropic.APIStatusError)
        assert failure.error.status_code == 200
        assert failure.error_type == "overloaded_error"
        local = 135 + COUNTER.count("alpha ")
        charge = stream.charge
        assert charge is not None
        assert (charge.actual, charge.source, charge.partial) == (
            Amount.tokens(local),
            ActualSource.LOCAL_COUNT,
            True,
        )
        assert charge.usage is not None
        assert charge.usage.cached_input_tokens == 100
        await books.assert_settled(local)


async def test_a_dropped_stream_becomes_the_sdks_connection_error(
    embedded: Embedded, fake: FakeAnthropic, sdk: AsyncAnthropic
) -> None:
    """httpx2 errors the SDK lets through mid-stream arrive as anthropic.APIConnectionError."""
    fake.push(Reply(text="alpha beta gamma", usage=USAGE, fault=StreamFault.cut(after=2)))
    async with ledger(embedded) as books:
        guard = GuardedAnthropic(books.client, sdk)
        async with guard.open_message_stream(
            model=MODEL, max_tokens=100, messages=MESSAGES
        ) as opened:
            stream = opened.unwrap()
            _ = [event async for event in stream]
        assert stream.outcome is not None
        failure = stream.outcome.failure()
        assert isinstance(failure, ProviderConnectionFailed)
        assert isinstance(failure.error, anthropic.APIConnectionError)
        assert isinstance(failure.error.__cause__, httpx2.RemoteProtocolError)
        await books.assert_settled(135 + COUNTER.count("alpha beta "))


async def test_a_truncated_stream_counts_locally_when_asked(
    embedded: Embedded, fake: FakeAnthropic, sdk: AsyncAnthropic
) -> None:
    """No message_delta: the missing-usage policy applies (LOCAL_COUNT: start's input + text)."""
    fake.push(
        Reply(text="alpha beta gamma", usage=USAGE, fault=StreamFault.end(after=2)),
        Reply(text="alpha beta gamma", usage=USAGE, fault=StreamFault.end(after=2)),
    )
    async with ledger(embedded) as books:
        guard = GuardedAnthropic(books.client, sdk)
        async with guard.open_message_stream(
            model=MODEL, max_tokens=100, messages=MESSAGES
        ) as opened:
            stream = opened.unwrap()
            _ = [event async for event in stream]
        assert stream.outcome is not None
        assert stream.outcome.failure() == UsageMissing(
            endpoint="messages", model=MODEL, partial=True
        )
        counting = guard.with_options(missing_usage=MissingUsage.LOCAL_COUNT)
        async with counting.open_message_stream(
            model=MODEL, max_tokens=100, messages=MESSAGES
        ) as opened:
            stream = opened.unwrap()
            _ = [event async for event in stream]
        local = 135 + COUNTER.count("alpha beta ")
        assert books.committed() == local
        assert books.commits()[0]["metadata"] == {
            "actual_source": "local_count",
            "estimated": True,
            "partial": True,
        }
        await books.assert_settled(local)


async def test_caps_lower_max_tokens_and_filter_tools(
    embedded: Embedded, fake: FakeAnthropic, sdk: AsyncAnthropic
) -> None:
    """max_tokens = min(requested, cap); denied tools are dropped; pacing is exposed."""
    caps: JsonObject = {"max_tokens": 64, "tool_denylist": ["shell"], "cooldown_ms": 250}
    async with ledger(embedded, caps=caps) as books:
        guard = GuardedAnthropic(books.client, sdk, subject=BOT)
        guarded = (
            await guard.messages(
                model=MODEL,
                max_tokens=1_000,
                messages=MESSAGES,
                tools=[tool("search"), tool("shell")],
                tool_choice={"type": "auto"},
            )
        ).unwrap()
        assert guarded.decision is Decision.ALLOW_WITH_CAPS
        assert guarded.cooldown_ms == 250
        forced = await guard.messages(
            model=MODEL,
            max_tokens=1_000,
            messages=MESSAGES,
            tools=[tool("shell")],
            tool_choice={"type": "tool", "name": "shell"},
        )
        assert isinstance(forced.failure(), CapsForbidCall)
        async with guard.open_message_stream(
            model=MODEL, max_tokens=1_000, messages=MESSAGES, tools=[tool("shell")]
        ) as opened:
            stream = opened.unwrap()
            assert stream.cooldown_ms == 250
            _ = [event async for event in stream]
        await books.assert_settled(30)  # two default usages of 10 + 5
    plain, streamed = fake.requests
    assert plain.json["max_tokens"] == 64
    assert plain.json["tools"] == [tool("search")]
    assert streamed.json["max_tokens"] == 64
    assert "tools" not in streamed.json  # every tool offered was denied


async def test_usd_budget_prices_cache_reads_and_writes(
    embedded: Embedded, fake: FakeAnthropic, sdk: AsyncAnthropic
) -> None:
    """USD_MICROCENTS: cache reads and writes at their own rates; a cached prompt's estimate
    assumes cache writes (they cost more than input)."""
    book = PriceBook(
        {MODEL: Rates.per_million(input="1", output="5", cached_input="0.10", cache_write="1.25")}
    )
    fake.push(Reply(usage=USAGE))
    params: MessageParams = {
        "model": MODEL,
        "max_tokens": 200,
        "system": [{"type": "text", "text": "Long rules.", "cache_control": {"type": "ephemeral"}}],
        "messages": MESSAGES,
    }
    async with ledger(embedded, unit="USD_MICROCENTS") as books:
        guard = GuardedAnthropic(books.client, sdk, unit=Unit.USD_MICROCENTS, pricing=book)
        guarded = (await guard.messages(**params)).unwrap()
        # 25 x $1 + 10 x $1.25 + 100 x $0.10 + 12 x $5 per million = $0.0001075.
        assert guarded.charge.actual == Amount.usd_microcents(10_750)
        expected = estimate_amount(
            MODEL,
            prompt_tokens=prompt_tokens(params),
            max_output_tokens=200,
            unit=Unit.USD_MICROCENTS,
            pricing=book,
            prompt_cache_write=True,
        ).unwrap()
        assert books.estimate() == expected.amount
        fake.push(Reply(usage=USAGE))
        async with guard.open_message_stream(**params) as opened:
            stream = opened.unwrap()
            _ = [event async for event in stream]
        assert stream.charge is not None
        assert stream.charge.actual == Amount.usd_microcents(10_750)
        await books.assert_settled(2 * 10_750)


async def test_overloaded_and_rate_limited_are_typed_values(
    embedded: Embedded, fake: FakeAnthropic, sdk: AsyncAnthropic
) -> None:
    """529: ProviderStatusError(overloaded_error); 429: ProviderRateLimited with retry_after."""
    fake.push(HttpError.overloaded(), HttpError.rate_limited(retry_after=3))
    async with ledger(embedded) as books:
        guard = GuardedAnthropic(books.client, sdk)
        overloaded = (await guard.messages(model=MODEL, max_tokens=10, messages=MESSAGES)).failure()
        assert isinstance(overloaded, ProviderStatusError)
        assert isinstance(overloaded.error, anthropic.OverloadedError)
        assert (overloaded.status, overloaded.error_type) == (529, "overloaded_error")
        async with guard.open_message_stream(
            model=MODEL, max_tokens=10, messages=MESSAGES
        ) as opened:
            limited = opened.failure()
        assert isinstance(limited, ProviderRateLimited)
        assert isinstance(limited.error, anthropic.RateLimitError)
        assert limited.retry_after == 3.0
        assert len(books.releases()) == 2
        await books.assert_settled(0)


async def test_stream_over_loopback_sockets(embedded: Embedded) -> None:
    """Through uvicorn on 127.0.0.1: the stream's usage is committed."""
    fake = FakeAnthropic()
    fake.push(Reply(text="over the wire", usage=USAGE))
    with fake.serve() as url:
        async with fake.client(base_url=url) as sdk, ledger(embedded) as books:
            guard = GuardedAnthropic(books.client, sdk)
            async with guard.open_message_stream(
                model=MODEL, max_tokens=50, messages=MESSAGES
            ) as opened:
                stream = opened.unwrap()
                _ = [event async for event in stream]
            assert stream.outcome is not None
            assert is_successful(stream.outcome)
            await books.assert_settled(TOTAL)


async def test_stream_is_refused_on_the_plain_method(
    embedded: Embedded, sdk: AsyncAnthropic
) -> None:
    """messages(stream=True) is misuse."""
    async with ledger(embedded) as books:
        guard = GuardedAnthropic(books.client, sdk)
        params = cast(
            "MessageParams",
            {"model": MODEL, "max_tokens": 5, "messages": MESSAGES, "stream": True},
        )
        with pytest.raises(UsageError, match="open_message_stream"):
            await guard.messages(**params)
