"""Typed error branching: provider failures and budget failures, side by side.

The seed page needed a hand-written ``CompletionError`` enum and a
``ReservationGuard`` to keep ``OpenAIError`` typed. Here every guarded call
returns a ``Result`` whose failure is one closed union: the provider's
variants keep the SDK's own exception (``ProviderRateLimited.error`` is an
``openai.RateLimitError``, with ``retry_after`` parsed from its headers), the
Cycles variants say what the budget did. One ``match`` decides: back off and
retry, fall back to another model, or degrade gracefully.

Run it (offline)::

    uv run python examples/error_handling.py
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from _offline import offline_cycles
from returns.pipeline import is_successful

from cycleguard import Amount
from cycleguard.errors import BudgetExceeded
from cycleguard.openai import (
    GuardedOpenAI,
    ProviderConnectionFailed,
    ProviderRateLimited,
    ProviderStatusError,
)
from cycleguard.testing import FakeOpenAI, HttpError, OpenAIUsage, Reply

if TYPE_CHECKING:
    from cycleguard.openai import OpenAICallError


async def answer(guard: GuardedOpenAI, question: str, *, model: str = "gpt-4o") -> str:
    """Ask, retrying rate limits, falling back on outages, degrading when the budget is out."""
    for _attempt in range(3):
        result = await guard.chat(model=model, messages=[{"role": "user", "content": question}])
        if is_successful(result):
            return result.unwrap().response.choices[0].message.content or ""
        error: OpenAICallError = result.failure()
        match error:
            case ProviderRateLimited(retry_after=wait):
                print(f"rate limited ({type(error.error).__name__}); retrying in {wait}s")
                await anyio.sleep(wait or 0.1)
            case ProviderStatusError(status=status) if status >= 500:
                print(f"{model} is failing ({status}); falling back to gpt-4o-mini")
                model = "gpt-4o-mini"
            case ProviderConnectionFailed():
                print("connection dropped; trying again")
            case BudgetExceeded():
                return "(budget exhausted: here is a cached answer instead)"
            case _:
                return f"(giving up: {type(error).__name__})"
    return "(giving up after 3 attempts)"


async def main() -> None:
    fake = FakeOpenAI()
    fake.push(
        HttpError.rate_limited(retry_after_ms=20),
        HttpError.server_error(503),
        Reply(
            text="Reserve, then commit.", usage=OpenAIUsage(prompt_tokens=9, completion_tokens=5)
        ),
    )
    async with offline_cycles(allocated=1_000) as cycles, fake.client() as client:
        guard = GuardedOpenAI(cycles, client, estimate=Amount.tokens(600))
        print(await answer(guard, "How does cycleguard spend?"))
        # 986 tokens are left: a call that needs 2,000 is refused before it is sent.
        big = guard.with_options(estimate=Amount.tokens(2_000))
        print(await answer(big, "Write me a novel."))


if __name__ == "__main__":
    anyio.run(main)
