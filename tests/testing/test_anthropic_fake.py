"""FakeAnthropic through the real ``anthropic`` SDK, in process, on asyncio and trio."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anthropic
import httpx2
import pytest

from cycleguard.metering import TokenUsage
from cycleguard.testing import (
    AnthropicUsage,
    FakeAnthropic,
    HttpError,
    Reply,
    StreamFault,
    ToolCall,
)

from .._sdk import SDK_STREAMS, collect_garbage, drain

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from anthropic import AsyncAnthropic
    from anthropic.types import MessageParam, RawMessageStreamEvent

pytestmark = [SDK_STREAMS, pytest.mark.usefixtures(collect_garbage.__name__)]

MODEL = "claude-haiku-4-5"
MESSAGES: list[MessageParam] = [{"role": "user", "content": "Say hello."}]
USAGE = AnthropicUsage(
    input_tokens=25,
    output_tokens=12,
    cache_creation_input_tokens=10,
    cache_read_input_tokens=100,
    thinking_tokens=4,
)
NORMALISED = TokenUsage(
    input_tokens=135,
    cached_input_tokens=100,
    cache_write_tokens=10,
    output_tokens=12,
    reasoning_tokens=4,
)


@pytest.fixture
def fake() -> FakeAnthropic:
    return FakeAnthropic()


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncGenerator[AsyncAnthropic]:
    async with fake.client(strict_validation=True) as sdk:
        yield sdk


@pytest.mark.anyio
async def test_message_and_usage(fake: FakeAnthropic, client: AsyncAnthropic) -> None:
    """Text and usage (input excludes the cache; thinking is part of output)."""
    fake.push(Reply(text="Hello.", usage=USAGE))
    message = await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    [block] = message.content
    assert block.type == "text"
    assert block.text == "Hello."
    assert message.stop_reason == "end_turn"
    usage = message.usage
    assert (usage.input_tokens, usage.output_tokens) == (25, 12)
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (10, 100)
    assert TokenUsage.from_anthropic(usage) == NORMALISED
    request = fake.last_request
    assert (request.path, request.json["max_tokens"]) == ("/v1/messages", 64)
    assert request.header("authorization") == "Bearer sk-ant-fake"
    assert request.header("anthropic-version") is not None


@pytest.mark.anyio
async def test_stream_usage_from_start_and_delta(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    """``message_start`` carries the input and cache counts, ``message_delta`` the output."""
    fake.push(Reply(text="one two", usage=USAGE))
    stream = await client.messages.create(
        model=MODEL, max_tokens=64, messages=MESSAGES, stream=True
    )
    kinds: list[str] = []
    texts: list[str] = []
    start_usage = None
    delta_usage = None
    async for event in stream:
        kinds.append(event.type)
        if event.type == "message_start":
            start_usage = event.message.usage
        elif event.type == "message_delta":
            delta_usage = event.usage
        elif event.type == "content_block_delta" and event.delta.type == "text_delta":
            texts.append(event.delta.text)
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert texts == ["one ", "two"]
    assert start_usage is not None
    assert (start_usage.input_tokens, start_usage.output_tokens) == (25, 1)
    assert TokenUsage.from_anthropic_stream(start_usage, delta_usage) == NORMALISED
    assert TokenUsage.from_anthropic_stream(start_usage, None).output_tokens == 1


@pytest.mark.anyio
async def test_stream_helper_and_tool_use(fake: FakeAnthropic, client: AsyncAnthropic) -> None:
    """``messages.stream()`` assembles text and a streamed tool_use block."""
    call = ToolCall(name="search", arguments='{"q": "cycles"}', id="toolu_1")
    fake.push(Reply(text="Searching.", usage=USAGE, tool_calls=(call,)))
    async with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
        final = await stream.get_final_message()
    text, tool = final.content
    assert text.type == "text"
    assert text.text == "Searching."
    assert tool.type == "tool_use"
    assert (tool.id, tool.name, tool.input) == ("toolu_1", "search", {"q": "cycles"})
    assert final.stop_reason == "tool_use"
    assert TokenUsage.from_anthropic(final.usage) == NORMALISED


@pytest.mark.anyio
async def test_tool_use_only_reply(fake: FakeAnthropic, client: AsyncAnthropic) -> None:
    """A reply with no text has only the tool_use block."""
    fake.push(Reply(text="", tool_calls=(ToolCall(name="now"),)))
    message = await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    [block] = message.content
    assert block.type == "tool_use"
    assert (block.name, block.input) == ("now", {})


@pytest.mark.anyio
async def test_error_event_mid_stream(fake: FakeAnthropic, client: AsyncAnthropic) -> None:
    """``event: error`` on the 200 stream: APIStatusError with status 200, typed by body.

    The input tokens were already reported by ``message_start``.
    """
    fake.push(Reply(text="a b c", usage=USAGE, fault=StreamFault.error(after=1)))
    stream = await client.messages.create(
        model=MODEL, max_tokens=64, messages=MESSAGES, stream=True
    )
    kinds: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        await drain(stream, lambda event: kinds.append(event.type))
    assert kinds == ["message_start", "content_block_start", "content_block_delta"]
    error = caught.value
    assert type(error) is anthropic.APIStatusError
    assert error.status_code == 200
    assert error.type == "overloaded_error"


@pytest.mark.anyio
async def test_stream_cut_midway(fake: FakeAnthropic, client: AsyncAnthropic) -> None:
    """A dropped connection mid-stream: the anthropic SDK lets httpx2's error through.

    (Unlike openai, it does not wrap it in APIConnectionError.)
    """
    fake.push(Reply(text="a b c", fault=StreamFault.cut(after=2)))
    stream = await client.messages.create(
        model=MODEL, max_tokens=64, messages=MESSAGES, stream=True
    )
    texts: list[str] = []

    def keep_text(event: RawMessageStreamEvent) -> None:
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            texts.append(event.delta.text)

    with pytest.raises(httpx2.RemoteProtocolError):
        await drain(stream, keep_text)
    assert texts == ["a ", "b "]


@pytest.mark.anyio
async def test_stream_ends_early_cleanly(fake: FakeAnthropic, client: AsyncAnthropic) -> None:
    """A stream that just stops: no message_delta, so only the start's usage is known."""
    fake.push(Reply(text="a b c", usage=USAGE, fault=StreamFault.end(after=1)))
    stream = await client.messages.create(
        model=MODEL, max_tokens=64, messages=MESSAGES, stream=True
    )
    kinds = [event.type async for event in stream]
    assert kinds == ["message_start", "content_block_start", "content_block_delta"]


@pytest.mark.anyio
async def test_plain_request_cut_midway(fake: FakeAnthropic, client: AsyncAnthropic) -> None:
    """A non-streamed body cut half-way: APIConnectionError (the read is inside the request)."""
    fake.push(Reply(fault=StreamFault.cut()))
    with pytest.raises(anthropic.APIConnectionError):
        await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)


@pytest.mark.anyio
async def test_rate_limit_with_retry_after(fake: FakeAnthropic, client: AsyncAnthropic) -> None:
    """A 429 raises RateLimitError at once with ``retry-after`` and the request id."""
    fake.push(HttpError.rate_limited(retry_after=30))
    with pytest.raises(anthropic.RateLimitError) as caught:
        await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    error = caught.value
    assert error.status_code == 429
    assert error.type == "rate_limit_error"
    assert error.response.headers["retry-after"] == "30"
    assert error.request_id == "req_fake1"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "error_class", "error_type"),
    [
        (HttpError.overloaded(), anthropic.OverloadedError, "overloaded_error"),
        (HttpError.server_error(), anthropic.InternalServerError, "api_error"),
        (HttpError.server_error(503), anthropic.ServiceUnavailableError, "api_error"),
    ],
)
async def test_server_errors(
    fake: FakeAnthropic,
    client: AsyncAnthropic,
    error: HttpError,
    error_class: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    """529 and 5xx map to the SDK's classes, with Anthropic's error types."""
    fake.push(error)
    with pytest.raises(error_class) as caught:
        await client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert caught.value.status_code == error.status
    assert caught.value.type == error_type


@pytest.mark.anyio
async def test_sdk_retries_a_529(fake: FakeAnthropic) -> None:
    """With SDK retries on, a 529 then a reply: two requests, the reply's usage."""
    fake.push(HttpError(status=529, retry_after_ms=10), Reply(usage=USAGE))
    async with fake.client(max_retries=1) as sdk:
        message = await sdk.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert TokenUsage.from_anthropic(message.usage) == NORMALISED
    assert len(fake.requests) == 2


@pytest.mark.anyio
async def test_over_a_loopback_socket(fake: FakeAnthropic) -> None:
    """Under uvicorn: a stream's usage, then a cut stream (httpx2's error again)."""
    fake.push(Reply(text="x y", usage=USAGE), Reply(text="x y", fault=StreamFault.cut(after=1)))
    with fake.serve() as base_url:
        async with fake.client(base_url=base_url, strict_validation=True) as sdk:
            async with sdk.messages.stream(model=MODEL, max_tokens=9, messages=MESSAGES) as s:
                final = await s.get_final_message()
            assert TokenUsage.from_anthropic(final.usage) == NORMALISED
            cut = await sdk.messages.create(
                model=MODEL, max_tokens=9, messages=MESSAGES, stream=True
            )
            with pytest.raises(httpx2.RemoteProtocolError):
                await drain(cut)
