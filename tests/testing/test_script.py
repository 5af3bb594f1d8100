"""The fakes' scripting values, wire helpers and bookkeeping, without an SDK."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, cast

import anyio
import httpx2
import pytest

from cycleguard.errors import UsageError
from cycleguard.testing import (
    AnthropicUsage,
    FakeAnthropic,
    FakeOpenAI,
    HttpError,
    OpenAIUsage,
    RecordedRequest,
    Reply,
    StreamFault,
    ToolCall,
)
from cycleguard.testing._anthropic import message_stream
from cycleguard.testing._openai import chat_stream, responses_stream
from cycleguard.testing._wire import CUT, deliver, deltas

if TYPE_CHECKING:
    from collections.abc import Iterable

    from cycleguard.testing._wire import Frame
    from cycleguard.transports.asgi import AsgiMessage


def test_tool_call_arguments_must_be_a_json_object() -> None:
    assert ToolCall(name="f", arguments='{"a": [1]}').arguments == '{"a": [1]}'
    for bad in ("[1]", "not json", "3"):
        with pytest.raises(UsageError, match="JSON text of an object"):
            ToolCall(name="f", arguments=bad)


def test_usage_counts_must_be_non_negative_ints() -> None:
    with pytest.raises(UsageError, match="prompt_tokens"):
        OpenAIUsage(prompt_tokens=-1)
    with pytest.raises(UsageError, match="output_tokens"):
        AnthropicUsage(output_tokens=True)
    with pytest.raises(UsageError, match="after"):
        StreamFault.cut(after=-1)


def test_usage_of_the_wrong_provider_is_refused() -> None:
    with pytest.raises(UsageError, match="OpenAIUsage"):
        FakeOpenAI().push(Reply(usage=AnthropicUsage()))
    with pytest.raises(UsageError, match="AnthropicUsage"):
        FakeAnthropic().push(Reply(usage=OpenAIUsage()))
    with pytest.raises(UsageError):
        FakeOpenAI(default=Reply(usage=AnthropicUsage()))


def test_http_error_headers() -> None:
    error = HttpError.rate_limited(retry_after=3, retry_after_ms=2500)
    assert error.header_pairs() == (("retry-after", "3"), ("retry-after-ms", "2500"))
    dated = HttpError(
        status=503, retry_after="Wed, 21 Oct 2026 07:28:00 GMT", headers=(("a", "b"),)
    )
    assert dated.header_pairs() == (("retry-after", "Wed, 21 Oct 2026 07:28:00 GMT"), ("a", "b"))
    assert HttpError.overloaded().status == 529
    assert HttpError.server_error().status == 500


def test_recorded_request() -> None:
    request = RecordedRequest("POST", "/v1/x", (("Content-Type", "application/json"),), b"[1]")
    assert request.json == {}
    assert request.header("content-type") == "application/json"
    assert request.header("missing") is None
    assert RecordedRequest("POST", "/", (), b"not json").json == {}


def test_deltas_split_words_lazily_or_follow_the_script() -> None:
    assert list(deltas(Reply(text="  lead  and trail "))) == ["  lead  ", "and ", "trail "]
    assert list(deltas(Reply(text=""))) == []
    assert list(deltas(Reply(text="ignored", deltas=("a", "bc")))) == ["a", "bc"]


def _frames(count: int) -> Iterable[bytes]:
    return (f"d{i}".encode() for i in range(count))


def _drive(frames: Iterable[bytes], fault: StreamFault | None) -> tuple[list[Frame], bool]:
    out: list[Frame] = []
    generator = deliver(frames, fault, lambda f: f"error:{f.message}".encode())
    while True:
        try:
            out.append(next(generator))
        except StopIteration as stop:
            return out, bool(stop.value)


@pytest.mark.parametrize(
    ("fault", "expected", "stopped"),
    [
        (None, [b"d0", b"d1", b"d2"], False),
        (StreamFault.cut(after=0), [CUT], True),
        (StreamFault.cut(after=2), [b"d0", b"d1", CUT], True),
        (StreamFault.end(after=1), [b"d0"], True),
        (StreamFault.error(after=5, message="x"), [b"d0", b"d1", b"d2", b"error:x"], True),
    ],
)
def test_faults_fire_after_the_given_number_of_deltas(
    fault: StreamFault | None, expected: list[Frame], stopped: bool
) -> None:
    assert _drive(_frames(3), fault) == (expected, stopped)


def _events(frames: Iterable[Frame]) -> list[tuple[str | None, dict[str, object] | str]]:
    """Parse SSE frames into (event name, data) pairs."""
    parsed: list[tuple[str | None, dict[str, object] | str]] = []
    for frame in frames:
        assert isinstance(frame, bytes)
        name = None
        data: dict[str, object] | str = ""
        for line in frame.decode().strip().split("\n"):
            key, _, value = line.partition(": ")
            if key == "event":
                name = value
            else:
                data = value if value == "[DONE]" else cast("dict[str, object]", json.loads(value))
        parsed.append((name, data))
    return parsed


def test_chat_stream_frames() -> None:
    """Role chunk, deltas, finish chunk, usage chunk (asked for), then [DONE]."""
    reply = Reply(text="a b", usage=OpenAIUsage(prompt_tokens=4, completion_tokens=2))
    events = _events(chat_stream(reply, "m", 7, include_usage=True))
    datas = [data for _, data in events]
    assert datas[-1] == "[DONE]"
    usage_chunk = datas[-2]
    assert isinstance(usage_chunk, dict)
    assert usage_chunk["choices"] == []
    assert cast("dict[str, object]", usage_chunk["usage"])["total_tokens"] == 6
    assert len(datas) == 6


def test_responses_stream_sequence_numbers_increase() -> None:
    events = _events(responses_stream(Reply(text="a"), "m", 1, {}))
    datas = [data for _, data in events if isinstance(data, dict)]
    assert [data["sequence_number"] for data in datas] == list(range(len(events)))
    assert [data["type"] for data in datas] == [name for name, _ in events]


def test_anthropic_stream_without_text_has_only_tool_blocks() -> None:
    reply = Reply(text="", tool_calls=(ToolCall(name="f", arguments='{"x": 1}'),))
    names = [name for name, _ in _events(message_stream(reply, "m", 1))]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


@pytest.mark.anyio
async def test_queue_recording_and_reset() -> None:
    """push/pending/requests/last_request/reset, over a plain httpx2 client."""
    fake = FakeOpenAI()
    with pytest.raises(UsageError, match="no request"):
        _ = fake.last_request
    fake.push(HttpError(status=418, message="teapot"), Reply(text="after"))
    assert fake.pending == 2
    async with httpx2.AsyncClient(transport=fake.transport()) as http:
        first = await http.post("http://fake/v1/chat/completions", json={"model": "m"})
        second = await http.post("http://fake/v1/chat/completions", json={"model": "m"})
        third = await http.post("http://fake/v1/chat/completions", json={"model": "m"})
    assert first.status_code == 418
    assert first.json()["error"]["message"] == "teapot"
    assert second.json()["choices"][0]["message"]["content"] == "after"
    assert third.json()["choices"][0]["message"]["content"] == "Hello from the fake."
    assert fake.pending == 0
    assert len(fake.requests) == 3
    fake.reset()
    assert len(fake.requests) == 0


@pytest.mark.anyio
async def test_lifespan_is_acknowledged() -> None:
    """Servers that run the lifespan protocol get their startup and shutdown answered."""
    incoming: list[AsgiMessage] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[AsgiMessage] = []

    async def receive() -> AsgiMessage:
        await anyio.lowlevel.checkpoint()
        return incoming.pop(0)

    async def send(message: AsgiMessage) -> None:
        sent.append(message)

    await FakeAnthropic()({"type": "lifespan"}, receive, send)
    assert sent == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
    ]
