"""A budget in dollars: usage priced into ``USD_MICROCENTS`` at commit time.

With ``unit=Unit.USD_MICROCENTS`` the estimate is the worst-case price of the
prompt and output ceiling, and the commit is the exact price of the reported
usage (cached input at its own rate), in whole microcents (1 USD = 10**8),
rounded up. :class:`~cycleguard.metering.GenaiPrices` reads the price table
bundled with ``genai-prices`` (no network); a
:class:`~cycleguard.metering.PriceBook` in front of it pins your own rates.

Run it (offline)::

    uv run python examples/usd_budget.py
"""

from __future__ import annotations

import anyio
from _offline import offline_cycles

from cycleguard import Unit
from cycleguard.metering import MICROCENTS_PER_USD, GenaiPrices, PriceBook, Rates
from cycleguard.openai import GuardedOpenAI
from cycleguard.testing import FakeOpenAI, OpenAIUsage, Reply


def dollars(microcents: int) -> str:
    return f"${microcents / MICROCENTS_PER_USD:.6f}"


async def main() -> None:
    # Our negotiated rate for gpt-4o-mini; every other model from the bundled table.
    pricing = PriceBook(
        {"gpt-4o-mini": Rates.per_million(input="0.15", output="0.60", cached_input="0.075")},
        fallback=GenaiPrices(),
    )
    fake = FakeOpenAI()
    usage = OpenAIUsage(prompt_tokens=1_000, completion_tokens=200, cached_tokens=400)
    fake.push(Reply(text="Priced.", usage=usage), Reply(text="Priced too.", usage=usage))
    one_dollar = MICROCENTS_PER_USD
    async with (
        offline_cycles(allocated=one_dollar, unit=Unit.USD_MICROCENTS) as cycles,
        fake.client() as client,
    ):
        guard = GuardedOpenAI(cycles, client, unit=Unit.USD_MICROCENTS, pricing=pricing)
        for model in ("gpt-4o-mini", "gpt-4o"):
            result = await guard.chat(
                model=model,
                max_completion_tokens=500,
                messages=[{"role": "user", "content": "What does this cost?"}],
            )
            charge = result.unwrap().charge
            print(f"{model}: charged {dollars(charge.actual.amount)}")
        remaining = (await cycles.get_balances()).unwrap().balances[0].remaining.amount
        print(f"left of $1.00: {dollars(remaining)}")


if __name__ == "__main__":
    anyio.run(main)
