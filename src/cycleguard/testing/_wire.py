"""Pure helpers shared by the fakes: SSE frames, lazy deltas, fault placement."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Final, final

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Iterator

    from cycleguard.testing._script import Reply, StreamFault

CREATED: Final = 1_700_000_000
"""The ``created`` timestamp every fake response carries (deterministic)."""


@final
class Cut:
    """Marks the point where a body stops and the connection drops."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "CUT"


CUT: Final = Cut()

Frame = bytes | Cut


def dumps(value: object) -> str:
    """Compact JSON, as the providers send it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def sse(data: object, *, event: str | None = None) -> bytes:
    """One server-sent event; ``data`` is JSON-encoded unless it is a string.

    >>> sse({"a": 1}, event="ping")
    b'event: ping\\ndata: {"a":1}\\n\\n'
    """
    text = data if isinstance(data, str) else dumps(data)
    head = f"event: {event}\n" if event is not None else ""
    return f"{head}data: {text}\n\n".encode()


_WORD = re.compile(r"\s*\S+\s*|\s+")


def deltas(reply: Reply) -> Iterator[str]:
    """The pieces a stream sends for ``reply.text``, made one at a time.

    >>> from cycleguard.testing._script import Reply
    >>> list(deltas(Reply(text="Hi there, you.")))
    ['Hi ', 'there, ', 'you.']
    """
    if reply.deltas is not None:
        return iter(reply.deltas)
    return (match.group(0) for match in _WORD.finditer(reply.text))


def deliver(
    frames: Iterable[bytes],
    fault: StreamFault | None,
    error_frame: Callable[[StreamFault], bytes],
) -> Generator[Frame, None, bool]:
    """Yield the text-delta ``frames``, applying ``fault`` after ``fault.after`` of them.

    Returns whether the fault fired (the stream must then stop).
    """
    if fault is None:
        yield from frames
        return False
    for sent, frame in enumerate(frames):
        if sent >= fault.after:
            break
        yield frame
    match fault.kind:
        case "cut":
            yield CUT
        case "error":
            yield error_frame(fault)
        case "end":
            pass
    return True
