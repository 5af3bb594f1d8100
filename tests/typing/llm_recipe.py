"""The documented way to branch on a guarded LLM call, checked by mypy and pyright.

Provider failures (keeping the SDK's exception type) and Cycles failures sit in
one union; a ``match`` over it is exhaustive, and each ``error`` attribute has
the SDK's precise exception type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, assert_never, assert_type

import anthropic
import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from returns.pipeline import is_successful

from cycleguard.errors import (
    BudgetClosed,
    BudgetExceeded,
    BudgetFrozen,
    ConnectionFailed,
    DebtOutstanding,
    Denied,
    Forbidden,
    IdempotencyMismatch,
    InternalError,
    InvalidRequest,
    InvalidResponse,
    LimitExceeded,
    MaxExtensionsExceeded,
    NotFound,
    OverdraftLimitExceeded,
    ReservationExpired,
    ReservationFinalized,
    TenantClosed,
    TimedOut,
    TransportUnavailable,
    Unauthorized,
    UnitMismatch,
    UnknownServerError,
    ValidationFailed,
)
from cycleguard.metering import PricingFailed, UnknownModel, UnsupportedUnit
from cycleguard.openai import (
    CapsForbidCall,
    Charge,
    Guarded,
    GuardedOpenAI,
    OpenAICallError,
    ProviderConnectionFailed,
    ProviderFailed,
    ProviderRateLimited,
    ProviderStatusError,
    ProviderStreamError,
    UsageMissing,
)

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

    from cycleguard.anthropic import AnthropicCallError, AnthropicProviderError


def advice(error: OpenAICallError) -> str:
    """Every variant handled: both checkers accept the match as exhaustive."""
    match error:
        case ProviderRateLimited(error=limited, retry_after=wait):
            assert_type(limited, openai.RateLimitError)
            return f"back off {wait}"
        case ProviderConnectionFailed(error=dropped):
            assert_type(dropped, openai.APIConnectionError)
            return "retry once"
        case ProviderStatusError(error=status_error, status=status):
            assert_type(status_error, openai.APIStatusError)
            return f"provider said {status}"
        case ProviderStreamError(error_type=kind):
            return f"stream failed: {kind}"
        case ProviderFailed():
            return "provider"
        case CapsForbidCall(reason=reason):
            return reason
        case UsageMissing() | UnknownModel() | PricingFailed() | UnsupportedUnit():
            return "metering"
        case BudgetExceeded() | DebtOutstanding() | BudgetFrozen() | BudgetClosed():
            return "degrade: smaller model or cached answer"
        case OverdraftLimitExceeded() | Denied() | LimitExceeded():
            return "defer"
        case ValidationFailed() | ConnectionFailed() | TimedOut() | InvalidResponse():
            return "cycles unreachable or misused"
        case (
            TransportUnavailable()
            | UnknownServerError()
            | InvalidRequest()
            | Unauthorized()
            | Forbidden()
            | NotFound()
            | ReservationExpired()
            | ReservationFinalized()
            | IdempotencyMismatch()
            | UnitMismatch()
            | MaxExtensionsExceeded()
            | TenantClosed()
            | InternalError()
        ):
            return "cycles"
        case _:
            assert_never(error)


def forgets_the_provider(error: OpenAICallError) -> None:
    """Leaving provider variants out is an error for both checkers (checked ignore)."""
    match error:  # type: ignore[exhaustive-match]
        case BudgetExceeded():
            pass


def anthropic_stream_errors(error: AnthropicProviderError) -> int | None:
    """Anthropic's mid-stream error keeps ``anthropic.APIStatusError`` (its status is 200)."""
    match error:
        case ProviderStreamError(error=raised):
            assert_type(raised, anthropic.APIStatusError)
            return raised.status_code
        case _:
            return None


def anthropic_is_a_union_too(error: AnthropicCallError) -> bool:
    """The Anthropic call union has the Cycles variants as well."""
    return isinstance(error, BudgetExceeded)


async def chat_recipe(guard: GuardedOpenAI, messages: list[ChatCompletionMessageParam]) -> str:
    """is_successful + unwrap / failure: the SDK's own types come back."""
    result = await guard.chat(model="gpt-4o-mini", messages=messages)
    if not is_successful(result):
        return advice(result.failure())
    guarded = result.unwrap()
    assert_type(guarded, Guarded[ChatCompletion])
    assert_type(guarded.charge, Charge)
    return guarded.response.choices[0].message.content or ""


async def stream_recipe(guard: GuardedOpenAI, messages: list[ChatCompletionMessageParam]) -> str:
    """The stream yields the SDK's chunks; its outcome is a Result over the same union."""
    async with guard.open_chat_stream(model="gpt-4o-mini", messages=messages) as opened:
        if not is_successful(opened):
            return advice(opened.failure())
        stream = opened.unwrap()
        async for chunk in stream:
            assert_type(chunk, ChatCompletionChunk)
    outcome = stream.outcome
    if outcome is None or is_successful(outcome):
        return "ok"
    return advice(outcome.failure())


async def typed_params(guard: GuardedOpenAI) -> None:
    """The SDK's keyword arguments are checked: a misspelt one is an error (checked ignore)."""
    await guard.chat(model="gpt-4o-mini", messages=[], max_tokenz=5)  # type: ignore[call-arg]
