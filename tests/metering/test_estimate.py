"""Amounts to reserve (the worst case) and to commit (the usage), in the budget's unit."""

from __future__ import annotations

from typing import TYPE_CHECKING

import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.pipeline import is_successful

from cycleguard import Amount, Unit
from cycleguard.errors import UsageError
from cycleguard.metering import (
    MeteringError,
    PriceBook,
    Rates,
    TokenCounter,
    TokenUsage,
    UnknownModel,
    UnsupportedUnit,
    chat_prompt_tokens,
    estimate_amount,
    output_ceiling,
    usage_amount,
)

if TYPE_CHECKING:
    from returns.result import Result


def amount(result: Result[Amount, MeteringError]) -> Amount:
    assert is_successful(result), result
    return result.unwrap()


def failure(result: Result[Amount, MeteringError]) -> MeteringError:
    assert not is_successful(result), result
    return result.failure()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"max_completion_tokens": 10, "max_output_tokens": 20, "max_tokens": 30}, 10),
        ({"max_output_tokens": 20, "max_tokens": 30}, 20),
        ({"max_tokens": 30}, 30),
        ({"max_tokens": 0}, 0),
        ({}, 4_096),
        ({"max_tokens": None}, 4_096),
        ({"max_tokens": True}, 4_096),
        ({"max_tokens": -5}, 4_096),
        ({"max_tokens": "30"}, 4_096),
        ({"max_completion_tokens": openai.NOT_GIVEN, "max_tokens": 30}, 30),
        ({"max_tokens": openai.omit}, 4_096),
    ],
)
def test_output_ceiling(params: dict[str, object], expected: int) -> None:
    assert output_ceiling(params, default=4_096) == expected


def test_token_estimate_is_prompt_plus_ceiling() -> None:
    result = estimate_amount("gpt-4o", prompt_tokens=120, max_output_tokens=800, unit=Unit.TOKENS)
    assert amount(result) == Amount.tokens(920)


def test_usd_estimate_takes_the_dearer_output_rate() -> None:
    """All output at the higher of the output and reasoning rates; prompt uncached."""
    cheap_reasoning = PriceBook({"m": Rates.per_million(input=1, output=10, reasoning=2)})
    dear_reasoning = PriceBook({"m": Rates.per_million(input=1, output=10, reasoning=40)})

    def estimate(book: PriceBook) -> int:
        return amount(
            estimate_amount(
                "m",
                prompt_tokens=1_000,
                max_output_tokens=100,
                unit=Unit.USD_MICROCENTS,
                pricing=book,
            )
        ).amount

    assert estimate(cheap_reasoning) == 200_000  # 1000 * $1 + 100 * $10 per million
    assert estimate(dear_reasoning) == 500_000  # 1000 * $1 + 100 * $40 per million


def test_usd_estimate_with_cache_writes() -> None:
    """Asked to, the estimate covers a prompt written to the cache (dearer than input)."""
    book = PriceBook({"m": Rates.per_million(input=1, output=5, cache_write="1.25")})
    plain = estimate_amount(
        "m", prompt_tokens=1_000, max_output_tokens=0, unit=Unit.USD_MICROCENTS, pricing=book
    )
    written = estimate_amount(
        "m",
        prompt_tokens=1_000,
        max_output_tokens=0,
        unit=Unit.USD_MICROCENTS,
        pricing=book,
        prompt_cache_write=True,
    )
    assert (amount(plain).amount, amount(written).amount) == (100_000, 125_000)


def test_estimate_failures() -> None:
    book = PriceBook({})
    unknown = failure(
        estimate_amount(
            "m", prompt_tokens=1, max_output_tokens=1, unit=Unit.USD_MICROCENTS, pricing=book
        )
    )
    assert isinstance(unknown, UnknownModel)
    for unit in (Unit.CREDITS, Unit.RISK_POINTS):
        result = estimate_amount("m", prompt_tokens=1, max_output_tokens=1, unit=unit)
        assert failure(result) == UnsupportedUnit(unit)
    with pytest.raises(UsageError, match="Pricing"):
        estimate_amount("m", prompt_tokens=1, max_output_tokens=1, unit=Unit.USD_MICROCENTS)
    with pytest.raises(UsageError, match="negative"):
        estimate_amount("m", prompt_tokens=-1, max_output_tokens=1, unit=Unit.TOKENS)


def test_usage_amount() -> None:
    """Tokens: the whole usage (cached and reasoning included); USD: through the pricing."""
    usage = TokenUsage(
        input_tokens=1_000, cached_input_tokens=400, output_tokens=200, reasoning_tokens=50
    )
    assert amount(usage_amount("m", usage, unit=Unit.TOKENS)) == Amount.tokens(1_200)
    book = PriceBook({"m": Rates.per_million(input="0.15", output="0.60", cached_input="0.075")})
    priced = usage_amount("m", usage, unit=Unit.USD_MICROCENTS, pricing=book)
    assert amount(priced) == Amount.usd_microcents(24_000)
    assert failure(usage_amount("m", usage, unit=Unit.CREDITS)) == UnsupportedUnit(Unit.CREDITS)
    with pytest.raises(UsageError):
        usage_amount("m", usage, unit=Unit.USD_MICROCENTS)


def test_estimate_from_chat_parameters() -> None:
    """The pieces an integration composes: counted prompt + the request's ceiling."""
    params: dict[str, object] = {
        "model": "gpt-4o-mini",
        "max_completion_tokens": 200,
        "messages": [{"role": "user", "content": "hello world"}],
    }
    prompt = chat_prompt_tokens(TokenCounter.for_model("gpt-4o-mini"), params)
    ceiling = output_ceiling(params, default=4_096)
    estimate = estimate_amount("gpt-4o-mini", prompt_tokens=prompt, max_output_tokens=ceiling,
                               unit=Unit.TOKENS)  # fmt: skip
    assert amount(estimate) == Amount.tokens(9 + 200)


@given(
    st.integers(min_value=0, max_value=10**7),
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=10**6),
)
def test_estimate_bounds_every_actual_within_it(
    prompt: int, ceiling: int, cached_share: int, reasoning_share: int
) -> None:
    """Any usage with that prompt and at most that output costs no more than the estimate."""
    book = PriceBook({"m": Rates.per_million(input=3, output=15, cached_input="0.3", reasoning=20)})
    reserved = amount(
        estimate_amount(
            "m", prompt_tokens=prompt, max_output_tokens=ceiling, unit=Unit.USD_MICROCENTS,
            pricing=book,
        )
    )  # fmt: skip
    output = min(ceiling, reasoning_share + cached_share)
    usage = TokenUsage(
        input_tokens=prompt,
        cached_input_tokens=min(prompt, cached_share),
        output_tokens=output,
        reasoning_tokens=min(output, reasoning_share),
    )
    actual = amount(usage_amount("m", usage, unit=Unit.USD_MICROCENTS, pricing=book))
    assert actual.amount <= reserved.amount
