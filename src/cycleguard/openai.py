"""Guarded OpenAI calls: the official ``openai`` SDK (>= 3) on ``AsyncOpenAI``, budgeted.

:class:`GuardedOpenAI` wraps an ``AsyncOpenAI`` and a :class:`~cycleguard.CyclesClient`.
Each method takes the keyword arguments the SDK's ``create`` takes and:

1. reserves an estimate (the prompt counted offline for the model's encoding,
   message overhead included, plus the request's output ceiling, in the
   budget's unit) unless one is given;
2. applies the grant's caps to the request (output ceiling, ``tools``);
3. calls the SDK; a failure is a typed value keeping the SDK's exception;
4. commits the response's usage (cached and reasoning tokens honoured), as
   ``TOKENS`` or priced as ``USD_MICROCENTS``, with metrics and an
   ``actual_source``; streams commit when they end.

Chat completions (plain and streamed), the Responses API (plain and
streamed) and embeddings are covered. Every method returns a
``returns`` ``Result`` whose failure side is :data:`OpenAICallError`.

Example::

    from cycleguard import CyclesClient
    from cycleguard.openai import GuardedOpenAI

    async with CyclesClient.from_env() as cycles, openai.AsyncOpenAI() as client:
        guard = GuardedOpenAI(cycles, client)
        result = await guard.chat(
            model="gpt-4o-mini", max_completion_tokens=200,
            messages=[{"role": "user", "content": "Say hi."}],
        )
        if is_successful(result):
            print(result.unwrap().response.choices[0].message.content)

About the SDK's own retries: by default the SDK retries 429s, 5xx, timeouts and
dropped connections inside one call, and reports the usage of the last attempt
only; a retried timeout may have been billed and never counted. So
:class:`GuardedOpenAI` uses a copy of the client with ``max_retries=0``: every
failure comes back as a value (a rate limit with its ``retry_after``) and each
attempt you make is reserved and settled on its own. Pass ``max_retries=None``
to keep the client's own setting, or a number to choose one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeAlias, TypeVar, Unpack, cast, final

import attrs
import openai
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageFunctionToolCall,
)
from openai.types.chat.completion_create_params import CompletionCreateParamsBase
from openai.types.create_embedding_response import Usage as EmbeddingUsage
from openai.types.embedding_create_params import EmbeddingCreateParams
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseCustomToolCall,
    ResponseCustomToolCallInputDeltaEvent,
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionToolCall,
    ResponseIncompleteEvent,
    ResponseReasoningSummaryTextDeltaEvent,
    ResponseReasoningTextDeltaEvent,
    ResponseRefusalDeltaEvent,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
)
from openai.types.responses.response_create_params import ResponseCreateParamsBase

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
from cycleguard.metering import (
    TokenUsage,
    chat_prompt_tokens,
    embeddings_input_tokens,
    responses_prompt_tokens,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from contextlib import AbstractAsyncContextManager

    import httpx2
    from openai import AsyncOpenAI
    from openai.types import CreateEmbeddingResponse
    from returns.result import Result

    from cycleguard._client import CyclesClient

__all__ = (
    "GuardedOpenAI",
    "ChatParams",
    "ResponsesParams",
    "EmbeddingsParams",
    "RequestOptions",
    "OpenAIProviderError",
    "OpenAICallError",
    "OpenAIStream",
    # shared with cycleguard.anthropic
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

OpenAIProviderError: TypeAlias = (
    ProviderRateLimited[openai.RateLimitError]
    | ProviderConnectionFailed[openai.APIConnectionError]
    | ProviderStatusError[openai.APIStatusError]
    | ProviderStreamError[openai.APIError]
    | ProviderFailed[openai.APIError]
)
"""A failure the ``openai`` SDK reported, with its exception kept as ``error``."""

OpenAICallError: TypeAlias = LLMError[OpenAIProviderError]
"""Every failure of a guarded OpenAI call: Cycles, provider, caps, usage or metering."""

OpenAIStream: TypeAlias = GuardedStream[C, OpenAIProviderError]
"""A guarded OpenAI stream of ``C`` (``ChatCompletionChunk`` or ``ResponseStreamEvent``)."""


class RequestOptions(TypedDict, total=False):
    """The SDK's per-request options, accepted next to the endpoint's parameters."""

    extra_headers: Mapping[str, str] | None
    extra_query: Mapping[str, object] | None
    extra_body: object | None
    timeout: float | httpx2.Timeout | None


class ChatParams(CompletionCreateParamsBase, RequestOptions, total=False):
    """``chat.completions.create``'s keyword arguments, ``stream`` excepted."""


class ResponsesParams(ResponseCreateParamsBase, RequestOptions, total=False):
    """``responses.create``'s keyword arguments, ``stream`` excepted."""


class EmbeddingsParams(EmbeddingCreateParams, RequestOptions, total=False):
    """``embeddings.create``'s keyword arguments."""


# Errors --------------------------------------------------------------------------------


def _classify(error: Exception) -> OpenAIProviderError | None:
    """The provider error an SDK exception is; ``None`` for anything else (it propagates)."""
    if isinstance(error, openai.RateLimitError):
        return ProviderRateLimited(
            error=error,
            retry_after=retry_after_seconds(error.response.headers),
            request_id=error.request_id,
        )
    if isinstance(error, openai.APIConnectionError):
        return ProviderConnectionFailed(
            error=error, timed_out=isinstance(error, openai.APITimeoutError)
        )
    if isinstance(error, openai.APIStatusError):
        return ProviderStatusError(
            error=error,
            status=error.status_code,
            error_type=error.type,
            retry_after=retry_after_seconds(error.response.headers),
            request_id=error.request_id,
        )
    if isinstance(error, openai.APIResponseValidationError):
        return ProviderFailed(error=error)
    if isinstance(error, openai.APIError):
        # A plain APIError is an error the provider sent inside a 200 answer.
        return ProviderStreamError(
            error=error, error_type=error.type or error.code, message=error.message
        )
    return None


# Usage and text ------------------------------------------------------------------------


def _chat_usage(completion: ChatCompletion) -> TokenUsage | None:
    usage = completion.usage
    return None if usage is None else TokenUsage.from_openai_chat(usage)


def _chat_text(completion: ChatCompletion) -> str:
    parts: list[str] = []
    for choice in completion.choices:
        message = choice.message
        parts.extend(text for text in (message.content, message.refusal) if text)
        for call in message.tool_calls or ():
            if isinstance(call, ChatCompletionMessageFunctionToolCall):
                parts.extend((call.function.name, call.function.arguments))
            else:
                parts.extend((call.custom.name, call.custom.input))
    return "".join(parts)


def _responses_usage(response: Response) -> TokenUsage | None:
    usage = response.usage
    return None if usage is None else TokenUsage.from_openai_responses(usage)


def _responses_text(response: Response) -> str:
    parts = [response.output_text]
    for item in response.output:
        if isinstance(item, ResponseFunctionToolCall):
            parts.extend((item.name, item.arguments))
        elif isinstance(item, ResponseCustomToolCall):
            parts.extend((item.name, item.input))
    return "".join(parts)


def _embeddings_usage(response: CreateEmbeddingResponse) -> TokenUsage | None:
    # A compatible server may omit ``usage``; the SDK then builds no attribute.
    usage: object = getattr(response, "usage", None)
    return TokenUsage.from_openai_embeddings(usage) if isinstance(usage, EmbeddingUsage) else None


# Stream meters -------------------------------------------------------------------------


class _ChatMeter(Meter[ChatCompletionChunk, OpenAIProviderError]):
    __slots__ = ()

    def observe(self, item: ChatCompletionChunk) -> None:
        if self.model is None:
            self.model = item.model
        usage = item.usage
        if usage is not None:  # the last chunk (empty ``choices``) when include_usage is on
            self.usage = TokenUsage.from_openai_chat(usage)
        tally = self.tally
        for choice in item.choices:
            delta = choice.delta
            if delta.content:
                tally.add(delta.content)
            if delta.tool_calls:
                for call in delta.tool_calls:
                    function = call.function
                    if function is not None:
                        tally.add((function.name or "") + (function.arguments or ""))
            if delta.refusal:
                tally.add(delta.refusal)
            if choice.finish_reason is not None:
                self.complete = True

    def classify(self, error: Exception) -> OpenAIProviderError | None:
        return _classify(error)


_TEXT_EVENTS = (
    ResponseTextDeltaEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseCustomToolCallInputDeltaEvent,
    ResponseRefusalDeltaEvent,
    ResponseReasoningTextDeltaEvent,
    ResponseReasoningSummaryTextDeltaEvent,
)
_FINAL_EVENTS = (ResponseCompletedEvent, ResponseIncompleteEvent, ResponseFailedEvent)


class _ResponsesMeter(Meter[ResponseStreamEvent, OpenAIProviderError]):
    __slots__ = ("_request",)

    def __init__(self, stream: openai.AsyncStream[ResponseStreamEvent], tally: TextTally) -> None:
        super().__init__(stream, tally)
        self._request = stream.response.request

    def _failed(self, kind: str | None, message: str, body: object) -> None:
        # The SDK yields these events instead of raising: give the caller an exception
        # of the SDK's own type all the same.
        error = openai.APIError(message, self._request, body=body)
        self.failure = ProviderStreamError(error=error, error_type=kind, message=message)

    def observe(self, item: ResponseStreamEvent) -> None:
        if isinstance(item, _TEXT_EVENTS):
            self.tally.add(item.delta)
        elif isinstance(item, _FINAL_EVENTS):
            response = item.response
            self.model = response.model
            self.complete = True
            if response.usage is not None:
                self.usage = TokenUsage.from_openai_responses(response.usage)
            if isinstance(item, ResponseFailedEvent):
                problem = response.error
                if problem is None:
                    self._failed(None, "the response failed", None)
                else:
                    self._failed(problem.code, problem.message, problem.model_dump())
        elif isinstance(item, ResponseErrorEvent):
            self._failed(item.code, item.message, item.model_dump())
        elif isinstance(item, ResponseCreatedEvent):
            self.model = item.response.model

    def classify(self, error: Exception) -> OpenAIProviderError | None:
        return _classify(error)


# Endpoints -----------------------------------------------------------------------------


def _endpoint(
    name: str, kind: str, count: Callable[..., int], keys: tuple[str, ...]
) -> Endpoint[OpenAIProviderError]:
    return Endpoint(
        provider="openai",
        name=name,
        action_kind=kind,
        prompt_tokens=count,
        output_keys=keys,
        classify=_classify,
    )


_CHAT = _endpoint(
    "chat.completions",
    "llm.completion",
    chat_prompt_tokens,
    ("max_completion_tokens", "max_tokens"),
)
_RESPONSES = _endpoint(
    "responses", "llm.completion", responses_prompt_tokens, ("max_output_tokens",)
)
_EMBEDDINGS = _endpoint("embeddings", "llm.embedding", embeddings_input_tokens, ())


def _chat_stream_body(body: dict[str, object]) -> None:
    options = body.get("stream_options")
    given: Mapping[str, object] = (
        cast("Mapping[str, object]", options) if isinstance(options, Mapping) else {}
    )
    body["stream"] = True
    body["stream_options"] = {**given, "include_usage": True}


def _stream_body(body: dict[str, object]) -> None:
    body["stream"] = True


@final
class _Specs:
    """The endpoints, bound to one SDK client."""

    def __init__(self, client: AsyncOpenAI) -> None:
        chat = cast("Callable[..., Awaitable[ChatCompletion]]", client.chat.completions.create)
        chat_stream = cast(
            "Callable[..., Awaitable[openai.AsyncStream[ChatCompletionChunk]]]",
            client.chat.completions.create,
        )
        respond = cast("Callable[..., Awaitable[Response]]", client.responses.create)
        respond_stream = cast(
            "Callable[..., Awaitable[openai.AsyncStream[ResponseStreamEvent]]]",
            client.responses.create,
        )
        embed = cast("Callable[..., Awaitable[CreateEmbeddingResponse]]", client.embeddings.create)

        async def open_chat(
            body: dict[str, object], tally: TextTally
        ) -> Meter[ChatCompletionChunk, OpenAIProviderError]:
            return _ChatMeter(await chat_stream(**body), tally)

        async def open_responses(
            body: dict[str, object], tally: TextTally
        ) -> Meter[ResponseStreamEvent, OpenAIProviderError]:
            return _ResponsesMeter(await respond_stream(**body), tally)

        self.chat: CallSpec[ChatCompletion, OpenAIProviderError] = CallSpec(
            endpoint=_CHAT,
            send=lambda body: chat(**body),
            usage=_chat_usage,
            output_text=_chat_text,
            model_version=lambda completion: completion.model,
        )
        self.chat_stream: StreamSpec[ChatCompletionChunk, OpenAIProviderError] = StreamSpec(
            endpoint=_CHAT, prepare=_chat_stream_body, open=open_chat
        )
        self.responses: CallSpec[Response, OpenAIProviderError] = CallSpec(
            endpoint=_RESPONSES,
            send=lambda body: respond(**body),
            usage=_responses_usage,
            output_text=_responses_text,
            model_version=lambda response: response.model,
        )
        self.responses_stream: StreamSpec[ResponseStreamEvent, OpenAIProviderError] = StreamSpec(
            endpoint=_RESPONSES, prepare=_stream_body, open=open_responses
        )
        self.embeddings: CallSpec[CreateEmbeddingResponse, OpenAIProviderError] = CallSpec(
            endpoint=_EMBEDDINGS,
            send=lambda body: embed(**body),
            usage=_embeddings_usage,
            output_text=lambda _response: "",
            model_version=lambda response: response.model,
        )


def _no_stream(params: Mapping[str, object], method: str) -> Mapping[str, object]:
    if "stream" in params:
        raise UsageError(f"do not pass stream=: use {method} for a stream")
    return params


@final
class GuardedOpenAI:
    """An ``AsyncOpenAI`` whose every call is reserved, capped and settled in Cycles.

    Args:
        cycles: The Cycles client reservations go through.
        client: The SDK client calls go through. It is not closed here.
        max_retries: The SDK retries allowed per call: 0 by default (see the
            module notes); ``None`` keeps the client's own setting.
        **options: :class:`GuardSettings` keywords: ``unit``, ``pricing``,
            ``estimate``, ``subject``, ``default_output_tokens``,
            ``missing_usage``, ``stream_failure``, ...

    The methods take the SDK's keyword arguments (typed by :class:`ChatParams`,
    :class:`ResponsesParams`, :class:`EmbeddingsParams`) and return the SDK's
    own response types inside :class:`Guarded`.

    Raises:
        UsageError: invalid settings (see :class:`GuardSettings`).

    Example::

        guard = GuardedOpenAI(cycles, client, unit=Unit.USD_MICROCENTS, pricing=GenaiPrices())
        result = await guard.chat(model="gpt-4o-mini", messages=messages)
        if not is_successful(result):
            match result.failure():
                case ProviderRateLimited(retry_after=wait):
                    ...  # back off, retry
                case BudgetExceeded():
                    ...  # degrade
                case _:
                    ...
    """

    def __init__(
        self,
        cycles: CyclesClient,
        client: AsyncOpenAI,
        *,
        max_retries: int | None = 0,
        **options: Unpack[GuardOptions],
    ) -> None:
        self._cycles = cycles
        self._client = (
            client if max_retries is None else client.with_options(max_retries=max_retries)
        )
        self._settings = GuardSettings(**options)
        self._guard: Guard[OpenAIProviderError] = Guard(cycles, self._settings)
        self._specs = _Specs(self._client)

    def __repr__(self) -> str:
        return f"GuardedOpenAI({self._settings!r})"

    @property
    def settings(self) -> GuardSettings:
        """How calls are reserved, metered and settled."""
        return self._settings

    @property
    def client(self) -> AsyncOpenAI:
        """The SDK client calls go through (the retry-adjusted copy)."""
        return self._client

    def with_options(self, **options: Unpack[GuardOptions]) -> GuardedOpenAI:
        """A copy with some settings changed, for example a per-call ``estimate`` or ``subject``.

        Example::

            result = await guard.with_options(subject=Subject(agent="triage")).chat(**params)
        """
        derived = copy.copy(self)
        derived._settings = attrs.evolve(self._settings, **options)
        derived._guard = Guard(self._cycles, derived._settings)
        return derived

    async def chat(
        self, **params: Unpack[ChatParams]
    ) -> Result[Guarded[ChatCompletion], OpenAICallError]:
        """``chat.completions.create(**params)``, reserved, capped and committed.

        Raises:
            UsageError: ``stream`` was passed (use :meth:`open_chat_stream`).
        """
        return await self._guard.call(self._specs.chat, _no_stream(params, "open_chat_stream()"))

    def open_chat_stream(
        self, **params: Unpack[ChatParams]
    ) -> AbstractAsyncContextManager[Result[OpenAIStream[ChatCompletionChunk], OpenAICallError]]:
        """A streamed chat completion: ``async with`` it, then iterate the SDK's chunks.

        ``stream_options.include_usage`` is forced on, so the last chunk (with
        empty ``choices``) carries the usage that is committed when the stream
        ends. See :class:`GuardedStream` for the outcome.

        Example::

            async with guard.open_chat_stream(model="gpt-4o-mini", messages=messages) as opened:
                if not is_successful(opened):
                    return opened.failure()
                stream = opened.unwrap()
                async for chunk in stream:
                    for choice in chunk.choices:
                        print(choice.delta.content or "", end="")
            print(stream.outcome)

        Raises:
            UsageError: ``stream`` was passed.
        """
        return self._guard.open_stream(
            self._specs.chat_stream, _no_stream(params, "open_chat_stream()")
        )

    async def responses(
        self, **params: Unpack[ResponsesParams]
    ) -> Result[Guarded[Response], OpenAICallError]:
        """``responses.create(**params)``, reserved, capped and committed.

        Raises:
            UsageError: ``stream`` was passed (use :meth:`open_responses_stream`).
        """
        return await self._guard.call(
            self._specs.responses, _no_stream(params, "open_responses_stream()")
        )

    def open_responses_stream(
        self, **params: Unpack[ResponsesParams]
    ) -> AbstractAsyncContextManager[Result[OpenAIStream[ResponseStreamEvent], OpenAICallError]]:
        """A streamed Responses API call; the usage of ``response.completed`` is committed.

        An ``error`` or ``response.failed`` event (yielded to the caller like any
        other) makes the outcome a :class:`ProviderStreamError`.

        Raises:
            UsageError: ``stream`` was passed.
        """
        return self._guard.open_stream(
            self._specs.responses_stream, _no_stream(params, "open_responses_stream()")
        )

    async def embeddings(
        self, **params: Unpack[EmbeddingsParams]
    ) -> Result[Guarded[CreateEmbeddingResponse], OpenAICallError]:
        """``embeddings.create(**params)``: the input tokens are reserved and committed."""
        return await self._guard.call(self._specs.embeddings, params)
