"""Pricing: exact integer microcents, rounded up; your rates or genai-prices' table, offline."""

from __future__ import annotations

import math
import socket
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING

import pytest
from genai_prices.data_snapshot import DataSnapshot, set_custom_snapshot
from hypothesis import given
from hypothesis import strategies as st
from returns.pipeline import is_successful

from cycleguard import Amount
from cycleguard.errors import UsageError
from cycleguard.metering import (
    MICROCENTS_PER_USD,
    GenaiPrices,
    PriceBook,
    Pricing,
    PricingError,
    Rates,
    TokenUsage,
    UnknownModel,
    usd_to_microcents,
)

if TYPE_CHECKING:
    from collections.abc import Generator

    from returns.result import Result

GPT_4O_MINI_USAGE = TokenUsage(input_tokens=1_000, cached_input_tokens=400, output_tokens=200)
HAIKU_USAGE = TokenUsage(
    input_tokens=135, cache_write_tokens=10, cached_input_tokens=100, output_tokens=12
)


def microcents(result: Result[Amount, PricingError]) -> int:
    assert is_successful(result), result
    amount = result.unwrap()
    assert amount == Amount.usd_microcents(amount.amount)
    return amount.amount


def failure(result: Result[Amount, PricingError]) -> PricingError:
    assert not is_successful(result), result
    return result.failure()


# usd_to_microcents ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usd", "expected"),
    [
        (Decimal("0.00024"), 24_000),
        (Decimal("0.0001075"), 10_750),
        (Decimal(1), MICROCENTS_PER_USD),
        (Decimal("0.00000001"), 1),
        (Decimal("0.000000001"), 1),
        (Decimal("0.000000011"), 2),
        (Decimal(0), 0),
        (Fraction(1, 3), 33_333_334),
    ],
)
def test_dollars_round_up_to_whole_microcents(usd: Decimal | Fraction, expected: int) -> None:
    assert usd_to_microcents(usd) == expected


@pytest.mark.parametrize("bad", [Decimal(-1), Decimal("NaN"), Decimal("Infinity")])
def test_impossible_prices(bad: Decimal) -> None:
    with pytest.raises(UsageError):
        usd_to_microcents(bad)


# Rates and PriceBook -----------------------------------------------------------------


def test_rates_are_exact_decimals() -> None:
    rates = Rates.per_million(input="0.15", output=1, cached_input=Decimal("0.075"))
    assert (rates.input, rates.output, rates.cached_input) == (
        Decimal("0.15"),
        Decimal(1),
        Decimal("0.075"),
    )


@pytest.mark.parametrize("bad", [0.15, "abc", "-1", "NaN", "Infinity", True, None])
def test_inexact_or_impossible_rates_are_refused(bad: object) -> None:
    with pytest.raises(UsageError):
        Rates.per_million(input=bad, output="1")  # type: ignore[arg-type]  # deliberately wrong


def test_rates_built_directly_must_be_decimals() -> None:
    with pytest.raises(UsageError, match="Decimal"):
        Rates(input="0.15", output=Decimal(1))  # type: ignore[arg-type]  # deliberately wrong


def test_unset_rates_fall_back() -> None:
    """Cache reads and writes bill at input, reasoning at output, unless given."""
    usage = TokenUsage(
        input_tokens=10,
        cached_input_tokens=3,
        cache_write_tokens=2,
        output_tokens=5,
        reasoning_tokens=4,
    )
    flat = Rates.per_million(input=1, output=10)
    assert flat.cost_usd(usage) == Fraction(10 * 1 + 5 * 10, 10**6)
    split = Rates.per_million(input=1, output=10, cached_input=0, cache_write=2, reasoning=20)
    assert split.cost_usd(usage) == Fraction(5 * 1 + 3 * 0 + 2 * 2 + 1 * 10 + 4 * 20, 10**6)


def test_price_book_examples() -> None:
    """The two worked examples: $0.00024 and $0.0001075."""
    book = PriceBook(
        {
            "gpt-4o-mini": Rates.per_million(input="0.15", output="0.60", cached_input="0.075"),
            "claude-haiku-4-5": Rates.per_million(
                input=1, output=5, cached_input="0.10", cache_write="1.25"
            ),
        }
    )
    assert microcents(book.price("gpt-4o-mini", GPT_4O_MINI_USAGE)) == 24_000
    assert microcents(book.price("claude-haiku-4-5", HAIKU_USAGE)) == 10_750


def test_price_book_rounds_up() -> None:
    """One token at $0.001 per million is a tenth of a microcent: it costs one."""
    book = PriceBook({"tiny": Rates.per_million(input="0.001", output="0.001")})
    assert microcents(book.price("tiny", TokenUsage(input_tokens=1))) == 1
    assert microcents(book.price("tiny", TokenUsage())) == 0


def test_price_book_model_names() -> None:
    book = PriceBook({"GPT-4o-mini": Rates.per_million(input=1, output=1)})
    usage = TokenUsage(input_tokens=1)
    for name in ("gpt-4o-mini", "GPT-4O-MINI", "gpt-4o-mini-2024-07-18", "gpt-4o-mini-20240718"):
        assert microcents(book.price(name, usage)) == 100, name
    unknown = failure(book.price("gpt-4o-mini-high", usage))
    assert unknown == UnknownModel(model="gpt-4o-mini-high", source="price book")
    with pytest.raises(UsageError, match="twice"):
        PriceBook(
            {"a": Rates.per_million(input=1, output=1), "A": Rates.per_million(input=1, output=1)}
        )


def test_price_book_falls_back() -> None:
    """Your rates first; anything else goes to the fallback pricing."""
    mine = PriceBook({"gpt-4o-mini": Rates.per_million(input=1, output=1)}, fallback=GenaiPrices())
    assert microcents(mine.price("gpt-4o-mini", GPT_4O_MINI_USAGE)) == 120_000
    assert microcents(mine.price("claude-haiku-4-5", HAIKU_USAGE)) == 10_750
    assert isinstance(failure(mine.price("no-such-model", HAIKU_USAGE)), UnknownModel)
    assert "PriceBook(['gpt-4o-mini']" in repr(mine)


def test_a_user_pricing_is_a_pricing() -> None:
    """Any object with the ``price`` method fits the protocol."""

    class Flat:
        def price(self, model: str, usage: TokenUsage) -> Result[Amount, PricingError]:
            return PriceBook({model: Rates.per_million(input=1, output=1)}).price(model, usage)

    pricing: Pricing = Flat()
    assert microcents(pricing.price("x", TokenUsage(output_tokens=2))) == 200


rate_units = st.integers(min_value=0, max_value=100_000_000)  # millionths of a dollar per MTok
token_counts = st.integers(min_value=0, max_value=10**9)


@given(
    st.tuples(rate_units, rate_units, rate_units, rate_units, rate_units),
    st.tuples(token_counts, token_counts, token_counts, token_counts, token_counts),
)
def test_price_book_matches_integer_arithmetic(
    rates: tuple[int, int, int, int, int], tokens: tuple[int, int, int, int, int]
) -> None:
    """Against an all-integer reference: rates in micro-dollars per million tokens."""
    uncached, cached, written, plain, reasoning = tokens
    usage = TokenUsage(
        input_tokens=uncached + cached + written,
        cached_input_tokens=cached,
        cache_write_tokens=written,
        output_tokens=plain + reasoning,
        reasoning_tokens=reasoning,
    )
    r_in, r_cached, r_write, r_out, r_reason = rates
    book = PriceBook(
        {
            "m": Rates.per_million(
                input=Decimal(r_in).scaleb(-6),
                cached_input=Decimal(r_cached).scaleb(-6),
                cache_write=Decimal(r_write).scaleb(-6),
                output=Decimal(r_out).scaleb(-6),
                reasoning=Decimal(r_reason).scaleb(-6),
            )
        }
    )
    # tokens * (rate_units / 10**6 USD per 10**6 tokens) * 10**8 microcents per USD
    numerator = (
        uncached * r_in + cached * r_cached + written * r_write + plain * r_out
    ) + reasoning * r_reason
    expected = -(-numerator * 100 // 10**6)  # ceiling division
    assert microcents(book.price("m", usage)) == expected


@given(rate_units, rate_units, token_counts, token_counts, token_counts, token_counts)
def test_rounding_is_up_and_at_most_one_microcent(
    r_in: int, r_out: int, in_a: int, out_a: int, in_b: int, out_b: int
) -> None:
    """Each price is the exact cost rounded up; joining two usages costs at most the sum."""
    rates = Rates.per_million(input=Decimal(r_in).scaleb(-6), output=Decimal(r_out).scaleb(-6))
    book = PriceBook({"m": rates})
    a = TokenUsage(input_tokens=in_a, output_tokens=out_a)
    b = TokenUsage(input_tokens=in_b, output_tokens=out_b)
    exact = rates.cost_usd(a) * MICROCENTS_PER_USD
    price_a = microcents(book.price("m", a))
    assert exact <= price_a < exact + 1
    assert price_a == math.ceil(exact)
    joined = microcents(book.price("m", a + b))
    price_b = microcents(book.price("m", b))
    assert price_a + price_b - 1 <= joined <= price_a + price_b


# GenaiPrices ---------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to resolve or connect fails loudly."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.usefixtures("no_network")
def test_genai_prices_worked_examples() -> None:
    """gpt-4o-mini $0.00024 and claude-haiku-4-5 $0.0001075, from the bundled table."""
    prices = GenaiPrices()
    assert microcents(prices.price("gpt-4o-mini", GPT_4O_MINI_USAGE)) == 24_000
    assert microcents(prices.price("claude-haiku-4-5", HAIKU_USAGE)) == 10_750
    assert microcents(prices.price("gpt-4o-mini-2024-07-18", GPT_4O_MINI_USAGE)) == 24_000


@pytest.mark.usefixtures("no_network")
def test_genai_prices_round_up() -> None:
    """One cached gpt-4o-mini token: $0.075 per million is 7.5 microcents, billed as 8."""
    one_cached = TokenUsage(input_tokens=1, cached_input_tokens=1)
    assert microcents(GenaiPrices().price("gpt-4o-mini", one_cached)) == 8


@pytest.mark.usefixtures("no_network")
def test_genai_prices_unknown_model_is_a_failure_not_zero() -> None:
    unknown = failure(GenaiPrices().price("no-such-model", HAIKU_USAGE))
    assert isinstance(unknown, UnknownModel)
    assert unknown.model == "no-such-model"
    assert unknown.source.startswith("genai-prices ")
    openai_unknown = failure(GenaiPrices().price("gpt-7-ultra", HAIKU_USAGE))
    assert isinstance(openai_unknown, UnknownModel)
    wrong_provider = failure(GenaiPrices(provider="nonexistent").price("gpt-4o", HAIKU_USAGE))
    assert isinstance(wrong_provider, UnknownModel)
    assert "nonexistent" in wrong_provider.message


@pytest.mark.usefixtures("no_network")
def test_genai_prices_reasoning_rate() -> None:
    """sonar-deep-research has its own reasoning rate ($8 output, $3 reasoning); o3 has not."""
    prices = GenaiPrices(provider="perplexity")
    plain = TokenUsage(input_tokens=1_000, output_tokens=500)
    reasoning = TokenUsage(input_tokens=1_000, output_tokens=500, reasoning_tokens=400)
    assert microcents(prices.price("sonar-deep-research", plain)) == 600_000
    assert microcents(prices.price("sonar-deep-research", reasoning)) == 400_000
    # Without a reasoning rate in the table, reasoning tokens cost the output rate.
    o3 = GenaiPrices(at=datetime(2026, 1, 1, tzinfo=UTC))
    assert microcents(o3.price("o3", reasoning)) == microcents(o3.price("o3", plain)) == 600_000


@pytest.mark.usefixtures("no_network")
def test_genai_prices_history_tiers_and_variants() -> None:
    """Prices as of a date, threshold tiers, and service-tier variants."""
    usage = TokenUsage(input_tokens=1_000, output_tokens=1_000)
    before = GenaiPrices(at=datetime(2025, 5, 1, tzinfo=UTC))
    after = GenaiPrices(at=datetime(2025, 7, 1, tzinfo=UTC))
    assert microcents(before.price("o3", usage)) == 5_000_000  # $10 / $40
    assert microcents(after.price("o3", usage)) == 1_000_000  # $2 / $8
    flex = GenaiPrices(at=datetime(2026, 11, 1, tzinfo=UTC), price_context={"service_tier": "flex"})
    assert microcents(flex.price("o3", usage)) == 500_000  # $1 / $4
    long_prompt = TokenUsage(input_tokens=250_000, output_tokens=10)  # over the 200k tier
    assert microcents(GenaiPrices().price("claude-sonnet-4-5", long_prompt)) == 150_022_500


@pytest.fixture
def refreshed_snapshot() -> Generator[None]:
    """What ``UpdatePrices`` would install: a global snapshot from the network (here, empty)."""
    set_custom_snapshot(DataSnapshot(providers=[], from_auto_update=True))
    yield
    set_custom_snapshot(None)


@pytest.mark.usefixtures("refreshed_snapshot", "no_network")
def test_genai_prices_reads_only_the_bundled_table() -> None:
    """A refreshed global snapshot is not used: prices come from the installed package only."""
    assert microcents(GenaiPrices().price("gpt-4o-mini", GPT_4O_MINI_USAGE)) == 24_000


def test_genai_prices_load_and_repr() -> None:
    GenaiPrices.load()
    assert repr(GenaiPrices(provider="openai")) == "GenaiPrices(provider='openai', at=None)"
