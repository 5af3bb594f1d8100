"""``GenaiPrices``: the price table bundled with ``genai-prices``, offline.

Only the table shipped inside the installed package is read: this module builds
its own snapshot from ``genai_prices.data`` and never starts (or sees)
``genai_prices.UpdatePrices``, the package's opt-in background refresh, so no
price ever comes from the network. Upgrade the package to get newer prices, or
put a :class:`~cycleguard.metering.PriceBook` in front for your own rates.
"""

from __future__ import annotations

import functools
import importlib.util
from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    Context,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from importlib.metadata import version
from typing import TYPE_CHECKING, final

from returns.result import Failure, Result, Success

from cycleguard._core._errors import UsageError
from cycleguard._core._models import Amount
from cycleguard.metering._pricing import (
    PricingError,
    PricingFailed,
    UnknownModel,
    usd_to_microcents,
)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from genai_prices.data_snapshot import DataSnapshot

    from cycleguard.metering._usage import TokenUsage

__all__ = ("GenaiPrices",)

# Exact arithmetic: plenty of digits, and any rounding at all is an error.
_EXACT = Context(
    prec=200,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact],
)


@functools.cache
def _bundled_snapshot() -> DataSnapshot:
    """The bundled table, loaded once (importing it takes a second or two)."""
    from genai_prices.data import providers  # heavy: load on first use
    from genai_prices.data_snapshot import DataSnapshot

    return DataSnapshot(providers=providers, from_auto_update=False)


@final
class GenaiPrices:
    """Prices from ``genai-prices``' bundled table; implements ``Pricing``.

    Cached-input, cache-write and reasoning rates are used where the table has
    them (otherwise those tokens cost the plain input or output rate), as are
    the table's threshold tiers and price history. The exact dollar cost is
    rounded up to whole microcents.

    Args:
        provider: A genai-prices provider id (``"openai"``, ``"anthropic"``, ...);
            ``None`` lets the table pick the provider from the model name.
        at: Price as of this instant (the table keeps price history); ``None``
            means the time of each call.
        price_context: Variant selectors such as ``{"service_tier": "flex"}``.

    Raises:
        UsageError: ``genai-prices`` is not installed (``cycleguard[pricing]``).

    The table loads on first use (about two seconds); call :meth:`load` at
    start-up, or in a worker thread, to pay that early.

    >>> from cycleguard.metering._usage import TokenUsage
    >>> usage = TokenUsage(input_tokens=1_000, cached_input_tokens=400, output_tokens=200)
    >>> GenaiPrices().price("gpt-4o-mini", usage)
    <Success: Amount(unit=<Unit.USD_MICROCENTS: 'USD_MICROCENTS'>, amount=24000)>
    >>> GenaiPrices().price("no-such-model", usage).failure().model
    'no-such-model'
    """

    __slots__ = ("_at", "_context", "_provider", "_source")

    def __init__(
        self,
        *,
        provider: str | None = None,
        at: datetime | None = None,
        price_context: Mapping[str, str] | None = None,
    ) -> None:
        if importlib.util.find_spec("genai_prices") is None:
            raise UsageError("GenaiPrices needs genai-prices: install cycleguard[pricing]")
        self._provider = provider
        self._at = at
        self._context = dict(price_context) if price_context else None
        where = "" if provider is None else f" (provider {provider!r})"
        self._source = f"genai-prices {version('genai-prices')}{where}"

    def __repr__(self) -> str:
        return f"GenaiPrices(provider={self._provider!r}, at={self._at!r})"

    @staticmethod
    def load() -> None:
        """Load the bundled table now instead of on the first :meth:`price` call."""
        _bundled_snapshot()

    def price(self, model: str, usage: TokenUsage) -> Result[Amount, PricingError]:
        """The cost of ``usage`` on ``model``, rounded up to whole microcents."""
        from genai_prices import Usage  # optional dependency

        snapshot = _bundled_snapshot()
        priced = Usage(
            input_tokens=usage.input_tokens,
            cache_read_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            output_tokens=usage.output_tokens,
            output_reasoning_tokens=usage.reasoning_tokens,
        )
        try:
            with localcontext(_EXACT):
                calculation = snapshot.calc(
                    priced, model, self._provider, None, self._at, self._context
                )
                total = calculation.total_price
        except LookupError:
            return Failure(UnknownModel(model=model, source=self._source))
        except (ValueError, ArithmeticError) as error:
            return Failure(PricingFailed(model=model, message=f"{self._source}: {error}"))
        return Success(Amount.usd_microcents(usd_to_microcents(total)))
