"""Anthropic: guarded ``messages.create``, plain and streamed, prompt cache included.

:class:`~cycleguard.anthropic.GuardedAnthropic` works like the OpenAI guard.
Anthropic's ``input_tokens`` leaves the cache out, so the committed amount
adds ``cache_creation_input_tokens`` and ``cache_read_input_tokens``; a stream
takes its input from ``message_start`` and its output from the last
``message_delta``. An ``event: error`` inside the stream (HTTP 200) comes back
as ``ProviderStreamError`` with its ``error_type``, and what the stream had
delivered is charged.

Run it (offline)::

    uv run python examples/anthropic_messages.py
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from _offline import offline_cycles
from returns.pipeline import is_successful

from cycleguard.anthropic import GuardedAnthropic, ProviderStreamError
from cycleguard.testing import AnthropicUsage, FakeAnthropic, Reply, StreamFault

if TYPE_CHECKING:
    from anthropic.types import TextBlockParam

SYSTEM: list[TextBlockParam] = [
    {"type": "text", "text": "You answer in one line.", "cache_control": {"type": "ephemeral"}}
]


async def main() -> None:
    usage = AnthropicUsage(
        input_tokens=25,
        output_tokens=12,
        cache_creation_input_tokens=10,
        cache_read_input_tokens=100,
    )
    fake = FakeAnthropic()
    fake.push(
        Reply(text="Budgets make agents careful.", usage=usage),
        Reply(text="Streams are charged as they end.", usage=usage),
        Reply(
            text="This one breaks halfway through", usage=usage, fault=StreamFault.error(after=2)
        ),
    )
    async with offline_cycles() as cycles, fake.client() as client:
        guard = GuardedAnthropic(cycles, client)
        message = await guard.messages(
            model="claude-haiku-4-5",
            max_tokens=200,
            system=SYSTEM,
            messages=[{"role": "user", "content": "Why budget LLM calls?"}],
        )
        guarded = message.unwrap()
        print(
            f"charged {guarded.charge.actual.amount} tokens (25 + 10 written + 100 read + 12 out)"
        )

        for _ in range(2):
            async with guard.open_message_stream(
                model="claude-haiku-4-5",
                max_tokens=200,
                system=SYSTEM,
                messages=[{"role": "user", "content": "And streams?"}],
            ) as opened:
                stream = opened.unwrap()
                async for event in stream:
                    if event.type == "content_block_delta" and event.delta.type == "text_delta":
                        print(event.delta.text, end="")
                print()
            outcome, charge = stream.outcome, stream.charge
            assert outcome is not None
            assert charge is not None
            if is_successful(outcome):
                print(f"stream committed {charge.actual.amount} tokens")
            else:
                match outcome.failure():
                    case ProviderStreamError(error_type=kind):
                        print(
                            f"stream failed ({kind}); charged {charge.actual.amount} tokens "
                            f"for what arrived ({charge.source.value})"
                        )
                    case other:
                        print(f"stream failed: {other!r}")


if __name__ == "__main__":
    anyio.run(main)
