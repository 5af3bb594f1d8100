"""``TokenUsage``: one model call's token counts, the same shape for every provider.

Providers count differently, and the differences decide what a call costs:

- OpenAI chat: ``prompt_tokens`` *includes* ``prompt_tokens_details.cached_tokens``;
  ``completion_tokens`` includes ``completion_tokens_details.reasoning_tokens``.
- OpenAI Responses: ``input_tokens`` includes ``input_tokens_details.cached_tokens``
  (and ``cache_write_tokens``); ``output_tokens`` includes
  ``output_tokens_details.reasoning_tokens``.
- OpenAI embeddings: only ``prompt_tokens``.
- Anthropic: ``input_tokens`` *excludes* the cache: the prompt is
  ``input_tokens + cache_creation_input_tokens + cache_read_input_tokens``;
  ``output_tokens`` includes ``output_tokens_details.thinking_tokens``.

The constructors read SDK objects through small structural protocols (so this
module imports neither SDK) or plain JSON mappings, and they read defensively:
a missing, ``None`` or negative count is 0, and a part larger than its total is
clipped to the total, because an SDK built without response validation hands
back whatever the server sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, cast, final

import attrs

from cycleguard._core._errors import UsageError
from cycleguard._core._models import StandardMetrics

__all__ = (
    "AnthropicOutputDetails",
    "AnthropicUsageLike",
    "ChatUsageLike",
    "CompletionDetailsLike",
    "EmbeddingsUsageLike",
    "PromptDetailsLike",
    "ResponsesUsageLike",
    "TokenUsage",
)


class PromptDetailsLike(Protocol):
    """OpenAI's ``PromptTokensDetails`` (chat) or ``InputTokensDetails`` (Responses)."""

    @property
    def cached_tokens(self) -> int | None:
        """Prompt tokens read from the cache (part of the prompt total)."""
        ...

    @property
    def cache_write_tokens(self) -> int | None:
        """Prompt tokens written to the cache (part of the prompt total)."""
        ...


class CompletionDetailsLike(Protocol):
    """OpenAI's ``CompletionTokensDetails`` (chat) or ``OutputTokensDetails`` (Responses)."""

    @property
    def reasoning_tokens(self) -> int | None:
        """Output tokens spent on reasoning (part of the output total)."""
        ...


class ChatUsageLike(Protocol):
    """``openai.types.CompletionUsage``: the usage of a chat completion."""

    @property
    def prompt_tokens(self) -> int:
        """Every prompt token, cached ones included."""
        ...

    @property
    def completion_tokens(self) -> int:
        """Every generated token, reasoning included."""
        ...

    @property
    def prompt_tokens_details(self) -> PromptDetailsLike | None:
        """The prompt's breakdown."""
        ...

    @property
    def completion_tokens_details(self) -> CompletionDetailsLike | None:
        """The completion's breakdown."""
        ...


class ResponsesUsageLike(Protocol):
    """``openai.types.responses.ResponseUsage``: the usage of a Responses API call."""

    @property
    def input_tokens(self) -> int:
        """Every input token, cached ones included."""
        ...

    @property
    def output_tokens(self) -> int:
        """Every output token, reasoning included."""
        ...

    @property
    def input_tokens_details(self) -> PromptDetailsLike | None:
        """The input's breakdown."""
        ...

    @property
    def output_tokens_details(self) -> CompletionDetailsLike | None:
        """The output's breakdown."""
        ...


class EmbeddingsUsageLike(Protocol):
    """``openai.types.create_embedding_response.Usage``."""

    @property
    def prompt_tokens(self) -> int:
        """The tokens of every input."""
        ...


class AnthropicOutputDetails(Protocol):
    """``anthropic.types.OutputTokensDetails``."""

    @property
    def thinking_tokens(self) -> int | None:
        """Output tokens spent on extended thinking (part of ``output_tokens``)."""
        ...


class AnthropicUsageLike(Protocol):
    """``anthropic.types.Usage`` or ``MessageDeltaUsage``.

    ``input_tokens`` is optional on ``MessageDeltaUsage`` (a stream's
    ``message_delta`` event); it is always set on ``Usage``.
    """

    @property
    def input_tokens(self) -> int | None:
        """Prompt tokens that were neither read from nor written to the cache."""
        ...

    @property
    def output_tokens(self) -> int:
        """Every output token; in a stream, the cumulative count so far."""
        ...

    @property
    def cache_creation_input_tokens(self) -> int | None:
        """Prompt tokens written to the cache."""
        ...

    @property
    def cache_read_input_tokens(self) -> int | None:
        """Prompt tokens read from the cache."""
        ...

    @property
    def output_tokens_details(self) -> AnthropicOutputDetails | None:
        """The output's breakdown."""
        ...


def _get(source: object, name: str) -> object:
    if source is None:
        return None
    if isinstance(source, Mapping):
        return cast("Mapping[str, object]", source).get(name)
    return getattr(source, name, None)


def _maybe_count(source: object, name: str) -> int | None:
    """The count ``source.name`` (or ``source[name]``) if it is a non-negative int."""
    value = _get(source, name)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _count(source: object, name: str) -> int:
    return _maybe_count(source, name) or 0


def _check_count(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"TokenUsage.{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise UsageError(f"TokenUsage.{name} must not be negative, got {value}")


@final
@attrs.frozen(kw_only=True)
class TokenUsage:
    """The tokens one model call used, in one normalised shape.

    ``input_tokens`` is the whole prompt; ``cached_input_tokens`` and
    ``cache_write_tokens`` are parts of it. ``output_tokens`` is everything
    generated; ``reasoning_tokens`` is part of it. Counts are non-negative ints
    and parts never exceed their totals (else :class:`UsageError`).

    >>> usage = TokenUsage(input_tokens=1_000, cached_input_tokens=400, output_tokens=200)
    >>> usage.total_tokens, usage.uncached_input_tokens
    (1200, 600)
    >>> (usage + TokenUsage(output_tokens=5)).output_tokens
    205
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def __attrs_post_init__(self) -> None:
        for field in attrs.fields(TokenUsage):
            _check_count(field.name, getattr(self, field.name))
        if self.cached_input_tokens + self.cache_write_tokens > self.input_tokens:
            raise UsageError(
                "cached_input_tokens + cache_write_tokens must not exceed input_tokens, got "
                f"{self.cached_input_tokens} + {self.cache_write_tokens} > {self.input_tokens}"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise UsageError(
                "reasoning_tokens must not exceed output_tokens, got "
                f"{self.reasoning_tokens} > {self.output_tokens}"
            )

    @property
    def total_tokens(self) -> int:
        """Input plus output: what a ``TOKENS`` budget is charged."""
        return self.input_tokens + self.output_tokens

    @property
    def uncached_input_tokens(self) -> int:
        """Input tokens billed at the plain input rate (neither cache read nor cache write)."""
        return self.input_tokens - self.cached_input_tokens - self.cache_write_tokens

    @property
    def plain_output_tokens(self) -> int:
        """Output tokens that are not reasoning tokens."""
        return self.output_tokens - self.reasoning_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        """Field-wise sum, for example over the attempts of one logical call."""
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )

    def metrics(self, *, model_version: str | None = None) -> StandardMetrics:
        """The protocol's standard metrics for a commit or event.

        >>> TokenUsage(input_tokens=12, output_tokens=3).metrics(model_version="m").tokens_input
        12
        """
        return StandardMetrics(
            tokens_input=self.input_tokens,
            tokens_output=self.output_tokens,
            model_version=model_version,
        )

    @classmethod
    def _clipped(
        cls, *, input_tokens: int, output_tokens: int, cached: int, cache_write: int, reasoning: int
    ) -> TokenUsage:
        cached = min(cached, input_tokens)
        return cls(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=cached,
            cache_write_tokens=min(cache_write, input_tokens - cached),
            reasoning_tokens=min(reasoning, output_tokens),
        )

    @classmethod
    def from_openai_chat(cls, usage: ChatUsageLike | Mapping[str, object]) -> TokenUsage:
        """From a chat completion's (or a stream's last chunk's) ``usage``.

        >>> TokenUsage.from_openai_chat({
        ...     "prompt_tokens": 1000, "completion_tokens": 200,
        ...     "prompt_tokens_details": {"cached_tokens": 400},
        ...     "completion_tokens_details": {"reasoning_tokens": 50},
        ... }) == TokenUsage(input_tokens=1000, cached_input_tokens=400,
        ...                  output_tokens=200, reasoning_tokens=50)
        True
        """
        prompt = _get(usage, "prompt_tokens_details")
        completion = _get(usage, "completion_tokens_details")
        return cls._clipped(
            input_tokens=_count(usage, "prompt_tokens"),
            output_tokens=_count(usage, "completion_tokens"),
            cached=_count(prompt, "cached_tokens"),
            cache_write=_count(prompt, "cache_write_tokens"),
            reasoning=_count(completion, "reasoning_tokens"),
        )

    @classmethod
    def from_openai_responses(cls, usage: ResponsesUsageLike | Mapping[str, object]) -> TokenUsage:
        """From a Responses API ``Response.usage`` (also on ``response.completed`` events).

        >>> TokenUsage.from_openai_responses({
        ...     "input_tokens": 20, "output_tokens": 9,
        ...     "input_tokens_details": {"cached_tokens": 5, "cache_write_tokens": 0},
        ...     "output_tokens_details": {"reasoning_tokens": 4},
        ... }).reasoning_tokens
        4
        """
        details_in = _get(usage, "input_tokens_details")
        details_out = _get(usage, "output_tokens_details")
        return cls._clipped(
            input_tokens=_count(usage, "input_tokens"),
            output_tokens=_count(usage, "output_tokens"),
            cached=_count(details_in, "cached_tokens"),
            cache_write=_count(details_in, "cache_write_tokens"),
            reasoning=_count(details_out, "reasoning_tokens"),
        )

    @classmethod
    def from_openai_embeddings(
        cls, usage: EmbeddingsUsageLike | Mapping[str, object]
    ) -> TokenUsage:
        """From an embeddings response's ``usage``: input only.

        >>> TokenUsage.from_openai_embeddings({"prompt_tokens": 8, "total_tokens": 8}).total_tokens
        8
        """
        return cls(input_tokens=_count(usage, "prompt_tokens"))

    @classmethod
    def from_anthropic(cls, usage: AnthropicUsageLike | Mapping[str, object]) -> TokenUsage:
        """From a ``Message.usage``; the cache counts are added to the input total.

        >>> TokenUsage.from_anthropic({
        ...     "input_tokens": 25, "output_tokens": 12,
        ...     "cache_creation_input_tokens": 10, "cache_read_input_tokens": 100,
        ... }) == TokenUsage(input_tokens=135, cached_input_tokens=100, cache_write_tokens=10,
        ...                  output_tokens=12)
        True
        """
        return cls.from_anthropic_stream(usage, None)

    @classmethod
    def from_anthropic_stream(
        cls,
        message_start: AnthropicUsageLike | Mapping[str, object],
        message_delta: AnthropicUsageLike | Mapping[str, object] | None,
    ) -> TokenUsage:
        """From a stream: ``message_start``'s ``message.usage`` and the last ``message_delta``'s.

        The delta's counts are cumulative: each one it carries replaces the start's
        (the SDK's own accumulator does the same), and the ones it omits keep the
        start's value. Pass ``None`` if no ``message_delta`` arrived.

        >>> start = {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 100}
        >>> TokenUsage.from_anthropic_stream(start, {"output_tokens": 12}).output_tokens
        12
        >>> TokenUsage.from_anthropic_stream(start, None).input_tokens
        125
        """

        def latest(name: str) -> int:
            later = _maybe_count(message_delta, name)
            return later if later is not None else _count(message_start, name)

        def latest_thinking() -> int:
            later = _maybe_count(_get(message_delta, "output_tokens_details"), "thinking_tokens")
            if later is not None:
                return later
            return _count(_get(message_start, "output_tokens_details"), "thinking_tokens")

        write = latest("cache_creation_input_tokens")
        read = latest("cache_read_input_tokens")
        output = latest("output_tokens")
        return cls._clipped(
            input_tokens=latest("input_tokens") + write + read,
            output_tokens=output,
            cached=read,
            cache_write=write,
            reasoning=latest_thinking(),
        )
