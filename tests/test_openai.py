"""cycleguard.openai: the real ``openai`` SDK against FakeOpenAI, Cycles on the embedded server.

Every call shape (chat, chat stream, Responses, Responses stream, embeddings)
is checked where it matters: the amount committed equals the usage the fake
reported (or the documented fallback), caps reached the request the fake
received, nothing stays reserved, and failures arrive as the right values.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import TYPE_CHECKING, cast

import anyio
import httpx2
import openai
import pytest
from openai import AsyncOpenAI
from returns.pipeline import is_successful

from cycleguard import Action, Amount, Decision, JsonObject, Unit
from cycleguard.errors import BudgetExceeded, UsageError
from cycleguard.metering import (
    PriceBook,
    Rates,
    TokenCounter,
    TokenUsage,
    UnknownModel,
    chat_prompt_tokens,
    embeddings_input_tokens,
    estimate_amount,
    responses_prompt_tokens,
)
from cycleguard.openai import (
    ActualSource,
    CapsForbidCall,
    ChatParams,
    GuardedOpenAI,
    MissingUsage,
    OpenAICallError,
    ProviderConnectionFailed,
    ProviderRateLimited,
    ProviderStatusError,
    ProviderStreamError,
    StreamFailure,
    UsageMissing,
)
from cycleguard.testing import (
    AsgiStreamingTransport,
    FakeOpenAI,
    HttpError,
    OpenAIUsage,
    Reply,
    StreamFault,
)
from tests._guard import BOT, ledger
from tests._sdk import SDK_STREAMS, collect_garbage

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam
    from openai.types.chat.chat_completion_tool_param import ChatCompletionToolParam

    from tests._embedded import Embedded

pytestmark = [pytest.mark.anyio, SDK_STREAMS, pytest.mark.usefixtures(collect_garbage.__name__)]

MODEL = "gpt-4o-mini"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the budget."},
]
USAGE = OpenAIUsage(
    prompt_tokens=1_000,
    completion_tokens=200,
    cached_tokens=400,
    cache_write_tokens=100,
    reasoning_tokens=50,
)
COUNTER = TokenCounter.for_model(MODEL)


def tool(name: str) -> ChatCompletionToolParam:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


def prompt_tokens(params: ChatParams) -> int:
    return chat_prompt_tokens(COUNTER, cast("dict[str, object]", params))


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI()


@pytest.fixture
async def sdk(fake: FakeOpenAI) -> AsyncGenerator[AsyncOpenAI]:
    async with fake.client() as client:
        yield client


# Chat completions --------------------------------------------------------------------


async def test_chat_commits_the_reported_usage(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """The committed amount is the fake's usage; the estimate is prompt + ceiling; metrics ride."""
    fake.push(Reply(text="Hello, budget.", usage=USAGE))
    params: ChatParams = {"model": MODEL, "messages": MESSAGES, "max_completion_tokens": 64}
    async with ledger(embedded) as books:
        result = await GuardedOpenAI(books.client, sdk).chat(**params)
        guarded = result.unwrap()
        assert guarded.response.choices[0].message.content == "Hello, budget."
        assert guarded.charge.actual == Amount.tokens(1_200)
        assert guarded.reserved == Amount.tokens(books.estimate())
        assert guarded.charge.source is ActualSource.USAGE
        assert guarded.charge.usage == TokenUsage(
            input_tokens=1_000,
            cached_input_tokens=400,
            cache_write_tokens=100,
            output_tokens=200,
            reasoning_tokens=50,
        )
        assert guarded.decision is Decision.ALLOW
        assert guarded.caps is None
        assert books.estimate() == prompt_tokens(params) + 64
        (reserved,) = books.reservations()
        assert reserved["action"] == {"kind": "llm.completion", "name": "openai:gpt-4o-mini"}
        (commit,) = books.commits()
        assert commit["actual"] == {"unit": "TOKENS", "amount": 1_200}
        metrics = cast("dict[str, object]", commit["metrics"])
        assert metrics["tokens_input"] == 1_000
        assert metrics["tokens_output"] == 200
        assert metrics["model_version"] == MODEL
        assert isinstance(metrics["latency_ms"], int)
        assert metrics["custom"] == {
            "cached_input_tokens": 400,
            "cache_write_tokens": 100,
            "reasoning_tokens": 50,
        }
        assert commit["metadata"] == {"actual_source": "usage"}
        await books.assert_settled(1_200)


async def test_estimate_assumes_the_default_ceiling_and_leaves_the_request_alone(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """Without a ceiling in the request the estimate uses default_output_tokens; none is sent."""
    params: ChatParams = {"model": MODEL, "messages": MESSAGES}
    async with ledger(embedded) as books:
        guard = GuardedOpenAI(books.client, sdk, default_output_tokens=500)
        assert is_successful(await guard.chat(**params))
        assert books.estimate() == prompt_tokens(params) + 500
    sent = fake.last_request.json
    assert "max_completion_tokens" not in sent
    assert "max_tokens" not in sent


async def test_explicit_estimate_and_subject_per_call(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """with_options sets the estimate and subject for a call; the original guard is unchanged."""
    async with ledger(embedded, caps={"max_steps_remaining": 4}) as books:
        guard = GuardedOpenAI(books.client, sdk)
        scoped = guard.with_options(estimate=Amount.tokens(777), subject=BOT)
        result = await scoped.chat(model=MODEL, messages=MESSAGES)
        assert result.unwrap().max_steps_remaining == 4
        assert books.estimate() == 777
        assert guard.settings.estimate is None
        await books.assert_settled(15)  # the fake's default usage: 10 + 5


async def test_caps_reach_the_request(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """ALLOW_WITH_CAPS: the ceiling is min(requested, cap), denied tools are gone, pacing shown."""
    caps: JsonObject = {
        "max_tokens": 256,
        "tool_denylist": ["shell"],
        "cooldown_ms": 1_500,
        "max_steps_remaining": 3,
    }
    async with ledger(embedded, caps=caps) as books:
        guard = GuardedOpenAI(books.client, sdk, subject=BOT)
        result = await guard.chat(
            model=MODEL,
            messages=MESSAGES,
            max_completion_tokens=800,
            tools=[tool("search"), tool("shell")],
            tool_choice="auto",
        )
        guarded = result.unwrap()
        assert guarded.decision is Decision.ALLOW_WITH_CAPS
        assert guarded.cooldown_ms == 1_500
        assert guarded.max_steps_remaining == 3
        await books.assert_settled(15)
    sent = fake.last_request.json
    assert sent["max_completion_tokens"] == 256
    assert sent["tools"] == [tool("search")]
    assert sent["tool_choice"] == "auto"


async def test_caps_reach_streamed_requests(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """Chat and Responses streams get the same rewrite; the stream shows the pacing caps."""
    caps: JsonObject = {"max_tokens": 32, "tool_denylist": ["shell"], "max_steps_remaining": 1}
    async with ledger(embedded, caps=caps) as books:
        guard = GuardedOpenAI(books.client, sdk, subject=BOT)
        async with guard.open_chat_stream(
            model=MODEL, messages=MESSAGES, tools=[tool("search"), tool("shell")]
        ) as opened:
            stream = opened.unwrap()
            assert (stream.decision, stream.max_steps_remaining) == (Decision.ALLOW_WITH_CAPS, 1)
            _ = [chunk async for chunk in stream]
        assert stream.reserved == Amount.tokens(books.estimate())
        chat = fake.last_request.json
        assert (chat["max_completion_tokens"], chat["tools"]) == (32, [tool("search")])
        async with guard.open_responses_stream(
            model=MODEL, input="Hi", max_output_tokens=900
        ) as opened:
            _ = [event async for event in opened.unwrap()]
        assert fake.last_request.json["max_output_tokens"] == 32
        await books.assert_settled(30)  # two default usages of 10 + 5


async def test_allowlist_wins_and_a_cap_applies_to_a_legacy_max_tokens(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """A non-empty allowlist overrides the denylist (case-sensitive); max_tokens is capped too."""
    caps: JsonObject = {"max_tokens": 40, "tool_allowlist": ["search"], "tool_denylist": ["search"]}
    async with ledger(embedded, caps=caps) as books:
        guard = GuardedOpenAI(books.client, sdk, subject=BOT)
        result = await guard.chat(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=100,
            tools=[tool("search"), tool("Search"), tool("calc")],
        )
        assert is_successful(result)
    sent = fake.last_request.json
    assert sent["max_tokens"] == 40
    assert "max_completion_tokens" not in sent
    assert sent["tools"] == [tool("search")]


async def test_a_cap_of_zero_fails_before_the_call(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """caps.max_tokens == 0: a CapsForbidCall value, no request sent, reservation released."""
    async with ledger(embedded, caps={"max_tokens": 0}) as books:
        guard = GuardedOpenAI(books.client, sdk, subject=BOT)
        result = await guard.chat(model=MODEL, messages=MESSAGES, max_completion_tokens=50)
        failure = result.failure()
        assert isinstance(failure, CapsForbidCall)
        assert failure.caps.max_tokens == 0
        assert len(books.releases()) == 1
        assert books.commits() == []
        await books.assert_settled(0)
    assert fake.requests == ()


async def test_forcing_a_forbidden_tool_fails_before_the_call(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """tool_choice naming a denied tool cannot be honoured: CapsForbidCall, nothing sent."""
    async with ledger(embedded, caps={"tool_denylist": ["shell"]}) as books:
        guard = GuardedOpenAI(books.client, sdk, subject=BOT)
        result = await guard.chat(
            model=MODEL,
            messages=MESSAGES,
            tools=[tool("shell")],
            tool_choice={"type": "function", "function": {"name": "shell"}},
        )
        assert isinstance(result.failure(), CapsForbidCall)
        await books.assert_settled(0)
    assert fake.requests == ()


async def test_usd_budget_commits_priced_usage(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """USD_MICROCENTS: usage is priced (cached tokens at their rate); so is the estimate."""
    book = PriceBook({MODEL: Rates.per_million(input="0.15", output="0.60", cached_input="0.075")})
    fake.push(Reply(usage=USAGE))
    params: ChatParams = {"model": MODEL, "messages": MESSAGES, "max_completion_tokens": 300}
    async with ledger(embedded, unit="USD_MICROCENTS") as books:
        guard = GuardedOpenAI(books.client, sdk, unit=Unit.USD_MICROCENTS, pricing=book)
        guarded = (await guard.chat(**params)).unwrap()
        # 600 plain input at 0.15 + 400 cached at 0.075 + 200 output at 0.60, per million:
        # $0.00024 = 24,000 microcents (the 100 cache-write tokens bill at the input rate).
        assert guarded.charge.actual == Amount.usd_microcents(24_000)
        expected_estimate = estimate_amount(
            MODEL,
            prompt_tokens=prompt_tokens(params),
            max_output_tokens=300,
            unit=Unit.USD_MICROCENTS,
            pricing=book,
        ).unwrap()
        assert books.estimate() == expected_estimate.amount
        await books.assert_settled(24_000)


async def test_usd_budget_prices_a_stream_too(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """A stream's usage chunk is priced the same way."""
    book = PriceBook({MODEL: Rates.per_million(input="0.15", output="0.60", cached_input="0.075")})
    fake.push(Reply(text="priced stream", usage=USAGE))
    async with ledger(embedded, unit="USD_MICROCENTS") as books:
        guard = GuardedOpenAI(books.client, sdk, unit=Unit.USD_MICROCENTS, pricing=book)
        async with guard.open_chat_stream(model=MODEL, messages=MESSAGES) as opened:
            stream = opened.unwrap()
            _ = [chunk async for chunk in stream]
        assert stream.outcome is not None
        assert stream.outcome.unwrap().actual == Amount.usd_microcents(24_000)
        await books.assert_settled(24_000)


async def test_a_model_without_a_price_fails_before_anything_is_reserved(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """Pricing is checked up front: UnknownModel, no reservation, no request."""
    book = PriceBook({"gpt-4o": Rates.per_million(input="2.50", output="10")})
    async with ledger(embedded, unit="USD_MICROCENTS") as books:
        guard = GuardedOpenAI(books.client, sdk, unit=Unit.USD_MICROCENTS, pricing=book)
        result = await guard.chat(model="gpt-7", messages=MESSAGES)
        assert result.failure() == UnknownModel(model="gpt-7", source="price book")
        explicit = guard.with_options(estimate=Amount.usd_microcents(1_000))
        assert isinstance(
            (await explicit.chat(model="gpt-7", messages=MESSAGES)).failure(), UnknownModel
        )
        assert books.reservations() == []
    assert fake.requests == ()


async def test_messages_from_a_generator_are_counted_and_sent(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """A one-shot iterable of messages is read twice (estimate, then request): both see it."""
    params: ChatParams = {"model": MODEL, "messages": MESSAGES, "max_completion_tokens": 10}
    async with ledger(embedded) as books:
        guard = GuardedOpenAI(books.client, sdk)
        result = await guard.chat(
            model=MODEL, messages=(message for message in MESSAGES), max_completion_tokens=10
        )
        assert is_successful(result)
        assert books.estimate() == prompt_tokens(params) + 10
    assert fake.last_request.json["messages"] == MESSAGES


def compatible_server(body: dict[str, object]) -> httpx2.AsyncClient:
    """An OpenAI-compatible server that answers every request with ``body`` (no usage)."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=body, request=request)

    return httpx2.AsyncClient(transport=httpx2.MockTransport(answer))


@pytest.mark.parametrize("policy", [MissingUsage.FAIL, MissingUsage.LOCAL_COUNT])
async def test_a_plain_completion_without_usage_follows_the_policy(
    embedded: Embedded, policy: MissingUsage
) -> None:
    """A server that omits ``usage``: released loudly, or the prompt and reply counted locally."""
    completion: dict[str, object] = {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "counted by hand"},
            }
        ],
    }
    params: ChatParams = {"model": MODEL, "messages": MESSAGES, "max_completion_tokens": 20}
    async with (
        compatible_server(completion) as http,
        AsyncOpenAI(api_key="sk", base_url="http://compatible/v1", http_client=http) as sdk,
        ledger(embedded) as books,
    ):
        result = await GuardedOpenAI(books.client, sdk, missing_usage=policy).chat(**params)
        if policy is MissingUsage.FAIL:
            assert result.failure() == UsageMissing(endpoint="chat.completions", model=MODEL)
            await books.assert_settled(0)
        else:
            local = prompt_tokens(params) + COUNTER.count("counted by hand")
            assert result.unwrap().charge.actual == Amount.tokens(local)
            await books.assert_settled(local)


async def test_stream_is_refused_on_the_plain_method(embedded: Embedded, sdk: AsyncOpenAI) -> None:
    """chat(stream=True) is misuse (the streamed form is open_chat_stream)."""
    async with ledger(embedded) as books:
        guard = GuardedOpenAI(books.client, sdk)
        params = cast("ChatParams", {"model": MODEL, "messages": MESSAGES, "stream": True})
        with pytest.raises(UsageError, match="open_chat_stream"):
            await guard.chat(**params)


# Chat streams --------------------------------------------------------------------------


async def test_stream_yields_the_sdk_chunks_and_commits_the_usage_chunk(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """include_usage is forced on; chunks are the SDK's; the outcome is set when the loop ends."""
    fake.push(Reply(text="one two three", usage=USAGE), Reply(text="one two three", usage=USAGE))
    raw = await sdk.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    expected = [chunk.model_dump(exclude={"id"}) async for chunk in raw]
    async with ledger(embedded) as books:
        guard = GuardedOpenAI(books.client, sdk)
        async with guard.open_chat_stream(
            model=MODEL, messages=MESSAGES, stream_options={"include_usage": False}
        ) as opened:
            stream = opened.unwrap()
            assert not stream.finished
            chunks: list[ChatCompletionChunk] = [chunk async for chunk in stream]
            outcome = stream.outcome
            assert outcome is not None  # settled as the stream ended, inside the block
            assert outcome.unwrap().actual == Amount.tokens(1_200)
        assert [chunk.model_dump(exclude={"id"}) for chunk in chunks] == expected
        assert chunks[-1].choices == []  # the usage chunk, passed through unharmed
        assert stream.usage is not None
        assert stream.usage.total_tokens == 1_200
        assert books.committed() == 1_200
        assert books.commits()[0]["metadata"] == {"actual_source": "usage"}
        await books.assert_settled(1_200)
    assert fake.last_request.json["stream"] is True
    assert fake.last_request.json["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("policy", list(MissingUsage))
async def test_stream_from_a_server_that_ignores_include_usage(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI, policy: MissingUsage
) -> None:
    """No usage chunk: fail loudly (released), count locally, or charge the estimate."""
    fake.push(Reply(text="alpha beta gamma", stream_usage=False))
    params: ChatParams = {"model": MODEL, "messages": MESSAGES, "max_completion_tokens": 40}
    async with ledger(embedded) as books:
        guard = GuardedOpenAI(books.client, sdk, missing_usage=policy)
        async with guard.open_chat_stream(**params) as opened:
            stream = opened.unwrap()
            chunks = [chunk async for chunk in stream]
        assert len(chunks) == 5  # role, three deltas, finish
        outcome = stream.outcome
        assert outcome is not None
        local = prompt_tokens(params) + COUNTER.count("alpha beta gamma")
        match policy:
            case MissingUsage.FAIL:
                assert outcome.failure() == UsageMissing(
                    endpoint="chat.completions", model=MODEL, partial=False
                )
                assert books.commits() == []
                assert len(books.releases()) == 1
                await books.assert_settled(0)
            case MissingUsage.LOCAL_COUNT:
                assert outcome.unwrap().source is ActualSource.LOCAL_COUNT
                assert books.committed() == local
                assert books.commits()[0]["metadata"] == {
                    "actual_source": "local_count",
                    "estimated": True,
                }
                await books.assert_settled(local)
            case MissingUsage.ESTIMATE:
                assert books.committed() == books.estimate() == prompt_tokens(params) + 40
                assert books.commits()[0]["metadata"] == {
                    "actual_source": "estimate",
                    "estimated": True,
                }
                await books.assert_settled(prompt_tokens(params) + 40)


async def test_a_truncated_stream_is_partial(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """A stream that just stops (no finish, no usage): the policy applies, marked partial."""
    fake.push(
        Reply(text="alpha beta gamma", fault=StreamFault.end(after=2)),
        Reply(text="alpha beta gamma", fault=StreamFault.end(after=2)),
    )
    params: ChatParams = {"model": MODEL, "messages": MESSAGES}
    async with ledger(embedded) as books:
        guard = GuardedOpenAI(books.client, sdk)
        async with guard.open_chat_stream(**params) as opened:
            stream = opened.unwrap()
            _ = [chunk async for chunk in stream]
        assert stream.outcome is not None
        assert stream.outcome.failure() == UsageMissing(
            endpoint="chat.completions", model=MODEL, partial=True
        )
        counting = guard.with_options(missing_usage=MissingUsage.LOCAL_COUNT)
        async with counting.open_chat_stream(**params) as opened:
            stream = opened.unwrap()
            _ = [chunk async for chunk in stream]
        local = prompt_tokens(params) + COUNTER.count("alpha beta ")
        assert books.committed() == local
        assert books.commits()[0]["metadata"] == {
            "actual_source": "local_count",
            "estimated": True,
            "partial": True,
        }
        await books.assert_settled(local)


async def test_a_stream_cut_midway_charges_what_was_received(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """A dropped connection: the provider's error is the outcome; prompt + text is committed."""
    fake.push(Reply(text="alpha beta gamma delta", usage=USAGE, fault=StreamFault.cut(after=2)))
    params: ChatParams = {"model": MODEL, "messages": MESSAGES}
    async with ledger(embedded) as books:
        guard = GuardedOpenAI(books.client, sdk)
        async with guard.open_chat_stream(**params) as opened:
            stream = opened.unwrap()
            texts = [
                choice.delta.content or "" async for chunk in stream for choice in chunk.choices
            ]
            assert stream.finished
        assert "".join(texts) == "alpha beta "
        outcome = stream.outcome
        assert outcome is not None
        failure = outcome.failure()
        assert isinstance(failure, ProviderConnectionFailed)
        assert isinstance(failure.error, openai.APIConnectionError)
        assert stream.error is failure
        local = prompt_tokens(params) + COUNTER.count("alpha beta ")
        charge = stream.charge
        assert charge is not None
        assert (charge.actual, charge.partial, charge.estimated) == (
            Amount.tokens(local),
            True,
            True,
        )
        assert books.commits()[0]["metadata"] == {
            "actual_source": "local_count",
            "estimated": True,
            "partial": True,
        }
        await books.assert_settled(local)


async def test_a_failed_stream_can_be_released_instead(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """StreamFailure.RELEASE: nothing is charged; the outcome is still the provider's error."""
    fake.push(Reply(text="alpha beta gamma", fault=StreamFault.cut(after=1)))
    async with ledger(embedded) as books:
        guard = GuardedOpenAI(books.client, sdk, stream_failure=StreamFailure.RELEASE)
        async with guard.open_chat_stream(model=MODEL, messages=MESSAGES) as opened:
            stream = opened.unwrap()
            _ = [chunk async for chunk in stream]
        assert stream.outcome is not None
        assert isinstance(stream.outcome.failure(), ProviderConnectionFailed)
        assert stream.charge is None
        assert books.commits() == []
        assert len(books.releases()) == 1
        await books.assert_settled(0)


async def test_an_error_event_midway_is_a_typed_stream_error(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """``{"error": ...}`` in the stream: ProviderStreamError with the SDK's APIError and type."""
    fake.push(Reply(text="alpha beta", fault=StreamFault.error(after=1, message="boom")))
    params: ChatParams = {"model": MODEL, "messages": MESSAGES}
    async with ledger(embedded) as books:
        guard = GuardedOpenAI(books.client, sdk)
        async with guard.open_chat_stream(**params) as opened:
            stream = opened.unwrap()
            _ = [chunk async for chunk in stream]
        assert stream.outcome is not None
        failure = stream.outcome.failure()
        assert isinstance(failure, ProviderStreamError)
        assert type(failure.error) is openai.APIError
        assert (failure.error_type, failure.message) == ("server_error", "boom")
        local = prompt_tokens(params) + COUNTER.count("alpha ")
        await books.assert_settled(local)


def recording_client(fake: FakeOpenAI, seen: list[httpx2.Response]) -> httpx2.AsyncClient:
    """An httpx2 client to the fake that keeps every response, to check they get closed."""

    async def keep(response: httpx2.Response) -> None:
        seen.append(response)

    return httpx2.AsyncClient(
        transport=AsgiStreamingTransport(fake), event_hooks={"response": [keep]}
    )


async def test_leaving_early_closes_the_stream_and_charges_what_was_received(
    embedded: Embedded, fake: FakeOpenAI
) -> None:
    """``break`` after two chunks of a long stream: the response is closed, the partial charged."""
    fake.push(Reply(text=" ".join(f"w{i}" for i in range(5_000)), usage=USAGE))
    seen: list[httpx2.Response] = []
    params: ChatParams = {"model": MODEL, "messages": MESSAGES}
    async with (
        recording_client(fake, seen) as http,
        AsyncOpenAI(api_key="sk", base_url="http://fake/v1", http_client=http) as sdk,
        ledger(embedded) as books,
    ):
        guard = GuardedOpenAI(books.client, sdk)
        async with guard.open_chat_stream(**params) as opened:
            stream = opened.unwrap()
            received = 0
            async for _ in stream:
                received += 1
                if received == 3:  # the role chunk, then "w0 ", "w1 "
                    break
            assert not stream.finished  # settled on the way out of the block
        (response,) = seen
        assert response.is_closed
        assert stream.outcome is not None
        charge = stream.outcome.unwrap()
        local = prompt_tokens(params) + COUNTER.count("w0 w1 ")
        assert (charge.actual, charge.partial) == (Amount.tokens(local), True)
        await books.assert_settled(local)


async def test_cancellation_closes_the_stream_and_still_settles(
    embedded: Embedded, fake: FakeOpenAI
) -> None:
    """A cancelled block: the stream is closed, what arrived is committed, the cancel goes on."""
    fake.push(Reply(text=" ".join(f"w{i}" for i in range(5_000))))
    seen: list[httpx2.Response] = []
    params: ChatParams = {"model": MODEL, "messages": MESSAGES}
    async with (
        recording_client(fake, seen) as http,
        AsyncOpenAI(api_key="sk", base_url="http://fake/v1", http_client=http) as sdk,
        ledger(embedded) as books,
    ):
        guard = GuardedOpenAI(books.client, sdk)
        with anyio.CancelScope() as scope:
            async with guard.open_chat_stream(**params) as opened:
                stream = opened.unwrap()
                received = 0
                async for _ in stream:
                    received += 1
                    if received == 3:
                        scope.cancel()
                        await anyio.lowlevel.checkpoint()
                pytest.fail("the cancellation did not arrive")  # pragma: no cover
        assert scope.cancelled_caught
        (response,) = seen
        assert response.is_closed
        local = prompt_tokens(params) + COUNTER.count("w0 w1 ")
        assert books.committed() == local
        await books.assert_settled(local)


async def test_memory_stays_flat_however_long_the_stream(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """A 2 MB stream is consumed in well under 1 MB: nothing is kept per chunk."""
    piece = "the budget holds while the stream flows on " * 80  # 3,520 characters

    async def peak(deltas: int) -> int:
        fake.push(Reply(deltas=(piece,) * deltas, usage=USAGE))
        async with ledger(embedded) as books:
            guard = GuardedOpenAI(books.client, sdk)
            gc.collect()
            tracemalloc.start()
            try:
                async with guard.open_chat_stream(model=MODEL, messages=MESSAGES) as opened:
                    stream = opened.unwrap()
                    async for _ in stream:
                        pass
                _, top = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert stream.outcome is not None
            assert is_successful(stream.outcome)
            return top

    COUNTER.load()  # the encoding's table is big: load it before measuring
    await peak(60)  # first-use allocations (connections, caches) out of the way
    long = await peak(600)
    # 600 deltas carry 2.1 MB of text: keeping it, or the chunks, would exceed this.
    assert long < 1_000_000, long


async def test_stream_over_loopback_sockets(embedded: Embedded) -> None:
    """The same guarded stream through uvicorn on 127.0.0.1: usage committed."""
    fake = FakeOpenAI()
    fake.push(Reply(text="over the wire", usage=USAGE))
    with fake.serve() as url:
        async with fake.client(base_url=url) as sdk, ledger(embedded) as books:
            guard = GuardedOpenAI(books.client, sdk)
            async with guard.open_chat_stream(model=MODEL, messages=MESSAGES) as opened:
                stream = opened.unwrap()
                _ = [chunk async for chunk in stream]
            assert stream.outcome is not None
            assert stream.outcome.unwrap().actual == Amount.tokens(1_200)
            await books.assert_settled(1_200)


# The Responses API ---------------------------------------------------------------------


async def test_responses_commits_the_usage_and_caps_max_output_tokens(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """responses.create: usage committed (cached, reasoning); the ceiling capped."""
    fake.push(Reply(text="Hi from Responses.", usage=USAGE))
    async with ledger(embedded, caps={"max_tokens": 100}) as books:
        guard = GuardedOpenAI(books.client, sdk, subject=BOT)
        result = await guard.responses(
            model=MODEL, instructions="Be brief.", input="Hello", max_output_tokens=500
        )
        guarded = result.unwrap()
        assert guarded.response.output_text == "Hi from Responses."
        assert guarded.charge.usage is not None
        assert guarded.charge.usage.reasoning_tokens == 50
        assert books.committed() == 1_200
        params = {"instructions": "Be brief.", "input": "Hello"}
        assert books.estimate() == responses_prompt_tokens(COUNTER, params) + 500
        await books.assert_settled(1_200)
    assert fake.last_request.json["max_output_tokens"] == 100


async def test_responses_stream_commits_the_completed_usage(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """The named events pass through; response.completed's usage is committed."""
    fake.push(Reply(text="streamed answer", usage=USAGE))
    async with ledger(embedded) as books:
        guard = GuardedOpenAI(books.client, sdk)
        async with guard.open_responses_stream(model=MODEL, input="Hello") as opened:
            stream = opened.unwrap()
            kinds = [event.type async for event in stream]
        assert kinds[0] == "response.created"
        assert kinds[-1] == "response.completed"
        assert kinds.count("response.output_text.delta") == 2
        assert stream.outcome is not None
        assert stream.outcome.unwrap().actual == Amount.tokens(1_200)
        await books.assert_settled(1_200)
    assert fake.last_request.json["stream"] is True


async def test_responses_stream_error_event_is_a_stream_error(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """The SDK yields the ``error`` event (the caller sees it); the outcome is its typed error."""
    fake.push(Reply(text="alpha beta", fault=StreamFault.error(after=1, error_type="server_error")))
    async with ledger(embedded) as books:
        guard = GuardedOpenAI(books.client, sdk)
        async with guard.open_responses_stream(model=MODEL, input="Hello") as opened:
            stream = opened.unwrap()
            kinds = [event.type async for event in stream]
        assert kinds[-1] == "error"
        assert stream.outcome is not None
        failure = stream.outcome.failure()
        assert isinstance(failure, ProviderStreamError)
        assert isinstance(failure.error, openai.APIError)
        assert failure.error_type == "server_error"
        local = responses_prompt_tokens(COUNTER, {"input": "Hello"}) + COUNTER.count("alpha ")
        assert books.commits()[0]["metadata"] == {
            "actual_source": "local_count",
            "estimated": True,
            "partial": True,
        }
        await books.assert_settled(local)


# Embeddings ----------------------------------------------------------------------------


async def test_embeddings_commit_the_input_tokens(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """The estimate is the input counted offline; the commit is the reported prompt tokens."""
    fake.push(Reply(usage=OpenAIUsage(prompt_tokens=9, completion_tokens=0)))
    model = "text-embedding-3-small"
    inputs = ["first text", "second text"]
    async with ledger(embedded) as books:
        guard = GuardedOpenAI(books.client, sdk)
        guarded = (await guard.embeddings(model=model, input=inputs)).unwrap()
        assert len(guarded.response.data) == 2
        counter = TokenCounter.for_model(model)
        assert books.estimate() == embeddings_input_tokens(counter, {"input": inputs})
        (reserved,) = books.reservations()
        assert reserved["action"] == {
            "kind": "llm.embedding",
            "name": "openai:text-embedding-3-small",
        }
        assert books.committed() == 9
        await books.assert_settled(9)


# Provider failures ---------------------------------------------------------------------


async def test_a_rate_limit_is_a_value_with_its_retry_after(
    embedded: Embedded, fake: FakeOpenAI
) -> None:
    """429: ProviderRateLimited keeps openai.RateLimitError; one attempt only; released."""
    fake.push(HttpError.rate_limited(retry_after_ms=250), HttpError.rate_limited())
    async with fake.client(max_retries=3) as sdk, ledger(embedded) as books:
        guard = GuardedOpenAI(books.client, sdk)  # the SDK's own retries are turned off
        result = await guard.chat(model=MODEL, messages=MESSAGES)
        failure = result.failure()
        assert isinstance(failure, ProviderRateLimited)
        assert isinstance(failure.error, openai.RateLimitError)
        assert failure.retry_after == 0.25
        assert failure.request_id == "req_fake1"
        assert len(fake.requests) == 1
        (release,) = books.releases()
        assert release["reason"] == "provider error: RateLimitError"
        await books.assert_settled(0)


async def test_sdk_retries_can_be_kept(embedded: Embedded, fake: FakeOpenAI) -> None:
    """max_retries=None keeps the client's retries: one reservation, the final attempt's usage."""
    fake.push(HttpError.rate_limited(retry_after_ms=1), Reply(usage=USAGE))
    async with fake.client(max_retries=2) as sdk, ledger(embedded) as books:
        guard = GuardedOpenAI(books.client, sdk, max_retries=None)
        assert is_successful(await guard.chat(model=MODEL, messages=MESSAGES))
        assert len(fake.requests) == 2
        assert len(books.reservations()) == 1
        await books.assert_settled(1_200)


@pytest.mark.parametrize(
    ("status", "kind"), [(400, "invalid_request_error"), (503, "server_error")]
)
async def test_status_errors_keep_status_and_type(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI, status: int, kind: str
) -> None:
    """4xx/5xx: ProviderStatusError with the SDK's APIStatusError, its status and error type."""
    fake.push(HttpError(status=status, retry_after=2))
    async with ledger(embedded) as books:
        result = await GuardedOpenAI(books.client, sdk).chat(model=MODEL, messages=MESSAGES)
        failure = result.failure()
        assert isinstance(failure, ProviderStatusError)
        assert isinstance(failure.error, openai.APIStatusError)
        assert (failure.status, failure.error_type, failure.retry_after) == (status, kind, 2.0)
        await books.assert_settled(0)


async def test_a_dropped_connection_is_a_value(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """A body cut half-way: ProviderConnectionFailed keeps openai.APIConnectionError."""
    fake.push(Reply(fault=StreamFault.cut()))
    async with ledger(embedded) as books:
        result = await GuardedOpenAI(books.client, sdk).chat(model=MODEL, messages=MESSAGES)
        failure = result.failure()
        assert isinstance(failure, ProviderConnectionFailed)
        assert isinstance(failure.error, openai.APIConnectionError)
        assert not failure.timed_out
        await books.assert_settled(0)


async def test_budget_exceeded_never_reaches_the_provider(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """Cycles says no: BudgetExceeded, and the fake never hears of the call."""
    async with ledger(embedded, budget=10) as books:
        guard = GuardedOpenAI(books.client, sdk)
        async with guard.open_chat_stream(model=MODEL, messages=MESSAGES) as opened:
            assert isinstance(opened.failure(), BudgetExceeded)
        result = await guard.chat(model=MODEL, messages=MESSAGES)
        assert isinstance(result.failure(), BudgetExceeded)
    assert fake.requests == ()


def advice(error: OpenAICallError) -> str:
    """The seed's error branching: provider failures and Cycles failures side by side."""
    match error:
        case ProviderRateLimited(retry_after=wait):
            return f"back off {wait}s"
        case ProviderStatusError(status=status) if status >= 500:
            return "try another model"
        case BudgetExceeded():
            return "degrade"
        case CapsForbidCall() | UsageMissing():
            return "local"
        case _:
            return "surface"


async def test_callers_branch_on_provider_and_cycles_failures(
    embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI
) -> None:
    """One ``match`` tells a rate limit, an outage and an empty budget apart."""
    fake.push(HttpError.rate_limited(retry_after=3), HttpError.server_error(502))
    async with ledger(embedded, budget=60) as books:
        guard = GuardedOpenAI(books.client, sdk, estimate=Amount.tokens(50))
        seen = [
            advice((await guard.chat(model=MODEL, messages=MESSAGES)).failure()) for _ in range(2)
        ]
        big = guard.with_options(estimate=Amount.tokens(61))
        seen.append(advice((await big.chat(model=MODEL, messages=MESSAGES)).failure()))
    assert seen == ["back off 3.0s", "try another model", "degrade"]


async def test_action_override(embedded: Embedded, fake: FakeOpenAI, sdk: AsyncOpenAI) -> None:
    """An explicit action replaces the derived one."""
    async with ledger(embedded) as books:
        guard = GuardedOpenAI(books.client, sdk, action=Action("agent.step", "planner"))
        assert is_successful(await guard.chat(model=MODEL, messages=MESSAGES))
        (reserved,) = books.reservations()
        assert reserved["action"] == {"kind": "agent.step", "name": "planner"}
