"""Guarded Anthropic calls: the official ``anthropic`` SDK's ``messages.create``, budgeted.

:class:`GuardedAnthropic` does for ``AsyncAnthropic`` what
:class:`~cycleguard.openai.GuardedOpenAI` does for OpenAI, with the same
settings, caps, units, pricing, metrics and error values:

- the estimate is the prompt (system, messages, tools) counted offline, an
  approximation since Anthropic publishes no tokenizer, plus ``max_tokens``;
- caps lower ``max_tokens`` and filter ``tools`` by name;
- the usage committed counts the cache: input is ``input_tokens +
  cache_creation_input_tokens + cache_read_input_tokens``; a USD estimate
  prices the prompt as cache writes when the request uses ``cache_control``;
- a stream's input comes from ``message_start`` and its cumulative output from
  the last ``message_delta``; an ``event: error`` inside the HTTP 200 stream is
  a :class:`ProviderStreamError` classified by its ``error_type``
  (``overloaded_error``, ...), and a dropped stream (which the SDK lets through
  as a raw ``httpx2`` error) becomes ``anthropic.APIConnectionError`` (or
  ``APITimeoutError``) with the ``httpx2`` error as its ``__cause__``.

The SDK's own retries are off by default for the reasons given in
:mod:`cycleguard.openai`; pass ``max_retries=None`` to keep the client's.

Example::

    async with CyclesClient.from_env() as cycles, anthropic.AsyncAnthropic() as client:
        guard = GuardedAnthropic(cycles, client)
        result = await guard.messages(
            model="claude-haiku-4-5", max_tokens=300,
            messages=[{"role": "user", "content": "Say hi."}],
        )
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, TypeAlias, TypeVar, Unpack, cast, final

import anthropic
import attrs
import httpx2
from anthropic.types import (
    InputJSONDelta,
    Message,
    RawContentBlockDeltaEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStreamEvent,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
    Usage,
)
from anthropic.types.message_create_params import MessageCreateParamsBase

# The SDK's TypedDicts come from typing_extensions; subclasses must share their metaclass.
from typing_extensions import TypedDict

from cycleguard._core._errors import UsageError
from cycleguard._llm import (
    ActualSource,
    CallSpec,
    CapsForbidCall,
    Charge,
    Endpoint,
    Guard,
    Guarded,
    GuardedStream,
    GuardOptions,
    GuardSettings,
    LLMError,
    Meter,
    MissingUsage,
    ProviderConnectionFailed,
    ProviderFailed,
    ProviderRateLimited,
    ProviderStatusError,
    ProviderStreamError,
    StreamFailure,
    StreamSpec,
    TextTally,
    UsageMissing,
    is_retryable_provider_error,
    retry_after_seconds,
)
from cycleguard.metering import TokenUsage, anthropic_prompt_tokens

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from contextlib import AbstractAsyncContextManager

    from anthropic import AsyncAnthropic
    from anthropic.types import MessageDeltaUsage
    from returns.result import Result

    from cycleguard._client import CyclesClient

__all__ = (
    "GuardedAnthropic",
    "MessageParams",
    "RequestOptions",
    "AnthropicProviderError",
    "AnthropicCallError",
    "AnthropicStream",
    # shared with cycleguard.openai
    "Guarded",
    "Charge",
    "GuardedStream",
    "GuardSettings",
    "GuardOptions",
    "MissingUsage",
    "StreamFailure",
    "ActualSource",
    "CapsForbidCall",
    "UsageMissing",
    "ProviderRateLimited",
    "ProviderConnectionFailed",
    "ProviderStatusError",
    "ProviderStreamError",
    "ProviderFailed",
    "LLMError",
    "is_retryable_provider_error",
)

C = TypeVar("C")

AnthropicProviderError: TypeAlias = (
    ProviderRateLimited[anthropic.RateLimitError]
    | ProviderConnectionFailed[anthropic.APIConnectionError]
    | ProviderStatusError[anthropic.APIStatusError]
    | ProviderStreamError[anthropic.APIStatusError]
    | ProviderFailed[anthropic.APIError]
)
"""A failure the ``anthropic`` SDK reported, with its exception kept as ``error``."""

AnthropicCallError: TypeAlias = LLMError[AnthropicProviderError]
"""Every failure of a guarded Anthropic call: Cycles, provider, caps, usage or metering."""

AnthropicStream: TypeAlias = GuardedStream[C, AnthropicProviderError]
"""A guarded Anthropic stream of ``C`` (``RawMessageStreamEvent``)."""


class RequestOptions(TypedDict, total=False):
    """The SDK's per-request options, accepted next to the endpoint's parameters."""

    extra_headers: Mapping[str, str] | None
    extra_query: Mapping[str, object] | None
    extra_body: object | None
    timeout: float | httpx2.Timeout | None


class MessageParams(MessageCreateParamsBase, RequestOptions, total=False):
    """``messages.create``'s keyword arguments, ``stream`` excepted."""


# Errors --------------------------------------------------------------------------------


def _classify(error: Exception) -> AnthropicProviderError | None:
    """The provider error an SDK exception is; ``None`` for anything else (it propagates)."""
    if isinstance(error, anthropic.RateLimitError):
        return ProviderRateLimited(
            error=error,
            retry_after=retry_after_seconds(error.response.headers),
            request_id=error.request_id,
        )
    if isinstance(error, anthropic.APIConnectionError):
        return ProviderConnectionFailed(
            error=error, timed_out=isinstance(error, anthropic.APITimeoutError)
        )
    if isinstance(error, anthropic.APIStatusError):
        if error.status_code < 400:
            # ``event: error`` inside a 200 stream: the status says nothing, the type does.
            return ProviderStreamError(
                error=error,
                error_type=error.type,
                message=error.api_message or error.message,
            )
        return ProviderStatusError(
            error=error,
            status=error.status_code,
            error_type=error.type,
            retry_after=retry_after_seconds(error.response.headers),
            request_id=error.request_id,
        )
    if isinstance(error, anthropic.APIError):
        return ProviderFailed(error=error)
    return None


# Usage and text ------------------------------------------------------------------------


def _message_usage(message: Message) -> TokenUsage | None:
    # A compatible server may omit ``usage``; the SDK then builds no attribute.
    usage: object = getattr(message, "usage", None)
    return TokenUsage.from_anthropic(usage) if isinstance(usage, Usage) else None


def _message_text(message: Message) -> str:
    parts: list[str] = []
    for block in message.content:
        if isinstance(block, TextBlock):
            parts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            parts.extend((block.name, json.dumps(block.input, separators=(",", ":"))))
        elif isinstance(block, ThinkingBlock):
            parts.append(block.thinking)
    return "".join(parts)


def _uses_cache(value: object, depth: int = 0) -> bool:
    """Whether the request marks anything with ``cache_control`` (cache writes cost more)."""
    if depth > 6:
        return False
    if isinstance(value, dict):
        fields = cast("dict[str, object]", value)
        return "cache_control" in fields or any(
            _uses_cache(item, depth + 1) for item in fields.values()
        )
    if isinstance(value, list | tuple):
        return any(_uses_cache(item, depth + 1) for item in cast("list[object]", value))
    return False


# Stream meter --------------------------------------------------------------------------


class _MessageMeter(Meter[RawMessageStreamEvent, AnthropicProviderError]):
    __slots__ = ("_delta", "_request", "_start")

    def __init__(
        self, stream: anthropic.AsyncStream[RawMessageStreamEvent], tally: TextTally
    ) -> None:
        super().__init__(stream, tally)
        self._request = stream.response.request
        self._start: Usage | None = None
        self._delta: MessageDeltaUsage | None = None

    def observe(self, item: RawMessageStreamEvent) -> None:
        if isinstance(item, RawContentBlockDeltaEvent):
            delta = item.delta
            if isinstance(delta, TextDelta):
                self.tally.add(delta.text)
            elif isinstance(delta, InputJSONDelta):
                self.tally.add(delta.partial_json)
            elif isinstance(delta, ThinkingDelta):
                self.tally.add(delta.thinking)
        elif isinstance(item, RawMessageDeltaEvent):
            self._delta = item.usage
            start: Usage | dict[str, object] = {} if self._start is None else self._start
            self.usage = TokenUsage.from_anthropic_stream(start, item.usage)
            self.complete = True
        elif isinstance(item, RawMessageStartEvent):
            self._start = item.message.usage
            self.model = item.message.model

    def provisional(self, output_tokens: int) -> TokenUsage | None:
        # ``message_start`` already reported the prompt, cache counts included.
        if self._start is None:
            return None
        return TokenUsage.from_anthropic_stream(self._start, {"output_tokens": output_tokens})

    def classify(self, error: Exception) -> AnthropicProviderError | None:
        # Unlike a request, the SDK's stream lets httpx2's transport errors through.
        if isinstance(error, httpx2.TimeoutException):
            wrapped: Exception = anthropic.APITimeoutError(request=self._request)
            wrapped.__cause__ = error
            return _classify(wrapped)
        if isinstance(error, httpx2.TransportError):
            wrapped = anthropic.APIConnectionError(request=self._request)
            wrapped.__cause__ = error
            return _classify(wrapped)
        return _classify(error)


# Endpoint ------------------------------------------------------------------------------

_MESSAGES: Endpoint[AnthropicProviderError] = Endpoint(
    provider="anthropic",
    name="messages",
    action_kind="llm.completion",
    prompt_tokens=anthropic_prompt_tokens,
    output_keys=("max_tokens",),
    classify=_classify,
    cache_writes=_uses_cache,
)


def _stream_body(body: dict[str, object]) -> None:
    body["stream"] = True


@final
class _Specs:
    """The endpoint, bound to one SDK client."""

    def __init__(self, client: AsyncAnthropic) -> None:
        create = cast("Callable[..., Awaitable[Message]]", client.messages.create)
        create_stream = cast(
            "Callable[..., Awaitable[anthropic.AsyncStream[RawMessageStreamEvent]]]",
            client.messages.create,
        )

        async def open_messages(
            body: dict[str, object], tally: TextTally
        ) -> Meter[RawMessageStreamEvent, AnthropicProviderError]:
            return _MessageMeter(await create_stream(**body), tally)

        self.messages: CallSpec[Message, AnthropicProviderError] = CallSpec(
            endpoint=_MESSAGES,
            send=lambda body: create(**body),
            usage=_message_usage,
            output_text=_message_text,
            model_version=lambda message: message.model,
        )
        self.messages_stream: StreamSpec[RawMessageStreamEvent, AnthropicProviderError] = (
            StreamSpec(endpoint=_MESSAGES, prepare=_stream_body, open=open_messages)
        )


def _no_stream(params: Mapping[str, object]) -> Mapping[str, object]:
    if "stream" in params:
        raise UsageError("do not pass stream=: use open_message_stream() for a stream")
    return params


@final
class GuardedAnthropic:
    """An ``AsyncAnthropic`` whose every message is reserved, capped and settled in Cycles.

    Args:
        cycles: The Cycles client reservations go through.
        client: The SDK client calls go through. It is not closed here.
        max_retries: The SDK retries allowed per call: 0 by default; ``None``
            keeps the client's own setting.
        **options: :class:`GuardSettings` keywords (``unit``, ``pricing``,
            ``estimate``, ``subject``, ``missing_usage``, ...).

    Raises:
        UsageError: invalid settings (see :class:`GuardSettings`).

    Example::

        guard = GuardedAnthropic(cycles, client)
        async with guard.open_message_stream(model="claude-haiku-4-5", max_tokens=300,
                                             messages=messages) as opened:
            stream = opened.unwrap()
            async for event in stream:
                ...
        match stream.outcome:
            ...
    """

    def __init__(
        self,
        cycles: CyclesClient,
        client: AsyncAnthropic,
        *,
        max_retries: int | None = 0,
        **options: Unpack[GuardOptions],
    ) -> None:
        self._cycles = cycles
        self._client = (
            client if max_retries is None else client.with_options(max_retries=max_retries)
        )
        self._settings = GuardSettings(**options)
        self._guard: Guard[AnthropicProviderError] = Guard(cycles, self._settings)
        self._specs = _Specs(self._client)

    def __repr__(self) -> str:
        return f"GuardedAnthropic({self._settings!r})"

    @property
    def settings(self) -> GuardSettings:
        """How calls are reserved, metered and settled."""
        return self._settings

    @property
    def client(self) -> AsyncAnthropic:
        """The SDK client calls go through (the retry-adjusted copy)."""
        return self._client

    def with_options(self, **options: Unpack[GuardOptions]) -> GuardedAnthropic:
        """A copy with some settings changed, for example a per-call ``estimate`` or ``subject``."""
        derived = copy.copy(self)
        derived._settings = attrs.evolve(self._settings, **options)
        derived._guard = Guard(self._cycles, derived._settings)
        return derived

    async def messages(
        self, **params: Unpack[MessageParams]
    ) -> Result[Guarded[Message], AnthropicCallError]:
        """``messages.create(**params)``, reserved, capped and committed.

        Raises:
            UsageError: ``stream`` was passed (use :meth:`open_message_stream`).
        """
        return await self._guard.call(self._specs.messages, _no_stream(params))

    def open_message_stream(
        self, **params: Unpack[MessageParams]
    ) -> AbstractAsyncContextManager[
        Result[AnthropicStream[RawMessageStreamEvent], AnthropicCallError]
    ]:
        """A streamed message: ``async with`` it, then iterate the SDK's events unchanged.

        The usage (``message_start`` input with cache counts, the last
        ``message_delta``'s cumulative output) is committed when the stream
        ends; see :class:`GuardedStream` for the outcome.

        Raises:
            UsageError: ``stream`` was passed.
        """
        return self._guard.open_stream(self._specs.messages_stream, _no_stream(params))
