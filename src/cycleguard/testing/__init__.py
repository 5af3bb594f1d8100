"""Test doubles: scripted OpenAI- and Anthropic-compatible APIs the real SDKs can call.

- :class:`FakeOpenAI` (``/v1/chat/completions``, ``/v1/responses``,
  ``/v1/embeddings``) and :class:`FakeAnthropic` (``/v1/messages``) are ASGI
  apps. Queue answers with ``push``: a :class:`Reply` (text, usage, tool calls,
  stream behaviour, a :class:`StreamFault`) or an :class:`HttpError` (429 with
  ``retry-after``, 5xx, ...). Every request is recorded (``requests``,
  ``last_request``) so a test can check what reached the provider.
- ``fake.client()`` gives a real ``openai.AsyncOpenAI`` / ``anthropic.AsyncAnthropic``
  that calls the fake in process through :class:`AsgiStreamingTransport`
  (no socket, asyncio or trio); ``fake.serve()`` runs it under uvicorn on a
  loopback port for tests that want real sockets.

>>> fake = FakeOpenAI()
>>> fake.push(Reply(text="Hi!", usage=OpenAIUsage(prompt_tokens=12, completion_tokens=3)),
...           HttpError.rate_limited(retry_after_ms=50))
>>> fake.pending
2

Needs ``httpx2`` (which both SDKs install) for the transport, ``uvicorn`` for
``serve``, and the SDK a ``client()`` builds.

Under trio, expect ``ResourceWarning`` from the SDKs themselves: their async
streams leave inner async generators for the garbage collector (on any error,
and for openai even at ``[DONE]``), and trio warns when it collects one. If
your tests turn warnings into errors, ignore ``"Async generator
'(openai|anthropic|httpx2)..." was garbage collected"`` for the tests that
stream.
"""

from __future__ import annotations

from cycleguard.testing._anthropic import FakeAnthropic as FakeAnthropic
from cycleguard.testing._openai import FakeOpenAI as FakeOpenAI
from cycleguard.testing._script import AnthropicUsage as AnthropicUsage
from cycleguard.testing._script import HttpError as HttpError
from cycleguard.testing._script import OpenAIUsage as OpenAIUsage
from cycleguard.testing._script import RecordedRequest as RecordedRequest
from cycleguard.testing._script import Reply as Reply
from cycleguard.testing._script import ScriptItem as ScriptItem
from cycleguard.testing._script import StreamFault as StreamFault
from cycleguard.testing._script import ToolCall as ToolCall
from cycleguard.testing._serve import serve_in_thread as serve_in_thread
from cycleguard.testing._transport import AsgiStreamingTransport as AsgiStreamingTransport

__all__ = (
    "FakeOpenAI",
    "FakeAnthropic",
    "Reply",
    "HttpError",
    "StreamFault",
    "ToolCall",
    "OpenAIUsage",
    "AnthropicUsage",
    "ScriptItem",
    "RecordedRequest",
    "AsgiStreamingTransport",
    "serve_in_thread",
)
