"""Caps from ``ALLOW_WITH_CAPS``, applied to the request before it is sent.

A policy caps every agent: at most 256 output tokens, no ``shell`` tool, a
cooldown and a step allowance. The guarded call lowers
``max_completion_tokens`` to ``min(requested, cap)`` and drops the denied tool
from ``tools=``; the pacing caps come back for the agent loop to honour.

Run it (offline)::

    uv run python examples/caps.py
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import anyio
from _offline import offline_cycles

from cycleguard import Caps, Subject
from cycleguard.openai import CapsForbidCall, GuardedOpenAI
from cycleguard.testing import FakeOpenAI, Reply, ToolCall

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionToolParam


def function(name: str) -> ChatCompletionToolParam:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


def tools_received(fake: FakeOpenAI) -> list[str]:
    """The tool names the provider received (read back from the fake's log)."""
    tools = cast("list[dict[str, dict[str, str]]]", fake.last_request.json.get("tools", []))
    return [tool["function"]["name"] for tool in tools]


async def main() -> None:
    fake = FakeOpenAI()
    fake.push(Reply(text="", tool_calls=(ToolCall(name="search", arguments='{"q": "caps"}'),)))
    caps = Caps(max_tokens=256, tool_denylist=("shell",), cooldown_ms=1_000, max_steps_remaining=2)
    async with offline_cycles(agent_caps=caps) as cycles, fake.client() as client:
        planner = GuardedOpenAI(cycles, client, subject=Subject(agent="planner"))
        result = await planner.chat(
            model="gpt-4o-mini",
            max_completion_tokens=2_000,
            messages=[{"role": "user", "content": "Find out what caps are."}],
            tools=[function("search"), function("shell")],
        )
        step = result.unwrap()
        ceiling = fake.last_request.json["max_completion_tokens"]
        print(f"decision: {step.decision.value}")
        print(f"max_completion_tokens sent: {ceiling} (asked for 2000)")
        print(f"tools sent: {tools_received(fake)}")
        print(f"cooldown: {step.cooldown_ms} ms, steps left: {step.max_steps_remaining}")

    # A cap of zero output tokens cannot be honoured: the call is refused, not sent.
    async with offline_cycles(agent_caps=Caps(max_tokens=0)) as cycles, fake.client() as client:
        planner = GuardedOpenAI(cycles, client, subject=Subject(agent="planner"))
        refused = await planner.chat(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
        )
        match refused.failure():
            case CapsForbidCall(reason=reason):
                print(f"refused before the call: {reason}")
            case other:
                print(f"unexpected: {other!r}")


if __name__ == "__main__":
    anyio.run(main)
