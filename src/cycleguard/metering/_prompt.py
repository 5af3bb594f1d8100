"""Prompt-token counts of request parameters, for estimates made before a call.

Pure functions over a :class:`TextCounter` (anything with ``count(text) -> int``,
such as :class:`~cycleguard.metering.TokenCounter`), reading the keyword
arguments a caller passes to the SDK (``messages``, ``input``, ``system``,
``tools``, ...) as plain mappings and sequences.

The chat rule is the OpenAI cookbook's ("How to count tokens with tiktoken"):
3 tokens per message, 1 more per ``name``, every value's tokens, and 3 that
prime the reply. It matches the API for text messages; for the rest it is an
estimate, on purpose on the generous side:

- a content part with ``text`` counts its text; an image part counts a flat
  :data:`IMAGE_TOKENS`; file and audio parts are not counted;
- any other non-string value (tool calls, tool results, tool definitions)
  counts as its compact JSON text.

Anthropic publishes no tokenizer: its prompts are counted with the same rule
over whatever encoding the counter has, which is an approximation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, cast

__all__ = (
    "IMAGE_TOKENS",
    "REPLY_PRIMING_TOKENS",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_NAME",
    "TextCounter",
    "anthropic_prompt_tokens",
    "chat_prompt_tokens",
    "count_chat_messages",
    "embeddings_input_tokens",
    "responses_prompt_tokens",
)

TOKENS_PER_MESSAGE = 3
"""Tokens that frame every chat message (``<|start|>{role}<|message|>...<|end|>``)."""

TOKENS_PER_NAME = 1
"""Extra tokens for a message's ``name``."""

REPLY_PRIMING_TOKENS = 3
"""Tokens that prime the reply (``<|start|>assistant<|message|>``)."""

IMAGE_TOKENS = 765
"""What one image part counts: OpenAI's charge for a 1024x1024 high-detail image."""

_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
_UNCOUNTED_PARTS = frozenset({"input_file", "file", "document", "input_audio", "audio"})


class TextCounter(Protocol):
    """Counts the tokens of a text."""

    def count(self, text: str) -> int:
        """The number of tokens in ``text``."""
        ...


def _json_text(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _is_sequence(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def _value_tokens(counter: TextCounter, value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return counter.count(value)
    return counter.count(_json_text(value))


def _part_tokens(counter: TextCounter, part: object) -> int:
    if isinstance(part, str):
        return counter.count(part)
    if isinstance(part, Mapping):
        fields = cast("Mapping[str, object]", part)
        text = fields.get("text")
        if isinstance(text, str):
            return counter.count(text)
        kind = fields.get("type")
        if kind in _IMAGE_PARTS:
            return IMAGE_TOKENS
        if kind in _UNCOUNTED_PARTS:
            return 0
        return _value_tokens(counter, fields)
    return _value_tokens(counter, part)


def _content_tokens(counter: TextCounter, content: object) -> int:
    """A message's ``content``: a string or a list of parts."""
    if _is_sequence(content):
        return sum(_part_tokens(counter, part) for part in cast("Sequence[object]", content))
    return _part_tokens(counter, content) if content is not None else 0


def _message_tokens(counter: TextCounter, message: Mapping[str, object]) -> int:
    tokens = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if key == "content":
            tokens += _content_tokens(counter, value)
        else:
            tokens += _value_tokens(counter, value)
            if key == "name":
                tokens += TOKENS_PER_NAME
    return tokens


def _messages(value: object) -> Iterable[Mapping[str, object]]:
    if not _is_sequence(value):
        return ()
    return (
        cast("Mapping[str, object]", item)
        for item in cast("Sequence[object]", value)
        if isinstance(item, Mapping)
    )


def count_chat_messages(counter: TextCounter, messages: Iterable[Mapping[str, object]]) -> int:
    """Prompt tokens of chat ``messages``: the cookbook rule (see the module notes).

    >>> class Words:
    ...     def count(self, text: str) -> int:
    ...         return len(text.split())
    >>> count_chat_messages(Words(), [{"role": "user", "content": "two words"}])
    9
    """
    return sum(_message_tokens(counter, m) for m in messages) + REPLY_PRIMING_TOKENS


def _tools_tokens(counter: TextCounter, params: Mapping[str, object]) -> int:
    tools = params.get("tools")
    return _value_tokens(counter, tools) if tools else 0


def chat_prompt_tokens(counter: TextCounter, params: Mapping[str, object]) -> int:
    """Prompt tokens of ``chat.completions.create(**params)``: messages and tools."""
    return count_chat_messages(counter, _messages(params.get("messages"))) + _tools_tokens(
        counter, params
    )


def responses_prompt_tokens(counter: TextCounter, params: Mapping[str, object]) -> int:
    """Prompt tokens of ``responses.create(**params)``: instructions, input and tools.

    A string ``input`` counts as one user message, ``instructions`` as a system
    message; input items other than messages count as their JSON.
    """
    messages: list[Mapping[str, object]] = []
    instructions = params.get("instructions")
    if isinstance(instructions, str):
        messages.append({"role": "system", "content": instructions})
    given = params.get("input")
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
    elif _is_sequence(given):
        for item in cast("Sequence[object]", given):
            if isinstance(item, Mapping):
                messages.append(cast("Mapping[str, object]", item))
            else:
                messages.append({"content": item})
    return count_chat_messages(counter, messages) + _tools_tokens(counter, params)


def anthropic_prompt_tokens(counter: TextCounter, params: Mapping[str, object]) -> int:
    """Prompt tokens of ``messages.create(**params)`` (Anthropic): system, messages, tools.

    An approximation: Anthropic's tokenizer is not public.
    """
    messages: list[Mapping[str, object]] = []
    system = params.get("system")
    if system:
        messages.append({"role": "system", "content": system})
    messages.extend(_messages(params.get("messages")))
    return count_chat_messages(counter, messages) + _tools_tokens(counter, params)


def embeddings_input_tokens(counter: TextCounter, params: Mapping[str, object]) -> int:
    """Input tokens of ``embeddings.create(**params)``.

    ``input`` may be a string, a list of strings, a list of token ids or a list
    of such lists (ids are counted, not re-encoded).

    >>> class Chars:
    ...     def count(self, text: str) -> int:
    ...         return len(text)
    >>> embeddings_input_tokens(Chars(), {"input": ["ab", "cde"]})
    5
    >>> embeddings_input_tokens(Chars(), {"input": [[1, 2, 3], [4]]})
    4
    """
    given = params.get("input")
    if isinstance(given, str):
        return counter.count(given)
    if not _is_sequence(given):
        return 0
    items = cast("Sequence[object]", given)
    if all(isinstance(item, int) for item in items):
        return len(items)
    total = 0
    for item in items:
        if isinstance(item, str):
            total += counter.count(item)
        elif _is_sequence(item):
            total += len(cast("Sequence[object]", item))
    return total
