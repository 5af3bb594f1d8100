"""Library exceptions to transport failure values, through one table per backend.

This is httpcore's ``map_exceptions`` idea, turned from "raise another exception"
into "return a value". A backend declares a table once::

    _ERRORS = ExceptionMap({
        httpx.ConnectError: connection_failed("could not connect", request_sent=False),
        httpx.ReadTimeout: timed_out("read", "no response data in time"),
        httpx.TransportError: connection_failed("transport error", request_sent=True),
    })

and its ``send`` catches exactly the types in the table::

    try:
        response = await client.send(...)
    except _ERRORS.types as exc:
        return Failure(_ERRORS.failure(exc, request))

Only ``Exception`` subclasses can be in a table, so cancellation (a
``BaseException`` on asyncio and trio) can never be turned into a value.

Messages never carry the value of a secret header: :meth:`ExceptionMap.failure`
removes them from whatever the library said, and factories for request-side
errors (where a library may quote our own headers) leave the library text out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal, TypeAlias, final

import attrs

from cycleguard._core._errors import (
    ConnectionFailed,
    InvalidResponse,
    TimedOut,
    TransportError,
)
from cycleguard._core._http import SECRET_HEADERS, HttpRequest

ErrorFactory: TypeAlias = Callable[[Exception], TransportError]
"""Builds the failure value for one caught exception."""

Phase: TypeAlias = Literal["connect", "write", "read", "pool"]
"""The phases :class:`~cycleguard.errors.TimedOut` distinguishes."""

_REDACTED = "<redacted>"
_MIN_SECRET_PART = 8  # shorter fragments of a secret header are too generic to scrub


def describe(summary: str, exc: Exception, *, detail: bool = True) -> str:
    """Return ``summary`` followed by the exception's type and, if ``detail``, its text.

    >>> describe("could not connect", ConnectionRefusedError(111, "Connection refused"))
    'could not connect (ConnectionRefusedError: [Errno 111] Connection refused)'
    >>> describe("bad request", ValueError("value b'sk-123'"), detail=False)
    'bad request (ValueError)'
    """
    text = str(exc) if detail else ""
    if text:
        return f"{summary} ({type(exc).__name__}: {text})"
    return f"{summary} ({type(exc).__name__})"


def redact_secrets(message: str, request: HttpRequest) -> str:
    """Remove the values of the request's secret headers from ``message``.

    Secret headers are those :class:`~cycleguard.transports.HttpRequest` hides in its
    ``repr`` (API keys, ``Authorization``). Each whole value is removed, and so is each
    long space-separated part of it (the token of ``Bearer <token>``).

    >>> req = HttpRequest("GET", "http://x/", (("Authorization", "Bearer abcdefgh12345"),))
    >>> redact_secrets("server said abcdefgh12345", req)
    'server said <redacted>'
    """
    for name, value in request.headers:
        if name.lower() not in SECRET_HEADERS or not value:
            continue
        parts = [part for part in value.split() if len(part) >= _MIN_SECRET_PART]
        for secret in sorted({value, *parts}, key=len, reverse=True):
            message = message.replace(secret, _REDACTED)
    return message


def connection_failed(summary: str, *, request_sent: bool, detail: bool = True) -> ErrorFactory:
    """A factory for :class:`~cycleguard.errors.ConnectionFailed`.

    Args:
        summary: What went wrong, in our words.
        request_sent: Whether the server may have received (and acted on) the request.
        detail: Whether to append the library's own message. Turn it off where the
            library may quote our request headers.
    """

    def build(exc: Exception) -> TransportError:
        return ConnectionFailed(
            message=describe(summary, exc, detail=detail), request_sent=request_sent
        )

    return build


def timed_out(phase: Phase, summary: str) -> ErrorFactory:
    """A factory for :class:`~cycleguard.errors.TimedOut` in ``phase``."""

    def build(exc: Exception) -> TransportError:
        return TimedOut(phase=phase, message=describe(summary, exc))

    return build


def invalid_response(summary: str, *, detail: bool = True) -> ErrorFactory:
    """A factory for :class:`~cycleguard.errors.InvalidResponse` (a malformed HTTP answer)."""

    def build(exc: Exception) -> TransportError:
        return InvalidResponse(message=describe(summary, exc, detail=detail))

    return build


@final
class ExceptionMap:
    """A table from library exception types to failure-value factories.

    Lookup walks the exception's method resolution order, so the most specific
    entry wins whatever the order of the table: ``httpx.ConnectTimeout`` finds its
    own entry before the one for ``httpx.TimeoutException``.

    Args:
        table: Exception type to the factory that builds its failure value.
    """

    def __init__(self, table: Mapping[type[Exception], ErrorFactory]) -> None:
        self._table: dict[type, ErrorFactory] = dict(table)
        self.types: tuple[type[Exception], ...] = tuple(table)
        """Every type in the table, for an ``except`` clause."""

    def failure(self, exc: Exception, request: HttpRequest) -> TransportError:
        """Return the failure value for ``exc``, with ``request``'s secrets removed.

        Raises ``exc`` itself if no entry matches: only types from :attr:`types`
        may be passed here.
        """
        for cls in type(exc).__mro__:
            factory = self._table.get(cls)
            if factory is not None:
                failure = factory(exc)
                return attrs.evolve(failure, message=redact_secrets(failure.message, request))
        raise exc
