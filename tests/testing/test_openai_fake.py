"""FakeOpenAI through the real ``openai`` SDK, in process, on asyncio and trio.

Every scripted behaviour is checked where a user sees it: in what the SDK
returns or raises. The SDK validates every response strictly, so the fake's
wire shapes are the SDK's own models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import anyio
import openai
import pytest

from cycleguard.metering import TokenUsage
from cycleguard.testing import (
    FakeOpenAI,
    HttpError,
    OpenAIUsage,
    Reply,
    StreamFault,
    ToolCall,
)

from .._sdk import SDK_STREAMS, collect_garbage, drain

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
USAGE = OpenAIUsage(
    prompt_tokens=1_000,
    completion_tokens=200,
    cached_tokens=400,
    cache_write_tokens=100,
    reasoning_tokens=50,
)
pytestmark = [SDK_STREAMS, pytest.mark.usefixtures(collect_garbage.__name__)]

NORMALISED = TokenUsage(
    input_tokens=1_000,
    cached_input_tokens=400,
    cache_write_tokens=100,
    output_tokens=200,
    reasoning_tokens=50,
)


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI()


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncGenerator[AsyncOpenAI]:
    async with fake.client(strict_validation=True) as sdk:
        yield sdk


# Chat completions -------------------------------------------------------------------


@pytest.mark.anyio
async def test_chat_reply_and_usage_parse(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    """Text and every usage field arrive; TokenUsage reads them back exactly."""
    fake.push(Reply(text="Hello there.", usage=USAGE))
    completion = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_completion_tokens=64
    )
    assert completion.choices[0].message.content == "Hello there."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-4o-mini"
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1000, 200, 1200)
    assert TokenUsage.from_openai_chat(usage) == NORMALISED


@pytest.mark.anyio
async def test_requests_are_recorded_as_sent(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    """Caps and the (filtered) tools a caller sends reach the provider verbatim."""
    await client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        max_tokens=77,
        tools=[{"type": "function", "function": {"name": "search", "parameters": {}}}],
    )
    [request] = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.json["max_tokens"] == 77
    assert request.json["tools"] == [
        {"type": "function", "function": {"name": "search", "parameters": {}}}
    ]
    assert request.header("authorization") == "Bearer sk-fake"
    assert fake.last_request is request


@pytest.mark.anyio
async def test_chat_stream_with_usage_chunk(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    """With include_usage the last chunk has no choices and the whole usage."""
    fake.push(Reply(text="one two three", usage=USAGE))
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    texts: list[str] = []
    usages: list[TokenUsage] = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            texts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            assert chunk.choices == []
            usages.append(TokenUsage.from_openai_chat(chunk.usage))
    assert texts == ["one ", "two ", "three"]
    assert usages == [NORMALISED]


@pytest.mark.anyio
async def test_chat_stream_without_usage_chunk(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    """No include_usage, or a server that ignores it: no chunk carries usage."""
    fake.push(Reply(text="a b"), Reply(text="a b", stream_usage=False))
    plain = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert [chunk.usage async for chunk in plain] == [None, None, None, None]
    ignored = await client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert all([chunk.usage is None async for chunk in ignored])


@pytest.mark.anyio
async def test_chat_tool_calls_plain_and_streamed(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    """Tool calls come back whole, or as streamed deltas the SDK helper assembles."""
    call = ToolCall(name="search", arguments='{"q": "cycles"}', id="call_1")
    fake.push(Reply(text="", tool_calls=(call,)), Reply(text="Looking.", tool_calls=(call,)))
    completion = await client.chat.completions.create(model="m", messages=MESSAGES)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [made] = choice.message.tool_calls or []
    assert made.type == "function"
    assert (made.id, made.function.name, made.function.arguments) == (
        "call_1",
        "search",
        '{"q": "cycles"}',
    )

    async with client.chat.completions.stream(model="m", messages=MESSAGES) as stream:
        final = await stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Looking."
    [streamed] = message.tool_calls or []
    assert streamed.type == "function"
    assert (streamed.function.name, streamed.function.arguments) == ("search", '{"q": "cycles"}')


@pytest.mark.anyio
async def test_chat_stream_cut_midway(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    """A dropped connection after two deltas: APIConnectionError, no usage."""
    fake.push(Reply(text="a b c d", usage=USAGE, fault=StreamFault.cut(after=2)))
    stream = await client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIConnectionError) as caught:
        await drain(stream, chunks.append)
    assert all(chunk.usage is None for chunk in chunks)
    texts = [c.delta.content or "" for chunk in chunks for c in chunk.choices]
    assert "".join(texts) == "a b "
    assert type(caught.value.__cause__).__name__ == "RemoteProtocolError"


@pytest.mark.anyio
async def test_chat_stream_ends_early_cleanly(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    """A stream that just stops: no exception, no usage (the case local counting covers)."""
    fake.push(Reply(text="a b c d", fault=StreamFault.end(after=1)))
    stream = await client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert [c.choices[0].delta.content for c in chunks] == ["", "a "]
    assert all(c.usage is None for c in chunks)


@pytest.mark.anyio
async def test_chat_stream_error_event(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    """An ``{"error": ...}`` chunk mid-stream raises APIError (no status code)."""
    fault = StreamFault.error(after=1, error_type="server_error", message="boom")
    fake.push(Reply(text="a b c", fault=fault))
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError) as caught:
        await drain(stream)
    error = caught.value
    assert (type(error), error.message, error.type) == (openai.APIError, "boom", "server_error")


@pytest.mark.anyio
async def test_plain_request_cut_midway(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    """A non-streamed response cut half-way: APIConnectionError."""
    fake.push(Reply(fault=StreamFault.cut()))
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="m", messages=MESSAGES)


@pytest.mark.anyio
async def test_plain_request_with_error_fault(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    """An error fault on a plain request is an HTTP 500 with that error."""
    fake.push(Reply(fault=StreamFault.error(error_type="server_error", message="down")))
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.status_code == 500
    assert caught.value.message.endswith("down")


# HTTP errors ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_rate_limit_with_retry_after(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    """A 429 raises RateLimitError at once (max_retries=0) with both retry hints."""
    fake.push(HttpError.rate_limited(retry_after=2, retry_after_ms=1500))
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    error = caught.value
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    assert error.response.headers["retry-after"] == "2"
    assert error.response.headers["retry-after-ms"] == "1500"
    assert error.request_id == "req_fake1"
    assert len(fake.requests) == 1


@pytest.mark.anyio
async def test_sdk_retries_obey_retry_after_ms(fake: FakeOpenAI) -> None:
    """With SDK retries on, a 429 then a reply: two requests, the reply's usage."""
    fake.push(HttpError.rate_limited(retry_after_ms=10), Reply(usage=OpenAIUsage(prompt_tokens=3)))
    async with fake.client(max_retries=1) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert raw.retries_taken == 1
    usage = raw.parse().usage
    assert usage is not None
    assert usage.prompt_tokens == 3
    assert [r.header("x-stainless-retry-count") for r in fake.requests] == ["0", "1"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "error_class"),
    [(500, openai.InternalServerError), (503, openai.InternalServerError)],
)
async def test_server_errors(
    fake: FakeOpenAI, client: AsyncOpenAI, status: int, error_class: type[openai.APIStatusError]
) -> None:
    """5xx answers raise the SDK's status errors, with the envelope's type."""
    fake.push(HttpError.server_error(status, message="try later"))
    with pytest.raises(error_class) as caught:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.status_code == status
    assert caught.value.type == "server_error"


@pytest.mark.anyio
async def test_empty_script_without_default_is_a_500(client: AsyncOpenAI) -> None:
    """``default=None``: running out of script is loud."""
    strict = FakeOpenAI(default=None)
    async with strict.client() as sdk:
        with pytest.raises(openai.InternalServerError, match="script is empty"):
            await sdk.chat.completions.create(model="m", messages=MESSAGES)
    del client


@pytest.mark.anyio
async def test_unknown_route_is_a_404(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    """Endpoints the fake does not serve answer 404 (and are still recorded)."""
    with pytest.raises(openai.NotFoundError):
        await client.models.list()
    assert fake.last_request.path == "/v1/models"


# Responses API ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_responses_plain(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    """A Response with its text, tool call and usage (output includes reasoning)."""
    call = ToolCall(name="lookup", arguments='{"id": 7}')
    fake.push(Reply(text="Found it.", usage=USAGE, tool_calls=(call,)))
    response = await client.responses.create(model="o4-mini", input="hi", max_output_tokens=300)
    assert response.output_text == "Found it."
    assert response.status == "completed"
    assert response.max_output_tokens == 300
    [_, function_call] = response.output
    assert function_call.type == "function_call"
    assert (function_call.name, function_call.arguments) == ("lookup", '{"id": 7}')
    assert response.usage is not None
    assert TokenUsage.from_openai_responses(response.usage) == NORMALISED
    assert fake.last_request.json["max_output_tokens"] == 300


@pytest.mark.anyio
async def test_responses_stream_named_events(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    """The named events, in order; usage on ``response.completed``."""
    fake.push(Reply(text="Hi you", usage=USAGE))
    stream = await client.responses.create(model="gpt-4.1", input="hi", stream=True)
    kinds: list[str] = []
    usage: TokenUsage | None = None
    async for event in stream:
        kinds.append(event.type)
        if event.type == "response.completed":
            assert event.response.usage is not None
            usage = TokenUsage.from_openai_responses(event.response.usage)
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert usage == NORMALISED


@pytest.mark.anyio
async def test_responses_stream_helper(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    """The SDK's ``responses.stream()`` accumulates the fake's events into a final Response."""
    call = ToolCall(name="lookup", arguments="{}")
    fake.push(Reply(text="Done.", usage=USAGE, tool_calls=(call,)))
    async with client.responses.stream(model="gpt-4.1", input="hi") as stream:
        deltas = [
            event.delta async for event in stream if event.type == "response.output_text.delta"
        ]
        final = await stream.get_final_response()
    assert deltas == ["Done."]
    assert final.output_text == "Done."
    assert [item.type for item in final.output] == ["message", "function_call"]
    assert final.usage is not None
    assert final.usage.output_tokens_details.reasoning_tokens == 50


@pytest.mark.anyio
async def test_responses_stream_error_event(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    """Responses streams *yield* the ``error`` event (chat raises); no completion follows."""
    fake.push(Reply(text="a b c", fault=StreamFault.error(after=1, error_type="server_error")))
    stream = await client.responses.create(model="gpt-4.1", input="hi", stream=True)
    events = [event async for event in stream]
    last = events[-1]
    assert last.type == "error"
    assert (last.code, last.message) == ("server_error", "the fake provider failed mid-stream")
    assert "response.completed" not in [event.type for event in events]


@pytest.mark.anyio
async def test_responses_stream_cut(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    """A cut Responses stream raises APIConnectionError."""
    fake.push(Reply(text="a b c", fault=StreamFault.cut(after=1)))
    stream = await client.responses.create(model="gpt-4.1", input="hi", stream=True)
    with pytest.raises(openai.APIConnectionError):
        await drain(stream)


# Embeddings -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_embeddings_float_and_usage(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    """Float vectors of the requested size, one per input, and input-only usage."""
    fake.push(Reply(usage=OpenAIUsage(prompt_tokens=9)))
    result = await client.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], dimensions=4, encoding_format="float"
    )
    assert [item.index for item in result.data] == [0, 1]
    assert all(len(item.embedding) == 4 for item in result.data)
    assert TokenUsage.from_openai_embeddings(result.usage) == TokenUsage(input_tokens=9)


@pytest.mark.anyio
async def test_embeddings_base64_default(fake: FakeOpenAI) -> None:
    """The SDK's default asks for base64 and decodes it (not strict-validatable by design)."""
    async with fake.client() as sdk:
        result = await sdk.embeddings.create(model="text-embedding-3-small", input="abc")
    assert fake.last_request.json["encoding_format"] == "base64"
    [item] = result.data
    assert len(item.embedding) == 8
    assert all(0 <= value <= 1 for value in item.embedding)


# Loopback ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_over_a_loopback_socket(fake: FakeOpenAI) -> None:
    """The same fake under uvicorn: a streamed reply with usage, then a cut."""
    fake.push(
        Reply(text="x y", usage=USAGE),
        Reply(text="x y", fault=StreamFault.cut(after=1)),
    )
    with fake.serve() as base_url:
        async with fake.client(base_url=base_url, strict_validation=True) as sdk:
            stream = await sdk.chat.completions.create(
                model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            usage = [c.usage async for c in stream if c.usage is not None]
            assert [TokenUsage.from_openai_chat(u) for u in usage] == [NORMALISED]
            cut = await sdk.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            with pytest.raises(openai.APIConnectionError):
                await drain(cut)
    assert [cast("str", r.header("host")).startswith("127.0.0.1:") for r in fake.requests] == [
        True,
        True,
    ]


@pytest.mark.anyio
async def test_a_delayed_reply_keeps_the_call_in_flight(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    """``Reply(delay=...)`` holds the answer back: a short deadline cancels the call."""
    fake.push(Reply(text="late", delay=30), Reply(text="prompt"))
    with anyio.move_on_after(0.2) as waited:
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert waited.cancelled_caught
    answer = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert answer.choices[0].message.content == "prompt"


def test_a_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="delay"):
        Reply(delay=-1)
