"""Amounts for a reservation (the estimate) and for a commit (the actual), in a budget's unit.

- ``TOKENS``: the estimate is prompt tokens plus the output ceiling; the actual
  is the usage's ``total_tokens`` (cached and reasoning tokens are tokens too).
- ``USD_MICROCENTS``: both go through a :class:`~cycleguard.metering.Pricing`.
  The estimate is the worst case for that prompt and ceiling: every output
  token at the higher of the output and reasoning rates, every prompt token
  uncached (or, if asked, written to the cache).
- Any other unit is :class:`UnsupportedUnit`: tokens do not convert to credits
  or risk points without rules only the caller knows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias, final

import attrs
from returns.pipeline import is_successful
from returns.result import Failure, Result, Success

from cycleguard._core._errors import UsageError
from cycleguard._core._models import Amount, Unit
from cycleguard.metering._pricing import Pricing, PricingError
from cycleguard.metering._usage import TokenUsage

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = (
    "OUTPUT_CEILING_KEYS",
    "MeteringError",
    "UnsupportedUnit",
    "estimate_amount",
    "output_ceiling",
    "usage_amount",
)

OUTPUT_CEILING_KEYS = ("max_completion_tokens", "max_output_tokens", "max_tokens")
"""Request parameters that cap the output, in the order they are looked up."""


@final
@attrs.frozen
class UnsupportedUnit:
    """Token usage cannot be expressed in ``unit`` (only TOKENS and USD_MICROCENTS).

    >>> UnsupportedUnit(Unit.CREDITS).message
    'token usage cannot be metered in CREDITS'
    """

    unit: Unit

    @property
    def message(self) -> str:
        """One line for logs."""
        return f"token usage cannot be metered in {self.unit.value}"


MeteringError: TypeAlias = PricingError | UnsupportedUnit
"""Why an amount could not be worked out."""


def output_ceiling(params: Mapping[str, object], *, default: int) -> int:
    """The request's output cap (see :data:`OUTPUT_CEILING_KEYS`), else ``default``.

    Only a non-negative ``int`` counts: ``None`` or an SDK "not given" sentinel
    does not.

    >>> output_ceiling({"model": "gpt-4o", "max_completion_tokens": 800}, default=4_096)
    800
    >>> output_ceiling({"max_tokens": None}, default=4_096)
    4096
    """
    for key in OUTPUT_CEILING_KEYS:
        value = params.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return default


def _need_pricing(pricing: Pricing | None) -> Pricing:
    if pricing is None:
        raise UsageError("a USD_MICROCENTS amount needs a Pricing (for example GenaiPrices())")
    return pricing


def usage_amount(
    model: str, usage: TokenUsage, *, unit: Unit, pricing: Pricing | None = None
) -> Result[Amount, MeteringError]:
    """What ``usage`` amounts to in ``unit``: the value to commit.

    >>> usage_amount("m", TokenUsage(input_tokens=100, output_tokens=20), unit=Unit.TOKENS)
    <Success: Amount(unit=<Unit.TOKENS: 'TOKENS'>, amount=120)>

    Raises:
        UsageError: ``unit`` is ``USD_MICROCENTS`` and ``pricing`` is ``None``.
    """
    match unit:
        case Unit.TOKENS:
            return Success(Amount.tokens(usage.total_tokens))
        case Unit.USD_MICROCENTS:
            priced: Result[Amount, MeteringError] = _need_pricing(pricing).price(model, usage)
            return priced
        case Unit.CREDITS | Unit.RISK_POINTS:
            return Failure(UnsupportedUnit(unit))


def estimate_amount(
    model: str,
    *,
    prompt_tokens: int,
    max_output_tokens: int,
    unit: Unit,
    pricing: Pricing | None = None,
    prompt_cache_write: bool = False,
) -> Result[Amount, MeteringError]:
    """The most a call with this prompt and output ceiling can cost: the value to reserve.

    For ``USD_MICROCENTS`` this prices each extreme split of the tokens
    (output as plain output or as reasoning; prompt uncached, or also as cache
    writes when ``prompt_cache_write`` is set, as Anthropic's 1.25x cache
    writes cost more than input) and takes the largest. Cache reads only
    lower a price, so the estimate never assumes them.

    >>> estimate_amount("m", prompt_tokens=120, max_output_tokens=800, unit=Unit.TOKENS)
    <Success: Amount(unit=<Unit.TOKENS: 'TOKENS'>, amount=920)>

    Raises:
        UsageError: a count is negative, or ``unit`` is ``USD_MICROCENTS`` and
            ``pricing`` is ``None``.
    """
    if prompt_tokens < 0 or max_output_tokens < 0:
        raise UsageError("prompt_tokens and max_output_tokens must not be negative")
    match unit:
        case Unit.TOKENS:
            return Success(Amount.tokens(prompt_tokens + max_output_tokens))
        case Unit.USD_MICROCENTS:
            return _worst_price(
                _need_pricing(pricing), model, prompt_tokens, max_output_tokens, prompt_cache_write
            )
        case Unit.CREDITS | Unit.RISK_POINTS:
            return Failure(UnsupportedUnit(unit))


def _worst_price(
    pricing: Pricing, model: str, prompt: int, output: int, cache_write: bool
) -> Result[Amount, MeteringError]:
    writes = (0, prompt) if cache_write else (0,)
    worst: Amount | None = None
    for written in writes:
        for reasoning in (0, output):
            usage = TokenUsage(
                input_tokens=prompt,
                cache_write_tokens=written,
                output_tokens=output,
                reasoning_tokens=reasoning,
            )
            priced = pricing.price(model, usage)
            if not is_successful(priced):
                return Failure(priced.failure())
            amount = priced.unwrap()
            if worst is None or amount.amount > worst.amount:
                worst = amount
    assert worst is not None
    return Success(worst)
