"""Token usage to ``USD_MICROCENTS``: the ``Pricing`` protocol and a user price book.

All arithmetic is exact (``Decimal`` rates become ``Fraction`` values, token counts
stay ints) and the total is rounded *up* once, to whole microcents
(1 USD = 10**8 ``USD_MICROCENTS``). No float is ever involved.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Protocol, TypeAlias, final

import attrs
from returns.result import Failure, Result, Success

from cycleguard._core._errors import UsageError
from cycleguard._core._models import Amount

if TYPE_CHECKING:
    from collections.abc import Mapping

    from cycleguard.metering._usage import TokenUsage

__all__ = (
    "MICROCENTS_PER_USD",
    "PriceBook",
    "Pricing",
    "PricingError",
    "PricingFailed",
    "Rates",
    "UnknownModel",
    "usd_to_microcents",
)

MICROCENTS_PER_USD = 10**8
"""``USD_MICROCENTS`` in one US dollar."""

_TOKENS_PER_RATE = 10**6  # rates are quoted per million tokens


@final
@attrs.frozen(kw_only=True)
class UnknownModel:
    """The price table has no entry for ``model``: nothing was priced (never a silent zero).

    >>> UnknownModel(model="gpt-7", source="price book").message
    "no price for model 'gpt-7' in price book"
    """

    model: str
    source: str

    @property
    def message(self) -> str:
        """One line for logs."""
        return f"no price for model {self.model!r} in {self.source}"


@final
@attrs.frozen(kw_only=True)
class PricingFailed:
    """The table knows ``model`` but could not price this usage exactly."""

    model: str
    message: str


PricingError: TypeAlias = UnknownModel | PricingFailed
"""Why a usage could not be priced."""


class Pricing(Protocol):
    """Turns a model's token usage into an amount of ``USD_MICROCENTS``.

    Implement it to use your own rates; :class:`PriceBook` and
    :class:`~cycleguard.metering.GenaiPrices` are the built-in ones. An
    implementation must round up to whole microcents and return
    :class:`UnknownModel` rather than a zero for a model it does not know.
    """

    def price(self, model: str, usage: TokenUsage) -> Result[Amount, PricingError]:
        """The cost of ``usage`` on ``model``, as ``Amount.usd_microcents(...)``."""
        ...


def usd_to_microcents(usd: Decimal | Fraction) -> int:
    """Whole ``USD_MICROCENTS`` for ``usd`` dollars, rounded up, computed exactly.

    >>> usd_to_microcents(Decimal("0.00024"))
    24000
    >>> usd_to_microcents(Decimal("0.000000001"))  # a tenth of a microcent still costs one
    1

    Raises:
        UsageError: ``usd`` is negative or not finite.
    """
    if isinstance(usd, Decimal) and not usd.is_finite():
        raise UsageError(f"a price must be finite, got {usd}")
    exact = Fraction(usd)
    if exact < 0:
        raise UsageError(f"a price must not be negative, got {usd}")
    return math.ceil(exact * MICROCENTS_PER_USD)


def _rate(name: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise UsageError(
            f"rate {name!r} must be a decimal string, int or Decimal (exact), got "
            f"{type(value).__name__}; write '0.15', not 0.15"
        )
    try:
        rate = Decimal(value)
    except ArithmeticError:
        raise UsageError(f"rate {name!r} is not a number: {value!r}") from None
    if not rate.is_finite() or rate < 0:
        raise UsageError(f"rate {name!r} must be finite and not negative, got {value!r}")
    return rate


@final
@attrs.frozen(kw_only=True)
class Rates:
    """One model's prices in USD per million tokens, as exact decimals.

    A rate left ``None`` falls back: cache reads and cache writes are billed at
    ``input``, reasoning tokens at ``output``.

    >>> rates = Rates.per_million(input="0.15", output="0.60", cached_input="0.075")
    >>> from cycleguard.metering._usage import TokenUsage
    >>> rates.cost_usd(TokenUsage(input_tokens=1_000, cached_input_tokens=400, output_tokens=200))
    Fraction(3, 12500)
    """

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None

    def __attrs_post_init__(self) -> None:
        for field in attrs.fields(Rates):
            value: object = getattr(self, field.name)
            if value is None and field.name not in {"input", "output"}:
                continue
            if not isinstance(value, Decimal):
                raise UsageError(
                    f"Rates.{field.name} must be a Decimal (Rates.per_million takes strings)"
                )
            _rate(field.name, value)

    @classmethod
    def per_million(
        cls,
        *,
        input: str | int | Decimal,  # noqa: A002 - the rate's natural name
        output: str | int | Decimal,
        cached_input: str | int | Decimal | None = None,
        cache_write: str | int | Decimal | None = None,
        reasoning: str | int | Decimal | None = None,
    ) -> Rates:
        """Rates from decimal strings (or ints, or ``Decimal``); a float is refused.

        Raises:
            UsageError: a rate is a float, not a number, negative or not finite.
        """
        return cls(
            input=_rate("input", input),
            output=_rate("output", output),
            cached_input=None if cached_input is None else _rate("cached_input", cached_input),
            cache_write=None if cache_write is None else _rate("cache_write", cache_write),
            reasoning=None if reasoning is None else _rate("reasoning", reasoning),
        )

    def cost_usd(self, usage: TokenUsage) -> Fraction:
        """The exact cost of ``usage`` in dollars."""
        cached = self.input if self.cached_input is None else self.cached_input
        write = self.input if self.cache_write is None else self.cache_write
        reasoning = self.output if self.reasoning is None else self.reasoning
        per_million = (
            usage.uncached_input_tokens * Fraction(self.input)
            + usage.cached_input_tokens * Fraction(cached)
            + usage.cache_write_tokens * Fraction(write)
            + usage.plain_output_tokens * Fraction(self.output)
            + usage.reasoning_tokens * Fraction(reasoning)
        )
        return per_million / _TOKENS_PER_RATE


_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")


@final
class PriceBook:
    """Your own rates, by model name; implements :class:`Pricing`.

    A model is found by its exact name (case-insensitive), else by its name
    without a trailing snapshot date (``gpt-4o-mini-2024-07-18`` uses
    ``gpt-4o-mini``, ``claude-haiku-4-5-20251001`` uses ``claude-haiku-4-5``).
    Anything else is :class:`UnknownModel`, or goes to ``fallback`` if given
    (for example a :class:`~cycleguard.metering.GenaiPrices` for every model
    you did not list). Threshold tiers are not modelled: write a
    :class:`Pricing` for those.

    >>> book = PriceBook({"gpt-4o-mini": Rates.per_million(input="0.15", output="0.60")})
    >>> from cycleguard.metering._usage import TokenUsage
    >>> book.price("gpt-4o-mini-2024-07-18", TokenUsage(input_tokens=1_000, output_tokens=200))
    <Success: Amount(unit=<Unit.USD_MICROCENTS: 'USD_MICROCENTS'>, amount=27000)>
    >>> book.price("gpt-7", TokenUsage()).failure().message
    "no price for model 'gpt-7' in price book"
    """

    __slots__ = ("_fallback", "_rates")

    def __init__(self, rates: Mapping[str, Rates], *, fallback: Pricing | None = None) -> None:
        """Copy ``rates``; model names are compared case-insensitively.

        Raises:
            UsageError: two names differ only in case.
        """
        table: dict[str, Rates] = {}
        for name, value in rates.items():
            key = name.lower()
            if key in table:
                raise UsageError(f"model {name!r} is listed twice (names ignore case)")
            table[key] = value
        self._rates = table
        self._fallback = fallback

    def __repr__(self) -> str:
        return f"PriceBook({sorted(self._rates)!r}, fallback={self._fallback!r})"

    def rates_for(self, model: str) -> Rates | None:
        """The rates this book uses for ``model`` (fallback not consulted).

        >>> PriceBook({"m": Rates.per_million(input=1, output=2)}).rates_for("M-20250101").output
        Decimal('2')
        """
        key = model.lower()
        found = self._rates.get(key)
        if found is None:
            found = self._rates.get(_DATE_SUFFIX.sub("", key))
        return found

    def price(self, model: str, usage: TokenUsage) -> Result[Amount, PricingError]:
        """The cost of ``usage`` on ``model``, rounded up to whole microcents."""
        rates = self.rates_for(model)
        if rates is not None:
            return Success(Amount.usd_microcents(usd_to_microcents(rates.cost_usd(usage))))
        if self._fallback is not None:
            return self._fallback.price(model, usage)
        return Failure(UnknownModel(model=model, source="price book"))
