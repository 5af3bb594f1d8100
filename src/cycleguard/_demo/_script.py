"""What the demo agent asks, and what the offline fake answers (pure data and rules)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cycleguard.metering import chat_prompt_tokens
from cycleguard.testing import HttpError, OpenAIUsage, Reply

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

    from cycleguard.metering import TextCounter

__all__ = (
    "RATE_LIMITED_STEP",
    "REQUESTED_OUTPUT_TOKENS",
    "SYSTEM_PROMPT",
    "TASKS",
    "messages_for",
    "offline_answers",
    "offline_reply",
)

RATE_LIMITED_STEP = 4
"""Offline, the fake rate-limits this step once, to show the retry branch."""

REQUESTED_OUTPUT_TOKENS = 1_024
"""What the agent asks for on every call; the demo's policy caps it lower."""

SYSTEM_PROMPT = (
    "You are a research agent. Answer in a short paragraph, then stop. "
    "Every call you make is paid for from a fixed budget."
)

TASKS = (
    "List the ways an agent loop can overspend on model calls.",
    "Why reserve an estimate before a model call instead of counting after?",
    "What should happen to a reservation when the model call fails?",
    "How do caps differ from a hard budget limit?",
    "Explain why a commit must be idempotent.",
    "What does a heartbeat protect a long model call from?",
    "When is it right to release a reservation rather than commit zero?",
    "How would you budget a streamed answer whose length is unknown?",
    "What is the cost of estimating too high? And too low?",
    "Summarise what a settlement journal guarantees after a crash.",
    "How can one tenant's runaway agent be kept from starving another?",
    "Suggest a fallback when the budget for the large model is spent.",
)

_SENTENCES = (
    "A reservation holds the estimate, so parallel calls cannot spend the same tokens.",
    "The commit swaps the estimate for the reported usage and returns the difference.",
    "Caps lower the output ceiling of the request, which shrinks the risk and the bill.",
    "When the call fails, the hold is released at once rather than left to expire.",
    "A loop that never ends is stopped by the budget, not by the monthly invoice.",
    "Streams are charged for what they delivered, even when they break halfway.",
    "Idempotency keys make every retried commit safe, whatever the network did.",
    "The journal keeps known spend on disk until the server has acknowledged it.",
)


def messages_for(task: str) -> list[ChatCompletionMessageParam]:
    """The chat messages the agent sends for ``task``."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": task},
    ]


def offline_reply(
    step: int, task: str, counter: TextCounter, *, model: str, delay: float = 0.0
) -> Reply:
    """The fake's answer to ``task`` at ``step``, with honest token usage.

    The answer's length varies with the step, so commits differ from call to
    call; it stays within the demo policy's cap (a real model stops at the
    capped ``max_completion_tokens`` too).

    >>> from cycleguard.metering import TokenCounter
    >>> counter = TokenCounter.for_model("gpt-4o-mini")
    >>> reply = offline_reply(1, TASKS[0], counter, model="gpt-4o-mini")
    >>> reply.usage.completion_tokens == counter.count(reply.text)
    True
    """
    length = 3 + (step * 5) % 6
    text = " ".join(_SENTENCES[(step + i) % len(_SENTENCES)] for i in range(length))
    params = {"model": model, "messages": messages_for(task)}
    usage = OpenAIUsage(
        prompt_tokens=chat_prompt_tokens(counter, params),
        completion_tokens=counter.count(text),
    )
    return Reply(text=text, usage=usage, delay=delay)


def offline_answers(
    step: int, task: str, counter: TextCounter, *, model: str, delay: float = 0.0
) -> tuple[Reply | HttpError, ...]:
    """What the fake answers at ``step``: a rate limit first at :data:`RATE_LIMITED_STEP`.

    >>> from cycleguard.metering import TokenCounter
    >>> counter = TokenCounter.for_model("gpt-4o-mini")
    >>> [type(item).__name__ for item in offline_answers(RATE_LIMITED_STEP, TASKS[0], counter,
    ...                                                  model="gpt-4o-mini")]
    ['HttpError', 'Reply']
    """
    reply = offline_reply(step, task, counter, model=model, delay=delay)
    if step == RATE_LIMITED_STEP:
        return (HttpError.rate_limited(retry_after_ms=300), reply)
    return (reply,)
