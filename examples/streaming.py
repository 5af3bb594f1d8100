"""Streaming: chunks as they arrive, usage committed when the stream ends.

``open_chat_stream`` forces ``stream_options.include_usage`` on, yields the
SDK's own chunks (the last one, with empty ``choices``, carries the usage),
and settles the reservation the moment the stream ends: ``stream.outcome`` is
ready right after the loop. A stream that breaks midway is charged what it
delivered (counted locally, marked estimated); a server that never reports
usage is handled by the ``missing_usage`` policy you choose.

Run it (offline)::

    uv run python examples/streaming.py
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from _offline import offline_cycles
from returns.pipeline import is_successful

from cycleguard.openai import GuardedOpenAI, MissingUsage
from cycleguard.testing import FakeOpenAI, OpenAIUsage, Reply, StreamFault

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

    from cycleguard.openai import OpenAIStream

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write a haiku about budgets."}
]


async def show(stream: OpenAIStream[ChatCompletionChunk]) -> None:
    """Print the text as it streams, then how the reservation was settled."""
    async for chunk in stream:
        for choice in chunk.choices:  # empty on the final usage chunk
            print(choice.delta.content or "", end="")
    print()
    outcome, charge = stream.outcome, stream.charge
    if outcome is not None and not is_successful(outcome):
        print(f"stream failed: {type(outcome.failure()).__name__}")
    if charge is not None:
        marks = " (estimated)" if charge.estimated else ""
        marks += " (partial)" if charge.partial else ""
        print(f"committed {charge.actual.amount} tokens from {charge.source.value}{marks}")


async def main() -> None:
    fake = FakeOpenAI()
    fake.push(
        Reply(
            text="Tokens trickle in / each one weighed before it lands / the ledger stays calm",
            usage=OpenAIUsage(prompt_tokens=14, completion_tokens=19),
        ),
        # A compatible server that ignores include_usage:
        Reply(text="Quiet server here", stream_usage=False),
        # A connection that drops after three words:
        Reply(text="one two three four five", fault=StreamFault.cut(after=3)),
    )
    async with offline_cycles() as cycles, fake.client() as client:
        guard = GuardedOpenAI(cycles, client, missing_usage=MissingUsage.LOCAL_COUNT)
        for _ in range(3):
            async with guard.open_chat_stream(model="gpt-4o-mini", messages=MESSAGES) as opened:
                if not is_successful(opened):
                    print(f"not started: {opened.failure()!r}")
                    continue
                await show(opened.unwrap())
        spent = (await cycles.get_balances()).unwrap().balances[0].spent
        print(f"spent in all: {spent.amount if spent else 0} tokens")


if __name__ == "__main__":
    anyio.run(main)
