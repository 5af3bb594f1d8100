"""The basic guarded call: reserve, call the model, commit the real usage.

The seed page's ``with_cycles`` around ``chat.completions.create``, done with
:class:`~cycleguard.openai.GuardedOpenAI`: you pass the SDK's own keyword
arguments; the estimate (the prompt counted offline plus the output ceiling)
is reserved first, the response's usage is committed after, and a failure
releases the reservation.

Run it (offline: an embedded Cycles server and a fake OpenAI, in process)::

    uv run python examples/basic_guarded_call.py
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from _offline import offline_cycles
from returns.pipeline import is_successful

from cycleguard.openai import GuardedOpenAI
from cycleguard.testing import FakeOpenAI, OpenAIUsage, Reply

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from cycleguard import CyclesClient


async def summarize(cycles: CyclesClient, client: AsyncOpenAI, text: str) -> str:
    """One sentence about ``text``, paid for from the budget."""
    guard = GuardedOpenAI(cycles, client)
    result = await guard.chat(
        model="gpt-4o-mini",
        max_completion_tokens=800,
        messages=[{"role": "user", "content": f"Summarize in one sentence: {text}"}],
    )
    if not is_successful(result):
        return f"no summary: {result.failure()!r}"
    guarded = result.unwrap()
    charge = guarded.charge
    print(
        f"charged {charge.actual.amount} {charge.actual.unit.value} "
        f"({charge.source.value}: {charge.metrics.tokens_input} in, "
        f"{charge.metrics.tokens_output} out)"
    )
    return guarded.response.choices[0].message.content or ""


async def main() -> None:
    fake = FakeOpenAI()
    fake.push(
        Reply(
            text="cycleguard reserves before each call and commits what the call used.",
            usage=OpenAIUsage(prompt_tokens=31, completion_tokens=14),
        )
    )
    async with offline_cycles(allocated=10_000) as cycles, fake.client() as client:
        print(await summarize(cycles, client, "the cycleguard README"))
        balances = (await cycles.get_balances()).unwrap().balances
        print(f"remaining {balances[0].remaining.amount} of 10000 tokens")


if __name__ == "__main__":
    anyio.run(main)
