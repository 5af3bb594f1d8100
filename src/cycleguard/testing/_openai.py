"""``FakeOpenAI``: chat completions, the Responses API and embeddings, as OpenAI sends them."""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final, cast, final

from cycleguard._core._errors import UsageError
from cycleguard.testing._app import DEFAULT_REPLY, Exchange, FakeProvider, Respond
from cycleguard.testing._script import AnthropicUsage, HttpError, OpenAIUsage, Reply
from cycleguard.testing._wire import CREATED, deliver, deltas, sse

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterator

    from openai import AsyncOpenAI

    from cycleguard.testing._app import Handler
    from cycleguard.testing._script import Headers, ScriptItem, StreamFault
    from cycleguard.testing._wire import Frame

__all__ = ("FakeOpenAI",)

IN_PROCESS_URL: Final = "http://fake-openai.invalid"

_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    422: "invalid_request_error",
    429: "requests",
}
_ERROR_CODES: Final = {401: "invalid_api_key", 404: "not_found", 429: "rate_limit_exceeded"}
_MESSAGES: Final = {
    429: "Rate limit reached (fake).",
    500: "The server had an error while processing your request (fake).",
}


def _usage(reply: Reply) -> OpenAIUsage:
    return reply.usage if isinstance(reply.usage, OpenAIUsage) else OpenAIUsage()


def _chat_usage(usage: OpenAIUsage) -> dict[str, object]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _responses_usage(usage: OpenAIUsage) -> dict[str, object]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _call_id(reply: Reply, number: int, index: int) -> str:
    given = reply.tool_calls[index].id
    return given if given is not None else f"call_fake{number}_{index}"


def _error(fault: StreamFault) -> dict[str, object]:
    return {
        "message": fault.message,
        "type": fault.error_type or "server_error",
        "param": None,
        "code": None,
    }


# Chat completions ---------------------------------------------------------------


def _finish_reason(reply: Reply) -> str:
    if reply.finish_reason is not None:
        return reply.finish_reason
    return "tool_calls" if reply.tool_calls else "stop"


def chat_completion(reply: Reply, model: str, number: int) -> dict[str, object]:
    """A ``chat.completion`` object."""
    message: dict[str, object] = {
        "role": "assistant",
        "content": reply.text or None,
        "refusal": None,
        "annotations": [],
    }
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": _call_id(reply, number, index),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for index, call in enumerate(reply.tool_calls)
        ]
    return {
        "id": f"chatcmpl-fake{number}",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(reply),
            }
        ],
        "usage": _chat_usage(_usage(reply)),
    }


def chat_stream(reply: Reply, model: str, number: int, *, include_usage: bool) -> Iterator[Frame]:
    """A ``chat.completion.chunk`` stream, produced lazily."""
    send_usage = include_usage if reply.stream_usage is None else reply.stream_usage

    def chunk(delta: Mapping[str, object], finish: str | None = None) -> bytes:
        body: dict[str, object] = {
            "id": f"chatcmpl-fake{number}",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if send_usage:
            body["usage"] = None
        return sse(body)

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    texts = (chunk({"content": piece}) for piece in deltas(reply))
    stopped = yield from deliver(texts, reply.fault, lambda f: sse({"error": _error(f)}))
    if stopped:
        return
    for index, call in enumerate(reply.tool_calls):
        opening = {
            "index": index,
            "id": _call_id(reply, number, index),
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        yield chunk({"tool_calls": [opening]})
        yield chunk({"tool_calls": [{"index": index, "function": {"arguments": call.arguments}}]})
    yield chunk({}, _finish_reason(reply))
    if send_usage:
        yield sse(
            {
                "id": f"chatcmpl-fake{number}",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "system_fingerprint": None,
                "choices": [],
                "usage": _chat_usage(_usage(reply)),
            }
        )
    yield sse("[DONE]")


# Responses ----------------------------------------------------------------------


def _text_part(text: str) -> dict[str, object]:
    no_items: list[object] = []
    return {"type": "output_text", "text": text, "annotations": no_items, "logprobs": no_items}


def _message_item(number: int, text: str, *, done: bool) -> dict[str, object]:
    content: list[object] = [_text_part(text)] if done else []
    return {
        "type": "message",
        "id": f"msg_fake{number}",
        "status": "completed" if done else "in_progress",
        "role": "assistant",
        "content": content,
    }


def _function_item(reply: Reply, number: int, index: int, *, done: bool) -> dict[str, object]:
    call = reply.tool_calls[index]
    return {
        "type": "function_call",
        "id": f"fc_fake{number}_{index}",
        "call_id": _call_id(reply, number, index),
        "name": call.name,
        "arguments": call.arguments if done else "",
        "status": "completed" if done else "in_progress",
    }


def _has_message(reply: Reply) -> bool:
    return bool(reply.text) or not reply.tool_calls


def _outputs(reply: Reply, number: int) -> list[dict[str, object]]:
    items = [_message_item(number, reply.text, done=True)] if _has_message(reply) else []
    items.extend(
        _function_item(reply, number, index, done=True) for index in range(len(reply.tool_calls))
    )
    return items


def response_object(
    reply: Reply,
    model: str,
    number: int,
    request: Mapping[str, object],
    *,
    status: str = "completed",
    final: bool = True,
) -> dict[str, object]:
    """A ``response`` object; ``final=False`` gives the in-progress snapshot."""
    ceiling = request.get("max_output_tokens")
    return {
        "id": f"resp_fake{number}",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "model": model,
        "output": _outputs(reply, number) if final else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": _responses_usage(_usage(reply)) if final else None,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "temperature": 1.0,
        "top_p": 1.0,
        "max_output_tokens": ceiling if isinstance(ceiling, int) else None,
    }


def responses_stream(
    reply: Reply, model: str, number: int, request: Mapping[str, object]
) -> Iterator[Frame]:
    """The Responses API's named events, produced lazily."""
    sequence = 0

    def event(kind: str, fields: Mapping[str, object]) -> bytes:
        nonlocal sequence
        frame = sse({"type": kind, "sequence_number": sequence, **fields}, event=kind)
        sequence += 1
        return frame

    snapshot = response_object(reply, model, number, request, status="in_progress", final=False)
    yield event("response.created", {"response": snapshot})
    yield event("response.in_progress", {"response": snapshot})
    item_id = f"msg_fake{number}"
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    if _has_message(reply):
        yield event(
            "response.output_item.added",
            {"output_index": 0, "item": _message_item(number, "", done=False)},
        )
        yield event("response.content_part.added", {**where, "part": _text_part("")})
    texts = (
        event("response.output_text.delta", {**where, "delta": piece, "logprobs": []})
        for piece in deltas(reply)
    )

    def error_event(fault: StreamFault) -> bytes:
        fields = {"code": fault.error_type or "server_error", "message": fault.message}
        return event("error", {**fields, "param": None})

    if (yield from deliver(texts if _has_message(reply) else (), reply.fault, error_event)):
        return
    first_call = 0
    if _has_message(reply):
        no_logprobs: list[object] = []
        done_text = {**where, "text": reply.text, "logprobs": no_logprobs}
        yield event("response.output_text.done", done_text)
        yield event("response.content_part.done", {**where, "part": _text_part(reply.text)})
        yield event(
            "response.output_item.done",
            {"output_index": 0, "item": _message_item(number, reply.text, done=True)},
        )
        first_call = 1
    for index, call in enumerate(reply.tool_calls):
        output_index = first_call + index
        call_where = {"item_id": f"fc_fake{number}_{index}", "output_index": output_index}
        added = _function_item(reply, number, index, done=False)
        yield event("response.output_item.added", {"output_index": output_index, "item": added})
        yield event(
            "response.function_call_arguments.delta", {**call_where, "delta": call.arguments}
        )
        yield event(
            "response.function_call_arguments.done",
            {**call_where, "arguments": call.arguments, "name": call.name},
        )
        done = _function_item(reply, number, index, done=True)
        yield event("response.output_item.done", {"output_index": output_index, "item": done})
    final_response = response_object(reply, model, number, request)
    yield event("response.completed", {"response": final_response})


# Embeddings ---------------------------------------------------------------------


def _inputs(request: Mapping[str, object]) -> int:
    given = request.get("input")
    if isinstance(given, str) or not isinstance(given, Sequence):
        return 1
    items = cast("Sequence[object]", given)
    if items and all(isinstance(item, int) for item in items):
        return 1  # one input given as token ids
    return max(len(items), 1)


def _vector(index: int, dimensions: int) -> list[float]:
    return [((index + 1) * (position + 3) % 97) / 97 for position in range(dimensions)]


def embeddings(reply: Reply, model: str, request: Mapping[str, object]) -> dict[str, object]:
    """A ``list`` of embeddings, base64-packed when the request asks (the SDK's default)."""
    dims = request.get("dimensions")
    dimensions = dims if isinstance(dims, int) and dims > 0 else 8
    packed = request.get("encoding_format") == "base64"
    data: list[dict[str, object]] = []
    for index in range(_inputs(request)):
        vector = _vector(index, dimensions)
        embedding: object = (
            base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode("ascii")
            if packed
            else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    usage = _usage(reply)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
    }


# The fake -----------------------------------------------------------------------


@final
class FakeOpenAI(FakeProvider):
    """An OpenAI-compatible API, scripted: an ASGI app the real ``openai`` SDK can talk to.

    Endpoints: ``POST /v1/chat/completions`` (plain and streamed),
    ``POST /v1/responses`` (plain and streamed, with the named events the SDK's
    ``responses.stream()`` helper needs) and ``POST /v1/embeddings``.

    Queue answers with :meth:`push` (:class:`Reply` or :class:`HttpError`);
    inspect what arrived with :attr:`requests`. Use it in process with
    :meth:`client` (a real ``openai.AsyncOpenAI`` over
    :class:`AsgiStreamingTransport`) or on a loopback port with :meth:`serve`.

    Example::

        fake = FakeOpenAI()
        fake.push(Reply(text="Hi!", usage=OpenAIUsage(prompt_tokens=12, completion_tokens=3)))
        async with fake.client() as openai:
            completion = await openai.chat.completions.create(
                model="gpt-4o-mini", max_completion_tokens=50,
                messages=[{"role": "user", "content": "Hello"}],
            )
        assert fake.last_request.json["max_completion_tokens"] == 50

    Args:
        default: The reply once the queue is empty; ``None`` makes an empty
            queue answer HTTP 500 instead.
    """

    _name = "OpenAI"

    def __init__(self, *, default: Reply | None = DEFAULT_REPLY) -> None:
        super().__init__(default=default)

    def _check(self, item: ScriptItem) -> None:
        if isinstance(item, Reply) and isinstance(item.usage, AnthropicUsage):
            raise UsageError("FakeOpenAI needs OpenAIUsage, not AnthropicUsage")

    def _routes(self) -> Mapping[str, Handler]:
        return {
            "/v1/chat/completions": self._chat,
            "/v1/responses": self._responses,
            "/v1/embeddings": self._embeddings,
        }

    def _error_body(self, error: HttpError, exchange: Exchange) -> tuple[object, Headers]:
        status = error.status
        default_type = "server_error" if status >= 500 else _ERROR_TYPES.get(status, "api_error")
        body = {
            "error": {
                "message": error.message or _MESSAGES.get(status, f"Fake error {status}."),
                "type": error.error_type or default_type,
                "param": None,
                "code": error.code or _ERROR_CODES.get(status),
            }
        }
        return body, (("x-request-id", f"req_fake{exchange.number}"),)

    def _headers(self, reply: Reply, exchange: Exchange) -> Headers:
        return (("x-request-id", f"req_fake{exchange.number}"), *reply.headers)

    async def _plain(
        self, reply: Reply, exchange: Exchange, respond: Respond, body: dict[str, object]
    ) -> None:
        headers = self._headers(reply, exchange)
        fault = reply.fault
        if fault is not None and fault.kind == "cut":
            await self.send_cut_json(body, headers, respond)
        elif fault is not None and fault.kind == "error":
            failure = HttpError(status=500, error_type=fault.error_type, message=fault.message)
            await self.send_error(failure, exchange, respond)
        else:
            await respond.json(200, body, headers)

    async def _chat(self, exchange: Exchange, respond: Respond) -> None:
        reply = cast("Reply", exchange.item)
        model = exchange.model(reply)
        if not exchange.streaming:
            await self._plain(
                reply, exchange, respond, chat_completion(reply, model, exchange.number)
            )
            return
        options = exchange.body.get("stream_options")
        include_usage = isinstance(options, Mapping) and (
            cast("Mapping[str, object]", options).get("include_usage") is True
        )
        frames = chat_stream(reply, model, exchange.number, include_usage=include_usage)
        await respond.frames(
            frames, self._headers(reply, exchange), content_type="text/event-stream"
        )

    async def _responses(self, exchange: Exchange, respond: Respond) -> None:
        reply = cast("Reply", exchange.item)
        model = exchange.model(reply)
        if not exchange.streaming:
            body = response_object(reply, model, exchange.number, exchange.body)
            await self._plain(reply, exchange, respond, body)
            return
        frames = responses_stream(reply, model, exchange.number, exchange.body)
        await respond.frames(
            frames, self._headers(reply, exchange), content_type="text/event-stream"
        )

    async def _embeddings(self, exchange: Exchange, respond: Respond) -> None:
        reply = cast("Reply", exchange.item)
        body = embeddings(reply, exchange.model(reply), exchange.body)
        await self._plain(reply, exchange, respond, body)

    @asynccontextmanager
    async def client(
        self,
        *,
        base_url: str | None = None,
        max_retries: int = 0,
        api_key: str = "sk-fake",
        strict_validation: bool = False,
    ) -> AsyncGenerator[AsyncOpenAI]:
        """A real ``openai.AsyncOpenAI`` wired to this fake; closed on exit.

        Args:
            base_url: Where :meth:`serve` listens (``http://127.0.0.1:PORT``), to
                go through real sockets; ``None`` (the default) calls this fake
                in process through :class:`AsgiStreamingTransport`.
            max_retries: The SDK's retry count; 0 by default so a scripted
                error surfaces at once.
            api_key: Sent as the bearer token (the fake accepts any).
            strict_validation: Validate every response against the SDK's models
                (``_strict_response_validation``), which also checks the fake's
                wire shapes. Off by default, like the SDK: its own default for
                embeddings (base64 vectors) does not pass strict validation.
        """
        import httpx2
        from openai import AsyncOpenAI

        from cycleguard.testing._transport import AsgiStreamingTransport

        transport = AsgiStreamingTransport(self) if base_url is None else None
        async with httpx2.AsyncClient(transport=transport) as http:
            sdk = AsyncOpenAI(
                api_key=api_key,
                base_url=f"{base_url or IN_PROCESS_URL}/v1",
                http_client=http,
                max_retries=max_retries,
                _strict_response_validation=strict_validation,
            )
            try:
                yield sdk
            finally:
                await sdk.close()
