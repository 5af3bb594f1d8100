"""TokenUsage: the invariants, and each provider's counting rules read from real SDK objects."""

from __future__ import annotations

import anthropic.types as anthropic_types
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types import CompletionUsage
from openai.types.completion_usage import CompletionTokensDetails, PromptTokensDetails
from openai.types.create_embedding_response import Usage as EmbeddingUsage
from openai.types.responses import ResponseUsage
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from cycleguard import StandardMetrics
from cycleguard.errors import UsageError
from cycleguard.metering import (
    AnthropicUsageLike,
    ChatUsageLike,
    EmbeddingsUsageLike,
    ResponsesUsageLike,
    TokenUsage,
)

counts = st.integers(min_value=0, max_value=10**9)


def chat_usage(
    prompt: int, completion: int, *, cached: int | None = None, reasoning: int | None = None
) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached, cache_write_tokens=None),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning),
    )


def test_sdk_types_satisfy_the_protocols() -> None:
    """The real SDK models type-check as the structural protocols (mypy and pyright see this)."""
    chat: ChatUsageLike = chat_usage(1, 1)
    responses: ResponsesUsageLike = ResponseUsage(
        input_tokens=1,
        input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
        output_tokens=1,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
        total_tokens=2,
    )
    embeddings: EmbeddingsUsageLike = EmbeddingUsage(prompt_tokens=1, total_tokens=1)
    message: AnthropicUsageLike = anthropic_types.Usage(input_tokens=1, output_tokens=1)
    delta: AnthropicUsageLike = anthropic_types.MessageDeltaUsage(output_tokens=1)
    assert all(x is not None for x in (chat, responses, embeddings, message, delta))


def test_openai_chat_prompt_includes_cached_tokens() -> None:
    """gpt-4o-mini, 1000 prompt (400 cached) + 200 completion (50 reasoning)."""
    usage = TokenUsage.from_openai_chat(chat_usage(1000, 200, cached=400, reasoning=50))
    assert usage == TokenUsage(
        input_tokens=1000, cached_input_tokens=400, output_tokens=200, reasoning_tokens=50
    )
    assert (usage.uncached_input_tokens, usage.plain_output_tokens) == (600, 150)
    assert usage.total_tokens == 1200


def test_openai_chat_without_details() -> None:
    bare = CompletionUsage(prompt_tokens=7, completion_tokens=3, total_tokens=10)
    assert TokenUsage.from_openai_chat(bare) == TokenUsage(input_tokens=7, output_tokens=3)


def test_openai_chat_cache_write_tokens() -> None:
    usage = CompletionUsage(
        prompt_tokens=100,
        completion_tokens=1,
        total_tokens=101,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=20, cache_write_tokens=30),
    )
    normalised = TokenUsage.from_openai_chat(usage)
    assert (normalised.cached_input_tokens, normalised.cache_write_tokens) == (20, 30)
    assert normalised.uncached_input_tokens == 50


def test_openai_responses_output_includes_reasoning() -> None:
    usage = ResponseUsage(
        input_tokens=20,
        input_tokens_details=InputTokensDetails(cached_tokens=5, cache_write_tokens=3),
        output_tokens=9,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=4),
        total_tokens=29,
    )
    assert TokenUsage.from_openai_responses(usage) == TokenUsage(
        input_tokens=20,
        cached_input_tokens=5,
        cache_write_tokens=3,
        output_tokens=9,
        reasoning_tokens=4,
    )


def test_openai_embeddings_are_input_only() -> None:
    usage = EmbeddingUsage(prompt_tokens=8, total_tokens=8)
    assert TokenUsage.from_openai_embeddings(usage) == TokenUsage(input_tokens=8)


def test_anthropic_input_total_adds_the_cache() -> None:
    """claude-haiku-4-5: 25 input + 10 cache write + 100 cache read, 12 output."""
    usage = anthropic_types.Usage(
        input_tokens=25,
        output_tokens=12,
        cache_creation_input_tokens=10,
        cache_read_input_tokens=100,
        output_tokens_details=anthropic_types.OutputTokensDetails(thinking_tokens=5),
    )
    assert TokenUsage.from_anthropic(usage) == TokenUsage(
        input_tokens=135,
        cache_write_tokens=10,
        cached_input_tokens=100,
        output_tokens=12,
        reasoning_tokens=5,
    )


def test_anthropic_stream_delta_overrides_start() -> None:
    """message_start's counts, replaced by whatever the last message_delta carries."""
    start = anthropic_types.Usage(
        input_tokens=25, output_tokens=1, cache_creation_input_tokens=10, cache_read_input_tokens=0
    )
    delta = anthropic_types.MessageDeltaUsage(output_tokens=40, cache_read_input_tokens=100)
    merged = TokenUsage.from_anthropic_stream(start, delta)
    assert merged == TokenUsage(
        input_tokens=135, cache_write_tokens=10, cached_input_tokens=100, output_tokens=40
    )
    assert TokenUsage.from_anthropic_stream(start, None).output_tokens == 1


def test_defensive_reads() -> None:
    """Unvalidated SDK objects can hold anything: None, negatives and bools count as 0."""
    raw = {
        "prompt_tokens": None,
        "completion_tokens": -5,
        "prompt_tokens_details": {"cached_tokens": True},
        "completion_tokens_details": "nonsense",
    }
    assert TokenUsage.from_openai_chat(raw) == TokenUsage()
    assert TokenUsage.from_anthropic({}) == TokenUsage()


def test_parts_larger_than_totals_are_clipped() -> None:
    raw = {
        "prompt_tokens": 10,
        "completion_tokens": 2,
        "prompt_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 8},
        "completion_tokens_details": {"reasoning_tokens": 9},
    }
    assert TokenUsage.from_openai_chat(raw) == TokenUsage(
        input_tokens=10, cached_input_tokens=8, cache_write_tokens=2, output_tokens=2,
        reasoning_tokens=2,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input_tokens": -1}, "must not be negative"),
        ({"output_tokens": 1.5}, "must be an int"),
        ({"input_tokens": True}, "must be an int"),
        ({"input_tokens": 5, "cached_input_tokens": 3, "cache_write_tokens": 3}, "must not exceed"),
        ({"output_tokens": 1, "reasoning_tokens": 2}, "must not exceed"),
    ],
)
def test_invalid_usage_is_a_usage_error(fields: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        TokenUsage(**fields)  # type: ignore[arg-type]  # deliberately wrong types


def test_metrics() -> None:
    usage = TokenUsage(input_tokens=12, output_tokens=3)
    assert usage.metrics(model_version="gpt-4o-mini-2024-07-18") == StandardMetrics(
        tokens_input=12, tokens_output=3, model_version="gpt-4o-mini-2024-07-18"
    )


@given(counts, counts, counts, counts, counts)
def test_anthropic_totals_property(
    plain: int, written: int, read: int, output: int, thinking: int
) -> None:
    usage = TokenUsage.from_anthropic(
        {
            "input_tokens": plain,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "output_tokens": output,
            "output_tokens_details": {"thinking_tokens": thinking},
        }
    )
    assert usage.input_tokens == plain + written + read
    assert usage.uncached_input_tokens == plain
    assert usage.reasoning_tokens == min(thinking, output)


@given(counts, counts, counts, counts, counts)
def test_openai_chat_never_breaks_the_invariants(
    prompt: int, completion: int, cached: int, written: int, reasoning: int
) -> None:
    """Whatever the server claims, the result is a valid TokenUsage with the same totals."""
    usage = TokenUsage.from_openai_chat(
        {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
    )
    assert (usage.input_tokens, usage.output_tokens) == (prompt, completion)
    assert usage.uncached_input_tokens >= 0
    assert usage.plain_output_tokens >= 0


@given(st.lists(st.tuples(counts, counts, counts), max_size=5))
def test_sum_is_field_wise(parts: list[tuple[int, int, int]]) -> None:
    usages = [
        TokenUsage(input_tokens=a + b, cached_input_tokens=b, output_tokens=c) for a, b, c in parts
    ]
    total = sum(usages, TokenUsage())
    assert total.total_tokens == sum(u.total_tokens for u in usages)
    assert total.cached_input_tokens == sum(b for _, b, _ in parts)
