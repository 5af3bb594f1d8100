"""What the LLM integrations share: caps, usage policies, provider errors, guarded streams.

:mod:`cycleguard.openai` and :mod:`cycleguard.anthropic` are thin: they say how
to count an endpoint's prompt, send it, read its usage and classify its SDK's
exceptions; everything else lives here, provider-neutral:

- the pure parts (a request's parameters rewritten by a grant's :class:`Caps`,
  ``Retry-After`` parsing, the commit's metadata and metrics), tested without
  an event loop;
- the value types a caller sees (:class:`Guarded`, :class:`Charge`,
  :class:`GuardedStream`, the local failures and the provider error variants);
- the engine (:class:`Guard`) that reserves, applies caps, calls, meters and
  settles through :func:`~cycleguard.open_reservation`.

No module here imports an SDK: provider errors are generic in the SDK's
exception type, and the provider modules supply the callables that touch it.
"""

from __future__ import annotations

import email.utils
import enum
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import (
    TYPE_CHECKING,
    Generic,
    Protocol,
    TypeAlias,
    TypedDict,
    TypeVar,
    cast,
    final,
)

import anyio
import anyio.to_thread
import attrs
from returns.pipeline import is_successful
from returns.result import Failure, Result, Success

from cycleguard._core._errors import CyclesError, UsageError
from cycleguard._core._json import JsonObject, JsonValue
from cycleguard._core._models import (
    Action,
    Amount,
    Caps,
    Decision,
    OveragePolicy,
    StandardMetrics,
    Subject,
    Unit,
)
from cycleguard._lease import AlreadyFinalized, Lease, open_reservation
from cycleguard._settlement import Committed, Pending, RecoveredViaEvent, Settlement
from cycleguard.metering import (
    MeteringError,
    Pricing,
    TextCounter,
    TokenCounter,
    TokenUsage,
    estimate_amount,
    usage_amount,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator
    from contextlib import AbstractAsyncContextManager

    from cycleguard._client import CyclesClient

__all__ = (
    "FOLD_CHARS",
    "ActualSource",
    "CallSpec",
    "CapsForbidCall",
    "Charge",
    "Endpoint",
    "Guard",
    "GuardOptions",
    "GuardSettings",
    "Guarded",
    "GuardedStream",
    "LLMError",
    "Meter",
    "MissingUsage",
    "ProviderConnectionFailed",
    "ProviderFailed",
    "ProviderRateLimited",
    "ProviderStatusError",
    "ProviderStreamError",
    "SdkStream",
    "StreamFailure",
    "StreamSpec",
    "TextTally",
    "UsageMissing",
    "apply_caps",
    "charge_metadata",
    "charge_metrics",
    "is_retryable_provider_error",
    "retry_after_seconds",
    "tool_name",
)

logger = logging.getLogger("cycleguard")

E = TypeVar("E", bound=Exception)
P = TypeVar("P")
T = TypeVar("T")
C = TypeVar("C")
C_co = TypeVar("C_co", covariant=True)

FOLD_CHARS = 65_536
"""Streamed text kept before it is counted and dropped: what bounds a stream's memory."""


# Policies ---------------------------------------------------------------------------


class MissingUsage(enum.Enum):
    """What to charge when a call completes but the provider reports no usage.

    Some OpenAI-compatible servers ignore ``stream_options.include_usage`` or
    omit ``usage``; a stream can also end cleanly before its usage arrives.

    - ``FAIL`` (the default): the reservation is released and the call returns
      :class:`UsageMissing`; nothing is charged, loudly.
    - ``LOCAL_COUNT``: the prompt and the output text received are counted
      with the offline tokenizer and charged, marked ``estimated``.
    - ``ESTIMATE``: the reserved estimate is charged, marked ``estimated``.
    """

    FAIL = "fail"
    LOCAL_COUNT = "local_count"
    ESTIMATE = "estimate"


class StreamFailure(enum.Enum):
    """What to do with the reservation when a stream fails before its usage arrived.

    The tokens already produced were spent, so by default
    (``CHARGE_RECEIVED``) the prompt plus the text received is counted locally
    and committed, marked ``estimated`` and ``partial``. ``RELEASE`` returns
    the whole reservation instead. Either way the call's outcome is the
    provider's error. A stream the caller leaves early (``break``, an
    exception, a cancellation) is always charged what it received.
    """

    CHARGE_RECEIVED = "charge_received"
    RELEASE = "release"


class ActualSource(enum.Enum):
    """Where a committed amount came from; recorded as the commit's ``actual_source``."""

    USAGE = "usage"
    """The provider's reported usage."""
    LOCAL_COUNT = "local_count"
    """The offline tokenizer's count of the prompt and the output received."""
    ESTIMATE = "estimate"
    """The reservation's estimate."""


# Local failures ------------------------------------------------------------------------


@final
@attrs.frozen(kw_only=True)
class CapsForbidCall:
    """The grant's caps leave nothing the request may do; it was not sent.

    For example ``caps.max_tokens`` is 0, or ``tool_choice`` demands a tool the
    caps forbid. The reservation was released.

    >>> CapsForbidCall(reason="caps.max_tokens is 0", caps=Caps(max_tokens=0)).reason
    'caps.max_tokens is 0'
    """

    reason: str
    caps: Caps


@final
@attrs.frozen(kw_only=True)
class UsageMissing:
    """The provider reported no usage and :attr:`MissingUsage.FAIL` is in force.

    The reservation was released. ``partial`` says the stream also ended before
    the provider said it was complete (a truncated stream).

    >>> UsageMissing(endpoint="chat.completions", model="gpt-4o-mini").message
    'chat.completions on gpt-4o-mini reported no usage'
    """

    endpoint: str
    model: str
    partial: bool = False

    @property
    def message(self) -> str:
        """One line for logs."""
        return f"{self.endpoint} on {self.model} reported no usage"


# Provider errors ----------------------------------------------------------------------


@final
@attrs.frozen(kw_only=True)
class ProviderRateLimited(Generic[E]):
    """The provider answered 429. ``error`` is the SDK's own exception, unchanged.

    ``retry_after`` is the wait the provider asked for, in seconds
    (``retry-after-ms``, else ``retry-after``), if it said.
    """

    error: E
    retry_after: float | None = None
    request_id: str | None = None


@final
@attrs.frozen(kw_only=True)
class ProviderConnectionFailed(Generic[E]):
    """No complete answer: the connection failed, dropped or timed out (``timed_out``).

    The provider may have done (and billed) the work.
    """

    error: E
    timed_out: bool = False


@final
@attrs.frozen(kw_only=True)
class ProviderStatusError(Generic[E]):
    """The provider answered an HTTP error status other than 429.

    ``error_type`` is the provider's error type (``invalid_request_error``,
    ``overloaded_error``, ...), ``retry_after`` its retry hint in seconds.
    """

    error: E
    status: int
    error_type: str | None = None
    retry_after: float | None = None
    request_id: str | None = None


@final
@attrs.frozen(kw_only=True)
class ProviderStreamError(Generic[E]):
    """An error event inside an answer that had started well (HTTP 200).

    OpenAI chat streams send ``{"error": ...}``, the Responses API an ``error``
    or ``response.failed`` event, Anthropic ``event: error``. It is classified
    by ``error_type`` (``overloaded_error``, ``server_error``, ...), never by
    its status. ``error`` is the SDK's exception (the one it raised, or one made
    from the event when the SDK yields the event instead of raising).
    """

    error: E
    error_type: str | None
    message: str


@final
@attrs.frozen(kw_only=True)
class ProviderFailed(Generic[E]):
    """Any other failure the SDK reported (for example a response that failed validation)."""

    error: E


_RETRYABLE_STATUS = frozenset({408, 409, 429})
_RETRYABLE_TYPES = frozenset(
    {"overloaded_error", "api_error", "server_error", "rate_limit_error", "timeout_error"}
)


def is_retryable_provider_error(error: object) -> bool:
    """Whether sending the same request again may succeed (rate limit, outage, dropped link).

    >>> is_retryable_provider_error(ProviderStatusError(error=Exception(), status=503))
    True
    >>> is_retryable_provider_error(ProviderStatusError(error=Exception(), status=400))
    False
    >>> is_retryable_provider_error(
    ...     ProviderStreamError(error=Exception(), error_type="overloaded_error", message="busy"))
    True
    """
    match error:
        case ProviderRateLimited() | ProviderConnectionFailed():
            return True
        case ProviderStatusError(status=status):
            return status >= 500 or status in _RETRYABLE_STATUS
        case ProviderStreamError(error_type=kind):
            return kind in _RETRYABLE_TYPES
        case _:
            return False


def _header_map(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The wait a response asks for: ``retry-after-ms``, else ``retry-after`` (seconds or date).

    ``now`` (epoch seconds) is the reference for an HTTP date; the current time
    by default. Junk, negative or non-finite values give ``None``.

    >>> retry_after_seconds({"retry-after-ms": "50", "retry-after": "9"})
    0.05
    >>> retry_after_seconds({"Retry-After": "2"})
    2.0
    >>> retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0)
    10.0
    >>> retry_after_seconds({"retry-after": "soon"}) is None
    True
    """
    found = _header_map(headers)
    raw_ms = found.get("retry-after-ms")
    if raw_ms is not None:
        millis = _finite(raw_ms)
        if millis is not None and millis >= 0:
            return millis / 1000
    raw = found.get("retry-after")
    if raw is None:
        return None
    seconds = _finite(raw)
    if seconds is not None:
        return seconds if seconds >= 0 else None
    try:
        moment = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    reference = time.time() if now is None else now
    return max(0.0, moment.timestamp() - reference)


def _finite(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# Caps applied to a request -----------------------------------------------------------


def _is_sequence(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def _fields(value: object) -> Mapping[str, object] | None:
    return cast("Mapping[str, object]", value) if isinstance(value, Mapping) else None


def _as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def tool_name(tool: object) -> str | None:
    """The name a cap refers to for one entry of ``tools`` (or a forced ``tool_choice``).

    A function or custom tool's ``name`` (nested under ``function``/``custom``
    in Chat Completions); a hosted tool without a name (``{"type":
    "web_search"}``) is named by its ``type``.

    >>> tool_name({"type": "function", "function": {"name": "search"}})
    'search'
    >>> tool_name({"name": "search", "input_schema": {}}), tool_name({"type": "web_search"})
    ('search', 'web_search')
    """
    fields = _fields(tool)
    if fields is None:
        return None
    for nested in ("function", "custom"):
        inner = _fields(fields.get(nested))
        if inner is not None and isinstance(inner.get("name"), str):
            return cast("str", inner["name"])
    name = fields.get("name")
    if isinstance(name, str):
        return name
    kind = fields.get("type")
    return kind if isinstance(kind, str) else None


_CHOICE_MODES = frozenset({"auto", "none", "any", "required", "allowed_tools"})


def _forced_tool(choice: object) -> str | None:
    """The tool a ``tool_choice`` forces, if it names one."""
    fields = _fields(choice)
    if fields is None or fields.get("type") in _CHOICE_MODES:
        return None
    return tool_name(fields)


def _allowed_tools(choice: object) -> Mapping[str, object] | None:
    """The ``allowed_tools`` part of a ``tool_choice`` (chat nests it, Responses does not)."""
    fields = _fields(choice)
    if fields is None or fields.get("type") != "allowed_tools":
        return None
    nested = _fields(fields.get("allowed_tools"))
    return nested if nested is not None else fields


def _demands_tool(choice: object) -> bool:
    if choice == "required":
        return True
    fields = _fields(choice)
    if fields is None:
        return False
    if fields.get("type") == "any" or _forced_tool(fields) is not None:
        return True
    allowed = _allowed_tools(fields)
    return allowed is not None and allowed.get("mode") == "required"


def _kept(caps: Caps, tools: object) -> list[object]:
    return [
        tool for tool in cast("Sequence[object]", tools) if caps.allows_tool(tool_name(tool) or "")
    ]


def _filter_choice(body: dict[str, object], caps: Caps) -> CapsForbidCall | None:
    choice = body.get("tool_choice")
    forced = _forced_tool(choice)
    if forced is not None and not caps.allows_tool(forced):
        return CapsForbidCall(
            reason=f"tool_choice forces {forced!r}, which the caps forbid", caps=caps
        )
    allowed = _allowed_tools(choice)
    if allowed is None or not _is_sequence(allowed.get("tools")):
        return None
    kept = _kept(caps, allowed.get("tools"))
    if kept:
        rebuilt = {**allowed, "tools": kept}
        outer = cast("Mapping[str, object]", choice)
        body["tool_choice"] = (
            {**outer, "allowed_tools": rebuilt} if "allowed_tools" in outer else rebuilt
        )
    elif allowed.get("mode") == "required":
        return CapsForbidCall(
            reason="tool_choice requires one of its allowed tools; the caps forbid them all",
            caps=caps,
        )
    else:
        body["tool_choice"] = "none"
    return None


def _filter_tools(body: dict[str, object], caps: Caps) -> CapsForbidCall | None:
    if not caps.tool_allowlist and not caps.tool_denylist:
        return None
    refused = _filter_choice(body, caps)
    if refused is not None:
        return refused
    tools = body.get("tools")
    if not _is_sequence(tools):
        return None
    kept = _kept(caps, tools)
    if kept:
        body["tools"] = kept
        return None
    if _demands_tool(body.get("tool_choice")):
        return CapsForbidCall(
            reason="tool_choice requires a tool and the caps forbid every tool offered",
            caps=caps,
        )
    # The APIs refuse an empty tool list, and tool settings without tools.
    for key in ("tools", "tool_choice", "parallel_tool_calls"):
        body.pop(key, None)
    return None


def _cap_output(
    body: dict[str, object], caps: Caps, keys: tuple[str, ...]
) -> CapsForbidCall | None:
    cap = caps.max_tokens
    if cap is None or not keys:
        return None
    if cap <= 0:
        return CapsForbidCall(
            reason=f"caps.max_tokens is {cap}: no output may be generated", caps=caps
        )
    present = [key for key in keys if _as_int(body.get(key)) is not None]
    if present:
        for key in present:
            body[key] = min(cast("int", body[key]), cap)
        return None
    for key in keys:
        body.pop(key, None)  # None or an SDK "not given" sentinel
    body[keys[0]] = cap
    return None


def apply_caps(
    params: Mapping[str, object], caps: Caps | None, *, output_keys: tuple[str, ...]
) -> Result[dict[str, object], CapsForbidCall]:
    """The request's parameters with a grant's caps applied; ``params`` is not changed.

    - The output ceiling becomes ``min(requested, caps.max_tokens)`` for every
      key of ``output_keys`` the request sets; with none set, the first key is
      added with the cap. A cap of 0 (or less) is :class:`CapsForbidCall`.
    - ``tools`` keeps only what ``caps.allows_tool`` accepts (a non-empty
      allowlist wins over the denylist; names are case-sensitive, see
      :func:`tool_name`). If none is left, ``tools``, ``tool_choice`` and
      ``parallel_tool_calls`` are dropped, unless ``tool_choice`` demands a
      tool: that, or forcing a forbidden tool, is :class:`CapsForbidCall`.
    - ``max_steps_remaining`` and ``cooldown_ms`` are the caller's to honour.

    >>> caps = Caps(max_tokens=256, tool_denylist=("shell",))
    >>> params = {"max_completion_tokens": 800, "tools": [{"name": "search"}, {"name": "shell"}]}
    >>> apply_caps(params, caps, output_keys=("max_completion_tokens", "max_tokens")).unwrap()
    {'max_completion_tokens': 256, 'tools': [{'name': 'search'}]}
    >>> apply_caps({}, Caps(max_tokens=0), output_keys=("max_tokens",)).failure().reason
    'caps.max_tokens is 0: no output may be generated'
    """
    body = dict(params)
    if caps is None:
        return Success(body)
    refused = _cap_output(body, caps, output_keys) or _filter_tools(body, caps)
    return Failure(refused) if refused is not None else Success(body)


# What a commit records ------------------------------------------------------------------


def charge_metadata(source: ActualSource, *, partial: bool) -> JsonObject:
    """The commit's metadata: where the amount came from, and whether it is an estimate.

    >>> charge_metadata(ActualSource.USAGE, partial=False)
    {'actual_source': 'usage'}
    >>> charge_metadata(ActualSource.LOCAL_COUNT, partial=True)
    {'actual_source': 'local_count', 'estimated': True, 'partial': True}
    """
    metadata: dict[str, JsonValue] = {"actual_source": source.value}
    if source is not ActualSource.USAGE:
        metadata["estimated"] = True
    if partial:
        metadata["partial"] = True
    return metadata


def charge_metrics(
    usage: TokenUsage | None, *, latency_ms: int, model_version: str | None
) -> StandardMetrics:
    """The commit's standard metrics; cache and reasoning counts go to ``custom`` when non-zero.

    >>> usage = TokenUsage(input_tokens=100, cached_input_tokens=40, output_tokens=20)
    >>> metrics = charge_metrics(usage, latency_ms=12, model_version="gpt-4o-mini-2024-07-18")
    >>> metrics.tokens_input, metrics.tokens_output, metrics.custom
    (100, 20, {'cached_input_tokens': 40})
    """
    if usage is None:
        return StandardMetrics(latency_ms=latency_ms, model_version=model_version)
    details: JsonObject = {
        name: value
        for name, value in (
            ("cached_input_tokens", usage.cached_input_tokens),
            ("cache_write_tokens", usage.cache_write_tokens),
            ("reasoning_tokens", usage.reasoning_tokens),
        )
        if value
    }
    return StandardMetrics(
        tokens_input=usage.input_tokens,
        tokens_output=usage.output_tokens,
        latency_ms=latency_ms,
        model_version=model_version,
        custom=details or None,
    )


# Settings ------------------------------------------------------------------------------


def _check_settings(settings: GuardSettings) -> None:
    if settings.unit not in {Unit.TOKENS, Unit.USD_MICROCENTS}:
        raise UsageError(
            f"LLM calls are metered in TOKENS or USD_MICROCENTS, not {settings.unit.value}"
        )
    if settings.unit is Unit.USD_MICROCENTS and settings.pricing is None:
        raise UsageError("a USD_MICROCENTS budget needs pricing= (for example GenaiPrices())")
    if settings.estimate is not None and settings.estimate.unit is not settings.unit:
        raise UsageError(
            f"the estimate is in {settings.estimate.unit.value} but the unit is "
            f"{settings.unit.value}"
        )
    if settings.default_output_tokens < 0:
        raise UsageError("default_output_tokens must not be negative")
    if settings.cleanup_timeout <= 0:
        raise UsageError("cleanup_timeout must be positive")


@final
@attrs.frozen(kw_only=True)
class GuardSettings:
    """How a guarded provider client reserves, meters and settles. Set through keywords.

    Attributes:
        unit: The budget's unit: ``TOKENS`` (the default) or ``USD_MICROCENTS``.
        pricing: Turns usage into ``USD_MICROCENTS``; required for that unit.
        estimate: The amount to reserve; ``None`` (the default) derives it from
            the request: its prompt tokens counted offline plus its output
            ceiling (or ``default_output_tokens``), priced for a USD budget.
        subject: Who is spending; ``None`` uses the Cycles client's default.
        action: Overrides the action reserved for (by default
            ``Action("llm.completion", "<provider>:<model>")``, or
            ``llm.embedding`` for embeddings).
        default_output_tokens: The output ceiling assumed by the estimate when
            the request sets none (the request itself is not changed).
        missing_usage: See :class:`MissingUsage`.
        stream_failure: See :class:`StreamFailure`.
        ttl_ms, overage_policy, metadata: Passed to the reservation.
        settlement: Settles commits; the Cycles client's own by default.
        cleanup_timeout: Seconds allowed for closing a stream and releasing on
            the way out of a cancelled or failed block.

    Raises:
        UsageError: a unit other than TOKENS or USD_MICROCENTS, USD without
            pricing, an estimate in another unit, or a negative bound.
    """

    unit: Unit = Unit.TOKENS
    pricing: Pricing | None = None
    estimate: Amount | None = None
    subject: Subject | None = None
    action: Action | None = None
    default_output_tokens: int = 4_096
    missing_usage: MissingUsage = MissingUsage.FAIL
    stream_failure: StreamFailure = StreamFailure.CHARGE_RECEIVED
    ttl_ms: int | None = None
    overage_policy: OveragePolicy | None = None
    metadata: JsonObject | None = None
    settlement: Settlement | None = None
    cleanup_timeout: float = 5.0

    def __attrs_post_init__(self) -> None:
        _check_settings(self)


class GuardOptions(TypedDict, total=False):
    """The keywords of :class:`GuardSettings`, for constructors and ``with_options``."""

    unit: Unit
    pricing: Pricing | None
    estimate: Amount | None
    subject: Subject | None
    action: Action | None
    default_output_tokens: int
    missing_usage: MissingUsage
    stream_failure: StreamFailure
    ttl_ms: int | None
    overage_policy: OveragePolicy | None
    metadata: JsonObject | None
    settlement: Settlement | None
    cleanup_timeout: float


# Results -------------------------------------------------------------------------------

Settled: TypeAlias = Committed | RecoveredViaEvent | Pending


@final
@attrs.frozen(kw_only=True)
class Charge:
    """What a guarded call was charged and how the amount was found.

    Attributes:
        actual: The committed amount, in the budget's unit.
        source: Where it came from (also the commit's ``actual_source``).
        usage: The tokens counted: the provider's usage, or the local count;
            ``None`` when nothing was counted (``MissingUsage.ESTIMATE``).
        partial: The stream ended before the provider reported usage.
        metrics: The metrics sent with the commit.
        settlement: ``Committed``, ``RecoveredViaEvent``, or ``Pending`` (journaled,
            settled later).
    """

    actual: Amount
    source: ActualSource
    usage: TokenUsage | None
    partial: bool
    metrics: StandardMetrics
    settlement: Settled

    @property
    def estimated(self) -> bool:
        """Whether the amount is not the provider's own usage."""
        return self.source is not ActualSource.USAGE


@final
@attrs.frozen(kw_only=True)
class Guarded(Generic[T]):
    """A provider's response, and what the budget was charged for it.

    ``response`` is exactly what the SDK returned (``ChatCompletion``,
    ``Response``, ``Message``, ...). ``caps`` are the grant's limits (``None``
    on a plain ``ALLOW``): they were applied to the request; read
    :attr:`cooldown_ms` and :attr:`max_steps_remaining` to pace what comes next.
    ``reserved`` is the estimate that was held while the call ran; compare it
    with ``charge.actual`` to see how good the estimate was.
    """

    response: T
    charge: Charge
    decision: Decision
    caps: Caps | None
    reservation_id: str
    reserved: Amount

    @property
    def cooldown_ms(self) -> int | None:
        """Milliseconds the grant asks to wait before the next action, if capped."""
        return None if self.caps is None else self.caps.cooldown_ms

    @property
    def max_steps_remaining(self) -> int | None:
        """Steps the grant still allows, if capped."""
        return None if self.caps is None else self.caps.max_steps_remaining


LLMError: TypeAlias = CyclesError | P | CapsForbidCall | UsageMissing | MeteringError
"""Every failure of a guarded LLM call: Cycles, provider (``P``), caps, usage, metering."""


# Provider hooks -------------------------------------------------------------------------


@final
@attrs.frozen(kw_only=True)
class Endpoint(Generic[P]):
    """One provider endpoint, as the engine sees it (filled in by a provider module)."""

    provider: str
    name: str
    action_kind: str
    prompt_tokens: Callable[[TextCounter, Mapping[str, object]], int]
    output_keys: tuple[str, ...]
    classify: Callable[[Exception], P | None]
    cache_writes: Callable[[Mapping[str, object]], bool] = attrs.field(
        default=lambda _params: False
    )


@final
@attrs.frozen(kw_only=True)
class CallSpec(Generic[T, P]):
    """A non-streamed endpoint: send, then read the response's usage."""

    endpoint: Endpoint[P]
    send: Callable[[dict[str, object]], Awaitable[T]]
    usage: Callable[[T], TokenUsage | None]
    output_text: Callable[[T], str]
    model_version: Callable[[T], str | None]


class SdkStream(Protocol[C_co]):
    """What the engine needs of an SDK's async stream (``openai.AsyncStream`` and kin)."""

    async def __anext__(self) -> C_co:
        """The next chunk or event; ``StopAsyncIteration`` at the end."""
        ...

    async def close(self) -> None:
        """Close the response and release the connection."""
        ...


@final
class TextTally:
    """Output text received so far, counted in batches so memory stays bounded.

    Text is kept until :data:`FOLD_CHARS` characters have gathered, then
    counted in a worker thread and dropped. Token boundaries at a fold may
    differ from a count of the whole text by a token; a local count is an
    estimate anyway.
    """

    __slots__ = ("_counted", "_counter", "_parts", "chars")

    def __init__(self, counter: TextCounter) -> None:
        self._counter = counter
        self._parts: list[str] = []
        self.chars: int = 0
        self._counted = 0

    def add(self, text: str) -> None:
        """Keep ``text`` for counting."""
        self._parts.append(text)
        self.chars += len(text)

    async def fold(self) -> None:
        """Count what is kept (in a worker thread) and drop it."""
        if not self._parts:
            return
        text = "".join(self._parts)
        self._parts.clear()
        self.chars = 0
        self._counted += await anyio.to_thread.run_sync(self._counter.count, text)

    async def total(self) -> int:
        """Every token received so far."""
        await self.fold()
        return self._counted


class Meter(Generic[C, P]):
    """Watches one SDK stream: its usage, the text it carried, how it ended.

    A provider module subclasses it per endpoint: :meth:`observe` reads each
    chunk (cheaply: it runs on every one), :meth:`classify` turns an exception
    the SDK stream raised into a provider error.
    """

    __slots__ = ("complete", "failure", "model", "stream", "tally", "usage")

    def __init__(self, stream: SdkStream[C], tally: TextTally) -> None:
        self.stream: SdkStream[C] = stream
        self.tally: TextTally = tally
        self.usage: TokenUsage | None = None
        self.model: str | None = None
        self.complete: bool = False
        self.failure: P | None = None

    def observe(self, item: C) -> None:
        """Read one chunk; set ``usage``, ``model``, ``complete`` or ``failure`` as it says."""
        raise NotImplementedError

    def classify(self, error: Exception) -> P | None:
        """The provider error ``error`` is, or ``None`` if it is not one (it propagates)."""
        raise NotImplementedError

    def provisional(self, output_tokens: int) -> TokenUsage | None:
        """Usage for a stream that stopped early, if the provider reported part of it."""
        del output_tokens
        return None


@final
@attrs.frozen(kw_only=True)
class StreamSpec(Generic[C, P]):
    """A streamed endpoint: make the request a stream, open it, meter it."""

    endpoint: Endpoint[P]
    prepare: Callable[[dict[str, object]], None]
    open: Callable[[dict[str, object], TextTally], Awaitable[Meter[C, P]]]


# The engine ----------------------------------------------------------------------------


def _materialized(params: Mapping[str, object]) -> dict[str, object]:
    """A copy whose one-shot iterators (a generator of messages, ...) are lists.

    The parameters are read twice: counted for the estimate, then sent.
    """
    return {
        key: list(cast("Iterator[object]", value)) if isinstance(value, Iterator) else value
        for key, value in params.items()
    }


def _ceiling(body: Mapping[str, object], keys: tuple[str, ...], default: int) -> int:
    if not keys:
        return 0
    for key in keys:
        value = _as_int(body.get(key))
        if value is not None and value >= 0:
            return value
    return default


def _elapsed_ms(started: float) -> int:
    return max(0, round((time.monotonic() - started) * 1000))


@final
@attrs.frozen(kw_only=True)
class _Plan(Generic[P]):
    endpoint: Endpoint[P]
    body: dict[str, object]
    model: str
    action: Action
    counter: TokenCounter
    estimate: Amount
    prompt_tokens: int | None


@final
class _Call(Generic[P]):
    """One reserved call: what it needs to charge or release its lease."""

    def __init__(self, plan: _Plan[P], settings: GuardSettings, lease: Lease) -> None:
        self.plan = plan
        self.settings = settings
        self.lease = lease
        self._prompt = plan.prompt_tokens

    async def prompt_tokens(self) -> int:
        if self._prompt is None:
            self._prompt = await anyio.to_thread.run_sync(
                self.plan.endpoint.prompt_tokens, self.plan.counter, self.plan.body
            )
        return self._prompt

    async def release(self, reason: str) -> None:
        released = await self.lease.release(reason)
        if not is_successful(released):
            logger.warning(
                "could not release reservation %s (%s); leaving the block retries",
                self.lease.reservation_id,
                type(released.failure()).__name__,
            )

    async def local_usage(self, output_tokens: int, provisional: TokenUsage | None) -> TokenUsage:
        if provisional is not None:
            return provisional
        return TokenUsage(input_tokens=await self.prompt_tokens(), output_tokens=output_tokens)

    async def charge(
        self,
        usage: TokenUsage | None,
        source: ActualSource,
        *,
        partial: bool,
        latency_ms: int,
        model_version: str | None,
    ) -> Result[Charge, LLMError[P]]:
        settings = self.settings
        actual = self.plan.estimate
        if usage is not None and source is not ActualSource.ESTIMATE:
            priced = usage_amount(
                self.plan.model, usage, unit=settings.unit, pricing=settings.pricing
            )
            if is_successful(priced):
                actual = priced.unwrap()
            else:
                logger.warning(
                    "could not price the usage of %s (%s); charging the estimate",
                    self.plan.model,
                    priced.failure(),
                )
                source = ActualSource.ESTIMATE
        metrics = charge_metrics(usage, latency_ms=latency_ms, model_version=model_version)
        committed = await self.lease.commit(
            actual, metrics=metrics, metadata=charge_metadata(source, partial=partial)
        )
        if is_successful(committed):
            return Success(
                Charge(
                    actual=actual,
                    source=source,
                    usage=usage,
                    partial=partial,
                    metrics=metrics,
                    settlement=committed.unwrap(),
                )
            )
        refused = committed.failure()
        if isinstance(refused, AlreadyFinalized):  # pragma: no cover - the engine owns the lease
            raise UsageError("the reservation was finalized behind the guard's back")
        return Failure(refused.error)

    async def without_usage(
        self,
        policy: MissingUsage,
        *,
        output_tokens: Callable[[], Awaitable[int]],
        provisional: Callable[[int], TokenUsage | None],
        partial: bool,
        latency_ms: int,
        model_version: str | None,
    ) -> Result[Charge, LLMError[P]]:
        match policy:
            case MissingUsage.FAIL:
                await self.release("the provider reported no usage")
                return Failure(
                    UsageMissing(
                        endpoint=self.plan.endpoint.name, model=self.plan.model, partial=partial
                    )
                )
            case MissingUsage.LOCAL_COUNT:
                counted = await output_tokens()
                usage = await self.local_usage(counted, provisional(counted))
                return await self.charge(
                    usage,
                    ActualSource.LOCAL_COUNT,
                    partial=partial,
                    latency_ms=latency_ms,
                    model_version=model_version,
                )
            case MissingUsage.ESTIMATE:
                return await self.charge(
                    None,
                    ActualSource.ESTIMATE,
                    partial=partial,
                    latency_ms=latency_ms,
                    model_version=model_version,
                )


@final
class _StreamRun(Generic[C, P]):
    """The state of one guarded stream; :class:`GuardedStream` is its public face."""

    def __init__(self, call: _Call[P], meter: Meter[C, P], started: float) -> None:
        self.call = call
        self.meter = meter
        self.started = started
        self.done: bool = False
        self.latency_ms: int | None = None
        self.outcome: Result[Charge, LLMError[P]] | None = None
        self.charge: Charge | None = None
        self.error: P | None = None

    async def _close(self) -> None:
        with anyio.move_on_after(self.call.settings.cleanup_timeout):
            await self.meter.stream.close()

    async def end(self, error: P | None) -> None:
        """The SDK stream ended (``error``: how it failed): settle."""
        self.done = True
        self.latency_ms = _elapsed_ms(self.started)
        # Shielded: a cancellation arriving now must not leave known spend unsettled.
        with anyio.CancelScope(shield=True):
            await self._close()
            await self._settle(error if error is not None else self.meter.failure, early=False)

    async def abandon(self) -> None:
        """The caller left the block: close the stream, settle what it received."""
        if self.done:
            return
        self.done = True
        self.latency_ms = _elapsed_ms(self.started)
        with anyio.CancelScope(shield=True):
            await self._close()
            await self._settle(None, early=True)

    async def _settle(self, error: P | None, *, early: bool) -> None:
        call, meter = self.call, self.meter
        latency = self.latency_ms or 0
        version = meter.model
        self.error = error
        if meter.usage is not None:
            charged = await call.charge(
                meter.usage,
                ActualSource.USAGE,
                partial=False,
                latency_ms=latency,
                model_version=version,
            )
        elif error is not None or early:
            if error is not None and call.settings.stream_failure is StreamFailure.RELEASE:
                await call.release(f"stream failed: {type(error).__name__}")
                self.outcome = Failure(error)
                return
            counted = await meter.tally.total()
            usage = await call.local_usage(counted, meter.provisional(counted))
            charged = await call.charge(
                usage,
                ActualSource.LOCAL_COUNT,
                partial=True,
                latency_ms=latency,
                model_version=version,
            )
        else:
            charged = await call.without_usage(
                call.settings.missing_usage,
                output_tokens=meter.tally.total,
                provisional=meter.provisional,
                partial=not meter.complete,
                latency_ms=latency,
                model_version=version,
            )
        if is_successful(charged):
            self.charge = charged.unwrap()
        else:
            failure = charged.failure()
            if error is not None:
                logger.warning(
                    "the partial charge of failed stream %s was refused: %s",
                    call.lease.reservation_id,
                    failure,
                )
        self.outcome = Failure(error) if error is not None else charged


@final
class GuardedStream(Generic[C, P]):
    """A provider's stream under a reservation: iterate it for the SDK's own chunks.

    ``async for chunk in stream`` yields exactly what the SDK yields (the final
    usage chunk with empty ``choices`` included) while the usage, the text
    received and the end are watched on the way. Nothing is kept per chunk:
    memory stays flat however long the stream.

    When the stream ends the reservation is settled at once, so
    :attr:`outcome` is set by the time the loop finishes:

    - ``Success(charge)``: the provider's usage (or the missing-usage
      fallback) was committed;
    - ``Failure(provider error)``: the stream failed midway; the text received
      was charged (see :attr:`charge`) unless ``StreamFailure.RELEASE``;
    - ``Failure(UsageMissing)`` or a Cycles error from the commit.

    Leaving the block early (``break``, an exception, a cancellation) closes
    the stream and charges what was received, marked ``partial``.
    """

    __slots__ = ("_meter", "_next", "_run", "_tally")

    def __init__(self, run: _StreamRun[C, P]) -> None:
        self._run = run
        self._meter = run.meter
        self._tally = run.meter.tally
        self._next = run.meter.stream.__anext__

    def __aiter__(self) -> GuardedStream[C, P]:
        return self

    async def __anext__(self) -> C:
        """The SDK's next chunk, unchanged."""
        run = self._run
        if run.done:
            raise StopAsyncIteration
        try:
            item = await self._next()
        except StopAsyncIteration:
            await run.end(None)
            raise
        except Exception as error:  # the SDK's failures become values; others re-raise
            failure = self._meter.classify(error)
            if failure is None:
                raise
            await run.end(failure)
            raise StopAsyncIteration from None
        self._meter.observe(item)
        if self._tally.chars >= FOLD_CHARS:
            await self._tally.fold()
        return item

    @property
    def reservation_id(self) -> str:
        """The reservation the stream runs under."""
        return self._run.call.lease.reservation_id

    @property
    def decision(self) -> Decision:
        """``ALLOW`` or ``ALLOW_WITH_CAPS``."""
        return self._run.call.lease.decision

    @property
    def caps(self) -> Caps | None:
        """The grant's limits, already applied to the request."""
        return self._run.call.lease.caps

    @property
    def reserved(self) -> Amount:
        """The estimate held while the stream runs."""
        return self._run.call.lease.reserved

    @property
    def cooldown_ms(self) -> int | None:
        """Milliseconds the grant asks to wait before the next action, if capped."""
        caps = self.caps
        return None if caps is None else caps.cooldown_ms

    @property
    def max_steps_remaining(self) -> int | None:
        """Steps the grant still allows, if capped."""
        caps = self.caps
        return None if caps is None else caps.max_steps_remaining

    @property
    def usage(self) -> TokenUsage | None:
        """The provider's reported usage, once it has arrived."""
        return self._meter.usage

    @property
    def finished(self) -> bool:
        """Whether the stream has ended (and been settled)."""
        return self._run.done and self._run.outcome is not None

    @property
    def outcome(self) -> Result[Charge, LLMError[P]] | None:
        """How the stream was settled; ``None`` while it runs."""
        return self._run.outcome

    @property
    def charge(self) -> Charge | None:
        """What was committed, also when the outcome is a provider error."""
        return self._run.charge

    @property
    def error(self) -> P | None:
        """The provider error that ended the stream, if one did."""
        return self._run.error


@final
class Guard(Generic[P]):
    """The engine a provider client drives: reserve, cap, call, meter, settle."""

    def __init__(self, cycles: CyclesClient, settings: GuardSettings) -> None:
        self._cycles = cycles
        self._settings = settings

    async def _plan(
        self, endpoint: Endpoint[P], params: Mapping[str, object]
    ) -> Result[_Plan[P], MeteringError]:
        settings = self._settings
        body = _materialized(params)
        raw_model = body.get("model")
        model = raw_model if isinstance(raw_model, str) and raw_model else "unknown"
        counter = TokenCounter.for_model(model)
        action = settings.action or Action(endpoint.action_kind, f"{endpoint.provider}:{model}")
        if settings.estimate is not None:
            if settings.unit is Unit.USD_MICROCENTS:
                assert settings.pricing is not None
                # Fail before the call, not after it, if the model cannot be priced.
                known = settings.pricing.price(model, TokenUsage())
                if not is_successful(known):
                    return Failure(known.failure())
            return Success(
                _Plan(
                    endpoint=endpoint,
                    body=body,
                    model=model,
                    action=action,
                    counter=counter,
                    estimate=settings.estimate,
                    prompt_tokens=None,
                )
            )
        prompt = await anyio.to_thread.run_sync(endpoint.prompt_tokens, counter, body)
        estimated = estimate_amount(
            model,
            prompt_tokens=prompt,
            max_output_tokens=_ceiling(body, endpoint.output_keys, settings.default_output_tokens),
            unit=settings.unit,
            pricing=settings.pricing,
            prompt_cache_write=endpoint.cache_writes(body),
        )
        if not is_successful(estimated):
            return Failure(estimated.failure())
        return Success(
            _Plan(
                endpoint=endpoint,
                body=body,
                model=model,
                action=action,
                counter=counter,
                estimate=estimated.unwrap(),
                prompt_tokens=prompt,
            )
        )

    def _reserve(self, plan: _Plan[P]) -> AbstractAsyncContextManager[Result[Lease, CyclesError]]:
        settings = self._settings
        return open_reservation(
            self._cycles,
            action=plan.action,
            estimate=plan.estimate,
            subject=settings.subject,
            ttl_ms=settings.ttl_ms,
            overage_policy=settings.overage_policy,
            metadata=settings.metadata,
            settlement=settings.settlement,
            cleanup_timeout=settings.cleanup_timeout,
        )

    @staticmethod
    async def _capped(call: _Call[P], plan: _Plan[P]) -> Result[dict[str, object], CapsForbidCall]:
        capped = apply_caps(plan.body, call.lease.caps, output_keys=plan.endpoint.output_keys)
        if not is_successful(capped):
            await call.release(f"caps forbid the call: {capped.failure().reason}")
        return capped

    async def call(
        self, spec: CallSpec[T, P], params: Mapping[str, object]
    ) -> Result[Guarded[T], LLMError[P]]:
        """Reserve, apply the caps, send, and commit the response's usage."""
        planned = await self._plan(spec.endpoint, params)
        if not is_successful(planned):
            return Failure(planned.failure())
        plan = planned.unwrap()
        async with self._reserve(plan) as reserved:
            if not is_successful(reserved):
                return Failure(reserved.failure())
            lease = reserved.unwrap()
            call = _Call(plan, self._settings, lease)
            capped = await self._capped(call, plan)
            if not is_successful(capped):
                return Failure(capped.failure())
            started = time.monotonic()
            try:
                response = await spec.send(capped.unwrap())
            except Exception as error:  # the SDK's failures become values; others re-raise
                failure = spec.endpoint.classify(error)
                if failure is None:
                    raise
                await call.release(f"provider error: {type(error).__name__}")
                return Failure(failure)
            latency = _elapsed_ms(started)
            version = spec.model_version(response)
            usage = spec.usage(response)
            if usage is not None:
                charged = await call.charge(
                    usage,
                    ActualSource.USAGE,
                    partial=False,
                    latency_ms=latency,
                    model_version=version,
                )
            else:

                async def output_tokens() -> int:
                    text = spec.output_text(response)
                    return await anyio.to_thread.run_sync(plan.counter.count, text)

                charged = await call.without_usage(
                    self._settings.missing_usage,
                    output_tokens=output_tokens,
                    provisional=lambda _tokens: None,
                    partial=False,
                    latency_ms=latency,
                    model_version=version,
                )
            if not is_successful(charged):
                return Failure(charged.failure())
            return Success(
                Guarded(
                    response=response,
                    charge=charged.unwrap(),
                    decision=lease.decision,
                    caps=lease.caps,
                    reservation_id=lease.reservation_id,
                    reserved=lease.reserved,
                )
            )

    @asynccontextmanager
    async def open_stream(
        self, spec: StreamSpec[C, P], params: Mapping[str, object]
    ) -> AsyncGenerator[Result[GuardedStream[C, P], LLMError[P]]]:
        """Reserve, apply the caps, open the stream; settle when it ends or the block does."""
        planned = await self._plan(spec.endpoint, params)
        if not is_successful(planned):
            yield Failure(planned.failure())
            return
        plan = planned.unwrap()
        async with self._reserve(plan) as reserved:
            if not is_successful(reserved):
                yield Failure(reserved.failure())
                return
            call = _Call(plan, self._settings, reserved.unwrap())
            capped = await self._capped(call, plan)
            if not is_successful(capped):
                yield Failure(capped.failure())
                return
            body = capped.unwrap()
            spec.prepare(body)
            started = time.monotonic()
            try:
                meter = await spec.open(body, TextTally(plan.counter))
            except Exception as error:  # the SDK's failures become values; others re-raise
                failure = spec.endpoint.classify(error)
                if failure is None:
                    raise
                await call.release(f"provider error: {type(error).__name__}")
                yield Failure(failure)
                return
            run = _StreamRun(call, meter, started)
            try:
                yield Success(GuardedStream(run))
            except BaseException:
                # Known spend is settled even when the block is cancelled or raises.
                await run.abandon()
                raise
            await run.abandon()
