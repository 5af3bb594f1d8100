"""The Responses API, plain and streamed, under a budget.

``responses.create`` takes its usage from ``Response.usage`` (cached and
reasoning tokens included); a stream takes it from ``response.completed``.
Caps lower ``max_output_tokens``.

Run it (offline)::

    uv run python examples/responses_api.py
"""

from __future__ import annotations

import anyio
from _offline import offline_cycles
from returns.pipeline import is_successful

from cycleguard.openai import GuardedOpenAI
from cycleguard.testing import FakeOpenAI, OpenAIUsage, Reply


async def main() -> None:
    usage = OpenAIUsage(prompt_tokens=40, completion_tokens=30, reasoning_tokens=12)
    fake = FakeOpenAI()
    fake.push(
        Reply(text="A plain answer.", usage=usage), Reply(text="A streamed answer.", usage=usage)
    )
    async with offline_cycles() as cycles, fake.client() as client:
        guard = GuardedOpenAI(cycles, client)
        result = await guard.responses(
            model="o4-mini",
            instructions="Be brief.",
            input="Explain budgets.",
            max_output_tokens=400,
        )
        guarded = result.unwrap()
        print(guarded.response.output_text)
        usage_seen = guarded.charge.usage
        reasoning = usage_seen.reasoning_tokens if usage_seen else 0
        print(f"charged {guarded.charge.actual.amount} tokens ({reasoning} of them reasoning)")

        async with guard.open_responses_stream(model="o4-mini", input="Now stream it.") as opened:
            if not is_successful(opened):
                print(f"not started: {opened.failure()!r}")
                return
            stream = opened.unwrap()
            async for event in stream:
                if event.type == "response.output_text.delta":
                    print(event.delta, end="")
            print()
        charge = stream.charge
        print(f"stream committed {charge.actual.amount if charge else 0} tokens")


if __name__ == "__main__":
    anyio.run(main)
