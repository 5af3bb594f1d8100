"""What a fake provider answers, one scripted item per request, and what it received."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, TypeAlias, cast, final

import attrs

from cycleguard._core._errors import UsageError

if TYPE_CHECKING:
    from cycleguard._core._json import JsonObject

__all__ = (
    "AnthropicUsage",
    "HttpError",
    "OpenAIUsage",
    "RecordedRequest",
    "Reply",
    "ScriptItem",
    "StreamFault",
    "ToolCall",
)


def _non_negative(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    del instance
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"{attribute.name} must be a non-negative int, got {value!r}")


def _count(default: int) -> int:
    return attrs.field(default=default, validator=_non_negative)


@final
@attrs.frozen(kw_only=True)
class OpenAIUsage:
    """The usage an OpenAI fake reports, in OpenAI's terms.

    ``cached_tokens`` and ``cache_write_tokens`` are parts of ``prompt_tokens``;
    ``reasoning_tokens`` is part of ``completion_tokens``. Chat completions
    report them as they are named here; the Responses API as ``input_tokens``,
    ``output_tokens`` and their details; embeddings only ``prompt_tokens``.
    """

    prompt_tokens: int = _count(10)
    completion_tokens: int = _count(5)
    cached_tokens: int = _count(0)
    cache_write_tokens: int = _count(0)
    reasoning_tokens: int = _count(0)

    @property
    def total_tokens(self) -> int:
        """``prompt_tokens + completion_tokens``."""
        return self.prompt_tokens + self.completion_tokens


@final
@attrs.frozen(kw_only=True)
class AnthropicUsage:
    """The usage an Anthropic fake reports, in Anthropic's terms.

    ``input_tokens`` excludes the cache: the prompt is ``input_tokens +
    cache_creation_input_tokens + cache_read_input_tokens``.
    ``thinking_tokens`` (reported as ``output_tokens_details``) is part of
    ``output_tokens``.
    """

    input_tokens: int = _count(10)
    output_tokens: int = _count(5)
    cache_creation_input_tokens: int = _count(0)
    cache_read_input_tokens: int = _count(0)
    thinking_tokens: int = _count(0)


def _json_object_text(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    del instance
    try:
        parsed: object = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise UsageError(f"{attribute.name} must be the JSON text of an object, got {value!r}")


@final
@attrs.frozen(kw_only=True)
class ToolCall:
    """A function call the fake model makes.

    ``arguments`` is JSON text of an object (OpenAI sends it as text; Anthropic
    as the parsed ``input``). ``id`` defaults to one the fake makes up.
    """

    name: str
    arguments: str = attrs.field(default="{}", validator=_json_object_text)
    id: str | None = None


FaultKind: TypeAlias = Literal["cut", "end", "error"]


@final
@attrs.frozen(kw_only=True)
class StreamFault:
    """Something that goes wrong part-way through a reply.

    It happens after ``after`` text deltas were delivered (after the last one
    if the reply has fewer), before tool calls and usage:

    - ``cut``: the connection drops (the SDKs raise a connection error);
    - ``end``: the stream just stops, cleanly, with no usage and no end marker;
    - ``error``: an error event arrives in the stream (Anthropic's
      ``event: error`` with HTTP 200; OpenAI's ``{"error": ...}`` chunk for
      chat, the ``error`` event for Responses), and the stream ends.

    A non-streamed request with a ``cut`` fault gets half its JSON body and a
    dropped connection; with an ``error`` fault, an HTTP 500 carrying that
    error; ``end`` applies to streams only.
    """

    kind: FaultKind
    after: int = _count(1)
    error_type: str | None = None
    message: str = "the fake provider failed mid-stream"

    @classmethod
    def cut(cls, *, after: int = 1) -> StreamFault:
        """Drop the connection after ``after`` text deltas."""
        return cls(kind="cut", after=after)

    @classmethod
    def end(cls, *, after: int = 1) -> StreamFault:
        """End the stream cleanly after ``after`` text deltas, without usage."""
        return cls(kind="end", after=after)

    @classmethod
    def error(
        cls,
        *,
        after: int = 1,
        error_type: str | None = None,
        message: str = "the fake provider failed mid-stream",
    ) -> StreamFault:
        """Send an error event after ``after`` text deltas.

        ``error_type`` defaults to ``server_error`` (OpenAI) or
        ``overloaded_error`` (Anthropic).
        """
        return cls(kind="error", after=after, error_type=error_type, message=message)


Headers: TypeAlias = tuple[tuple[str, str], ...]


@final
@attrs.frozen(kw_only=True)
class Reply:
    """A successful answer: the same item serves a streamed or a plain request.

    Args:
        text: The assistant's text (may be empty, for a tool-call-only reply).
        deltas: How a stream splits ``text``; by default one delta per word
            (with its trailing space), produced lazily.
        usage: The usage to report: :class:`OpenAIUsage` for the OpenAI fake,
            :class:`AnthropicUsage` for the Anthropic one; ``None`` for the
            class's defaults.
        tool_calls: Function calls the model makes, after its text.
        finish_reason: Overrides ``finish_reason`` (OpenAI) or ``stop_reason``
            (Anthropic); by default ``stop``/``tool_calls`` or
            ``end_turn``/``tool_use``.
        stream_usage: OpenAI chat streams only: ``None`` sends the usage chunk
            when the request asked (``stream_options.include_usage``), ``False``
            never (like servers that ignore the option), ``True`` always.
        fault: Something that goes wrong part-way (see :class:`StreamFault`).
        headers: Extra response headers.
        model: The model name to report; by default the request's.
        delay: Seconds the fake waits before it answers, to keep a call in flight.
    """

    text: str = "Hello from the fake."
    deltas: tuple[str, ...] | None = None
    usage: OpenAIUsage | AnthropicUsage | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    stream_usage: bool | None = None
    fault: StreamFault | None = None
    headers: Headers = ()
    model: str | None = None
    delay: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))


@final
@attrs.frozen(kw_only=True)
class HttpError:
    """An error answer with an HTTP status, in the provider's error envelope.

    ``error_type`` and ``message`` default to what the provider sends for that
    status. ``retry_after`` (seconds, or an HTTP date) and ``retry_after_ms``
    become the ``retry-after`` and ``retry-after-ms`` headers the SDKs obey.

    >>> HttpError.rate_limited(retry_after_ms=50).status
    429
    """

    status: int
    error_type: str | None = None
    message: str | None = None
    code: str | None = None
    retry_after: int | str | None = None
    retry_after_ms: int | None = None
    headers: Headers = ()

    @classmethod
    def rate_limited(
        cls,
        *,
        retry_after: int | str | None = None,
        retry_after_ms: int | None = None,
        message: str | None = None,
    ) -> HttpError:
        """A 429 with the given retry hints."""
        return cls(
            status=429, retry_after=retry_after, retry_after_ms=retry_after_ms, message=message
        )

    @classmethod
    def server_error(cls, status: int = 500, *, message: str | None = None) -> HttpError:
        """A 5xx (500 by default)."""
        return cls(status=status, message=message)

    @classmethod
    def overloaded(cls, *, message: str | None = None) -> HttpError:
        """Anthropic's 529 ``overloaded_error``."""
        return cls(status=529, error_type="overloaded_error", message=message)

    def header_pairs(self) -> Headers:
        """The retry hints and extra headers, as response headers."""
        pairs: list[tuple[str, str]] = []
        if self.retry_after is not None:
            pairs.append(("retry-after", str(self.retry_after)))
        if self.retry_after_ms is not None:
            pairs.append(("retry-after-ms", str(self.retry_after_ms)))
        return (*pairs, *self.headers)


ScriptItem: TypeAlias = Reply | HttpError
"""One scripted answer."""


@final
@attrs.frozen
class RecordedRequest:
    """A request a fake received, as it arrived.

    >>> r = RecordedRequest("POST", "/v1/chat/completions", (("x-a", "1"),), b'{"max_tokens": 5}')
    >>> r.json["max_tokens"], r.header("X-A")
    (5, '1')
    """

    method: str
    path: str
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), if sent."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    @property
    def json(self) -> JsonObject:
        """The body as a JSON object (empty if the body is not one)."""
        try:
            parsed: object = json.loads(self.body)
        except ValueError:
            return {}
        if isinstance(parsed, Mapping):
            return cast("JsonObject", parsed)
        return {}
