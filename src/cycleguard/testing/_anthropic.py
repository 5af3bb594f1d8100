"""``FakeAnthropic``: the Messages API, plain and streamed, as Anthropic sends it."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final, cast, final

from cycleguard._core._errors import UsageError
from cycleguard.testing._app import DEFAULT_REPLY, Exchange, FakeProvider, Respond
from cycleguard.testing._script import AnthropicUsage, HttpError, OpenAIUsage, Reply
from cycleguard.testing._wire import deliver, deltas, sse

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterator, Mapping

    from anthropic import AsyncAnthropic

    from cycleguard.testing._app import Handler
    from cycleguard.testing._script import Headers, ScriptItem, StreamFault
    from cycleguard.testing._wire import Frame

__all__ = ("FakeAnthropic",)

IN_PROCESS_URL: Final = "http://fake-anthropic.invalid"

_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_MESSAGES: Final = {429: "Rate limited (fake).", 529: "Overloaded"}


def _usage(reply: Reply) -> AnthropicUsage:
    return reply.usage if isinstance(reply.usage, AnthropicUsage) else AnthropicUsage()


def usage_json(usage: AnthropicUsage, *, output_tokens: int | None = None) -> dict[str, object]:
    """A ``usage`` object; ``output_tokens`` overrides the count (for ``message_start``)."""
    body: dict[str, object] = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens if output_tokens is None else output_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "service_tier": "standard",
    }
    if usage.thinking_tokens:
        body["output_tokens_details"] = {"thinking_tokens": usage.thinking_tokens}
    return body


def _tool_id(reply: Reply, number: int, index: int) -> str:
    given = reply.tool_calls[index].id
    return given if given is not None else f"toolu_fake{number}_{index}"


def _stop_reason(reply: Reply) -> str:
    if reply.finish_reason is not None:
        return reply.finish_reason
    return "tool_use" if reply.tool_calls else "end_turn"


def _has_text(reply: Reply) -> bool:
    return bool(reply.text) or not reply.tool_calls


def _tool_block(reply: Reply, number: int, index: int, *, done: bool) -> dict[str, object]:
    call = reply.tool_calls[index]
    parsed: object = json.loads(call.arguments) if done else {}
    return {
        "type": "tool_use",
        "id": _tool_id(reply, number, index),
        "name": call.name,
        "input": parsed,
    }


def message(reply: Reply, model: str, number: int) -> dict[str, object]:
    """A ``message`` object."""
    content: list[dict[str, object]] = []
    if _has_text(reply):
        content.append({"type": "text", "text": reply.text})
    content.extend(
        _tool_block(reply, number, index, done=True) for index in range(len(reply.tool_calls))
    )
    return {
        "id": f"msg_fake{number}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(reply),
        "stop_sequence": None,
        "usage": usage_json(_usage(reply)),
    }


def _error_frame(fault: StreamFault) -> bytes:
    error = {"type": fault.error_type or "overloaded_error", "message": fault.message}
    return sse({"type": "error", "error": error}, event="error")


def message_stream(reply: Reply, model: str, number: int) -> Iterator[Frame]:
    """The Messages API's stream events, produced lazily."""

    def event(kind: str, fields: Mapping[str, object]) -> bytes:
        return sse({"type": kind, **fields}, event=kind)

    usage = _usage(reply)
    no_content: list[object] = []
    start: dict[str, object] = {
        **message(reply, model, number),
        "content": no_content,
        "stop_reason": None,
        "usage": usage_json(usage, output_tokens=1),
    }
    yield event("message_start", {"message": start})
    first_tool = 0
    if _has_text(reply):
        block = {"type": "text", "text": ""}
        yield event("content_block_start", {"index": 0, "content_block": block})
        yield event("ping", {})
        first_tool = 1
    texts = (
        event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
        for piece in deltas(reply)
    )
    if (yield from deliver(texts if _has_text(reply) else (), reply.fault, _error_frame)):
        return
    if _has_text(reply):
        yield event("content_block_stop", {"index": 0})
    for index, call in enumerate(reply.tool_calls):
        position = first_tool + index
        opening = _tool_block(reply, number, index, done=False)
        yield event("content_block_start", {"index": position, "content_block": opening})
        partial = {"type": "input_json_delta", "partial_json": call.arguments}
        yield event("content_block_delta", {"index": position, "delta": partial})
        yield event("content_block_stop", {"index": position})
    final_usage = usage_json(usage)
    del final_usage["service_tier"]
    yield event(
        "message_delta",
        {
            "delta": {"stop_reason": _stop_reason(reply), "stop_sequence": None},
            "usage": final_usage,
        },
    )
    yield event("message_stop", {})


@final
class FakeAnthropic(FakeProvider):
    """An Anthropic-compatible Messages API, scripted, for the real ``anthropic`` SDK.

    Endpoint: ``POST /v1/messages``, plain and streamed (``message_start`` with
    the input and cache counts, text and ``tool_use`` blocks, ``message_delta``
    with the cumulative output count, ``message_stop``). A mid-stream
    :meth:`StreamFault.error` sends ``event: error`` on the HTTP 200 stream,
    as Anthropic does.

    Example::

        fake = FakeAnthropic()
        fake.push(Reply(text="Hi!", usage=AnthropicUsage(input_tokens=25, output_tokens=12,
                                                         cache_read_input_tokens=100)))
        async with fake.client() as anthropic:
            message = await anthropic.messages.create(
                model="claude-haiku-4-5", max_tokens=50,
                messages=[{"role": "user", "content": "Hello"}],
            )

    Args:
        default: The reply once the queue is empty; ``None`` makes an empty
            queue answer HTTP 500 instead.
    """

    _name = "Anthropic"

    def __init__(self, *, default: Reply | None = DEFAULT_REPLY) -> None:
        super().__init__(default=default)

    def _check(self, item: ScriptItem) -> None:
        if isinstance(item, Reply) and isinstance(item.usage, OpenAIUsage):
            raise UsageError("FakeAnthropic needs AnthropicUsage, not OpenAIUsage")

    def _routes(self) -> Mapping[str, Handler]:
        return {"/v1/messages": self._messages}

    def _error_body(self, error: HttpError, exchange: Exchange) -> tuple[object, Headers]:
        status = error.status
        default_type = _ERROR_TYPES.get(status, "api_error")
        body = {
            "type": "error",
            "error": {
                "type": error.error_type or default_type,
                "message": error.message or _MESSAGES.get(status, f"Fake error {status}."),
            },
            "request_id": f"req_fake{exchange.number}",
        }
        return body, (("request-id", f"req_fake{exchange.number}"),)

    async def _messages(self, exchange: Exchange, respond: Respond) -> None:
        reply = cast("Reply", exchange.item)
        model = exchange.model(reply)
        headers = (("request-id", f"req_fake{exchange.number}"), *reply.headers)
        fault = reply.fault
        if exchange.streaming:
            frames = message_stream(reply, model, exchange.number)
            await respond.frames(frames, headers, content_type="text/event-stream")
        elif fault is not None and fault.kind == "cut":
            await self.send_cut_json(message(reply, model, exchange.number), headers, respond)
        elif fault is not None and fault.kind == "error":
            failure = HttpError(
                status=500, error_type=fault.error_type or "api_error", message=fault.message
            )
            await self.send_error(failure, exchange, respond)
        else:
            await respond.json(200, message(reply, model, exchange.number), headers)

    @asynccontextmanager
    async def client(
        self,
        *,
        base_url: str | None = None,
        max_retries: int = 0,
        api_key: str = "sk-ant-fake",
        strict_validation: bool = False,
    ) -> AsyncGenerator[AsyncAnthropic]:
        """A real ``anthropic.AsyncAnthropic`` wired to this fake; closed on exit.

        Args:
            base_url: Where :meth:`serve` listens, to go through real sockets;
                ``None`` (the default) calls this fake in process through
                :class:`AsgiStreamingTransport`.
            max_retries: The SDK's retry count; 0 by default so a scripted
                error surfaces at once.
            api_key: The key the SDK sends (the fake accepts any).
            strict_validation: Validate every response against the SDK's models
                (``_strict_response_validation``), which also checks the fake's
                wire shapes. Off by default, like the SDK.
        """
        import httpx2
        from anthropic import AsyncAnthropic

        from cycleguard.testing._transport import AsgiStreamingTransport

        transport = AsgiStreamingTransport(self) if base_url is None else None
        async with httpx2.AsyncClient(transport=transport) as http:
            sdk = AsyncAnthropic(
                api_key=api_key,
                base_url=base_url or IN_PROCESS_URL,
                http_client=http,
                max_retries=max_retries,
                _strict_response_validation=strict_validation,
            )
            try:
                yield sdk
            finally:
                await sdk.close()
